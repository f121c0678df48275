"""``mieruka export``: one ONNX graph from image to class probabilities *and* the heatmap of the predicted class.

The heatmap is the explanation engine's fast path (design.md): on a global-average-pooling + linear head,
∂y_c/∂A = w_c / Z everywhere, so a gradient CAM needs no backward pass and becomes part of the forward graph:

    A = features(x);  p = softmax(W · mean(A) + b);  ĉ = argmax p
    G = W[ĉ] / Z;  L = ReLU(Σ_k weights(A, G)_k · A_k);  heatmap = minmax(upsample(L))

:class:`ExplainedModel` is that graph as a PyTorch module: it is what gets exported, and what the service runs when it
is given a ``.safetensors`` model, so both backends compute the same thing. The ONNX file describes itself: the
model's :class:`~mieruka.checkpoint.ModelInfo` (classes, verdicts, input size, normalization, NG threshold), the CAM
method and the output names are in its metadata.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mieruka._io import atomic_write
from mieruka.checkpoint import ModelInfo, load_checkpoint
from mieruka.errors import MierukaError
from mieruka.explain.engine import closed_form_holds, fast_path_head
from mieruka.explain.methods import METHODS
from mieruka.explain.render import normalize_for_display

__all__ = [
    "EXPORT_METHODS",
    "ONNX_FORMAT",
    "ExplainedModel",
    "ExportResult",
    "export_model",
    "export_onnx",
    "onnx_metadata",
]

ONNX_FORMAT = "mieruka.onnx"
ONNX_FORMAT_VERSION = 1

EXPORT_METHODS = tuple(name for name, m in METHODS.items() if m.uses_gradients)
"""Methods that run inside the graph: the gradient methods, whose gradient the head gives in closed form."""

PROB_TOLERANCE = 1e-4
MAP_TOLERANCE = 1e-3


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
        feats = self.model.forward_features(x)  # type: ignore[operator]  # (B, K, h, w)
        probs = self.model.forward_head(feats).softmax(1)  # type: ignore[operator]  # (B, C)
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
        maps = normalize_for_display(F.interpolate(maps, size=x.shape[-2:], mode="bilinear", align_corners=False))
        if not self.all_classes:
            return probs, maps[:, 0]
        predicted = maps.gather(1, probs.argmax(1)[:, None, None, None].expand(-1, 1, *maps.shape[-2:]))[:, 0]
        return probs, predicted, maps


def _closed_form_holds(model: nn.Module, head: nn.Linear, size: int = 64) -> bool:
    """The engine's closed-form check on a probe batch (the engine checks every batch; a graph cannot)."""
    param = next(model.parameters())
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(param.device)
    with torch.inference_mode():
        feats = model.forward_features(x)  # type: ignore[operator]
        return closed_form_holds(feats, model.forward_head(feats), head)  # type: ignore[operator]


def onnx_metadata(info: ModelInfo, method: str | None, outputs: tuple[str, ...]) -> dict[str, str]:
    """The key/value pairs written into the ONNX file (values are strings; JSON where structured)."""
    return {
        "format": ONNX_FORMAT,
        "format_version": str(ONNX_FORMAT_VERSION),
        "info": info.to_json(),
        "method": method or "",
        "outputs": json.dumps(list(outputs)),
        # the essentials again as plain keys, for tools that do not parse the description
        "classes": json.dumps(list(info.classes), ensure_ascii=False),
        "verdicts": json.dumps(info.verdicts, ensure_ascii=False),
        "image_size": str(info.image_size),
        "mean": json.dumps(list(info.mean)),
        "std": json.dumps(list(info.std)),
        "input": "image: float32 (batch, 3, image_size, image_size), RGB scaled to 0–1 then (x - mean) / std",
    }


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and how closely ONNX Runtime reproduces PyTorch."""

    path: Path
    outputs: tuple[str, ...]
    method: str | None
    max_prob_diff: float
    max_map_diff: float | None
    seconds: float


def export_onnx(
    model_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    method: str = "gradcam",
    all_classes: bool = False,
    opset: int = 18,
    check_batch: int = 3,
) -> ExportResult:
    """Export a checkpoint to one self-contained ONNX file and check it against PyTorch with ONNX Runtime.

    Args:
        model_path: A ``.safetensors`` model written by ``mieruka train``.
        out: Destination ``.onnx`` file (written atomically, weights inside).
        method: The CAM method computed in the graph.
        all_classes: Also output every class's heatmap.
        opset: ONNX opset.
        check_batch: Batch size of the random probe used for the check (also proves the batch axis is dynamic).

    Raises:
        MierukaError: The check fails (probabilities differ by more than 1e-4 or maps by more than 1e-3).
    """
    model, info, _ = load_checkpoint(model_path, "cpu")
    return export_model(model, info, out, method=method, all_classes=all_classes, opset=opset, check_batch=check_batch)


def export_model(
    model: nn.Module,
    info: ModelInfo,
    out: str | os.PathLike[str],
    *,
    method: str = "gradcam",
    all_classes: bool = False,
    opset: int = 18,
    check_batch: int = 3,
) -> ExportResult:
    """:func:`export_onnx` for a model already in memory (on the CPU) and its description."""
    try:
        import onnx
    except ImportError:  # pragma: no cover - depends on the installation
        raise MierukaError("exporting needs the onnx extra: pip install 'mieruka[onnx]'") from None
    start = time.perf_counter()
    wrapped = ExplainedModel(model, method, all_classes=all_classes).eval()
    names = wrapped.output_names
    size = info.image_size
    example = torch.zeros(2, 3, size, size)
    # The exporter reports its progress on stdout; keep the command's output to what the user needs.
    with contextlib.redirect_stdout(io.StringIO()), torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(
            wrapped,
            (example,),
            None,
            input_names=["image"],
            output_names=list(names),
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    if program is None:  # pragma: no cover - the dynamo exporter always returns a program
        raise MierukaError("the ONNX exporter returned nothing")
    proto = program.model_proto
    meta = onnx_metadata(info, method if wrapped.has_heatmap else None, names)
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (
        f"mieruka {info.arch}: {len(info.classes)} classes ({', '.join(info.classes)}); "
        f"outputs {', '.join(names)}" + (f"; heatmap by {method}" if wrapped.has_heatmap else "")
    )
    path = atomic_write(out, lambda p: onnx.save_model(proto, str(p)))
    prob_diff, map_diff = _check(wrapped, path, size, check_batch)
    return ExportResult(
        path=path,
        outputs=names,
        method=method if wrapped.has_heatmap else None,
        max_prob_diff=prob_diff,
        max_map_diff=map_diff,
        seconds=time.perf_counter() - start,
    )


def _check(wrapped: ExplainedModel, path: Path, size: int, batch: int) -> tuple[float, float | None]:
    """Run the file with ONNX Runtime and PyTorch on the same random batch; raise if they disagree."""
    from mieruka.runtime import OnnxModel

    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = [t.numpy() for t in wrapped(x)]
    got = OnnxModel(path).session.run(None, {"image": x.numpy()})
    prob_diff = float(np.abs(got[0] - expected[0]).max())
    map_diff = max((float(np.abs(g - e).max()) for g, e in zip(got[1:], expected[1:], strict=True)), default=None)
    if prob_diff > PROB_TOLERANCE or (map_diff is not None and map_diff > MAP_TOLERANCE):
        path.unlink(missing_ok=True)
        raise MierukaError(
            f"{path}: ONNX Runtime disagrees with PyTorch (probabilities by {prob_diff:.2e}, maps by "
            f"{map_diff if map_diff is not None else 0:.2e}); the file was removed"
        )
    return prob_diff, map_diff
