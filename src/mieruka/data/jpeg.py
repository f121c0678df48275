"""Reading JPEG files for the device decoder: their bytes, and what their headers say, without decoding.

Free of PyTorch and cheap to import: the header is read from the JPEG markers in plain Python, about a sixth of
Pillow's cost, so that the reader threads of ``predict``'s read-ahead hold Python's lock briefly while the main thread
launches the GPU's work.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

from mieruka.data.images import MAX_PIXELS

__all__ = ["JPEG_SUFFIXES", "jpeg_header", "read_ahead", "read_for_device"]

JPEG_SUFFIXES = frozenset({".jpg", ".jpeg"})

_EXIF_ORIENTATION = 0x0112

_SOF_DEVICE = frozenset({0xC0, 0xC1, 0xC2})
"""Start-of-frame markers of Huffman-coded JPEGs (baseline, extended, progressive) that the device decoder takes;
lossless, hierarchical and arithmetic-coded JPEGs go to the CPU path."""


def _exif_orientation(app1: bytes) -> int:
    """The orientation tag of an APP1 ``Exif`` segment's first IFD (1 when absent or unreadable)."""
    tiff = app1[6:]
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    order: Literal["little", "big"] = "little" if tiff[:2] == b"II" else "big"
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return 1
    for k in range(int.from_bytes(tiff[ifd : ifd + 2], order)):
        entry = tiff[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
        if len(entry) == 12 and int.from_bytes(entry[:2], order) == _EXIF_ORIENTATION:
            return int.from_bytes(entry[8:10], order)
    return 1


def jpeg_header(data: bytes) -> tuple[int, int, int, int, int] | None:
    """(start-of-frame marker, width, height, components, EXIF orientation) from a JPEG's markers, or None when the
    bytes are not a JPEG this parser understands. Reads the segments up to the first start of scan, in plain Python:
    a tenth of Pillow's cost, and it holds the interpreter for less time while other threads read."""
    if data[:2] != b"\xff\xd8":
        return None
    pos, sof, orientation = 2, None, 1
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        segment = data[pos + 4 : pos + 2 + length]
        if marker == 0xE1 and segment[:6] == b"Exif\x00\x00":
            orientation = _exif_orientation(segment)
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and len(segment) >= 6:
            height = int.from_bytes(segment[1:3], "big")
            width = int.from_bytes(segment[3:5], "big")
            sof = (marker, width, height, segment[5])
        elif marker == 0xDA:  # start of scan: the header is over
            return (*sof, orientation) if sof is not None else None
        pos += 2 + length
    return None


def header_ok(data: bytes) -> bool:
    """Whether the device decoder may take these bytes: a Huffman-coded JPEG in RGB (YCbCr) or grey, within the
    pixel limit, not rotated by EXIF."""
    header = jpeg_header(data)
    if header is None:
        return False
    marker, width, height, components, orientation = header
    return marker in _SOF_DEVICE and components in (1, 3) and 0 < width * height <= MAX_PIXELS and orientation == 1


def read_for_device(path: Path) -> bytes | None:
    """The file's bytes when the device decoder may take them, else None (the CPU path reads it)."""
    if path.suffix.lower() not in JPEG_SUFFIXES:
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return data if data and header_ok(data) else None


def read_ahead(paths: Sequence[Path], threads: int = 8) -> dict[Path, bytes | None]:
    """The bytes the device decoder will take of each file (None: the CPU path reads it), read in ``threads``
    threads: what :class:`DeviceStore` reads first, callable ahead of time for the next chunk."""
    with ThreadPoolExecutor(max(1, threads)) as pool:
        return dict(zip(paths, pool.map(read_for_device, paths), strict=True))
