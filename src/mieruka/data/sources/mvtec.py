"""MVTec AD's layout (one object or texture category)::

ROOT/train/good/<image>                       defect-free training images
ROOT/test/<type>/<image>                      test images: good, and one folder per defect type
ROOT/ground_truth/<type>/<stem>_mask.png      the defect's mask (none for good images)

``good`` is the OK class and each defect type an NG class. MVTec AD trains anomaly detectors, so its ``train/`` holds
good images only and its defects lie in ``test/``; a classifier must see defects in training. So each defect type's
test images are split 60/20/20 into ``train``, ``val`` and ``test``, and ``test/good`` half and half into ``val`` and
``test``, per class by the seeded stratified rule of :mod:`mieruka.data.splits` with :data:`SPLIT_SEED` (a defect
type needs three images). The rule is part of the layout, which the model stores, so every command splits alike;
the layout line that ``train`` prints says it, and training writes the result to ``split.csv`` in the run folder.
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
"""Seed of the split of MVTec AD's test images (defect types 60/20/20 into train/val/test, good 50/50 into val/test)."""

DEFECT_FRACTIONS = (0.6, 0.2, 0.2)
GOOD_FRACTIONS = (0.0, 0.5, 0.5)

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
    split_rule = (
        "train/good trains; each defect type's test images split 60/20/20 into train/val/test and test/good 50/50 "
        f"into val/test (stratified, seed {SPLIT_SEED})"
    )

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
        for good, fractions in ((True, GOOD_FRACTIONS), (False, DEFECT_FRACTIONS)):
            chosen = [t for t in tests if (t.label == GOOD) == good]
            try:
                splits = stratified_split([t.label for t in chosen], fractions, SPLIT_SEED)
            except DataError as exc:
                raise DataError(f"{path / 'test'}: {exc}") from None
            samples += [
                Sample(t.image, t.label, t.verdict, t.mask, split) for t, split in zip(chosen, splits, strict=True)
            ]
        return SourceContents(samples, ignored, warnings)
