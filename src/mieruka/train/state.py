"""The optimizer's schedule and state: parameter groups, the learning-rate curve, class-balanced draws, and the
optimizer tensors a ``--resume`` file keeps."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from mieruka.config import TrainConfig

__all__ = [
    "lr_factor",
    "optimizer_tensors",
    "param_groups",
    "restore_optimizer",
    "rounded",
    "sampling_weights",
    "tta_candidates",
]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 1 % of the peak."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def sampling_weights(labels: np.ndarray, num_classes: int, balance: str) -> torch.Tensor:
    """Per-image draw weights: class shares ∝ n_c (none/loss), √n_c (sqrt) or 1 (sampler)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    power = {"sampler": 1.0, "sqrt": 0.5}.get(balance, 0.0)
    return torch.tensor(counts[labels] ** -power, dtype=torch.double)


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    state = opt.state_dict()
    tensors = {}
    for idx, slots in state["state"].items():
        for key, value in slots.items():
            tensors[f"_opt.{idx}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, json.dumps(state["param_groups"])


def restore_optimizer(opt: torch.optim.Optimizer, extra: dict[str, torch.Tensor], groups_json: str) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in extra.items():
        if name.startswith("_opt."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": json.loads(groups_json)})


def tta_candidates(cfg: TrainConfig) -> list[str]:
    """Test-time views worth trying: only those the training augmentation taught the model to see."""
    if cfg.tta != "auto":
        return [cfg.tta]
    aug = cfg.augment
    out = ["none"]
    if aug.hflip:
        out.append("flip")
    if aug.hflip and aug.vflip and aug.rot90:
        out.append("d4")
    return out


def rounded(row: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in row.items()}
