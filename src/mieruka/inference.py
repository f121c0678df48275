"""Batched inference over an :class:`~mieruka.data.store.ImageStore`, and device selection."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mieruka.data.store import ImageStore, normalize

__all__ = ["predict_logits", "select_device"]


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; ``cpu``/``cuda``/``cuda:N`` are taken as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


@torch.inference_mode()
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
    param = next(model.parameters())
    device = param.device
    outs = []
    for start in tqdm(range(0, len(indices), batch_size), desc=desc, disable=not progress, leave=False, unit="batch"):
        batch = store.get(indices[start : start + batch_size]).to(device, non_blocking=True)
        x = normalize(batch, mean, std).contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(x)
        outs.append(logits.float().cpu())
    if not outs:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(outs).numpy()
