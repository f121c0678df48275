"""Does a heatmap fall on the defect? Localization metrics of one map against one ground-truth mask.

All metrics take the map at the *original* image resolution and use its positive part m⁺ = max(m, 0); the mask is
boolean (True = defect). Each function documents its formula and its chance level, so every summary can show what
a uniform or random map would score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    "DEFAULT_MAP_THRESHOLD",
    "POINTING_TOLERANCE",
    "LocalizationScores",
    "average_precision",
    "energy_inside",
    "fragmentation",
    "iou_dice",
    "iou_dice_at_area",
    "localization_scores",
    "pointing_game",
    "relevance_rank_accuracy",
]

POINTING_TOLERANCE = 15
"""Pixels the map's maximum may lie outside the region and still count as a hit (as in Zhang et al. 2018)."""

DEFAULT_MAP_THRESHOLD = 0.5
"""Fraction of the map's maximum above which a pixel counts as "attended" for IoU, Dice and fragmentation."""


def _pos(heat: np.ndarray) -> np.ndarray:
    return np.maximum(np.asarray(heat, dtype=np.float64), 0.0)


def energy_inside(heat: np.ndarray, mask: np.ndarray) -> float:
    """Σ_{mask} m⁺ / Σ m⁺ — the energy-based pointing game (Wang et al., Score-CAM, 2020), equal to relevance mass
    accuracy (Arras et al., 2022). A uniform map scores the region's area fraction. 0 for an all-zero map."""
    m = _pos(heat)
    total = m.sum()
    return float(m[mask].sum() / total) if total > 0 else 0.0


def pointing_game(heat: np.ndarray, mask: np.ndarray, tolerance: int = POINTING_TOLERANCE) -> bool:
    """Is the map's maximum within ``tolerance`` pixels (Euclidean) of the region? (Zhang et al., ECCV 2016/IJCV
    2018). Ties are broken by the first maximum in row-major order."""
    if not mask.any():
        return False
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    if mask[y, x]:
        return True
    if tolerance <= 0:
        return False
    dist = ndimage.distance_transform_edt(~mask)
    return bool(dist[y, x] <= tolerance)


def relevance_rank_accuracy(heat: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's top-|R| pixels that lie in the region R (Arras et al., 2022). Chance: |R| / N."""
    k = int(mask.sum())
    if k == 0:
        return 0.0
    flat = np.asarray(heat, dtype=np.float64).ravel()
    top = np.argpartition(-flat, k - 1)[:k]
    return float(mask.ravel()[top].mean())


def average_precision(heat: np.ndarray, mask: np.ndarray) -> float:
    """Threshold-free: the average precision of ranking pixels by the map against the mask,
    AP = Σ_n (R_n − R_{n−1}) P_n over the descending ranking (ties share one rank). Chance: |R| / N."""
    y = mask.ravel()
    pos = int(y.sum())
    if pos == 0:
        return 0.0
    s = np.asarray(heat, dtype=np.float64).ravel()
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # group tied scores: precision and recall are taken at the end of each tie group
    ends = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s_sorted) - 1]
    tp = np.cumsum(y_sorted)[ends]
    precision = tp / (ends + 1)
    recall = tp / pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _attended(heat: np.ndarray, threshold: float) -> np.ndarray:
    m = _pos(heat)
    top = m.max()
    return m >= threshold * top if top > 0 else np.zeros(m.shape, dtype=bool)


def iou_dice(heat: np.ndarray, mask: np.ndarray, threshold: float = DEFAULT_MAP_THRESHOLD) -> tuple[float, float]:
    """IoU and Dice between the region and the pixels at or above ``threshold`` × the map's maximum."""
    a = _attended(heat, threshold)
    inter = float((a & mask).sum())
    union = float((a | mask).sum())
    total = float(a.sum() + mask.sum())
    return (inter / union if union else 0.0, 2 * inter / total if total else 0.0)


def iou_dice_at_area(heat: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Threshold-free IoU and Dice: the region R against the map's top-|R| pixels T (ties broken by position).

    A sharp map and a smooth one are compared on the same footing, whatever share of their maximum they keep above
    a threshold. With |T| = |R|, Dice = |T ∩ R| / |R| equals the relevance rank accuracy, and IoU = Dice / (2 − Dice).
    Chance (a uniform map): Dice = |R| / N."""
    k = int(mask.sum())
    if k == 0:
        return 0.0, 0.0
    flat = np.asarray(heat, dtype=np.float64).ravel()
    top = np.argpartition(-flat, k - 1)[:k]
    inter = float(mask.ravel()[top].sum())
    return inter / (2 * k - inter), inter / k


def fragmentation(heat: np.ndarray, threshold: float = DEFAULT_MAP_THRESHOLD) -> tuple[int, float]:
    """(number of 8-connected components above ``threshold`` × max, share of m⁺ mass above the threshold that lies
    in the largest component). One compact blob: (1, 1.0); attention broken into pieces: many, low share."""
    a = _attended(heat, threshold)
    labels, n = ndimage.label(a, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return 0, 0.0
    m = _pos(heat)
    mass = ndimage.sum_labels(m, labels, index=np.arange(1, n + 1))
    total = float(mass.sum())
    return int(n), float(mass.max() / total) if total > 0 else 0.0


@dataclass(frozen=True)
class LocalizationScores:
    """Every localization metric of one map against one mask."""

    energy_inside: float
    area_fraction: float
    lift: float
    pointing_hit: bool
    relevance_rank: float
    average_precision: float
    iou: float
    dice: float
    attended_fraction: float
    iou_at_area: float
    dice_at_area: float
    components: int
    largest_component_share: float


def localization_scores(
    heat: np.ndarray, mask: np.ndarray, *, tolerance: int = POINTING_TOLERANCE, threshold: float = DEFAULT_MAP_THRESHOLD
) -> LocalizationScores:
    """All metrics for one (H, W) map and (H, W) boolean mask of the same size."""
    if heat.shape != mask.shape:
        raise ValueError(f"map {heat.shape} and mask {mask.shape} differ in size")
    area = float(mask.mean())
    e = energy_inside(heat, mask)
    iou, dice = iou_dice(heat, mask, threshold)
    iou_area, dice_area = iou_dice_at_area(heat, mask)
    n, share = fragmentation(heat, threshold)
    return LocalizationScores(
        energy_inside=e,
        area_fraction=area,
        lift=e / area if area > 0 else 0.0,
        pointing_hit=pointing_game(heat, mask, tolerance),
        relevance_rank=relevance_rank_accuracy(heat, mask),
        average_precision=average_precision(heat, mask),
        iou=iou,
        dice=dice,
        attended_fraction=float(_attended(heat, threshold).mean()),
        iou_at_area=iou_area,
        dice_at_area=dice_area,
        components=n,
        largest_component_share=share,
    )
