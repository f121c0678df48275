"""The on-disk image cache of training: every image decoded and resized once, kept as uint8 in one file.

A training run that does not fit its RAM budget (``--cache disk``, or ``auto`` over ``--cache-gb``) decodes its
images once into ``<cache>/<key>.npy``: a plain ``(N, 3, S, S)`` uint8 NumPy array, so it can be memory-mapped by any
tool (``np.load(path, mmap_mode="r")``). Training reads it image by image with positioned reads, so the process
holds only the batch in memory (the operating system's page cache keeps the file warm where RAM allows).

The key covers every file's path, size and modification time, the input size and the bit depth: ``--resume`` and
later runs of the same data and size reuse the file, and a changed file makes a new one. A ``<key>.json`` beside it,
written last, holds the original image sizes and the unreadable files, and marks the cache complete. The folder is
``$MIERUKA_CACHE_DIR``, else ``$XDG_CACHE_HOME/mieruka/images``, else ``~/.cache/mieruka/images``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CACHE_VERSION", "DiskPixels", "cache_dir", "cache_key", "open_cache"]

CACHE_VERSION = 1


def cache_dir() -> Path:
    """Where image caches are kept (see the module docstring)."""
    if os.environ.get("MIERUKA_CACHE_DIR"):
        return Path(os.environ["MIERUKA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mieruka" / "images"


def cache_key(paths: Sequence[Path], size: int, bit_depth: int | None) -> str:
    """A digest of the files (path, size, modification time), the input size and the bit depth."""
    h = hashlib.sha256(f"mieruka-image-cache {CACHE_VERSION} {size} {bit_depth}\n".encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{os.path.abspath(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:  # a missing file is an unreadable image; its name still counts
            h.update(f"{os.path.abspath(p)}\0missing\n".encode())
    return h.hexdigest()[:32]


class DiskPixels:
    """Read access to a cache file: ``get(indices)`` → uint8 (B, 3, S, S)."""

    def __init__(self, path: Path, count: int, size: int, offset: int):
        self.path, self.count, self.size, self.offset = path, count, size, offset
        self.stride = 3 * size * size
        self._fd: int | None = None

    def __getstate__(self) -> dict[str, Any]:  # a copy in another process opens its own descriptor
        return {**self.__dict__, "_fd": None}

    def _descriptor(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def get(self, indices: Sequence[int]) -> np.ndarray:
        fd = self._descriptor()
        out = np.empty((len(indices), 3, self.size, self.size), dtype=np.uint8)
        for n, i in enumerate(indices):
            data = os.pread(fd, self.stride, self.offset + int(i) * self.stride)
            if len(data) != self.stride:
                raise OSError(f"{self.path}: the image cache is truncated (image {i}); delete it to rebuild it")
            out[n] = np.frombuffer(data, dtype=np.uint8).reshape(3, self.size, self.size)
        return out

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()


Scan = Callable[[Callable[[int, np.ndarray], None]], tuple[list[tuple[int, int]], list[tuple[str, str]]]]
"""Decode every image, handing (index, pixels) to the callback; return the original sizes and (path, reason) of
the unreadable ones."""


def open_cache(
    paths: Sequence[Path], size: int, bit_depth: int | None, scan: Scan
) -> tuple[DiskPixels, list[tuple[int, int]], list[tuple[str, str]], bool]:
    """The cache of ``paths`` (built with ``scan`` when missing): pixels, sizes, bad files, and whether it was
    reused."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    key = cache_key(paths, size, bit_depth)
    data, meta = folder / f"{key}.npy", folder / f"{key}.json"
    header = {"descr": "|u1", "fortran_order": False, "shape": (len(paths), 3, size, size)}
    if meta.is_file() and data.is_file():
        info = json.loads(meta.read_text(encoding="utf-8"))
        if info.get("version") == CACHE_VERSION and info.get("count") == len(paths):
            pixels = DiskPixels(data, len(paths), size, int(info["offset"]))
            return pixels, [(h, w) for h, w in info["sizes"]], [(p, r) for p, r in info["bad"]], True
    partial = data.with_suffix(f".npy.{os.getpid()}.partial")
    with open(partial, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        offset = fh.tell()
        fh.truncate(offset + len(paths) * 3 * size * size)
        fd = fh.fileno()

        def write(i: int, pixels: np.ndarray) -> None:
            os.pwrite(fd, np.ascontiguousarray(pixels, dtype=np.uint8).tobytes(), offset + i * pixels.size)

        sizes, bad = scan(write)
        fh.flush()
        os.fsync(fd)
    os.replace(partial, data)
    record = {"version": CACHE_VERSION, "count": len(paths), "offset": offset, "sizes": sizes, "bad": bad}
    meta_partial = meta.with_suffix(f".json.{os.getpid()}.partial")
    meta_partial.write_text(json.dumps(record), encoding="utf-8")
    os.replace(meta_partial, meta)
    return DiskPixels(data, len(paths), size, offset), sizes, bad, False
