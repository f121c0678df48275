"""Data sources: one class per on-disk layout, tried in order; the first whose ``detect`` accepts a path reads it.

A source turns a path into :class:`~mieruka.data.sample.Sample` records (image, class, region file, split if the
layout gives one) without decoding any image. Adding a layout is one class in one new file of this package, listed
in :data:`SOURCES`, plus its test.
"""

from __future__ import annotations

from pathlib import Path

from mieruka.data.sources.base import DataSource, SourceContents
from mieruka.data.sources.folder import FolderSource
from mieruka.data.sources.manifest import ManifestSource
from mieruka.errors import DataError

__all__ = ["SOURCES", "DataSource", "SourceContents", "read_source"]

SOURCES: tuple[DataSource, ...] = (ManifestSource(), FolderSource())
"""The layouts, in the order they are tried."""


def read_source(path: Path) -> tuple[DataSource, SourceContents]:
    """The source that recognizes ``path``, and what it read there."""
    if not path.exists():
        raise DataError(f"{path}: no such folder or manifest file")
    for source in SOURCES:
        if source.detect(path):
            return source, source.read(path)
    known = "; ".join(s.description for s in SOURCES)
    raise DataError(f"{path}: not a data set layout mieruka reads ({known})")
