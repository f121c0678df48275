"""Split-first trees, as ImageNet-style and Ultralytics classification data sets are laid out::

ROOT/{train,val,test}/<class>/**/<image>    the split is the first folder level, the class the second
                                            (``valid`` and ``validation`` are read as ``val``)
ROOT/masks/{train,…}/<class>/**/<stem>.*    optional masks or box files mirroring the images

A tree with only some of the splits takes the others from its training images: a missing ``val`` or ``test`` is an
error naming the folder, since inventing a test split from training data would make its figures lie.
"""

from __future__ import annotations

from pathlib import Path

from mieruka.data.sources.base import SourceContents
from mieruka.data.sources.folder import MASKS_DIR, read_class_folders
from mieruka.errors import DataError

__all__ = ["SPLIT_NAMES", "SplitFirstSource", "child_dirs"]

SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
"""Folder names read as splits, and the split each one is."""


def child_dirs(path: Path) -> list[Path]:
    """The visible sub-folders of ``path``, except the masks folder."""
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != MASKS_DIR)


class SplitFirstSource:
    """``ROOT/<split>/<class>/<image>``: splits from the first folder level, classes from the second."""

    name = "split-first"
    description = "a split-first tree ROOT/{train,val,test}/<class>/<image>"
    split_rule = ""

    def detect(self, path: Path) -> bool:
        dirs = child_dirs(path) if path.is_dir() else []
        return bool(dirs) and all(d.name.lower() in SPLIT_NAMES for d in dirs)

    def read(self, path: Path) -> SourceContents:
        dirs = child_dirs(path)
        seen: dict[str, Path] = {}
        for d in dirs:
            split = SPLIT_NAMES.get(d.name.lower())
            if split is None:
                raise DataError(f"{d}: not a split folder (expected {', '.join(SPLIT_NAMES)})")
            if split in seen:
                raise DataError(f"{path}: both {seen[split].name}/ and {d.name}/ are the {split} split; keep one")
            seen[split] = d
        missing = [s for s in ("train", "val", "test") if s not in seen]
        if missing:
            raise DataError(
                f"{path}: a split-first tree needs train, val and test folders; {', '.join(missing)} missing "
                "(or lay the images out as ROOT/<class>/<image> and let mieruka split them)"
            )
        samples, ignored, warnings = [], [], []
        for split, folder in seen.items():
            part = read_class_folders(folder, path / MASKS_DIR / folder.name, split=split)
            samples += part.samples
            ignored += part.ignored
            warnings += part.warnings
        classes = {split: {s.label for s in samples if s.split == split} for split in seen}
        for split in ("val", "test"):
            absent = sorted(classes["train"] - classes[split])
            if absent:
                warnings.append(f"{seen[split]}: no images of {', '.join(absent)} in the {split} split")
        return SourceContents(samples, ignored, warnings)
