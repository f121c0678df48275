"""Data set sources: a class-per-folder tree or a manifest CSV, with verdicts, masks and splits.

Folder tree::

    ROOT/<class>/**/<image>           images, any depth below their class folder
    ROOT/masks/<class>/**/<stem>.*    optional masks mirroring the images (same relative path, any image ending),
                                      or box annotations: <stem>.xml (Pascal VOC) or <stem>.txt (YOLO)

Manifest CSV (UTF-8, header row): ``image,label[,mask][,split]``, paths relative to the CSV's folder, ``split`` one of
``train``, ``val``, ``test``. ``mask`` is a mask image or a box annotation file: ``.xml`` (Pascal VOC), ``.txt``
(YOLO) or ``.json`` (COCO, the entry whose file name is the image's); see :mod:`mieruka.data.annotations`.
"""

from __future__ import annotations

import csv
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mieruka._io import write_csv
from mieruka.data.images import IMAGE_EXTENSIONS
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

OK = "OK"
NG = "NG"
SPLITS = ("train", "val", "test")
MASKS_DIR = "masks"

_OK_NAME = re.compile(
    r"^\s*(ok|good|free|normal|pass|passed|clean|no[\s_-]?defects?|defect[\s_-]?free|non[\s_-]?defective|"
    r"正常|良品|合格|ＯＫ)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Sample:
    """One image and what is known about it.

    Attributes:
        image: Path of the image file.
        label: Class name.
        verdict: ``"OK"`` (the part passes) or ``"NG"`` (it is rejected), from the class.
        mask: Path of the ground-truth defect mask (non-zero = defect), if any.
        split: ``"train"``, ``"val"``, ``"test"``, or None before splitting.
    """

    image: Path
    label: str
    verdict: str
    mask: Path | None = None
    split: str | None = None


@dataclass(frozen=True)
class Dataset:
    """An ordered, split collection of samples.

    Attributes:
        source: The folder or manifest it was read from.
        classes: Class names in label-index order (sorted unless a model fixes another order).
        verdicts: Class name → ``"OK"``/``"NG"``.
        samples: Every sample, with its split.
        ignored: Files in class folders skipped because their ending is not an image ending.
    """

    source: Path
    classes: tuple[str, ...]
    verdicts: Mapping[str, str]
    samples: tuple[Sample, ...]
    ignored: tuple[Path, ...] = ()

    def split(self, name: str) -> tuple[Sample, ...]:
        """Samples of one split (``train``, ``val``, ``test``) or ``all``."""
        if name == "all":
            return self.samples
        if name not in SPLITS:
            raise DataError(f"--split {name!r}: choose one of {', '.join((*SPLITS, 'all'))}")
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

    def save_split(self, path: str | os.PathLike[str]) -> Path:
        """Write the samples as a manifest CSV (absolute paths) that reproduces this exact split."""
        rows = [(str(s.image), s.label, "" if s.mask is None else str(s.mask), s.split or "") for s in self.samples]
        return write_csv(path, ("image", "label", "mask", "split"), rows)


def default_verdicts(classes: Iterable[str]) -> dict[str, str]:
    """The documented default: a class is OK when its name starts with ok, good, free, normal, pass, clean,
    no defect, defect-free, 正常, 良品 or 合格 (case-insensitive); every other class is NG."""
    return {c: OK if _OK_NAME.match(unicodedata.normalize("NFKC", c)) else NG for c in classes}


def resolve_verdicts(classes: Sequence[str], ok_classes: Sequence[str] | None = None) -> dict[str, str]:
    """Verdict map from ``--ok`` classes (exactly those pass) or, without them, :func:`default_verdicts`."""
    if not ok_classes:
        return default_verdicts(classes)
    unknown = [c for c in ok_classes if c not in classes]
    if unknown:
        raise DataError(f"--ok {', '.join(unknown)}: no such class; the classes are: {', '.join(classes)}")
    return {c: OK if c in ok_classes else NG for c in classes}


def _nfc(text: str) -> str:
    # macOS file systems hand out decomposed Unicode (NFD); class names compare in composed form.
    return unicodedata.normalize("NFC", text)


def _find_mask(mask_root: Path, rel: Path) -> Path | None:
    stem_dir = mask_root / rel.parent
    if not stem_dir.is_dir():
        return None
    for ext in (".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".xml", ".txt"):
        candidate = stem_dir / (rel.stem + ext)
        if candidate.is_file():
            return candidate
    return None


def _from_folder(root: Path) -> tuple[list[Sample], list[Path]]:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != MASKS_DIR)
    if not class_dirs:
        raise DataError(f"{root}: no class folders found (expected ROOT/<class>/<image> or a manifest CSV)")
    mask_root = root / MASKS_DIR
    samples: list[Sample] = []
    ignored: list[Path] = []
    for class_dir in class_dirs:
        label = _nfc(class_dir.name)
        for dirpath, dirnames, filenames in os.walk(class_dir):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                path = Path(dirpath) / name
                if path.suffix.lower() not in IMAGE_EXTENSIONS:
                    ignored.append(path)
                    continue
                mask = _find_mask(mask_root, path.relative_to(root)) if mask_root.is_dir() else None
                samples.append(Sample(image=path, label=label, verdict=NG, mask=mask))
    return samples, ignored


def _from_manifest(csv_path: Path) -> list[Sample]:
    base = csv_path.parent
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in (reader.fieldnames or [])]
            missing = [f for f in ("image", "label") if f not in fields]
            if missing:
                raise DataError(
                    f"{csv_path}: the header must name the columns image,label[,mask][,split]; "
                    f"missing {', '.join(missing)} (found: {', '.join(fields) or 'no header'})"
                )
            samples = []
            for line, raw in enumerate(reader, start=2):
                row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
                if not row["image"] or not row["label"]:
                    raise DataError(f"{csv_path}, line {line}: empty image or label")
                split = row.get("split") or None
                if split is not None and split not in SPLITS:
                    raise DataError(f"{csv_path}, line {line}: split {split!r} is not one of {', '.join(SPLITS)}")
                mask = row.get("mask") or None
                samples.append(
                    Sample(
                        image=base / row["image"],
                        label=_nfc(row["label"]),
                        verdict=NG,
                        mask=None if mask is None else base / mask,
                        split=split,
                    )
                )
    except UnicodeDecodeError as exc:
        raise DataError(f"{csv_path}: not UTF-8 text ({exc})") from None
    except csv.Error as exc:
        raise DataError(f"{csv_path}: malformed CSV ({exc})") from None
    if not samples:
        raise DataError(f"{csv_path}: the manifest lists no images")
    return samples


def stratified_split(
    labels: Sequence[str], fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), seed: int = 0
) -> list[str]:
    """Assign ``train``/``val``/``test`` per class in the given proportions, reproducibly for a seed.

    Every class gets at least one image in each split with a non-zero fraction, so a class needs at least as many
    images as there are such splits.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1.0):
        raise DataError(f"split fractions {fractions} must be three non-negative numbers that sum to 1")
    out = [""] * len(labels)
    needed = sum(1 for f in fractions if f > 0)
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    for label in sorted(by_class):
        idx = by_class[label]
        if len(idx) < needed:
            raise DataError(
                f"class {label!r} has {len(idx)} image(s); a train/val/test split needs at least {needed} per class "
                "(add images, or give the split yourself in a manifest CSV's split column)"
            )
        rng = np.random.default_rng([seed, *label.encode("utf-8")])
        order = [idx[j] for j in rng.permutation(len(idx))]
        n = len(order)
        n_val = max(1, round(fractions[1] * n)) if fractions[1] > 0 else 0
        n_test = max(1, round(fractions[2] * n)) if fractions[2] > 0 else 0
        n_train = n - n_val - n_test
        if fractions[0] > 0 and n_train < 1:
            n_train, n_val = 1, n_val - 1 if n_val > 1 else n_val
            n_test = n - n_train - n_val
        names = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
        for i, name in zip(order, names, strict=True):
            out[i] = name
    return out


def load_dataset(
    source: str | os.PathLike[str],
    *,
    ok_classes: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    verdicts: Mapping[str, str] | None = None,
    split_seed: int = 0,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
) -> Dataset:
    """Index a data set from a class-per-folder tree or a manifest CSV (no image is decoded here).

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
    if not path.exists():
        raise DataError(f"{path}: no such folder or manifest file")
    ignored: list[Path] = []
    if path.is_dir():
        samples, ignored = _from_folder(path)
    elif path.suffix.lower() == ".csv":
        samples = _from_manifest(path)
    else:
        raise DataError(f"{path}: expected a class-per-folder tree or a manifest .csv file")
    if not samples:
        raise DataError(f"{path}: no images found (image endings: {', '.join(sorted(IMAGE_EXTENSIONS))})")

    found = sorted({s.label for s in samples})
    if classes is not None:
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
        source=path, classes=class_names, verdicts=verdict_map, samples=tuple(samples), ignored=tuple(ignored)
    )


def describe(dataset: Dataset) -> str:
    """A small table of images per class and split, for the console."""
    counts = dataset.counts()
    width = max(len(c) for c in dataset.classes) + 2
    lines = [f"{'class':<{width}}verdict  train    val   test"]
    for c in dataset.classes:
        lines.append(
            f"{c:<{width}}{dataset.verdicts[c]:<7}{counts['train'][c]:>7}{counts['val'][c]:>7}{counts['test'][c]:>7}"
        )
    total = Counter(s.split for s in dataset.samples)
    lines.append(f"{'total':<{width}}{'':<7}{total['train']:>7}{total['val']:>7}{total['test']:>7}")
    return "\n".join(lines)
