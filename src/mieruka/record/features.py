"""What the record keeps of an image and its heatmap besides the decision: the features drift is watched on.

Image features are computed on the grey-level image scaled to [0, 1], sampled every k-th pixel so that at most
:data:`IMAGE_SIDE` pixels remain a side (they cost the service well under a millisecond): ``brightness`` (mean),
``contrast`` (standard deviation) and ``sharpness`` (variance of the Laplacian, the usual focus measure, at that
sampling). Heatmap features are computed on the map min–max scaled to [0, 1], sampled to at most
:data:`HEATMAP_SIDE` a side: ``peak_x`` / ``peak_y`` (where its maximum is, as fractions of the width and height),
``spread`` (share of the map above half its maximum) and ``fragments`` (connected regions above half its maximum,
8-connected). The reference distributions are computed by the same functions, so the sampling cancels out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import numpy as np
from scipy import ndimage

__all__ = [
    "COLUMN",
    "FEATURES",
    "HEATMAP_FEATURES",
    "HeatmapSummary",
    "ImageFeatures",
    "heatmap_summaries",
    "heatmap_summary",
    "image_features",
    "in_stacks",
    "reference_from_rows",
    "tail_probability",
    "unusual_heatmap",
    "values_of",
]

FEATURES = ("confidence", "brightness", "contrast", "sharpness", "peak_x", "peak_y", "spread")
"""The numeric features ``monitor`` compares with their reference (``confidence``: the top class's probability)."""

HEATMAP_FEATURES = ("peak_x", "peak_y", "spread")
"""The heatmap's features: a map whose values fall in their reference's far tails looks where the model rarely
looked (``review --records --far``)."""

COLUMN = {"confidence": "probability"}
"""A feature's column in the record, where its name differs."""

IMAGE_SIDE = 128
HEATMAP_SIDE = 64

T = TypeVar("T")


@dataclass(frozen=True)
class ImageFeatures:
    brightness: float
    contrast: float
    sharpness: float

    def as_dict(self) -> dict[str, float]:
        return {"brightness": self.brightness, "contrast": self.contrast, "sharpness": self.sharpness}


@dataclass(frozen=True)
class HeatmapSummary:
    peak_x: float
    peak_y: float
    spread: float
    fragments: int

    def as_dict(self) -> dict[str, float | int]:
        return {"peak_x": self.peak_x, "peak_y": self.peak_y, "spread": self.spread, "fragments": self.fragments}


def image_features(image: np.ndarray) -> ImageFeatures:
    """Brightness, contrast and sharpness of an (H, W) or (H, W, C) image (uint8, or uint16 scaled by its maximum)."""
    step = max(1, -(-max(image.shape[:2]) // IMAGE_SIDE))
    x = image[::step, ::step]
    scale = 255.0 if image.dtype == np.uint8 else float(np.iinfo(image.dtype).max) if image.dtype.kind == "u" else 1.0
    if x.ndim == 3:  # the channels' mean, as a matrix product (a quarter of the time of mean(axis=2) here)
        grey = x.astype(np.float32) @ np.full(x.shape[2], 1.0 / (x.shape[2] * scale), dtype=np.float32)
    else:
        grey = x.astype(np.float32) / np.float32(scale)
    sharpness = 0.0
    if min(grey.shape) >= 3:  # the Laplacian inside the border
        lap = grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4 * grey[1:-1, 1:-1]
        sharpness = float(lap.var(dtype=np.float64))
    return ImageFeatures(float(grey.mean(dtype=np.float64)), float(grey.std(dtype=np.float64)), sharpness)


_EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)
_EIGHT_NEIGHBOURS_IN_EACH = np.zeros((3, 3, 3), dtype=bool)
_EIGHT_NEIGHBOURS_IN_EACH[1] = True  # connected within a map, never across the stack


def heatmap_summary(heat: np.ndarray) -> HeatmapSummary:
    """Where an (h, w) heatmap peaks, how much of it is above half its maximum, and in how many pieces.

    Computed on the map as it is, with "half its maximum" taken between its minimum and maximum (the same as on
    the min–max scaled map, without scaling it). A flat map has no piece and nothing above half; its peak is
    the first cell."""
    return heatmap_summaries(heat[None])[0]


def heatmap_summaries(heats: np.ndarray) -> list[HeatmapSummary]:
    """:func:`heatmap_summary` of a stack of N maps of one shape, (N, h, w), computed together (the service's
    writer thread does this for the answers it writes at once: a third of the time per map)."""
    step = max(1, -(-max(heats.shape[1:]) // HEATMAP_SIDE))
    h = np.asarray(heats[:, ::step, ::step], dtype=np.float32)
    n, rows, cols = h.shape
    flat = h.reshape(n, -1)
    peak = flat.argmax(axis=1)
    hi, lo = flat[np.arange(n), peak].astype(np.float64), flat.min(axis=1).astype(np.float64)
    above = h >= (lo + 0.5 * (hi - lo)).astype(np.float32)[:, None, None]
    above[~(hi > lo)] = False  # a flat map: nothing above half
    if n == 1:
        fragments = np.array([ndimage.label(above[0], structure=_EIGHT_NEIGHBOURS)[1]])
    else:  # labels are numbered in scan order, so a map's pieces follow the previous maps': count by the running max
        labels, _ = ndimage.label(above, structure=_EIGHT_NEIGHBOURS_IN_EACH)
        fragments = np.diff(np.maximum.accumulate(labels.reshape(n, -1).max(axis=1)), prepend=0)
    spread = np.count_nonzero(above.reshape(n, -1), axis=1) / (rows * cols)
    y, x = np.divmod(peak, cols)
    return [
        HeatmapSummary(
            peak_x=(int(x[i]) + 0.5) / cols, peak_y=(int(y[i]) + 0.5) / rows, spread=float(spread[i]), fragments=int(f)
        )
        for i, f in enumerate(fragments)
    ]


def in_stacks(compute: Callable[[np.ndarray], list[T]], arrays: Sequence[np.ndarray]) -> list[T]:
    """``compute`` (:func:`heatmap_summaries`) of each array, the arrays of one shape and type stacked and computed
    together; in the arrays' order."""
    groups: dict[tuple[tuple[int, ...], np.dtype[Any]], list[int]] = {}
    for i, a in enumerate(arrays):
        groups.setdefault((a.shape, a.dtype), []).append(i)
    out: list[T | None] = [None] * len(arrays)
    for members in groups.values():
        for i, value in zip(members, compute(np.stack([arrays[i] for i in members])), strict=True):
            out[i] = value
    return cast("list[T]", out)


def values_of(rows: list[dict[str, Any]], feature: str) -> list[float]:
    """A feature's values in decisions (rows of the record), where they have one."""
    column = COLUMN.get(feature, feature)
    return [float(r[column]) for r in rows if r.get(column) is not None]


def reference_from_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A reference (the shape training stores) from decisions: per feature its values, the class mix, the NG rate."""
    n = len(rows)
    classes = Counter(r["class"] for r in rows)
    return {
        "n": n,
        "features": {f: values_of(rows, f) for f in FEATURES},
        "classes": {c: k / n for c, k in classes.items()} if n else {},
        "ng_rate": sum(r["verdict"] == "NG" for r in rows) / n if n else 0.0,
    }


def tail_probability(value: float, reference: list[float] | np.ndarray) -> float:
    """Two-sided empirical tail probability of ``value`` among ``reference``: 2 · (min(#≤, #≥) + 1) / (n + 1), at
    most 1 (a value beyond the whole reference of n gets 2 / (n + 1), the least it can get)."""
    ref = np.asarray(reference, dtype=np.float64)
    below, above = int((ref <= value).sum()), int((ref >= value).sum())
    return min(1.0, 2 * (min(below, above) + 1) / (len(ref) + 1))


def unusual_heatmap(row: dict[str, Any], reference: dict[str, Any]) -> tuple[str, float]:
    """The heatmap feature of a decision most unusual against ``reference`` (a stored reference's shape), with its
    tail probability; (``""``, 1.0) when the decision has no heatmap or the reference no values."""
    found = ("", 1.0)
    for f in HEATMAP_FEATURES:
        values = reference.get("features", {}).get(f) or []
        if row.get(f) is None or len(values) < 2:
            continue
        p = tail_probability(float(row[f]), values)
        if p < found[1]:
            found = (f, p)
    return found
