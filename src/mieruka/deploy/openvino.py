"""OpenVINO IR: the exported graph (probabilities and heatmap) for the inference PCs of the line.

``mieruka export … --format openvino --out model.xml`` converts the checked ONNX graph (any ``--precision``) with
``openvino.convert_model`` and writes ``model.xml`` and ``model.bin``; the model's description travels in the IR's
runtime information under ``mieruka``, with the same keys as the ONNX metadata, and the ``.xml`` is sealed with the
digest of both files (:mod:`mieruka.deploy.exported`). :class:`OpenVinoModel` runs it with the interface of
:class:`~mieruka.runtime.OnnxModel`, so ``predict`` and ``serve`` take ``.xml`` files. On a CPU it asks for float32
arithmetic (OpenVINO would otherwise pick bf16 where the processor has it), so an fp32 IR gives the ONNX graph's
numbers; int8 IR runs OpenVINO's int8 kernels.
"""

from __future__ import annotations

import json
import os
import queue
from pathlib import Path
from typing import Any

import numpy as np

from mieruka.checkpoint import ModelInfo
from mieruka.deploy.exported import BLANK_DIGEST, DIGEST_KEY, ExportedRuntime, check_seal, seal
from mieruka.errors import CheckpointError, MierukaError

__all__ = ["OpenVinoModel", "write_ir"]

_RT_KEY = "mieruka"


def _openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise MierukaError("OpenVINO IR needs the openvino extra: pip install 'mieruka[openvino]'") from None
    return openvino


def write_ir(onnx_path: Path, out: Path, metadata: dict[str, str]) -> Path:
    """Convert ``onnx_path`` to IR at ``out`` (``.xml``, weights beside it in ``.bin``), with ``metadata``."""
    ov = _openvino()
    model = ov.convert_model(str(onnx_path))
    for key, value in {**metadata, DIGEST_KEY: BLANK_DIGEST}.items():
        model.set_rt_info(value, [_RT_KEY, key])
    ov.save_model(model, str(out), compress_to_fp16=False)
    out.write_bytes(seal(out.read_bytes(), out.with_suffix(".bin").read_bytes())[0])
    return out


class OpenVinoModel(ExportedRuntime):
    """An IR written by ``mieruka export --format openvino``, run by OpenVINO.

    Args:
        path: The ``.xml`` file (its ``.bin`` beside it).
        device: OpenVINO's device (``CPU``, ``GPU``, ``NPU``, ``AUTO``).
        threads: Threads per inference (default: OpenVINO's choice).
    """

    backend = "openvino"

    def __init__(self, path: str | os.PathLike[str], *, device: str = "CPU", threads: int | None = None):
        ov = _openvino()
        self.path = Path(path)
        if not self.path.is_file() or not self.path.with_suffix(".bin").is_file():
            raise CheckpointError(f"{self.path}: OpenVINO IR not found (it needs {self.path.stem}.xml and .bin)")
        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
        except Exception as exc:
            raise CheckpointError(f"{self.path}: not an OpenVINO IR that OpenVINO can read ({exc})") from None
        if not model.has_rt_info([_RT_KEY, "info"]):
            raise CheckpointError(f"{self.path}: an OpenVINO IR, but not one written by mieruka export")
        keys = ("info", "outputs", "method", DIGEST_KEY)
        meta = {k: model.get_rt_info([_RT_KEY, k]).astype(str) if model.has_rt_info([_RT_KEY, k]) else "" for k in keys}
        check_seal(self.path, meta[DIGEST_KEY], self.path.read_bytes(), self.path.with_suffix(".bin").read_bytes())
        try:
            self.info = ModelInfo.from_json(meta["info"])
            self.outputs: tuple[str, ...] = tuple(json.loads(meta["outputs"]))
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{self.path}: the model description is damaged ({exc})") from None
        self.method: str | None = meta["method"] or None
        config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY"}
        if device.upper() == "CPU":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(model, device, config)
        self.provider = f"openvino:{device}"
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        # An infer request is taken from the idle ones (a new one only when all are busy) and given back after the
        # call: concurrent callers never share one, and none pays for creating one per call (at batch 1 that was a
        # third of the time).
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            # The request reads the caller's array in place and hands back views of its own buffers (no copy either
            # way); the views are copied before the request is given back for reuse.
            out = request.infer({0: np.ascontiguousarray(x, dtype=np.float32)}, share_inputs=True, share_outputs=True)
            probs = np.array(out[self.compiled.output("probabilities")])
            heat = np.array(out[self.compiled.output("heatmap")]) if self.has_heatmap else None
        finally:
            self._idle.put(request)
        return probs, heat
