"""Batch jobs at any size: a worker per chunk of images on the local or the Ray engine (``work``, ``engine``,
``ray_engine``), rows written as they are made, per-image faults as rows, ``--resume`` from what was written
(``sinks``). See docs/architecture.md, "The rooms".
"""
