"""Frozen stages: the stem and first feature stages keep their ImageNet weights and BatchNorm statistics.

On a CPU the frozen first modules are a fixed function of each image, so :class:`FrozenPrefix` runs them without
autograd in slices, and the trainable rest on the whole batch (docs/benchmarks-history.md#frozen-slices).
"""

from __future__ import annotations

import torch
from torch import nn

from mieruka.errors import MierukaError
from mieruka.inference import cpu_chunked

__all__ = ["FrozenPrefix", "freeze_stages", "frozen_batchnorms"]


def freeze_stages(model: nn.Module, stages: int) -> list[str]:
    """Freeze every parameter before the ``stages``-th feature stage of timm's ``feature_info``.

    That is the stem and the first ``stages`` stages: the high-resolution layers whose backward pass costs the most
    and whose ImageNet edge detectors need no retraining. Returns the frozen parameter names.
    """
    if stages <= 0:
        return []
    modules = [i["module"] for i in getattr(model, "feature_info", None) or []]
    if len(modules) < 2:
        raise MierukaError("--freeze-stages: this architecture publishes no feature stages; use --freeze-stages 0")
    boundary = modules[min(stages, len(modules) - 1)] + "."
    names = [n for n, _ in model.named_parameters()]
    cut = next((i for i, n in enumerate(names) if n.startswith(boundary)), len(names))
    frozen = set(names[:cut])
    for name, param in model.named_parameters():
        param.requires_grad_(name not in frozen)
    return names[:cut]


def frozen_batchnorms(model: nn.Module, frozen: set[str]) -> list[nn.Module]:
    """BatchNorm modules all of whose parameters are frozen: their statistics stay fixed too (kept in eval mode)."""
    out: list[nn.Module] = []
    for name, module in model.named_modules():
        params = [f"{name}.{p}" if name else p for p, _ in module.named_parameters()]
        if params and all(p in frozen for p in params) and isinstance(module, nn.modules.batchnorm._BatchNorm):
            out.append(module)
    return out


class FrozenPrefix:
    """The frozen modules a timm classifier runs first, and the rest of it, as two functions.

    With frozen stages and frozen BatchNorm statistics, the first modules are a fixed function of each image: on a
    CPU they run without autograd in slices of :data:`~mieruka.inference.CPU_PIXELS_PER_PASS` pixels, which this
    cache-bound hardware runs faster than one pass of the whole batch (docs/benchmarks-history.md#frozen-slices). The
    trainable rest runs on the whole batch, so its BatchNorm statistics are those of the batch, as before. Slices of
    equal size give the very numbers of one pass (at 256 px a batch of 32 runs as 8 slices of 4); a slice of a single
    image may take another kernel and differ in the last digits.
    """

    def __init__(self, prefix: list[nn.Module], rest: list[nn.Module], model: nn.Module) -> None:
        self.prefix, self.rest, self.model = prefix, rest, model

    @classmethod
    def split(cls, model: nn.Module) -> FrozenPrefix | None:
        """Split ``model`` at its first module with a parameter that requires grad (``freeze_stages`` sets them),
        or None where that cannot be done exactly: no frozen module first, a random layer or a BatchNorm without
        weights among the frozen ones, or a forward pass that is not the modules in order followed by
        ``forward_head`` (checked on a random batch)."""
        head = {id(m) for m in (model.get_classifier(), getattr(model, "global_pool", None))}  # type: ignore[operator]

        def trainable(module: nn.Module) -> bool:
            return any(p.requires_grad for p in module.parameters())

        sequence: list[nn.Module] = []

        def flatten(module: nn.Module) -> None:
            for child in module.children():
                if id(child) in head:
                    continue
                mixed = trainable(child) and any(not p.requires_grad for p in child.parameters())
                if isinstance(child, nn.Sequential) and mixed:  # a stage container holding both: look inside
                    flatten(child)
                else:
                    sequence.append(child)

        flatten(model)
        cut = next((i for i, m in enumerate(sequence) if trainable(m)), len(sequence))
        prefix, rest = sequence[:cut], sequence[cut:]
        if not any(True for m in prefix for _ in m.parameters()):
            return None
        dropouts = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
        for module in (m for p in prefix for m in p.modules()):
            drop_path = float(getattr(module, "drop_prob", 0.0) or 0.0)  # timm's DropPath
            if isinstance(module, dropouts) or drop_path > 0:
                return None
            # BatchNorm without weights is not frozen by train(): in training it would use each slice's statistics
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(True for _ in module.parameters()):
                return None
        split = cls(prefix, rest, model)
        was_training = model.training
        try:
            model.eval()
            param = next(model.parameters())
            x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(param.device)
            with torch.no_grad():
                same = torch.allclose(split.rest_forward(split.prefix_forward(x)), model(x), rtol=1e-5, atol=1e-6)
        except (RuntimeError, TypeError, ValueError):
            same = False
        finally:
            model.train(was_training)
        return split if same else None

    def prefix_forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.prefix:
            x = module(x)
        return x

    def rest_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.rest_features(x))  # type: ignore[operator]

    def rest_features(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.rest:
            x = module(x)
        return x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.with_features(x)[0]

    def with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, the ``forward_features`` output) of a batch."""
        with torch.no_grad():
            early = cpu_chunked(self.prefix_forward, x.device)(x)
        features = self.rest_features(early)
        return self.model.forward_head(features), features  # type: ignore[operator]
