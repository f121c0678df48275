"""Decode, check and cache images as fixed-size uint8 tensors for training and inference.

Building a :class:`ImageStore` opens every image once, so unreadable files are found *before* training starts,
and keeps the decoded, resized pixels in memory when they fit (else in a file on disk) so that epochs never wait
for JPEG decoding.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from mieruka.data.diskcache import DiskPixels, open_cache
from mieruka.data.images import read_image
from mieruka.errors import DataError

__all__ = [
    "CACHE_CHOICES",
    "BadFile",
    "ImageStore",
    "PixelSource",
    "normalize",
    "require_readable",
    "resize_image",
    "scan_images",
]


@dataclass(frozen=True)
class BadFile:
    """An image that could not be used, and why."""

    path: Path
    reason: str


class PixelSource(Protocol):
    """What inference reads pixels from: an :class:`ImageStore`, or a
    :class:`~mieruka.data.device_decode.DeviceStore` that decoded them on the GPU."""

    bad: list[BadFile]

    def get(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor: ...


def require_readable(bad: Sequence[BadFile]) -> None:
    """Raise :class:`DataError` listing (up to 20 of) the unreadable files, if any."""
    if bad:
        listing = "\n".join(f"  {b.path}: {b.reason}" for b in bad[:20])
        more = f"\n  … and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise DataError(f"{len(bad)} image(s) cannot be read:\n{listing}{more}")


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 → (3, size, size) uint8, bilinear with antialiasing (the shared preprocessing step)."""
    if image.shape[:2] == (size, size):  # already the input size: no resampling, no round trip through Pillow
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))
    pil = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(pil, dtype=np.uint8).transpose(2, 0, 1))


def normalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(B, 3, S, S) pixels → float32 model input ``(x - mean) / std`` per channel.

    ``batch`` is uint8 (0–255, scaled to 0–1 first) or already a float tensor in 0–1 (e.g. after augmentation).
    """
    dtype = torch.float32 if batch.dtype == torch.uint8 else batch.dtype
    m = torch.tensor(mean, dtype=dtype, device=batch.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=dtype, device=batch.device).view(1, -1, 1, 1)
    if batch.dtype == torch.uint8:  # one new tensor, then in place: the same arithmetic, a third of the allocations
        return batch.float().div_(255.0).sub_(m).div_(s)
    return (batch - m) / s


def _load_one(path: Path, size: int, bit_depth: int | None) -> tuple[np.ndarray | None, tuple[int, int], str | None]:
    try:
        image = read_image(path, bit_depth=bit_depth)
    except DataError as exc:
        return None, (0, 0), str(exc)
    return resize_image(image, size), (image.shape[0], image.shape[1]), None


def _workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def scan_images(
    paths: Sequence[Path],
    size: int,
    *,
    keep: bool,
    desc: str = "reading images",
    progress: bool = True,
    bit_depth: int | None = None,
    sink: Callable[[int, np.ndarray], None] | None = None,
) -> tuple[np.ndarray | None, list[tuple[int, int]], list[BadFile]]:
    """Decode every image once; return the resized pixels (if ``keep``), original (H, W) sizes and bad files.
    ``sink`` also gets each image's (index, resized pixels) as it is decoded."""
    pixels = np.zeros((len(paths), 3, size, size), dtype=np.uint8) if keep else None
    sizes: list[tuple[int, int]] = [(0, 0)] * len(paths)
    bad: list[BadFile] = []
    with ThreadPoolExecutor(_workers()) as pool:
        results = pool.map(lambda p: _load_one(p, size, bit_depth), paths)
        for i, (arr, hw, err) in enumerate(
            tqdm(results, total=len(paths), desc=desc, disable=not progress, unit="img", leave=False)
        ):
            if err is not None:
                bad.append(BadFile(paths[i], err.removeprefix(f"{paths[i]}: ")))
                continue
            sizes[i] = hw
            if pixels is not None and arr is not None:
                pixels[i] = arr
            if sink is not None and arr is not None:
                sink(i, arr)
    return pixels, sizes, bad


CACHE_CHOICES = ("auto", "ram", "disk")


class ImageStore:
    """Fixed-size uint8 pixels for a list of image files, decoded once and kept in RAM or in a file on disk.

    Args:
        paths: Image files.
        size: Side of the square the images are resized to.
        cache_bytes: The RAM budget of ``cache="auto"``.
        progress: Show a progress bar while reading.
        bit_depth: Significant bits of 16-bit images (the model's; default: the container's 16).
        cache: ``ram`` keeps the pixels in memory; ``disk`` in the on-disk cache (:mod:`mieruka.data.diskcache`,
            built once, reused while the files are unchanged); ``auto`` (default) in RAM when they need at most
            ``cache_bytes``, else on disk.

    Attributes:
        bad: Files that could not be read (empty when all are fine); the caller decides to stop or skip.
        sizes: Original (H, W) of every image, (0, 0) for bad files.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        size: int,
        *,
        cache_bytes: int = 4 << 30,
        progress: bool = True,
        bit_depth: int | None = None,
        cache: str = "auto",
    ):
        if cache not in CACHE_CHOICES:
            raise ValueError(f"--cache {cache!r}: choose {', '.join(CACHE_CHOICES)}")
        self.paths = list(paths)
        self.size = size
        self.bit_depth = bit_depth
        need = len(self.paths) * 3 * size * size
        self.cache = cache if cache != "auto" else ("ram" if need <= cache_bytes else "disk")
        self._disk: DiskPixels | None = None
        self._pixels: torch.Tensor | None = None
        self.reused = False
        if self.cache == "ram":
            pixels, self.sizes, self.bad = scan_images(
                self.paths, size, keep=True, progress=progress, bit_depth=bit_depth
            )
            assert pixels is not None
            self._pixels = torch.from_numpy(pixels)
            return

        def scan(sink: Callable[[int, np.ndarray], None]) -> tuple[list[tuple[int, int]], list[tuple[str, str]]]:
            _, sizes, bad = scan_images(
                self.paths, size, keep=False, progress=progress, bit_depth=bit_depth, sink=sink,
                desc="reading images into the disk cache",
            )  # fmt: skip
            return sizes, [(str(b.path), b.reason) for b in bad]

        self._disk, self.sizes, bad, self.reused = open_cache(self.paths, size, bit_depth, scan)
        self.bad = [BadFile(Path(p), reason) for p, reason in bad]

    @property
    def location(self) -> Path | None:
        """The cache file of a disk cache (None in RAM)."""
        return None if self._disk is None else self._disk.path

    def __len__(self) -> int:
        return len(self.paths)

    def require_readable(self) -> ImageStore:
        """Raise :class:`DataError` listing (up to 20 of) the unreadable files, if any; return the store."""
        require_readable(self.bad)
        return self

    def get(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, size, size) pixels of the given images."""
        idx = [int(i) for i in indices]
        if self._pixels is not None:
            return self._pixels[torch.tensor(idx, dtype=torch.long)]
        assert self._disk is not None
        return torch.from_numpy(self._disk.get(idx))
