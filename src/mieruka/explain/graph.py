"""The explained model as one graph: image → class probabilities and the predicted class's heatmap.

The heatmap is the explanation engine's fast path (docs/architecture.md, "Grad-CAM"): on a global-average-pooling +
linear head, ∂y_c/∂A = w_c / Z everywhere, so a gradient CAM needs no backward pass and becomes part of the forward
graph::

    A = features(x);  p = softmax(W · mean(A) + b);  ĉ = argmax p
    G = W[ĉ] / Z;  L = ReLU(Σ_k weights(A, G)_k · A_k);  heatmap = minmax(upsample(L))

:class:`ExplainedModel` is that graph as a PyTorch module: ``mieruka export`` writes it to ONNX, and the runtime runs
it for a ``.safetensors`` model, so both backends compute the same thing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mieruka.errors import MierukaError
from mieruka.explain.engine import as_map, closed_form_holds, fast_path_head
from mieruka.explain.methods import METHODS
from mieruka.explain.scaling import minmax
from mieruka.explain.upsample import upsample

__all__ = ["EXPORT_METHODS", "ExplainedModel", "graph_method"]

EXPORT_METHODS = tuple(name for name, m in METHODS.items() if m.uses_gradients)
"""Methods that run inside the graph: the gradient methods, whose gradient the head gives in closed form."""


def graph_method(explain_method: str, selection: dict[str, Any] | None = None) -> tuple[str, str]:
    """The method a graph computes for a model by default, and a note when it is not the stored one.

    The graph computes gradient methods on the last block only (their gradient is closed form). A stored method it
    can compute is used as it is; otherwise the candidate of the stored selection table (:mod:`mieruka.audit.selection`)
    with the best validation AP among those it can compute; otherwise Grad-CAM."""
    if explain_method in EXPORT_METHODS:
        return explain_method, ""
    rows = [c for c in (selection or {}).get("candidates", []) if c["method"] in EXPORT_METHODS]
    rows = [c for c in rows if c.get("average_precision") is not None]
    best = max(rows, key=lambda c: c["average_precision"], default=None)
    method = best["method"] if best is not None else "gradcam"
    why = (
        f"the best the graph can compute on validation (AP {best['average_precision']:.3f})" if best else "the default"
    )
    return method, (
        f"the model's explanation method {explain_method} needs more than the last block, which a graph cannot "
        f"compute; using {method}, {why}"
    )


class ExplainedModel(nn.Module):
    """``x`` (B, 3, S, S) normalized → ``probabilities`` (B, C), ``heatmap`` (B, S, S) of the predicted class in
    [0, 1] (per-image min–max), and with ``all_classes`` also ``heatmaps`` (B, C, S, S).

    When the model's head does not allow the closed-form gradient, :attr:`has_heatmap` is False and the module
    returns the probabilities only.

    Args:
        model: A trained timm classifier in eval mode.
        method: One of :data:`EXPORT_METHODS`.
        all_classes: Also return every class's map.
    """

    def __init__(self, model: nn.Module, method: str = "gradcam", *, all_classes: bool = False):
        super().__init__()
        if method not in EXPORT_METHODS:
            raise MierukaError(
                f"--method {method!r}: only gradient methods run inside the exported graph "
                f"({', '.join(EXPORT_METHODS)})"
            )
        self.model = model.eval()
        self.cam = METHODS[method]()
        self.method = method
        self.all_classes = all_classes
        head = fast_path_head(model)
        self.head = head if head is not None and _closed_form_holds(model, head) else None

    @property
    def has_heatmap(self) -> bool:
        return self.head is not None

    @property
    def output_names(self) -> tuple[str, ...]:
        if not self.has_heatmap:
            return ("probabilities",)
        return ("probabilities", "heatmap", "heatmaps") if self.all_classes else ("probabilities", "heatmap")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        raw = self.model.forward_features(x)  # type: ignore[operator]
        probs = self.model.forward_head(raw).softmax(1)  # type: ignore[operator]  # (B, C)
        feats = as_map(self.model, raw)  # (B, K, h, w)
        if self.head is None:
            return (probs,)
        weight = self.head.weight  # (C, K)
        z = feats.shape[2] * feats.shape[3]
        if self.all_classes:
            # every class is a target: G[b, c] = W[c] / Z
            grads = (weight / z)[None, :, :, None, None].expand(feats.shape[0], -1, -1, -1, -1)  # (B, C, K, 1, 1)
        else:
            grads = (weight[probs.argmax(1)] / z)[:, None, :, None, None]  # (B, 1, K, 1, 1)
        maps = self.cam.combine(feats, grads)  # (B, T, h, w)
        maps = minmax(upsample(maps, x.shape[-2:]))
        if not self.all_classes:
            return probs, maps[:, 0]
        predicted = maps.gather(1, probs.argmax(1)[:, None, None, None].expand(-1, 1, *maps.shape[-2:]))[:, 0]
        return probs, predicted, maps


def _closed_form_holds(model: nn.Module, head: nn.Linear) -> bool:
    """The engine's closed-form check on a probe batch (a graph cannot check the batches it will see)."""
    from mieruka.models import input_size

    size = input_size(model)
    param = next(model.parameters())
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(param.device)
    with torch.inference_mode():
        raw = model.forward_features(x)  # type: ignore[operator]
        feats = as_map(model, raw)
        return feats.dim() == 4 and closed_form_holds(feats, model.forward_head(raw), head)  # type: ignore[operator]
