"""MVTec AD's layout (one object or texture category)::

ROOT/train/good/<image>                       defect-free training images
ROOT/test/<type>/<image>                      test images: good, and one folder per defect type
ROOT/ground_truth/<type>/<stem>_mask.png      the defect's mask (none for good images)

``good`` is the OK class and each defect type an NG class. MVTec AD gives no validation split, so its test images
are split in half per class into ``val`` and ``test`` by a seeded stratified rule (:data:`SPLIT_SEED`); training
writes the result to ``split.csv`` in the run folder, as for any data set.
"""

from __future__ import annotations

from pathlib import Path

from mieruka.data.images import IMAGE_EXTENSIONS
from mieruka.data.sample import NG, Sample, nfc
from mieruka.data.sources.base import SourceContents
from mieruka.data.splits import stratified_split
from mieruka.errors import DataError

__all__ = ["SPLIT_SEED", "MVTecSource"]

SPLIT_SEED = 0
"""Seed of the half-and-half split of MVTec AD's test images into val and test."""

GOOD = "good"


def _images(folder: Path) -> tuple[list[Path], list[Path]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    return [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS], [
        p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS
    ]


class MVTecSource:
    """``ROOT/train/good``, ``ROOT/test/<type>``, ``ROOT/ground_truth/<type>/<stem>_mask.png``."""

    name = "mvtec"
    description = "an MVTec AD category ROOT/train/good, ROOT/test/<type>, ROOT/ground_truth/<type>"

    def detect(self, path: Path) -> bool:
        """``train/`` holds ``good`` alone, ``test/`` exists, and there is no validation folder: a split-first tree
        with a class named good has other classes in ``train/`` too."""
        if not (path.is_dir() and (path / "train" / GOOD).is_dir() and (path / "test").is_dir()):
            return False
        train = [d.name for d in (path / "train").iterdir() if d.is_dir() and not d.name.startswith(".")]
        return train == [GOOD] and not any((path / v).is_dir() for v in ("val", "valid", "validation"))

    def read(self, path: Path) -> SourceContents:
        for needed in (path / "train" / GOOD, path / "test"):
            if not needed.is_dir():
                raise DataError(f"{needed}: no such folder; an MVTec AD category has train/good/ and test/<type>/")
        train, ignored = _images(path / "train" / GOOD)
        samples = [Sample(image=p, label=GOOD, verdict=NG, split="train") for p in train]
        others = sorted(d for d in (path / "train").iterdir() if d.is_dir() and d.name != GOOD)
        warnings = [f"{d}: MVTec AD trains on good images only; this folder is not read" for d in others]
        tests: list[Sample] = []
        missing_masks = 0
        for folder in sorted(d for d in (path / "test").iterdir() if d.is_dir() and not d.name.startswith(".")):
            images, skipped = _images(folder)
            ignored += skipped
            for image in images:
                mask = None
                if folder.name != GOOD:
                    candidate = path / "ground_truth" / folder.name / f"{image.stem}_mask.png"
                    mask = candidate if candidate.is_file() else None
                    missing_masks += mask is None
                tests.append(Sample(image=image, label=nfc(folder.name), verdict=NG, mask=mask))
        if not tests:
            raise DataError(f"{path / 'test'}: no test images (expected test/good and test/<defect type>)")
        if missing_masks:
            warnings.append(f"{path / 'ground_truth'}: {missing_masks} defect image(s) have no <stem>_mask.png")
        halves = stratified_split([s.label for s in tests], (0.0, 0.5, 0.5), SPLIT_SEED)
        samples += [Sample(s.image, s.label, s.verdict, s.mask, split) for s, split in zip(tests, halves, strict=True)]
        return SourceContents(samples, ignored, warnings)
