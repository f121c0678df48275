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
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "COLUMN",
    "FEATURES",
    "HEATMAP_FEATURES",
    "HeatmapSummary",
    "ImageFeatures",
    "heatmap_summary",
    "image_features",
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


def heatmap_summary(heat: np.ndarray) -> HeatmapSummary:
    """Where an (h, w) heatmap peaks, how much of it is above half its maximum, and in how many pieces.

    Computed on the map as it is, with "half its maximum" taken between its minimum and maximum (the same as on
    the min–max scaled map, without scaling it: the service runs this for every answer)."""
    step = max(1, -(-max(heat.shape) // HEATMAP_SIDE))
    h = np.asarray(heat[::step, ::step], dtype=np.float32)
    peak = int(h.argmax())
    lo, hi = float(h.min()), float(h.flat[peak])
    rows, cols = h.shape
    if not hi > lo:  # a flat map: no peak, nothing above half
        return HeatmapSummary(peak_x=0.5 / cols, peak_y=0.5 / rows, spread=0.0, fragments=0)
    above = h >= np.float32(lo + 0.5 * (hi - lo))
    _, fragments = ndimage.label(above, structure=_EIGHT_NEIGHBOURS)
    y, x = divmod(peak, cols)
    return HeatmapSummary(
        peak_x=(x + 0.5) / cols,
        peak_y=(y + 0.5) / rows,
        spread=np.count_nonzero(above) / above.size,
        fragments=int(fragments),
    )


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
