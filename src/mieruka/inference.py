"""Batched inference over an :class:`~mieruka.data.store.ImageStore`, and device selection."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mieruka.data.store import ImageStore, normalize

__all__ = ["TTA_CHOICES", "map_batches", "predict_logits", "predict_probs", "select_device", "tta_views"]

TTA_CHOICES = ("none", "flip", "d4")
"""Test-time augmentation: no extra view, a horizontal flip (2 views), or the 8 flips and 90° turns of the square."""


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; ``cpu``/``cuda``/``cuda:N`` are taken as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


@torch.inference_mode()
def map_batches(
    fn: Callable[[torch.Tensor], torch.Tensor],
    store: ImageStore,
    indices: Sequence[int],
    *,
    device: torch.device,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "predicting",
) -> np.ndarray:
    """``fn`` applied to the normalized images ``indices`` of ``store``, batch by batch on ``device``: (N, …) float32.

    The shared inference loop: channels-last input, bfloat16 autocast on CUDA, a progress bar.
    """
    outs = []
    for start in tqdm(range(0, len(indices), batch_size), desc=desc, disable=not progress, leave=False, unit="batch"):
        batch = store.get(indices[start : start + batch_size]).to(device, non_blocking=True)
        x = normalize(batch, mean, std).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = fn(x)
        outs.append(out.float().cpu())
    if not outs:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(outs).numpy()


def predict_logits(
    model: nn.Module,
    store: ImageStore,
    indices: Sequence[int],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "predicting",
) -> np.ndarray:
    """Logits (N, K) for the images ``indices`` of ``store``, in that order. The model must be in eval mode."""
    device = next(model.parameters()).device
    return map_batches(
        model, store, indices, device=device, mean=mean, std=std, batch_size=batch_size, progress=progress, desc=desc
    )


def tta_views(x: torch.Tensor, tta: str) -> list[torch.Tensor]:
    """The views of a (B, C, S, S) batch that ``tta`` averages over (the identity first)."""
    if tta == "none":
        return [x]
    if tta == "flip":
        return [x, x.flip(3)]
    if tta == "d4":
        turns = [torch.rot90(x, k, dims=(2, 3)) for k in range(4)]
        return turns + [t.flip(3) for t in turns]
    raise ValueError(f"--tta {tta!r}: choose one of {', '.join(TTA_CHOICES)}")


@torch.inference_mode()
def predict_probs(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    store: ImageStore,
    indices: Sequence[int],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    tta: str = "none",
    batch_size: int = 64,
    progress: bool = False,
    desc: str = "predicting",
) -> np.ndarray:
    """Class probabilities (N, K), the softmax averaged over the ``tta`` views.

    ``model`` is a PyTorch classifier in eval mode, or any callable from a normalized CPU batch to probabilities
    (an :class:`~mieruka.runtime.OnnxModel`): both get the same preprocessing and the same views.
    """
    probs_of: Callable[[torch.Tensor], torch.Tensor]
    if isinstance(model, nn.Module):
        device = next(model.parameters()).device
        module = model

        def module_probs(v: torch.Tensor) -> torch.Tensor:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                return module(v.contiguous(memory_format=torch.channels_last)).float().softmax(1)

        probs_of = module_probs
    else:
        device, probs_of = torch.device("cpu"), model
    outs = []
    for start in tqdm(range(0, len(indices), batch_size), desc=desc, disable=not progress, leave=False, unit="batch"):
        batch = store.get(indices[start : start + batch_size]).to(device, non_blocking=True)
        x = normalize(batch, mean, std)
        probs = [probs_of(v) for v in tta_views(x, tta)]
        outs.append(torch.stack(probs).mean(0).cpu())  # (B, K), averaged over the views
    if not outs:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(outs).numpy()
