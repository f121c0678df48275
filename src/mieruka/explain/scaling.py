"""Display scaling of heatmaps: the one home of min–max normalization.

Maps are computed unscaled (:mod:`mieruka.explain.engine`); scaling for display, for fusing layers and for the
service's heatmap is a separate, explicit step: ``per-image`` min–max (each map uses the full color range) or a
``fixed`` scale shared by all images (colors comparable between parts).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["NORMALIZATIONS", "minmax", "minmax_np", "normalize_for_display"]

NORMALIZATIONS = ("per-image", "fixed")


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Each (H, W) map of ``maps`` (…, H, W) scaled to [0, 1] by its own minimum and maximum; a constant map
    becomes 0."""
    flat = maps.flatten(-2)
    lo, hi = flat.min(-1, keepdim=True).values, flat.max(-1, keepdim=True).values
    return ((flat - lo) / torch.where(hi > lo, hi - lo, torch.ones_like(hi))).view_as(maps)


def minmax_np(heat: np.ndarray) -> np.ndarray:
    """:func:`minmax` of one NumPy map (same formula, same dtype as the input)."""
    return minmax(torch.from_numpy(np.ascontiguousarray(heat))).numpy()


def normalize_for_display(maps: torch.Tensor, mode: str = "per-image", vmax: float | None = None) -> torch.Tensor:
    """Scale maps (…, H, W) to [0, 1].

    Args:
        maps: Non-negative heatmaps.
        mode: ``per-image`` (:func:`minmax` of each map) or ``fixed`` (divide by ``vmax``, shared across maps).
        vmax: The shared scale for ``fixed`` (default: the largest value among ``maps``).
    """
    if mode == "per-image":
        return minmax(maps)
    if mode == "fixed":
        scale = float(maps.max()) if vmax is None else float(vmax)
        return (maps / scale).clamp(0, 1) if scale > 0 else torch.zeros_like(maps)
    raise ValueError(f"--normalize {mode!r}: choose per-image or fixed")
