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
from mieruka.data.sources.mvtec import MVTecSource
from mieruka.data.sources.splitfirst import SPLIT_NAMES, SplitFirstSource, child_dirs
from mieruka.errors import DataError

__all__ = ["LAYOUTS", "SOURCES", "DataSource", "SourceContents", "detect_layout", "read_source"]

SOURCES: tuple[DataSource, ...] = (ManifestSource(), MVTecSource(), SplitFirstSource(), FolderSource())
"""The layouts, in the order they are tried."""

LAYOUTS = ("auto", *(s.name for s in SOURCES))
"""``--layout`` choices: ``auto`` detects; a name forces that layout."""


def detect_layout(path: Path, layout: str = "auto") -> str | None:
    """The name of the layout that would read ``path`` (``layout`` when one is named), without reading it."""
    if layout != "auto":
        return layout
    return next((s.name for s in SOURCES if path.exists() and s.detect(path)), None)


def read_source(path: Path, layout: str = "auto") -> tuple[DataSource, SourceContents]:
    """The source that recognizes ``path`` (or the one ``layout`` names), and what it read there."""
    if not path.exists():
        raise DataError(f"{path}: no such folder or manifest file")
    if layout != "auto":
        chosen = next((s for s in SOURCES if s.name == layout), None)
        if chosen is None:
            raise DataError(f"--layout {layout!r}: choose {', '.join(LAYOUTS)}")
        if chosen.name != "manifest" and not path.is_dir():
            raise DataError(f"--layout {layout}: {path} is not a folder")
        return chosen, chosen.read(path)
    for source in SOURCES:
        if source.detect(path):
            if source.name == "folder":
                _refuse_mixed(path)
            return source, source.read(path)
    known = "; ".join(s.description for s in SOURCES)
    raise DataError(f"{path}: not a data set layout mieruka reads ({known})")


def _refuse_mixed(path: Path) -> None:
    """A tree whose first level mixes split names with other names could be either layout: say what was seen."""
    names = [d.name for d in child_dirs(path)]
    splits = [n for n in names if n.lower() in SPLIT_NAMES]
    if splits:
        others = [n for n in names if n.lower() not in SPLIT_NAMES]
        raise DataError(
            f"{path}: the folders {', '.join(splits)} look like splits, but {', '.join(others)} look like classes, "
            "so the layout is ambiguous. For a split-first tree, put every class folder inside train/, val/ and "
            "test/; to read every folder as a class, give --layout folder"
        )
