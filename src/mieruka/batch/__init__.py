"""Batch jobs at any size: rows written as they are made, per-image faults as rows, ``--resume`` from what was
written. ``sinks`` holds the outputs (CSV, Parquet). See docs/architecture.md, "Batch jobs".
"""
