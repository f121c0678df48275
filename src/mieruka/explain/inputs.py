"""Which images an ``explain`` run reads, and their true classes: data sets read as the model reads its data (a
manifest, a split-first tree, an MVTec category, class folders of the model's classes), anything else as a folder or
list of unlabelled images."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mieruka.checkpoint import ModelInfo
from mieruka.data.images import IMAGE_EXTENSIONS
from mieruka.data.sample import nfc
from mieruka.data.sources import detect_layout
from mieruka.data.sources.folder import MASKS_DIR
from mieruka.errors import DataError

__all__ = ["explain_inputs"]


def _class_folders(path: Path) -> set[str]:
    """The (NFC) names of a folder's subfolders that could be classes: not hidden, not the masks tree."""
    return {nfc(p.name) for p in path.iterdir() if p.is_dir() and p.name != MASKS_DIR and not p.name.startswith(".")}


def _is_dataset(path: Path, info: ModelInfo, need_labels: bool) -> bool:
    """A manifest, a split-first tree or MVTec category (by the layout stored in the model, else detected), or a
    folder whose subfolders are classes of the model. With ``need_labels``, a folder laid out
    as class folders (subfolders, no image at its top level) whose names are not the model's is an error naming
    them, rather than a folder of unlabelled images."""
    if path.is_file():
        return path.suffix.lower() == ".csv"
    if not path.is_dir():
        return False
    if detect_layout(path, str(info.config.get("layout", "auto"))) in ("split-first", "mvtec"):
        return True  # the layouts whose first level is not classes: read as the model reads its data
    folders = _class_folders(path)
    classes = {nfc(c) for c in info.classes}
    if folders and folders <= classes:
        return True
    loose = any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in path.iterdir())
    if need_labels and folders and not loose:
        raise DataError(
            f"{path}: its class folders {', '.join(sorted(folders - classes))} are not classes of the model "
            f"({', '.join(info.classes)}); explain a data set of the model's classes, or use --target pred"
        )
    return False


def explain_inputs(
    sources: Sequence[str | os.PathLike[str]], info: ModelInfo, split: str, need_labels: bool
) -> tuple[list[Path], list[int | None]]:
    """Image paths and true class indices (None where unknown)."""
    from mieruka.data.inputs import collect_images

    paths: list[Path] = []
    labels: list[int | None] = []
    for src in sources:
        p = Path(src)
        if _is_dataset(p, info, need_labels):
            dataset = info.load_dataset(p)
            samples = dataset.split(split)
            if not samples:
                raise DataError(f"{p}: the {split} split is empty")
            paths += [s.image for s in samples]
            labels += [dataset.label_index(s) for s in samples]
        else:
            found = collect_images([p])
            paths += found
            labels += [None] * len(found)
    return paths, labels
