"""The audit report's pictures: one input | heatmap panel per image and method, and its gallery thumbnail."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mieruka._io import atomic_write
from mieruka.data.images import read_image
from mieruka.explain.render import panel
from mieruka.explain.scaling import minmax_np

__all__ = ["THUMBNAIL_SIDE", "slug", "write_panel"]

THUMBNAIL_SIDE = 440
"""Longest side of a gallery thumbnail in pixels."""


def slug(spec: str) -> str:
    """A method spec as a folder name: letters, digits and ``-_.`` kept, everything else ``_``."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in spec)


def write_panel(
    report_dir: Path,
    stem: str,
    image_path: Path,
    heat: np.ndarray,
    caption: str,
    bit_depth: int | None = None,
    region: np.ndarray | None = None,
) -> tuple[str, str]:
    """Write a full-size panel (PNG) and a thumbnail (JPEG) of ``heat`` (at the image's size, min–max scaled here)
    over the image, with the outline of the defect ``region`` when known; returns their paths relative to the
    report folder (thumbnail, full)."""
    image = read_image(image_path, bit_depth=bit_depth)
    pic = panel(image, minmax_np(heat), caption, region=region)
    full = Path("panels") / f"{stem}.png"
    thumb = Path("thumbs") / f"{stem}.jpg"
    atomic_write(report_dir / full, lambda p: pic.save(p, format="PNG"))
    small = pic.convert("RGB")
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    atomic_write(report_dir / thumb, lambda p: small.save(p, format="JPEG", quality=85))
    return thumb.as_posix(), full.as_posix()
