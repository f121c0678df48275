"""A layer's output as a map: what every CAM method takes, whatever the architecture lays its features out as."""

from __future__ import annotations

import math

import torch
from torch import nn

from mieruka.errors import MierukaError

__all__ = ["as_map"]


def as_map(model: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """A layer's output as a (B, K, h, w) map: channels-last feature maps (Swin's ``NHWC``) are permuted, and token
    sequences (ViT, DeiT: (B, prefix + h·w, K)) lose their class / register tokens and are laid out on the patch
    grid. Convolutional maps pass through unchanged."""
    if t.dim() == 4 and getattr(model, "output_fmt", "NCHW") == "NHWC":
        return t.permute(0, 3, 1, 2)
    if t.dim() != 3:
        return t
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    tokens = t[:, prefix:]
    n = tokens.shape[1]
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    h, w = (int(grid[0]), int(grid[1])) if grid else (math.isqrt(n), math.isqrt(n))
    if h * w != n:
        raise MierukaError(
            f"{type(model).__name__}: {n} tokens do not fill a {h}×{w} patch grid, so they cannot be drawn as a map"
        )
    return tokens.transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)
