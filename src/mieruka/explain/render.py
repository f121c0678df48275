"""Pictures of explanations: heatmap overlays and the paper's "input | visualization" panels.

Display scaling is a separate step (:mod:`mieruka.explain.scaling`). Colors follow the jet map: red where the
evidence is, blue where it is not.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from mieruka.fonts import cjk_font_path

__all__ = [
    "OUTLINE_RGB",
    "colorize",
    "encode_png",
    "grid",
    "overlay",
    "overlay_at",
    "panel",
    "picture_png",
    "resized",
    "thumbnail",
    "to_original_size",
]


def to_original_size(heat: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of one (h, w) map to the original image's (H, W)."""
    if tuple(heat.shape) == tuple(size_hw):  # bilinear at scale 1 is the identity
        return heat.float()
    return F.interpolate(heat[None, None].float(), size=size_hw, mode="bilinear", align_corners=False)[0, 0]


@functools.cache
def _jet_lut() -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["jet"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)  # (256, 3)


def colorize(heat: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] → (H, W, 3) uint8 jet colors (blue = 0, red = 1)."""
    idx = np.clip(np.asarray(heat, dtype=np.float32) * 255 + 0.5, 0, 255).astype(np.uint8)
    return _jet_lut()[idx]


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Alpha-blend the jet-colored ``heat`` (H, W) in [0, 1] over ``image`` (H, W, 3) uint8."""
    if image.shape[:2] != heat.shape:
        raise ValueError(f"heatmap {heat.shape} and image {image.shape[:2]} differ in size; resize the map first")
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colorize(heat).astype(np.float32)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def resized(image: np.ndarray, size_hw: tuple[int, int]) -> Image.Image:
    """An (H, W, 3) uint8 image as a Pillow image of ``size_hw`` (bilinear; untouched at its own size)."""
    size_wh = (size_hw[1], size_hw[0])
    base = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    return base if base.size == size_wh else base.resize(size_wh, Image.Resampling.BILINEAR)


def overlay_at(image: np.ndarray, heat: np.ndarray, size_hw: tuple[int, int], alpha: float = 0.5) -> np.ndarray:
    """Overlay a map of any size on an image, both resized to ``size_hw``, using Pillow's 8-bit C routines.

    The picture of :func:`overlay` after :func:`to_original_size`, to within a few grey levels (the map is
    quantized to the color map's 256 steps before it is resized, not after), in a fraction of the time: the
    service draws one per request.

    Args:
        image: (H, W, 3) uint8 image.
        heat: (h, w) map in [0, 1], e.g. at the model's input size.
        size_hw: Size of the picture.
        alpha: Heatmap opacity.
    """
    size_wh = (size_hw[1], size_hw[0])
    base = resized(image, size_hw)
    idx = np.clip(np.asarray(heat, dtype=np.float32) * 255 + 0.5, 0, 255).astype(np.uint8)
    levels = Image.fromarray(idx)
    if levels.size != size_wh:
        levels = levels.resize(size_wh, Image.Resampling.BILINEAR)  # jet's index grows with the value
    colors = levels.convert("P")
    colors.putpalette(_jet_lut().tobytes())
    return np.asarray(Image.blend(base, colors.convert("RGB"), alpha))


def picture_png(image: np.ndarray, heat: np.ndarray | None, max_side: int, alpha: float = 0.5) -> bytes:
    """The jet colours of ``heat`` blended at ``alpha`` on ``image`` (1: the heatmap alone; without a map: the image
    alone), at the image's size shrunk to ``max_side`` a side, as PNG bytes (the service's pictures)."""
    h, w = image.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    picture = np.asarray(resized(image, size)) if heat is None else overlay_at(image, heat, size, alpha)
    return encode_png(picture)


def encode_png(rgb: np.ndarray, level: int = 1) -> bytes:
    """(H, W, 3) uint8 → PNG bytes, quickly: every row uses the Sub filter and zlib compresses at ``level``.

    Pillow tries five filters on every row, which takes most of a web request's time for a 512 px overlay; one
    fixed filter is 2–3× faster for about a fifth more bytes. The deflate step uses ISA-L when the ``isal`` package
    is installed (it comes with the ``serve`` extra), else zlib. The output is a standard 8-bit RGB PNG.
    """
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"encode_png needs an (H, W, 3) image, got {rgb.shape}")
    h, w, _ = rgb.shape
    rows = rgb.reshape(h, 3 * w)
    raw = np.empty((h, 1 + 3 * w), dtype=np.uint8)
    raw[:, 0] = 1  # filter type Sub: each byte minus the same channel of the pixel to its left (mod 256)
    raw[:, 1:4] = rows[:, :3]
    np.subtract(rows[:, 3:], rows[:, :-3], out=raw[:, 4:])

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", _deflate(raw.tobytes(), level))
        + chunk(b"IEND", b"")
    )


@functools.cache
def _isal_zlib() -> Any:
    """Intel ISA-L's zlib-compatible deflate (the ``isal`` package, in the ``serve`` extra), or None."""
    try:
        from isal import isal_zlib
    except ImportError:
        return None
    return isal_zlib


def _deflate(data: bytes, level: int) -> bytes:
    isal = _isal_zlib()
    if isal is not None and level <= isal.ISAL_BEST_COMPRESSION:
        # The same zlib stream format, about 3× faster than zlib's fastest setting and no larger
        # (docs/benchmarks-history.md#service).
        return isal.compress(data, level)
    # Run-length matching only: after the Sub filter most bytes repeat their neighbor, and this strategy finds
    # those runs in about 60 % of the default strategy's time, with output no larger.
    c = zlib.compressobj(level, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    return c.compress(data) + c.flush()


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = cjk_font_path()
    return ImageFont.truetype(str(path), size) if path else ImageFont.load_default()


def _colorbar(height: int, width: int = 14) -> Image.Image:
    ramp = np.linspace(1, 0, height)[:, None].repeat(width, 1)
    return Image.fromarray(colorize(ramp))


OUTLINE_RGB = (255, 0, 255)
"""Colour of a defect region's outline on panels: magenta, which the jet map never shows."""


def _outline(region: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The boundary pixels (2 px wide) of a boolean region resized to ``size`` (width, height)."""
    from scipy import ndimage

    mask = np.asarray(Image.fromarray(region.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)) > 0
    inner = ndimage.binary_erosion(mask, iterations=2, border_value=0)
    return mask & ~inner


def panel(
    image: np.ndarray,
    heat: np.ndarray,
    caption: str,
    *,
    alpha: float = 0.5,
    height: int = 256,
    colorbar: bool = True,
    region: np.ndarray | None = None,
) -> Image.Image:
    """The paper's figure for one image: input on the left, overlay on the right, caption below.

    Args:
        image: (H, W, 3) uint8 original image.
        heat: (H, W) display-normalized map at the original size.
        caption: E.g. ``"true: crack / predicted: crack (p=0.97)"``; any Unicode.
        alpha: Heatmap opacity.
        height: Height of each half in pixels (aspect ratio kept).
        colorbar: Draw a jet scale bar (high at the top) on the right.
        region: (H, W) boolean defect region; its outline is drawn on both halves in :data:`OUTLINE_RGB`.
    """
    h, w = image.shape[:2]
    width = max(1, round(w * height / h))
    left = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
    right = Image.fromarray(overlay(image, heat, alpha)).resize((width, height), Image.Resampling.BILINEAR)
    if region is not None and region.any():
        edge = _outline(region, (width, height))
        halves = [np.array(half) for half in (left, right)]
        for half in halves:
            half[edge] = OUTLINE_RGB
        left, right = (Image.fromarray(half) for half in halves)
    font = _font(max(12, height // 14))
    pad = 6
    bar_w = 22 if colorbar else 0
    text_h = int(font.getbbox("Hgあ")[3]) + 2 * pad
    lines = _wrap(caption, font, 2 * width + pad - 0)
    out = Image.new("RGB", (2 * width + pad + bar_w, height + text_h * len(lines)), "white")
    out.paste(left, (0, 0))
    out.paste(right, (width + pad, 0))
    if colorbar:
        out.paste(_colorbar(height - 2 * pad), (2 * width + pad + 4, pad))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((pad, height + pad + i * text_h), line, fill="black", font=font)
    return out


def thumbnail(image: np.ndarray, caption: str, *, height: int = 160, min_width: int = 200) -> Image.Image:
    """An image scaled to ``height`` (aspect ratio kept) with its caption, wrapped, below it on white."""
    h, w = image.shape[:2]
    width = max(1, round(w * height / h))
    font = _font(max(11, height // 12))
    pad = 4
    text_h = int(font.getbbox("Hgあ")[3]) + pad
    lines = _wrap(caption, font, max(width, min_width))
    out = Image.new("RGB", (max(width, min_width), height + pad + text_h * len(lines)), "white")
    out.paste(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR), (0, 0))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((2, height + pad + i * text_h), line, fill="black", font=font)
    return out


def _wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> list[str]:
    lines: list[str] = []
    for part in text.split("\n"):
        current = ""
        for ch in part:
            if current and font.getlength(current + ch) > width - 8:
                lines.append(current)
                current = ch
            else:
                current += ch
        lines.append(current)
    return lines


def grid(panels: Sequence[Image.Image], cols: int = 4, gap: int = 8) -> Image.Image:
    """Lay panels out in rows of ``cols`` on a white sheet."""
    if not panels:
        raise ValueError("no panels to lay out")
    cols = max(1, min(cols, len(panels)))
    rows = -(-len(panels) // cols)
    cw = max(p.width for p in panels)
    ch = max(p.height for p in panels)
    sheet = Image.new("RGB", (cols * cw + (cols - 1) * gap, rows * ch + (rows - 1) * gap), "white")
    for i, p in enumerate(panels):
        sheet.paste(p, ((i % cols) * (cw + gap), (i // cols) * (ch + gap)))
    return sheet
