"""What the runners of exported files (ONNX Runtime, OpenVINO) share, and the digest that seals them.

An exported file is sealed like a checkpoint (:mod:`mieruka.checkpoint`): its metadata carries ``sha256``, the
SHA-256 of the file's own bytes (an IR's ``.xml`` then its ``.bin``) with that value written as 64 zeros. The digest
so covers the weights, the graph and the description (classes, verdicts, threshold …) at once, and any edit — a
verdict set to OK, a weight changed, the key removed — makes :func:`check_seal` refuse the file on load.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mieruka.errors import CheckpointError

__all__ = [
    "BLANK_DIGEST",
    "DIGEST_KEY",
    "ExportedRuntime",
    "check_seal",
    "onnx_metadata_of",
    "seal",
    "sealed_onnx_bytes",
]

DIGEST_KEY = "sha256"
"""The metadata key of an exported file's digest."""

BLANK_DIGEST = "0" * 64
"""What the digest's own place holds while the digest is computed."""


class ExportedRuntime:
    """What the runners of exported files share: their outputs say whether there is a heatmap, and they are
    callable on a normalized batch as :func:`mieruka.inference.predict_probs` takes a model."""

    outputs: tuple[str, ...]

    @property
    def has_heatmap(self) -> bool:
        return "heatmap" in self.outputs

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Probabilities for a normalized batch."""
        return torch.from_numpy(np.array(self.run(x.detach().cpu().numpy())[0]))


def onnx_metadata_of(path: Path) -> dict[str, str]:
    """The key/value metadata of an ONNX file (its weights are not read)."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def seal(data: bytes, *more: bytes) -> tuple[bytes, str]:
    """``data`` (which holds the digest's place, :data:`BLANK_DIGEST`, exactly once) with the digest of ``data`` and
    ``more`` written into that place, and the digest."""
    if data.count(BLANK_DIGEST.encode()) != 1:
        raise ValueError("the file to seal must hold the digest's place exactly once")
    digest = hashlib.sha256(b"".join((data, *more))).hexdigest()
    return data.replace(BLANK_DIGEST.encode(), digest.encode()), digest


def check_seal(path: Path, digest: str | None, data: bytes, *more: bytes) -> None:
    """Refuse ``path`` unless ``digest`` (its metadata's ``sha256``) is the digest of its bytes ``data`` (and
    ``more``) with that value blanked."""
    if not digest:
        raise CheckpointError(
            f"{path}: no digest of its weights and description (exported before files were sealed, or the key was "
            "removed); export the model again"
        )
    blanked = data.replace(digest.encode(), BLANK_DIGEST.encode()) if data.count(digest.encode()) == 1 else b""
    if not blanked or hashlib.sha256(b"".join((blanked, *more))).hexdigest() != digest:
        raise CheckpointError(
            f"{path}: the weights or the model description do not match their recorded digest; the file was altered"
        )


def sealed_onnx_bytes(proto: Any, metadata: dict[str, str]) -> bytes:
    """``proto`` serialized with ``metadata`` (replacing its own) and the digest under :data:`DIGEST_KEY`."""
    del proto.metadata_props[:]
    for key, value in {**metadata, DIGEST_KEY: BLANK_DIGEST}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return seal(proto.SerializeToString())[0]
