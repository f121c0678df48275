"""One way to open a model: a ``.safetensors`` checkpoint, an ONNX graph or OpenVINO IR from ``mieruka export``.

:class:`ModelFile` answers what a file can compute without running it: its description (classes, input size,
stored method), the map its exported graph computes, a method spec resolved to layers, and whether a request
(method, target, layers, faithfulness) is one the file can answer. :meth:`ModelFile.open` loads it to run:
:class:`OpenedModel` classifies and explains batches the same way whatever the format. ``predict``, ``explain``,
``audit``, ``evaluate`` and the Python API all open models here; ``serve`` too (:func:`load_runtime`: a checkpoint
runs as the graph ``export`` writes, :class:`TorchModel`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mieruka.checkpoint import ModelInfo, load_checkpoint, read_info
from mieruka.errors import MierukaError
from mieruka.explain.engine import ExplainedBatch, explain, multiscale_layers
from mieruka.explain.spec import MULTISCALE, MethodSpec, parse_method_spec
from mieruka.explain.targets import Target
from mieruka.inference import select_device, tta_probabilities
from mieruka.runtime import Runtime, check_torch_provider, is_exported, load_exported, run_with_tta

__all__ = ["ModelFile", "OpenedModel", "TorchModel", "load_runtime", "open_model", "torch_device"]


@dataclass(frozen=True)
class ModelFile:
    """A model file and what it can compute (see the module docstring).

    Attributes:
        path: The file.
        info: Its description.
        exported: A file from ``mieruka export`` (its graph computes one map only).
        graph_method: An exported file's own method (None: its head allows no heatmap; always None for a
            checkpoint, which computes every method).
    """

    path: Path
    info: ModelInfo
    exported: bool
    graph_method: str | None = None

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ModelFile:
        """The description of ``path``, read and checked (an exported file's seal included)."""
        if is_exported(path):
            runtime = load_exported(path)
            return cls(Path(path), runtime.info, True, runtime.method)
        return cls(Path(path), read_info(path), False)

    @property
    def stored_method(self) -> str:
        """What the file explains with by default: an exported graph's own map, else the method stored at training."""
        if self.exported:
            return self.graph_method or "gradcam"
        return self.info.explain_method

    def check_request(
        self, verb: str, *, methods: Sequence[str] | None = None, target: str = "pred", extra: str = ""
    ) -> None:
        """Refuse, naming the file, a request an exported graph cannot answer: another method than its own, a target
        other than the predicted class, or ``extra`` (another option the request needs the checkpoint for, as
        ``--layer`` or ``--faithfulness``, said as the option). ``verb``: the command's word (``explain``,
        ``audit``)."""
        if not self.exported:
            return
        name, own = self.path.name, self.graph_method
        if own is None:
            raise MierukaError(
                f"{name}: the exported graph has no heatmap (its head does not allow one); {verb} the .safetensors"
            )
        if any(m != own for m in methods or ()) or target != "pred" or extra:
            raise MierukaError(
                f"{name} computes the {own} map of the predicted class only: {verb} it with --method {own} --target "
                f"pred{f' and no {extra}' if extra else ''}, or {verb} the .safetensors for other maps"
            )

    def resolve(self, spec: str) -> MethodSpec:
        """A method spec with its layers named: none given means the model's target layer, ``multiscale`` is spelt
        out for the model's architecture (:func:`~mieruka.explain.engine.multiscale_layers`)."""
        method, layers, fusion = parse_method_spec(spec)
        if self.exported:
            return MethodSpec(method, (self.info.target_layer,), fusion)
        if layers == (MULTISCALE,):
            layers = _multiscale(self.info.arch, len(self.info.classes), self.info.image_size, self.info.output_stride)
        return MethodSpec(method, layers or (self.info.target_layer,), fusion)

    def open(self, device: str = "auto", *, provider: str = "auto", threads: int | None = None) -> OpenedModel:
        """The model loaded to run: a checkpoint on ``device`` (``auto``: the GPU when there is one, or
        ``provider``'s when it is ``cpu``/``cuda``), an exported file on ONNX Runtime's ``provider`` or OpenVINO."""
        if self.exported:
            graph = load_exported(self.path, threads=threads, provider=provider)
            return OpenedModel(self, None, graph)
        model, _, _ = load_checkpoint(self.path, torch_device(device, provider))
        return OpenedModel(self, model.to(memory_format=torch.channels_last), None)


def torch_device(device: str, provider: str = "auto") -> torch.device:
    """Where a checkpoint runs: ``device``, or with ``device`` ``auto`` and ``--provider cpu``/``cuda``, that one
    (another provider is refused: it runs exported files only)."""
    check_torch_provider(provider)
    return select_device(provider if device == "auto" and provider in ("cpu", "cuda") else device)


@functools.lru_cache(maxsize=8)
def _multiscale(arch: str, classes: int, image_size: int, output_stride: int) -> tuple[str, ...]:
    """The multi-scale layers of an architecture, read from a model built without memory (the meta device)."""
    from mieruka.models import build_model

    with torch.device("meta"):
        model = build_model(arch, classes, image_size=image_size, output_stride=output_stride)
    return multiscale_layers(model)


def open_model(
    path: str | os.PathLike[str], device: str = "auto", *, provider: str = "auto", threads: int | None = None
) -> OpenedModel:
    """:meth:`ModelFile.read` then :meth:`ModelFile.open`, with an exported file loaded once (its runner holds the
    description)."""
    if is_exported(path):
        graph = load_exported(path, threads=threads, provider=provider)
        return OpenedModel(ModelFile(Path(path), graph.info, True, graph.method), None, graph)
    return ModelFile.read(path).open(device, provider=provider, threads=threads)


@dataclass(frozen=True)
class OpenedModel:
    """A loaded model: ``module`` (a checkpoint, channels-last on its device) or ``graph`` (an exported file's
    runner, :class:`~mieruka.runtime.Runtime`)."""

    file: ModelFile
    module: nn.Module | None
    graph: Any

    @property
    def info(self) -> ModelInfo:
        return self.file.info

    @property
    def runner(self) -> Any:
        """What :func:`~mieruka.inference.classify_files` runs: the module or the graph."""
        return self.module if self.module is not None else self.graph

    @property
    def device(self) -> torch.device:
        """Where inputs go: the module's device; the host for an exported graph."""
        return next(self.module.parameters()).device if self.module is not None else torch.device("cpu")

    @property
    def runtime_name(self) -> str:
        """What runs it, for the user: ``pytorch (cuda)``, ``onnxruntime (cpu)``, ``openvino (openvino:CPU)``."""
        if self.module is not None:
            return f"pytorch ({self.device})"
        return f"{self.graph.backend} ({self.graph.provider})"

    def probabilities(self, x: np.ndarray, tta: str = "none") -> np.ndarray:
        """Class probabilities (B, C) of a prepared batch (:func:`~mieruka.runtime.prepare`), averaged over the
        ``tta`` views."""
        if self.module is None:
            return run_with_tta(self.graph, x, tta)[0]
        return tta_probabilities(self.module, torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), tta)

    def explain(
        self,
        x: torch.Tensor,
        spec: MethodSpec,
        targets: Sequence[Target] | str = "pred",
        labels: torch.Tensor | None = None,
    ) -> ExplainedBatch:
        """Probabilities and maps of a batch for a resolved spec (:meth:`ModelFile.resolve`). An exported graph
        gives its own (min–max scaled) map of the predicted class, whatever is asked: ask
        :meth:`ModelFile.check_request` first."""
        if self.module is None:
            return self._graph_batch(x, spec)
        method, layers, fusion = spec
        return explain(self.module, x, method=method, targets=targets, layers=layers, labels=labels, fusion=fusion)

    def _graph_batch(self, x: torch.Tensor, spec: MethodSpec) -> ExplainedBatch:
        probs, heat = self.graph.run(x.contiguous().cpu().numpy())
        if heat is None:
            raise MierukaError(f"{self.file.path.name}: the exported graph has no heatmap")
        p = torch.from_numpy(np.asarray(probs, dtype=np.float32))
        return ExplainedBatch(
            method=spec.method,
            layers=spec.layers,
            logits=p.clamp_min(1e-12).log(),
            probs=p,
            maps=torch.from_numpy(np.asarray(heat, dtype=np.float32))[:, None],
            class_indices=p.argmax(1)[:, None],
            fast_path=True,
        )


class TorchModel:
    """A ``.safetensors`` checkpoint, opened by :meth:`ModelFile.open`, run by PyTorch through
    :class:`~mieruka.explain.graph.ExplainedModel`: the very module that ``mieruka export`` writes to ONNX, so the
    service answers a checkpoint as it answers the exported file (one forward pass, probabilities and heatmap)."""

    backend = "pytorch"

    def __init__(self, path: str | os.PathLike[str], *, method: str | None = None, device: str = "cpu"):
        opened = ModelFile.read(path).open(device)
        if opened.module is None:
            raise MierukaError(f"{path}: an exported file runs as it is (load_runtime), not as a checkpoint")
        self._wrap(opened.module, opened.info, method)

    @classmethod
    def of(cls, model: nn.Module, info: ModelInfo, method: str | None = None) -> TorchModel:
        """A model in memory (training's, before it is written) run as the service runs its file."""
        runner = cls.__new__(cls)
        runner._wrap(model, info, method)
        return runner

    def _wrap(self, model: nn.Module, info: ModelInfo, method: str | None) -> None:
        from mieruka.explain.graph import ExplainedModel, graph_method

        self.info = info
        if method is None:  # the stored explanation method, where the graph can compute it
            method, _ = graph_method(info.explain_method, info.method_selection)
        self.module = ExplainedModel(model, method).eval()
        self.method = method if self.module.has_heatmap else None
        self.device = next(model.parameters()).device
        self.provider = f"torch:{self.device.type}"

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        with torch.inference_mode():
            out = self.module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device))
        return out[0].float().cpu().numpy(), (out[1].float().cpu().numpy() if len(out) > 1 else None)


def load_runtime(
    path: str | os.PathLike[str],
    *,
    method: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    provider: str = "auto",
) -> Runtime:
    """What ``serve`` runs: an exported file's runner (:func:`~mieruka.runtime.load_exported`: ``threads`` per call,
    on ``provider``), else a :class:`TorchModel` (``method`` applies to the latter; exported files carry their own)."""
    if is_exported(path):
        return load_exported(path, threads=threads, provider=provider)
    check_torch_provider(provider)
    return TorchModel(path, method=method, device=device)
