"""Manifest CSV (UTF-8, header row): ``image,label[,mask][,split]``, paths relative to the CSV's folder, ``split``
one of ``train``, ``val``, ``test``. ``mask`` is a mask image or a box annotation file: ``.xml`` (Pascal VOC),
``.txt`` (YOLO) or ``.json`` (COCO, the entry whose file name is the image's); see
:mod:`mieruka.data.annotations`."""

from __future__ import annotations

import os
from pathlib import Path

from mieruka.data.csvfile import read_csv_rows
from mieruka.data.sample import NG, Sample, nfc
from mieruka.data.sources.base import SourceContents
from mieruka.data.splits import SPLITS
from mieruka.errors import DataError

__all__ = ["ManifestSource"]


class ManifestSource:
    """A ``.csv`` file listing images, labels and optionally masks and splits."""

    name = "manifest"
    description = "a manifest .csv file with the columns image,label[,mask][,split]"
    split_rule = ""

    def detect(self, path: Path) -> bool:
        return path.is_file() and path.suffix.lower() == ".csv"

    def read(self, path: Path) -> SourceContents:
        rows = _rows(path)
        if not rows:
            raise DataError(f"{path}: the manifest lists no images")
        samples, warnings = _deduplicated(path, rows)
        return SourceContents(samples, [], warnings)


def _deduplicated(path: Path, rows: list[tuple[int, Sample]]) -> tuple[list[Sample], list[str]]:
    """One sample per image file: exact repeats are dropped with a warning; the same file with another label,
    split or mask is an error naming both lines."""
    first: dict[str, tuple[int, Sample]] = {}
    samples: list[Sample] = []
    repeats: list[str] = []
    for line, sample in rows:
        key = os.path.normcase(os.path.normpath(sample.image))
        if key not in first:
            first[key] = (line, sample)
            samples.append(sample)
            continue
        line0, kept = first[key]
        if (kept.label, kept.split, kept.mask) != (sample.label, sample.split, sample.mask):
            raise DataError(
                f"{path}, lines {line0} and {line}: {sample.image} is listed twice with different entries "
                f"({_entry(kept)} and {_entry(sample)}); an image has one label, one split and one mask"
            )
        repeats.append(f"{line} (as {line0})")
    warnings = []
    if repeats:
        shown = ", ".join(repeats[:10]) + (f" and {len(repeats) - 10} more" if len(repeats) > 10 else "")
        warnings.append(f"{path}: {len(repeats)} row(s) repeat an earlier row exactly and were dropped: lines {shown}")
    return samples, warnings


def _entry(sample: Sample) -> str:
    parts = [sample.label, sample.split or "no split"]
    if sample.mask is not None:
        parts.append(f"mask {sample.mask}")
    return ", ".join(parts)


def _rows(path: Path) -> list[tuple[int, Sample]]:
    base = path.parent
    _, rows = read_csv_rows(
        path, required=("image", "label"), what="manifest", hint="the header must name image,label[,mask][,split]"
    )
    samples = []
    for line, row in rows:
        if not row.get("image") or not row.get("label"):
            raise DataError(f"{path}, line {line}: empty image or label")
        split = row.get("split") or None
        if split is not None and split not in SPLITS:
            raise DataError(f"{path}, line {line}: split {split!r} is not one of {', '.join(SPLITS)}")
        mask = row.get("mask") or None
        sample = Sample(
            image=base / row["image"],
            label=nfc(row["label"]),
            verdict=NG,
            mask=None if mask is None else base / mask,
            split=split,
        )
        samples.append((line, sample))
    return samples
