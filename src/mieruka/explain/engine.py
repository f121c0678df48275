"""One entry point, :func:`explain`: scores, probabilities and heatmaps for a batch, exact and fast.

Two paths give the same numbers (tested to 1e-5):

* **fast path** — when the explained layer is the model's final feature map and the head is global average pooling
  followed by one linear layer (detected from timm's ``forward_features``/``forward_head`` surface and *checked*
  numerically on the first batch of each feature shape, dtype and device of the model), ∂y/∂A = (∂y/∂logits · W) /
  Z at every position. One forward pass, no backward through the network, every class's map from a single matrix
  product, and no wait for the device: after the first batch nothing is copied back to the host.
* **general path** — one forward pass and one backward pass per target, with gradients taken to the hooked layers
  only (``torch.autograd.grad``), never to the parameters.

The caller's model is left exactly as it was: mode, parameter gradients, ``requires_grad`` flags and hooks, also when
an exception is raised.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mieruka.explain.maps import as_map
from mieruka.explain.methods import METHODS, CAMMethod, MapContext
from mieruka.explain.scaling import minmax
from mieruka.explain.state import eval_mode, params_kept, preserved
from mieruka.explain.targets import ClassTarget, PredictedClass, Target
from mieruka.explain.upsample import upsample

__all__ = [
    "FUSIONS",
    "ExplainedBatch",
    "as_map",
    "closed_form_holds",
    "explain",
    "fast_path_head",
    "multiscale_layers",
    "preserved",
]


@dataclass(frozen=True)
class ExplainedBatch:
    """What :func:`explain` returns. Tensors stay on the model's device.

    Attributes:
        method: Method name.
        layers: Explained layer names.
        logits: (B, C) class scores.
        probs: (B, C) softmax probabilities.
        maps: (B, T, H, W) heatmaps at the input tensor's size, before display normalization (≥ 0).
        class_indices: (B, T) the class each map explains, or -1 where the target is not one class.
        fast_path: Whether the closed-form gradient was used.
    """

    method: str
    layers: tuple[str, ...]
    logits: torch.Tensor
    probs: torch.Tensor
    maps: torch.Tensor
    class_indices: torch.Tensor
    fast_path: bool


@contextlib.contextmanager
def _capture(model: nn.Module, layers: Sequence[str], differentiable: bool) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks that keep each layer's output; removed on exit, exceptions included."""
    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        raise ValueError(f"--layer {', '.join(missing)}: no such module in the model")
    store: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def fn(_module: nn.Module, _inp: object, out: torch.Tensor) -> torch.Tensor | None:
            if differentiable and not out.requires_grad:
                # Nothing before this layer needs a gradient (frozen or inference-only weights): start the graph here.
                out = out.detach().requires_grad_(True)
                store[name] = out
                return out
            store[name] = out
            return None

        return fn

    handles = [modules[name].register_forward_hook(hook(name)) for name in layers]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def fast_path_head(model: nn.Module) -> nn.Linear | None:
    """The model's linear classifier if its head is (structurally) global average pooling + one linear layer."""
    if not all(hasattr(model, a) for a in ("forward_features", "forward_head", "get_classifier")):
        return None
    pool = getattr(model, "global_pool", None)
    head = model.get_classifier()  # type: ignore[operator]
    if not isinstance(head, nn.Linear) or pool is None:
        return None
    if getattr(pool, "pool_type", None) != "avg" and not isinstance(pool, nn.AdaptiveAvgPool2d):
        return None
    if any(
        isinstance(m, nn.Module) and m is not head and m is not pool and list(m.parameters())
        for m in _head_modules(model)
    ):
        return None
    return head


def _head_modules(model: nn.Module) -> list[nn.Module]:
    # timm heads live in attributes such as head_drop / fc_norm / head; the parameter-carrying ones must be absent
    names = ("fc_norm", "head_drop", "head", "norm_pre_logits", "pre_logits")
    return [getattr(model, n) for n in names if isinstance(getattr(model, n, None), nn.Module)]


def _targets_for(targets: Sequence[Target] | str, num_classes: int) -> list[Target]:
    if isinstance(targets, str):
        if targets != "all":
            raise ValueError(f"targets {targets!r}: give target callables or 'all'")
        return [ClassTarget(k) for k in range(num_classes)]
    return list(targets) or [PredictedClass()]


def _class_indices(targets: Sequence[Target], logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    cols = []
    for t in targets:
        idx = getattr(t, "indices", None)
        cols.append(idx(logits, labels) if idx is not None else torch.full_like(logits[:, 0], -1, dtype=torch.long))
    return torch.stack(cols, 1)  # (B, T)


def _logit_grads(targets: Sequence[Target], logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """∂target/∂logits (B, T, C); one-hot for class targets, autograd on the small logits tensor otherwise."""
    out = []
    for t in targets:
        idx = getattr(t, "indices", None)
        if idx is not None:
            out.append(F.one_hot(idx(logits, labels), logits.shape[1]).to(logits.dtype))
            continue
        with torch.inference_mode(False), torch.enable_grad():
            lg = logits.detach().clone().requires_grad_(True)
            (g,) = torch.autograd.grad(t(lg, labels).sum(), lg)
        out.append(g)
    return torch.stack(out, 1)


def explain(
    model: nn.Module,
    x: torch.Tensor,
    *,
    method: str | CAMMethod = "gradcam",
    targets: Sequence[Target] | str = (),
    layers: Sequence[str] | None = None,
    labels: torch.Tensor | None = None,
    allow_fast_path: bool = True,
    fusion: str = "mean",
) -> ExplainedBatch:
    """Explain a batch.

    Args:
        model: A classifier (timm models get the fast path when their head allows it).
        x: (B, 3, H, W) normalized input on the model's device.
        method: A name from :data:`~mieruka.explain.methods.METHODS` or a method instance (Score-CAM's masked inputs
            per forward pass: ``METHODS["scorecam"](score_batch_size=…)``).
        targets: Target callables (default: the predicted class), or ``"all"`` for every class.
        layers: Module names to explain (default: the module producing ``forward_features``); several layers are
            fused as the mean of their per-layer min–max scaled maps.
        labels: (B,) true class indices, needed by :class:`~mieruka.explain.targets.TrueClass`.
        allow_fast_path: Use the closed-form gradient when the head allows it (the result is the same).
        fusion: How several layers combine after each is min–max scaled and resized: ``mean`` (LayerCAM's fusion,
            as in pytorch-grad-cam) or ``product`` (a pixel keeps weight only where every scale agrees; sharper
            maps for small defects, same ranking of pixels as the geometric mean).
    """
    if fusion not in FUSIONS:
        raise ValueError(f"fusion {fusion!r}: choose one of {', '.join(FUSIONS)}")
    cam = METHODS[method]() if isinstance(method, str) else method
    score_batch_size = cam.score_batch_size
    final_layer = _feature_layer(model)
    layer_names = tuple(layers) if layers else (final_layer,)
    with eval_mode(model):
        num_classes = _num_classes(model, x)
        tlist = _targets_for(targets, num_classes)
        head = fast_path_head(model) if allow_fast_path and cam.fast_path else None
        if head is not None and layer_names == (final_layer,):
            # inference mode: no parameter's gradient or flag can change, so none needs saving (on a GPU the
            # saving would cost more than the maps)
            result = _fast(model, head, cam, x, tlist, layer_names, labels, score_batch_size)
            if result is not None:
                return result
        with params_kept(model):
            return _general(model, cam, x, tlist, layer_names, labels, score_batch_size, fusion)


_FEATURE_LAYERS: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


def _feature_layer(model: nn.Module) -> str:
    """:func:`mieruka.models.feature_layer`, traced once per model object (it costs a forward pass)."""
    from mieruka.models import feature_layer

    if model not in _FEATURE_LAYERS:
        _FEATURE_LAYERS[model] = feature_layer(model)
    return _FEATURE_LAYERS[model]


def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    head = model.get_classifier() if hasattr(model, "get_classifier") else None  # type: ignore[operator]
    if isinstance(head, nn.Linear):
        return head.out_features
    with torch.inference_mode():
        return int(model(x[:1]).shape[1])


FUSIONS = ("mean", "product")


def multiscale_layers(model: nn.Module, min_reduction: int = 8) -> tuple[str, ...]:
    """Layers for a multi-scale map: every timm feature stage with stride ≥ ``min_reduction`` (fine enough for
    defects that cover well under 1 % of the image) plus the final feature map."""
    info = getattr(model, "feature_info", None) or []
    stages = [i["module"] for i in info if i.get("reduction", 0) >= min_reduction]
    final = _feature_layer(model)
    return (*[s for s in stages if s != final], final)


def _finish(cam: CAMMethod, per_layer: list[torch.Tensor], x: torch.Tensor, fusion: str = "mean") -> torch.Tensor:
    """Resize (B, T, h, w) maps to the input size; several layers are each min–max scaled at their own resolution,
    resized, and fused (``mean``: LayerCAM's fusion, in the order pytorch-grad-cam uses; ``product``)."""
    size = x.shape[-2:]
    if len(per_layer) == 1:
        return upsample(per_layer[0], size)
    ups = torch.stack([upsample(minmax(m), size) for m in per_layer])  # (L, B, T, H, W)
    return ups.prod(0) if fusion == "product" else ups.mean(0)


def closed_form_holds(feats: torch.Tensor, logits: torch.Tensor, head: nn.Linear) -> bool:
    """Whether ``logits == W · mean(A) + b`` for features ``feats`` (B, K, h, w): the shape the closed-form
    gradient ∂y/∂A = W / Z needs."""
    if feats.dim() != 4 or feats.shape[1] != head.in_features:  # e.g. MobileNetV3's convolution after the pooling
        return False
    expected = F.linear(feats.mean(dim=(2, 3)), head.weight, head.bias)
    return bool(torch.allclose(logits.float(), expected.float(), rtol=1e-4, atol=1e-4 * float(expected.abs().max())))


_CHECKED: weakref.WeakKeyDictionary[nn.Module, dict[tuple[object, ...], bool]] = weakref.WeakKeyDictionary()


def _closed_form_checked(model: nn.Module, head: nn.Linear, feats: torch.Tensor, logits: torch.Tensor) -> bool:
    """:func:`closed_form_holds`, computed once per model, head, feature shape, dtype and device and then remembered:
    the check reads a number back from the device, a wait that on a GPU costs as much as the maps themselves
    (docs/benchmarks-history.md#gradcam-speed). Whether the head is average pooling + linear is a property of the
    architecture, not of the batch or of the weights' values."""
    key = (id(head), tuple(feats.shape[1:]), feats.dtype, feats.device, torch.is_autocast_enabled(feats.device.type))
    seen = _CHECKED.setdefault(model, {})
    if key not in seen:
        seen[key] = closed_form_holds(feats, logits, head)
    return seen[key]


def _fast(
    model: nn.Module,
    head: nn.Linear,
    cam: CAMMethod,
    x: torch.Tensor,
    targets: Sequence[Target],
    layer_names: tuple[str, ...],
    labels: torch.Tensor | None,
    score_batch_size: int,
) -> ExplainedBatch | None:
    with torch.inference_mode():
        raw = model.forward_features(x)  # type: ignore[operator]
        logits = model.forward_head(raw)  # type: ignore[operator]  # (B, C)
        feats = as_map(model, raw)  # (B, K, h, w)
        if feats.dim() != 4:
            return None
        if not _closed_form_checked(model, head, feats, logits):
            return None
        class_idx = _class_indices(targets, logits, labels)
        grads = None
        if cam.uses_gradients:
            z = feats.shape[2] * feats.shape[3]
            if all(hasattr(t, "indices") for t in targets):  # class targets: ∂y_c/∂logits is one-hot, so G = W[c] / Z
                grads = (head.weight.to(feats.dtype)[class_idx] / z)[..., None, None]  # (B, T, K, 1, 1)
            else:
                dlogits = _logit_grads(targets, logits, labels)  # (B, T, C)
                grads = (dlogits @ head.weight.to(dlogits.dtype) / z)[..., None, None]
        maps = cam.layer_maps(feats, grads, MapContext(model, x, class_idx, targets, score_batch_size))  # (B, T, h, w)
        return _result(cam, layer_names, logits, _finish(cam, [maps], x), class_idx, fast_path=True)


def _general(
    model: nn.Module,
    cam: CAMMethod,
    x: torch.Tensor,
    targets: Sequence[Target],
    layer_names: tuple[str, ...],
    labels: torch.Tensor | None,
    score_batch_size: int,
    fusion: str = "mean",
) -> ExplainedBatch:
    needs_grad = cam.uses_gradients
    with torch.inference_mode(False), torch.set_grad_enabled(needs_grad):
        x_in = x.clone() if x.is_inference() else x
        with _capture(model, layer_names, differentiable=needs_grad) as acts:
            logits = model(x_in)  # (B, C)
        class_idx = _class_indices(targets, logits.detach(), labels)
        grads_by_layer: dict[str, list[torch.Tensor]] = {n: [] for n in layer_names}
        if needs_grad:
            for i, t in enumerate(targets):
                score = t(logits, labels).sum()  # images are independent in eval mode: ∂Σ/∂A_b = ∂y_b/∂A_b
                gs = torch.autograd.grad(score, [acts[n] for n in layer_names], retain_graph=i < len(targets) - 1)
                for n, g in zip(layer_names, gs, strict=True):
                    grads_by_layer[n].append(g)
        ctx = MapContext(model, x_in.detach(), class_idx, targets, score_batch_size)
        per_layer = [
            cam.layer_maps(
                as_map(model, acts[n].detach()),
                torch.stack([as_map(model, g) for g in grads_by_layer[n]], 1) if needs_grad else None,
                ctx,
            )
            for n in layer_names
        ]  # each (B, T, h, w); gradients (B, T, K, h, w)
        logits = logits.detach()
        out = _finish(cam, per_layer, x, fusion)
    return _result(cam, layer_names, logits, out, class_idx, fast_path=False)


def _result(
    cam: CAMMethod,
    layer_names: tuple[str, ...],
    logits: torch.Tensor,
    maps: torch.Tensor,
    class_idx: torch.Tensor,
    *,
    fast_path: bool,
) -> ExplainedBatch:
    return ExplainedBatch(
        method=cam.name,
        layers=layer_names,
        logits=logits,
        probs=logits.softmax(1),
        maps=maps,
        class_indices=class_idx,
        fast_path=fast_path,
    )
