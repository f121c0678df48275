"""JPEG decoding on the GPU for batch inference (``torchvision.io.decode_jpeg(..., device="cuda")``).

On a GPU the model classifies thousands of images a second, more than a few CPU cores decode: the JPEGs are read as
bytes, decoded on the device, and resized there with the same antialiased bilinear filter as the CPU path
(:func:`mieruka.data.store.resize_image`). Everything the device decoder does not take — other formats, CMYK or
EXIF-rotated JPEGs, files it refuses — goes through the CPU path, so that errors read the same and no image is
lost. Decoders differ in their last bits (the inverse DCT and the chroma upsampling are not specified exactly):
pixels agree with the CPU path to a grey level or two, probabilities to within 1e-2 (0.008 at most over 8,192 images
on an H200, docs/benchmarks-history.md#gradcam-speed).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from mieruka.data.jpeg import read_ahead
from mieruka.data.store import BadFile, ImageStore

__all__ = ["DeviceStore", "device_decoder", "resize_on_device"]

Decoder = Callable[[list[torch.Tensor]], list[torch.Tensor]]
"""Encoded JPEGs (uint8 1-D CPU tensors) → decoded (3, H, W) uint8 images on the device, in order."""


def device_decoder(device: torch.device) -> Decoder | None:
    """torchvision's batched JPEG decoder on ``device`` (RGB out), or None when this torchvision cannot decode there
    (then the CPU path decodes)."""
    try:
        with warnings.catch_warnings():
            # torchvision 0.29 announces that TorchCodec will take over its image decoders; until then they are the
            # ones that decode on the GPU in every torchvision this package supports
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:  # torchvision without its image extension
        return None
    if device.type not in ("cuda", "cpu"):
        return None

    def decode(data: list[torch.Tensor]) -> list[torch.Tensor]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            out = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        return list(out) if isinstance(out, list) else [out]

    return decode


def resize_on_device(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (B, 3, H, W) → uint8 (B, 3, size, size): bilinear with antialiasing, rounded, as Pillow's ``BILINEAR``
    resize of the CPU path does it."""
    if images.shape[-2:] == (size, size):
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


class DeviceStore:
    """:class:`~mieruka.data.store.ImageStore`'s reading surface (``paths``, ``bad``, ``sizes``, ``get``) with the
    JPEGs decoded and resized on ``device``; every other file through the CPU path.

    Args:
        paths: Image files.
        size: Side of the square the images are resized to.
        device: Where the pixels are decoded and kept.
        bit_depth: For the files that take the CPU path (16-bit images are never JPEGs).
        decoder: The device decoder (default: :func:`device_decoder`).
        threads: Threads that read the files and their headers.
        encoded: The files already read by :func:`read_ahead` (those missing from it are read here).
    """

    def __init__(
        self,
        paths: Sequence[Path],
        size: int,
        device: torch.device,
        *,
        bit_depth: int | None = None,
        decoder: Decoder | None = None,
        threads: int = 8,
        encoded: dict[Path, bytes | None] | None = None,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.size = size
        self.bad: list[BadFile] = []
        self.sizes: list[tuple[int, int]] = [(0, 0)] * len(self.paths)
        self._pixels = torch.zeros((len(self.paths), 3, size, size), dtype=torch.uint8, device=device)
        decode = decoder or device_decoder(device)
        files: list[bytes | None] = [None] * len(self.paths)
        if decode is not None:
            known = encoded or {}
            missing = [p for p in self.paths if p not in known]
            known = {**known, **read_ahead(missing, threads)} if missing else known
            files = [known[p] for p in self.paths]
        on_device = [i for i, data in enumerate(files) if data is not None]
        decoded = self._decode(decode, on_device, files) if decode is not None and on_device else {}
        self.on_device = len(decoded)
        self._place(decoded)
        rest = [i for i in range(len(self.paths)) if i not in decoded]
        if rest:
            self._cpu(rest, bit_depth)

    def _decode(self, decode: Decoder, indices: list[int], encoded: list[bytes | None]) -> dict[int, torch.Tensor]:
        """Decoded images by index; a batch the decoder refuses is retried one image at a time, and the images it
        still refuses are left to the CPU path."""
        data = [torch.frombuffer(bytearray(encoded[i] or b""), dtype=torch.uint8) for i in indices]
        try:
            return dict(zip(indices, decode(data), strict=True))
        except (RuntimeError, ValueError):
            out = {}
            for i, d in zip(indices, data, strict=True):
                try:
                    out[i] = decode([d])[0]
                except (RuntimeError, ValueError):
                    continue
            return out

    def _place(self, decoded: dict[int, torch.Tensor]) -> None:
        """Resize the decoded images in groups of one original size and keep them."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in decoded.items():
            self.sizes[i] = (int(image.shape[1]), int(image.shape[2]))
            groups.setdefault(self.sizes[i], []).append(i)
        for members in groups.values():
            batch = torch.stack([decoded[i] for i in members])
            self._pixels[torch.tensor(members, device=self._pixels.device)] = resize_on_device(batch, self.size)

    def _cpu(self, indices: list[int], bit_depth: int | None) -> None:
        store = ImageStore([self.paths[i] for i in indices], self.size, progress=False, bit_depth=bit_depth)
        self.bad = store.bad
        broken = {b.path for b in store.bad}
        good = [j for j, i in enumerate(indices) if self.paths[i] not in broken]
        for j in good:
            self.sizes[indices[j]] = store.sizes[j]
        if good:
            where = torch.tensor([indices[j] for j in good], device=self._pixels.device)
            self._pixels[where] = store.get(good).to(self._pixels.device)

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, size, size) pixels of the given images, on the device."""
        idx = torch.tensor([int(i) for i in indices], dtype=torch.long, device=self._pixels.device)
        return self._pixels[idx]
