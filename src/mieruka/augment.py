"""Batched, seeded augmentations that respect inspection images.

Parts are photographed under controlled light and pose, so only changes that keep a defect a defect are used:
flips, 90° rotations, a mild affine jitter (reflection padding, so no black borders appear that a model could read
as a mark) and brightness/contrast. Everything runs on whole batches on the model's device.

The brightness/contrast jitter is wide on purpose (contrast × 0.4–1.6, brightness ± 0.3): lines change lamps,
exposure and gain, and real sets mix exposures. Magnetic Tile's training split, shot at seven exposures, spans a
per-image contrast (standard deviation) of 0.5–1.65 × its median from the 5th to the 95th percentile, and its darkest
exposure sits at 0.37 ×. A narrower jitter (± 0.15) left the model blind to a chip on a dark test tile (docs/
benchmarks-history.md#exposure). Parts under one fixed exposure can narrow it in a ``--config`` file (``[augment]``
``contrast = 0.15``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["AugmentConfig", "augment_batch", "augment_with_masks"]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths; zero or False turns one off."""

    hflip: bool = True
    vflip: bool = True
    rot90: bool = True
    degrees: float = 10.0
    scale: float = 0.10
    translate: float = 0.05
    brightness: float = 0.3
    contrast: float = 0.6


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) * (hi - lo) + lo


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Augment a float batch with values in [0, 1].

    Args:
        x: (B, C, S, S) images scaled to [0, 1] (square, so 90° rotations keep the shape).
        cfg: Strengths.
        generator: CPU generator that draws every random number, so a seed fixes the result.

    Returns:
        A new (B, C, S, S) tensor; ``x`` is not modified.
    """
    return augment_with_masks(x, None, cfg, generator)[0]


def augment_with_masks(
    x: torch.Tensor, masks: torch.Tensor | None, cfg: AugmentConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`augment_batch`, with (B, 1, S, S) ``masks`` moved by the same flips, rotations and affine jitter as
    their images (the brightness/contrast jitter leaves them alone). The random draws are those of
    :func:`augment_batch`, so the images come out the same with or without masks."""
    b, c = x.shape[0], x.shape[1]
    dev = x.device
    out = x if masks is None else torch.cat([x, masks.to(dev, x.dtype)], 1)
    if cfg.hflip:
        flip = (torch.rand(b, generator=generator) < 0.5).to(dev)
        out = torch.where(flip.view(b, 1, 1, 1), out.flip(3), out)
    if cfg.vflip:
        flip = (torch.rand(b, generator=generator) < 0.5).to(dev)
        out = torch.where(flip.view(b, 1, 1, 1), out.flip(2), out)
    if cfg.rot90 and x.shape[2] == x.shape[3]:
        k = torch.randint(0, 4, (b,), generator=generator).to(dev)
        rotated = out.clone() if out is x else out
        for turns in (1, 2, 3):
            sel = k == turns
            if bool(sel.any()):
                rotated[sel] = torch.rot90(out[sel], turns, dims=(2, 3))
        out = rotated
    if cfg.degrees or cfg.scale or cfg.translate:
        angle = _uniform(b, -cfg.degrees, cfg.degrees, generator) * (math.pi / 180)
        scale = _uniform(b, 1 - cfg.scale, 1 + cfg.scale, generator)
        tx = _uniform(b, -cfg.translate, cfg.translate, generator) * 2
        ty = _uniform(b, -cfg.translate, cfg.translate, generator) * 2
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)  # (B, 2, 3)
        grid = F.affine_grid(theta.to(dev, out.dtype), list(out.shape), align_corners=False)
        out = F.grid_sample(out, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    moved = None if masks is None else out[:, c:]
    out = out[:, :c] if masks is not None else out
    if cfg.brightness or cfg.contrast:
        cf = _uniform(b, 1 - cfg.contrast, 1 + cfg.contrast, generator).to(dev).view(b, 1, 1, 1)
        br = _uniform(b, -cfg.brightness, cfg.brightness, generator).to(dev).view(b, 1, 1, 1)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = ((out - mean) * cf + mean + br).clamp(0, 1)
    return out, moved
