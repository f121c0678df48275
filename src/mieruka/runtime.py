"""Running a model for prediction with heatmaps: an ONNX file (ONNX Runtime), OpenVINO IR, or a checkpoint
(PyTorch).

Both backends take the same input — :func:`prepare`, the preprocessing every mieruka command uses
(:func:`~mieruka.data.store.resize_image` then :func:`~mieruka.data.store.normalize`) — and return the same outputs:
probabilities (B, C) and the predicted class's heatmap (B, S, S) in [0, 1], or ``None`` where the model has no
heatmap. Neither keeps mutable state between calls, so one instance serves concurrent requests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from mieruka.checkpoint import ModelInfo
from mieruka.data.store import normalize, resize_image
from mieruka.deploy.exported import DIGEST_KEY, ExportedRuntime, check_seal
from mieruka.errors import CheckpointError, MierukaError
from mieruka.tta import tta_views

__all__ = [
    "EXPORTED_SUFFIXES",
    "ONNX_FORMAT",
    "ONNX_FORMAT_VERSION",
    "ExportedRuntime",
    "OnnxModel",
    "Runtime",
    "check_torch_provider",
    "is_exported",
    "load_exported",
    "prepare",
    "run_with_tta",
]

ONNX_FORMAT = "mieruka.onnx"
"""The ``format`` metadata key of an ONNX file written by ``mieruka export`` (the key/values: export.onnx_metadata)."""
ONNX_FORMAT_VERSION = 2
"""2: sealed by the digest of :mod:`mieruka.deploy.exported` (1 had none and is no longer read)."""


def prepare(images: Sequence[np.ndarray], info: ModelInfo) -> np.ndarray:
    """(H, W, 3) uint8 images → the model input, float32 (B, 3, S, S), exactly as training and evaluation do."""
    pixels = torch.from_numpy(np.stack([resize_image(im, info.image_size) for im in images]))
    return normalize(pixels, info.mean, info.std).numpy()


class Runtime(Protocol):
    """What the predict command and the service need from a model."""

    info: ModelInfo
    method: str | None
    backend: str
    provider: str
    """What runs it: ONNX Runtime's execution provider (``cpu``, ``cuda``, ``tensorrt``, ``openvino``), OpenVINO's
    device (``openvino:CPU``), or PyTorch's device (``torch:cpu``, ``torch:cuda``)."""

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (B, C) and heatmaps (B, S, S) in [0, 1] (``None`` without a heatmap) for input ``x``."""
        ...


EXPORTED_SUFFIXES = (".onnx", ".xml")
"""Files from ``mieruka export``: an ONNX graph, or OpenVINO IR."""


def is_exported(path: str | os.PathLike[str]) -> bool:
    """A file from ``mieruka export`` (``.onnx``, OpenVINO ``.xml``) rather than a ``.safetensors`` checkpoint."""
    return Path(path).suffix.lower() in EXPORTED_SUFFIXES


class OnnxModel(ExportedRuntime):
    """A file written by ``mieruka export``, run by ONNX Runtime.

    Args:
        path: The ``.onnx`` file.
        threads: Threads per inference call (default: ONNX Runtime's choice, one per core).
        provider: ONNX Runtime's execution provider (:mod:`mieruka.deploy.providers`; default ``cpu``, ``auto``:
            the best one installed). :attr:`provider` says which one the session really uses.
    """

    backend = "onnxruntime"

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None, provider: str = "cpu"):
        try:
            import onnxruntime as ort
        except ImportError:  # pragma: no cover - depends on the installation
            raise MierukaError("running ONNX models needs onnxruntime: pip install 'mieruka[onnx]'") from None

        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: model file not found")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Idle worker threads sleep instead of spinning: on a small CPU box the cores are shared with decoding,
        # the overlay and HTTP, which spinning threads would slow down.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        from mieruka.deploy.providers import provider_list, short_name

        providers = provider_list(provider, ort.get_available_providers())
        data = self.path.read_bytes()
        try:
            self.session = ort.InferenceSession(data, options, providers=providers)
        except Exception as exc:
            raise CheckpointError(f"{self.path}: not an ONNX model that ONNX Runtime can load ({exc})") from None
        self.provider = short_name(self.session.get_providers()[0])
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("format") != ONNX_FORMAT:
            raise CheckpointError(
                f"{self.path}: an ONNX model, but not one written by mieruka export (no mieruka metadata)"
            )
        try:
            self.info = ModelInfo.from_json(meta["info"])
            self.outputs: tuple[str, ...] = tuple(json.loads(meta["outputs"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: the model description in the metadata is damaged ({exc})") from None
        if meta.get("format_version") != str(ONNX_FORMAT_VERSION):
            raise CheckpointError(
                f"{self.path}: exported graph format {meta.get('format_version')!r}, but this mieruka reads format "
                f"{ONNX_FORMAT_VERSION} only (sealed by a digest of its weights and description); export it again"
            )
        check_seal(self.path, meta.get(DIGEST_KEY), data)
        self.method: str | None = meta.get("method") or None
        self.input_name = self.session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        wanted = ["probabilities", "heatmap"] if self.has_heatmap else ["probabilities"]
        out = self.session.run(wanted, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})
        return out[0], (out[1] if self.has_heatmap else None)


def run_with_tta(runtime: Runtime, x: np.ndarray, tta: str = "none") -> tuple[np.ndarray, np.ndarray | None]:
    """:meth:`Runtime.run` with the probabilities averaged over the ``tta`` views (as ``mieruka predict`` does);
    the heatmap is the unchanged image's."""
    probs, heat = runtime.run(x)
    if tta != "none":
        views = tta_views(torch.from_numpy(x), tta)[1:]
        probs = np.mean([probs, *(runtime.run(np.ascontiguousarray(v.numpy()))[0] for v in views)], axis=0)
    return probs, heat


def load_exported(
    path: str | os.PathLike[str], *, threads: int | None = None, provider: str = "auto"
) -> OnnxModel | Any:
    """The runner of a file from ``mieruka export``: :class:`OnnxModel` (on ONNX Runtime's ``provider``) or
    :class:`~mieruka.deploy.openvino.OpenVinoModel`."""
    if Path(path).suffix.lower() == ".xml":
        from mieruka.deploy.openvino import OpenVinoModel

        return OpenVinoModel(path, threads=threads)
    return OnnxModel(path, threads=threads, provider=provider)


def check_torch_provider(provider: str) -> None:
    """``--provider`` chooses how exported files run; a ``.safetensors`` model runs on PyTorch (``--device``)."""
    if provider not in ("auto", "cpu", "cuda"):
        raise MierukaError(
            f"--provider {provider}: runs .onnx files only; export the model first (mieruka export), or use "
            "--device for a .safetensors model"
        )
