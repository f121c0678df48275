"""A data set: the samples of one source with their classes, verdicts and splits.

:func:`load_dataset` reads any layout of :mod:`mieruka.data.sources` (class-per-folder tree, manifest CSV, …),
settles the class order and the verdict map (OK classes pass, NG classes are rejected), and assigns splits: the
layout's own, or the seeded stratified rule of :mod:`mieruka.data.splits`.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from mieruka._io import write_csv
from mieruka._text import display_width, ljust
from mieruka.data.images import IMAGE_EXTENSIONS
from mieruka.data.sample import NG, OK, Sample, nfc
from mieruka.data.sources import read_source
from mieruka.data.splits import SPLIT_CHOICES, SPLITS, stratified_split
from mieruka.errors import DataError

__all__ = [
    "NG",
    "OK",
    "SPLITS",
    "Dataset",
    "Sample",
    "default_verdicts",
    "describe",
    "load_dataset",
    "resolve_verdicts",
    "stratified_split",
]

_OK_NAME = re.compile(
    r"^\s*(ok|good|free|normal|pass|passed|clean|no[\s_-]?defects?|defect[\s_-]?free|non[\s_-]?defective|"
    r"正常|良品|合格|ＯＫ)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Dataset:
    """An ordered, split collection of samples.

    Attributes:
        source: The folder or manifest it was read from.
        classes: Class names in label-index order (sorted unless a model fixes another order).
        verdicts: Class name → ``"OK"``/``"NG"``.
        samples: Every sample, with its split.
        ignored: Files in class folders skipped because their ending is not an image ending.
        warnings: What the source noticed that the user should hear (empty class folders, repeated rows).
    """

    source: Path
    classes: tuple[str, ...]
    verdicts: Mapping[str, str]
    samples: tuple[Sample, ...]
    ignored: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()
    layout: str = ""
    """How the source was read: a line naming the layout (``split-first tree (splits from its folders)``…)."""

    def split(self, name: str) -> tuple[Sample, ...]:
        """Samples of one split (``train``, ``val``, ``test``) or ``all``."""
        if name == "all":
            return self.samples
        if name not in SPLITS:
            raise DataError(f"--split {name!r}: choose one of {', '.join(SPLIT_CHOICES)}")
        return tuple(s for s in self.samples if s.split == name)

    def label_index(self, sample: Sample) -> int:
        """Index of the sample's class in :attr:`classes`."""
        return self.classes.index(sample.label)

    def counts(self) -> dict[str, dict[str, int]]:
        """split → class → number of images."""
        table: dict[str, dict[str, int]] = {s: dict.fromkeys(self.classes, 0) for s in SPLITS}
        for sample in self.samples:
            if sample.split is not None:
                table[sample.split][sample.label] += 1
        return table

    def save_split(self, path: str | os.PathLike[str], samples: Sequence[Sample] | None = None) -> Path:
        """Write ``samples`` (default: all) as a manifest CSV that reproduces this exact split; paths are relative to
        the CSV's folder (as a manifest's are read), so the file works from any working directory."""
        folder = os.path.abspath(Path(path).parent)

        def rel(p: Path) -> str:
            return Path(os.path.relpath(os.path.abspath(p), folder)).as_posix()

        rows = [
            (rel(s.image), s.label, "" if s.mask is None else rel(s.mask), s.split or "")
            for s in (self.samples if samples is None else samples)
        ]
        return write_csv(path, ("image", "label", "mask", "split"), rows)

    def without(self, images: set[Path]) -> Dataset:
        """The same data set without the samples of ``images`` (classes and verdicts kept)."""
        return replace(self, samples=tuple(s for s in self.samples if s.image not in images))


def default_verdicts(classes: Iterable[str]) -> dict[str, str]:
    """The documented default: a class is OK when its name starts with ok, good, free, normal, pass, clean,
    no defect, defect-free, 正常, 良品 or 合格 (case-insensitive); every other class is NG."""
    return {c: OK if _OK_NAME.match(unicodedata.normalize("NFKC", c)) else NG for c in classes}


def resolve_verdicts(classes: Sequence[str], ok_classes: Sequence[str] | None = None) -> dict[str, str]:
    """Verdict map from ``--ok`` classes (exactly those pass) or, without them, :func:`default_verdicts`."""
    if not ok_classes:
        return default_verdicts(classes)
    ok_classes = [nfc(c) for c in ok_classes]
    unknown = [c for c in ok_classes if c not in classes]
    if unknown:
        raise DataError(f"--ok {', '.join(unknown)}: no such class; the classes are: {', '.join(classes)}")
    return {c: OK if c in ok_classes else NG for c in classes}


def load_dataset(
    source: str | os.PathLike[str],
    *,
    ok_classes: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    verdicts: Mapping[str, str] | None = None,
    split_seed: int = 0,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    layout: str = "auto",
) -> Dataset:
    """Index a data set (no image is decoded here): a manifest CSV, a class-per-folder tree, a split-first tree
    (``train|val|test/<class>``) or an MVTec AD category, detected or named by ``layout``
    (:data:`~mieruka.data.sources.LAYOUTS`).

    Args:
        source: A folder (class-per-folder tree) or a ``.csv`` manifest.
        ok_classes: Classes that pass (``--ok``); the others fail. Default: :func:`default_verdicts`.
        classes: Fix the class order (a trained model's); images of other classes are an error.
        verdicts: Fix the verdict map (a trained model's); overrides ``ok_classes``.
        split_seed: Seed of the stratified split used when the source gives none.
        fractions: train/val/test fractions of that split.

    Raises:
        DataError: The source is missing, empty, malformed, or a class is too small to split.
    """
    path = Path(source)
    reader, contents = read_source(path, layout)
    samples, ignored = contents.samples, contents.ignored
    if not samples:
        raise DataError(f"{path}: no images found (image endings: {', '.join(sorted(IMAGE_EXTENSIONS))})")

    found = sorted({s.label for s in samples})
    if classes is not None:  # a model's classes, compared in the composed form every name is read in
        classes = [nfc(c) for c in classes]
        verdicts = None if verdicts is None else {nfc(c): v for c, v in verdicts.items()}
        unknown = [c for c in found if c not in classes]
        if unknown:
            raise DataError(
                f"{path}: class(es) {', '.join(unknown)} are not among the model's classes ({', '.join(classes)})"
            )
        class_names = tuple(classes)
    else:
        class_names = tuple(found)
    if verdicts is not None:
        verdict_map = {c: verdicts[c] for c in class_names}
    else:
        verdict_map = resolve_verdicts(class_names, ok_classes)

    given = [s.split for s in samples]
    if all(g is not None for g in given):
        splits = [g for g in given if g is not None]
    elif any(g is not None for g in given):
        n = sum(1 for g in given if g is None)
        raise DataError(f"{path}: {n} row(s) have an empty split while others have one; fill all or none")
    else:
        splits = stratified_split([s.label for s in samples], fractions, split_seed)
    samples = [replace(s, verdict=verdict_map[s.label], split=sp) for s, sp in zip(samples, splits, strict=True)]
    return Dataset(
        source=path,
        classes=class_names,
        verdicts=verdict_map,
        samples=tuple(samples),
        ignored=tuple(ignored),
        warnings=tuple(contents.warnings),
        layout=_layout_line(reader.description, given=all(g is not None for g in given), rule=reader.split_rule),
    )


def _layout_line(description: str, *, given: bool, rule: str = "") -> str:
    splits = rule or ("splits from the data set" if given else "split by mieruka (stratified, seeded)")
    return f"{description}; {splits}"


def describe(dataset: Dataset) -> str:
    """A small table of images per class and split, for the console."""
    counts = dataset.counts()
    width = max(display_width(c) for c in dataset.classes) + 2
    lines = [f"{ljust('class', width)}verdict  train    val   test"]
    for c in dataset.classes:
        n = [counts[split][c] for split in SPLITS]
        lines.append(f"{ljust(c, width)}{dataset.verdicts[c]:<7}{n[0]:>7}{n[1]:>7}{n[2]:>7}")
    total = Counter(s.split for s in dataset.samples)
    lines.append(f"{'total':<{width}}{'':<7}{total['train']:>7}{total['val']:>7}{total['test']:>7}")
    return "\n".join(lines)
