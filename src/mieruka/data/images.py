"""Reading images and masks the way inspection cameras write them.

Every reader returns plain NumPy arrays at the image's *original* size (after EXIF orientation): ``uint8`` RGB of
shape (H, W, 3) for images and ``bool`` (H, W) for masks. Any problem raises :class:`DataError` naming the file.
"""

from __future__ import annotations

import io
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mieruka.errors import DataError

__all__ = [
    "BIT_DEPTHS",
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "ImageTooLarge",
    "NotAnImage",
    "bits_per_channel",
    "decode_image",
    "image_size",
    "read_image",
    "read_mask",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
"""File endings treated as images when a folder tree is scanned."""

BIT_DEPTHS = (8, 10, 12, 14, 16)
"""Significant bits a camera may store in a 16-bit image (``--bit-depth``); None means the container's 16 bits."""

MAX_PIXELS = 64_000_000
"""Images with more pixels than this are refused as possible decompression bombs (64 Mpx ≈ 8000 × 8000)."""


class NotAnImage(DataError):
    """The bytes are not an image format that can be read (the service answers 415)."""


class ImageTooLarge(DataError):
    """More pixels than allowed: refused as a possible decompression bomb (the service answers 413)."""


def _open(path: Path, max_pixels: int) -> Image.Image:
    """Open, size-check and fully decode ``path``; all failures become :class:`DataError`."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes)")
    return _decode(path, str(path), max_pixels)


def _decode(source: Path | io.BytesIO, path: str, max_pixels: int) -> Image.Image:
    """Size-check and fully decode an image from a file or bytes; ``path`` names it in errors."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(source)
            width, height = img.size
            if width * height > max_pixels:
                raise ImageTooLarge(
                    f"{path}: {width}×{height} pixels exceeds the limit of {max_pixels:,} "
                    "(refused as a possible decompression bomb)"
                )
            low = _low_byte_rawmode(img)
            img.load()
            oriented: Image.Image = ImageOps.exif_transpose(img)
            if low is not None:  # 16 bits per colour channel: Pillow kept the high bytes; decode the low ones too
                oriented.info[_LOW_BYTES] = _decode_low_bytes(source, low)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own guard fired first (its limit is larger than ours): one limit, one message
        raise ImageTooLarge(
            f"{path}: more pixels than the limit of {max_pixels:,} (refused as a possible decompression bomb)"
        ) from None
    except UnidentifiedImageError:
        raise NotAnImage(f"{path}: not an image file that can be read (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: the image cannot be decoded ({exc}); the file may be truncated or corrupt") from None
    return oriented


_WIDE_COLOUR = re.compile(r"(RGBA|RGBX|RGB);16([BLN])$")
_LOW_BYTES = "mieruka.low_bytes"
"""Where :func:`_decode` keeps the low bytes of a 16-bit colour image (Pillow's colour modes hold 8 bits)."""


def _rawmode(img: Image.Image) -> str:
    """The pixel layout of an opened, not yet loaded image's data (its first tile's raw mode)."""
    tiles: list[Any] = getattr(img, "tile", None) or []  # ImageFile's, before loading
    if not tiles:
        return ""
    args = tiles[0].args
    return args if isinstance(args, str) else str(args[0]) if isinstance(args, tuple) and args else ""


def bits_per_channel(img: Image.Image) -> int:
    """Bits per channel as stored in the file (read before the image is loaded): 16 for 16-bit gray *and* for
    48-/64-bit colour, which Pillow opens as 8-bit RGB."""
    if img.mode.startswith("I;16") or img.mode in ("I", "F") or _WIDE_COLOUR.match(_rawmode(img)):
        return 16
    return 1 if img.mode == "1" else 8


def _low_byte_rawmode(img: Image.Image) -> str | None:
    """For a 16-bit colour image that Pillow decodes itself (PNG, uncompressed TIFF), the raw mode that reads the
    low byte of every sample instead of the high one: the same data read with the other byte order."""
    match = _WIDE_COLOUR.match(_rawmode(img))
    if match is None or getattr(img, "tile", [])[0].codec_name not in ("zip", "raw"):
        return None
    order = {"B": "L", "L": "B", "N": "B" if sys.byteorder == "little" else "L"}[match.group(2)]
    return f"{match.group(1)};16{order}"


def _decode_low_bytes(source: Path | io.BytesIO, rawmode: str) -> np.ndarray:
    if isinstance(source, io.BytesIO):
        source.seek(0)
    with Image.open(source) as again:
        tiles: list[Any] = getattr(again, "tile", [])
        again.tile = [t._replace(args=_with_rawmode(t.args, rawmode)) for t in tiles]
        again.load()
        return np.asarray(ImageOps.exif_transpose(again)).copy()


def _with_rawmode(args: Any, rawmode: str) -> Any:
    return rawmode if isinstance(args, str) else (rawmode, *tuple(args)[1:])


def _wide_to_rgb(img: Image.Image, bit_depth: int | None) -> np.ndarray:
    """A 16-bit colour image (high bytes in ``img``, low bytes in its info) to (H, W, 3) uint8 by the 16-bit rule;
    transparency composited onto white at full depth."""
    wide = np.asarray(img).astype(np.uint16) * 256 + img.info[_LOW_BYTES]  # (H, W, C)
    rgb = wide[..., :3].astype(np.float64)
    if img.mode == "RGBA":
        alpha = wide[..., 3:4] / 65535.0
        rgb = rgb * alpha + float(2 ** (bit_depth or 16) - 1) * (1 - alpha)
    return _to_uint8_gray(rgb.round().astype(np.uint16), bit_depth)


def _to_uint8_gray(arr: np.ndarray, bit_depth: int | None = None) -> np.ndarray:
    """Scale a 16-bit / 32-bit integer or float image (any channels) to 0–255 by one fixed factor, the same for
    every image of a data set: integers by 2^bit_depth − 1 (default: the 16-bit container's 65535, so a 12-bit
    camera stored in 16 bits needs ``bit_depth=12``); floats by 1 (values in 0–1) unless ``bit_depth`` is given.
    Values above the range are clipped."""
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        top = 1.0 if bit_depth is None else float(2**bit_depth - 1)
        scaled = np.nan_to_num(arr.astype(np.float64)) / top * 255.0
    else:
        top = float(2 ** (bit_depth or 16) - 1)
        scaled = arr.astype(np.float64) * (255.0 / top)
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def _to_rgb(img: Image.Image, bit_depth: int | None = None) -> np.ndarray:
    """Any PIL mode to (H, W, 3) uint8; transparency is composited onto white; high bit depths scaled by
    :func:`_to_uint8_gray`."""
    if _LOW_BYTES in img.info:
        return _wide_to_rgb(img, bit_depth)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        gray = _to_uint8_gray(np.asarray(img), bit_depth)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, RGBA-composited: PIL knows the conversions
    return np.asarray(img, dtype=np.uint8).copy()


def read_image(
    path: str | os.PathLike[str], *, max_pixels: int = MAX_PIXELS, bit_depth: int | None = None
) -> np.ndarray:
    """Read an image file as RGB.

    Handles JPEG, PNG, BMP, TIFF and WebP, 8- and 16-bit, grayscale (replicated to three channels for RGB
    backbones), palette and alpha images (composited onto white), and honours the EXIF orientation tag.

    Args:
        path: The image file.
        max_pixels: Refuse images larger than this (decompression-bomb guard).
        bit_depth: Significant bits of 16-bit images (:data:`BIT_DEPTHS`; default: the container's 16).

    Returns:
        A (H, W, 3) ``uint8`` array at the original size, EXIF orientation applied.

    Raises:
        DataError: The file is missing, empty, not an image, truncated, corrupt or too large.
    """
    path = Path(path)
    return _to_rgb(_open(path, max_pixels), bit_depth)


def decode_image(
    data: bytes, name: str = "upload", *, max_pixels: int = MAX_PIXELS, bit_depth: int | None = None
) -> np.ndarray:
    """:func:`read_image` for bytes already in memory (an upload); ``name`` is used in error messages."""
    if not data:
        raise NotAnImage(f"{name}: the file is empty (0 bytes)")
    return _to_rgb(_decode(io.BytesIO(data), name, max_pixels), bit_depth)


def read_mask(
    path: str | os.PathLike[str],
    image_path: str | os.PathLike[str] | None = None,
    image_shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Read a ground-truth mask: any non-zero pixel is defect.

    Args:
        path: The mask image (any format :func:`read_image` reads; color masks count every non-black pixel).
        image_path: The image the mask belongs to, named in the error when the sizes differ.
        image_shape: (H, W) the mask must have, if known.

    Returns:
        A (H, W) boolean array.
    """
    path = Path(path)
    img = _open(path, MAX_PIXELS)
    if img.mode in ("RGBA", "LA", "PA", "P"):
        img = img.convert("RGBA")
        arr = np.asarray(img)
        mask = (arr[..., :3].max(axis=2) > 0) & (arr[..., 3] > 0)
    else:
        arr = np.asarray(img)
        mask = arr.max(axis=2) > 0 if arr.ndim == 3 else arr > 0
    if image_shape is not None and tuple(mask.shape) != tuple(image_shape):
        h, w = image_shape
        raise DataError(
            f"mask {path} is {mask.shape[1]}×{mask.shape[0]} pixels but its image {image_path or '?'} is {w}×{h}; "
            "a mask must have exactly the size of its image"
        )
    return np.ascontiguousarray(mask)


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) of an image after EXIF orientation, reading only its header."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(0x0112, 1)
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"{path}: cannot read the image header ({exc})") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)
