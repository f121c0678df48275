"""The caller's model left exactly as it was: module modes, parameter gradients and ``requires_grad`` flags."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["eval_mode", "params_kept", "preserved"]


def _all_modules(root: nn.Module) -> list[nn.Module]:
    """``root`` and every module below it, breadth first (a shared module may appear twice): what
    ``model.modules()`` yields, at half its cost, which on a GPU is paid before the first kernel starts."""
    out = [root]
    i = 0
    while i < len(out):
        out.extend(child for child in out[i]._modules.values() if child is not None)
        i += 1
    return out


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every module in eval mode for the block; each module's own mode put back after it, whatever happens."""
    modes = [(m, m.training) for m in _all_modules(model)]
    try:
        for m, training in modes:
            if training:
                m.training = False
        yield
    finally:
        for m, training in modes:
            if m.training is not training:
                m.training = training


@contextlib.contextmanager
def params_kept(model: nn.Module) -> Iterator[None]:
    """Every parameter's ``.grad`` and ``requires_grad`` put back exactly after the block, whatever happens."""
    params = [(p, p.grad, p.requires_grad) for p in model.parameters()]
    try:
        yield
    finally:
        for p, grad, requires in params:
            if p.grad is not grad:
                p.grad = grad
            if p.requires_grad is not requires:
                p.requires_grad_(requires)


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the block, then restore every module's mode and every parameter's ``.grad``
    and ``requires_grad`` exactly, whatever happens inside."""
    with eval_mode(model), params_kept(model):
        yield
