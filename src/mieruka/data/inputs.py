"""The images a command is pointed at: files named, and every image below folders named (``predict``, ``explain``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mieruka.data.images import IMAGE_EXTENSIONS
from mieruka.data.sources.folder import MASKS_DIR
from mieruka.errors import DataError

__all__ = ["collect_images"]


def collect_images(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Image files named directly, plus every image below named folders (sorted; hidden files and the files of a
    ``masks/`` folder, where a data set keeps its defect masks, are skipped)."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and f.suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith(".") or part == MASKS_DIR for part in f.relative_to(p).parts[:-1])
                and not f.name.startswith(".")
            )
            if not found:
                raise DataError(f"{p}: the folder holds no images")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    if not paths:
        raise DataError("no images given")
    return paths
