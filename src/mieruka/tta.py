"""Test-time augmentation: the views of a batch whose class probabilities are averaged.

The one home of the choices (the ``--tta`` options of ``train``, ``evaluate`` and ``predict`` and the model's stored
choice) and of the views themselves, used by PyTorch inference, ONNX Runtime and the service alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["TRAIN_TTA_CHOICES", "TTA_CHOICES", "tta_views"]

TTA_CHOICES = ("none", "flip", "d4")
"""No extra view, a horizontal flip (2 views), or the 8 flips and 90° turns of the square."""

TRAIN_TTA_CHOICES = ("auto", *TTA_CHOICES)
"""What ``train --tta`` accepts: a fixed choice, or ``auto`` (picked on the validation split)."""


def tta_views(x: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """The views of a (B, C, S, S) batch that ``tta`` averages over (the identity first)."""
    if tta == "none":
        return [x]
    if tta == "flip":
        return [x, x.flip(3)]
    if tta == "d4":
        turns = [x.rot90(k, (2, 3)) for k in range(4)]
        return turns + [t.flip(3) for t in turns]
    raise ValueError(f"--tta {tta!r}: choose one of {', '.join(TTA_CHOICES)}")
