"""Class-per-folder trees::

ROOT/<class>/**/<image>           images, any depth below their class folder
ROOT/masks/<class>/**/<stem>.*    optional masks mirroring the images (same relative path, any image ending),
                                  or box annotations: <stem>.xml (Pascal VOC) or <stem>.txt (YOLO)
"""

from __future__ import annotations

import os
from pathlib import Path

from mieruka.data.annotations import find_region_file
from mieruka.data.images import IMAGE_EXTENSIONS
from mieruka.data.sample import NG, Sample, nfc
from mieruka.data.sources.base import SourceContents
from mieruka.errors import DataError

__all__ = ["MASKS_DIR", "FolderSource", "read_class_folders"]

MASKS_DIR = "masks"
"""The folder beside the class folders that mirrors them with masks (never read as a class or as images)."""


class FolderSource:
    """``ROOT/<class>/**/<image>``: the class is the first folder level; no split is given."""

    name = "folder"
    description = "a class-per-folder tree ROOT/<class>/<image>"
    split_rule = ""

    def detect(self, path: Path) -> bool:
        return path.is_dir()

    def read(self, path: Path) -> SourceContents:
        return read_class_folders(path, path / MASKS_DIR)


def read_class_folders(path: Path, mask_root: Path, split: str | None = None) -> SourceContents:
    """The samples of ``path/<class>/**/<image>``, masks from the mirror tree ``mask_root``, with ``split``."""
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != MASKS_DIR)
    if not class_dirs:
        raise DataError(f"{path}: no class folders found (expected ROOT/<class>/<image> or a manifest CSV)")
    samples: list[Sample] = []
    ignored: list[Path] = []
    warnings: list[str] = []
    for class_dir in class_dirs:
        label = nfc(class_dir.name)
        before = len(samples)
        for dirpath, dirnames, filenames in os.walk(class_dir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                image = Path(dirpath) / name
                if image.suffix.lower() not in IMAGE_EXTENSIONS:
                    ignored.append(image)
                    continue
                rel = image.relative_to(path)
                mask = find_region_file(mask_root / rel.parent, rel.stem) if mask_root.is_dir() else None
                samples.append(Sample(image=image, label=label, verdict=NG, mask=mask, split=split))
        if len(samples) == before:
            warnings.append(f"{class_dir}: the class folder holds no images, so {label!r} is not a class here")
    return SourceContents(samples, ignored, warnings)
