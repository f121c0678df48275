"""Classify images with a trained model: ``mieruka predict MODEL IMAGE_OR_DIR... --out preds.csv``.

The images are read, classified and written in chunks of :data:`PREDICT_CHUNK`, so memory does not grow with their
number; a file that cannot be read becomes a row with an ``error`` (``--strict`` stops instead), and ``--resume``
continues a killed run from the rows its output already holds.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mieruka.batch.engine import EngineOptions, Item, run_items
from mieruka.batch.sinks import open_sink
from mieruka.checkpoint import ModelInfo, load_checkpoint, read_info
from mieruka.data.images import IMAGE_EXTENSIONS
from mieruka.data.sources.folder import MASKS_DIR
from mieruka.errors import DataError
from mieruka.inference import classify_files, decode_device, select_device
from mieruka.metrics import gate, ng_probability
from mieruka.runtime import OnnxModel, check_torch_provider, is_exported, load_exported

__all__ = [
    "PREDICT_CHUNK",
    "PredictRun",
    "PredictWorker",
    "Prediction",
    "classify_chunk",
    "collect_images",
    "predict",
]


@dataclass(frozen=True)
class Prediction:
    """One image's result."""

    image: Path
    label: str
    probability: float
    verdict: str
    ng_probability: float
    probabilities: tuple[float, ...]
    threshold: float
    error: str = ""
    """Why the image could not be classified (empty when it was); the other fields are then empty or NaN."""


def collect_images(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Image files named directly, plus every image below named folders (sorted; hidden files and the files of a
    ``masks/`` folder, where a data set keeps its defect masks, are skipped)."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and f.suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith(".") or part == MASKS_DIR for part in f.relative_to(p).parts[:-1])
                and not f.name.startswith(".")
            )
            if not found:
                raise DataError(f"{p}: the folder holds no images")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    if not paths:
        raise DataError("no images given")
    return paths


PREDICT_CHUNK = 256
"""Images decoded, classified and written per step: memory stays flat however many images there are."""


def _torch_device(device: str, provider: str) -> str:
    check_torch_provider(provider)
    return provider if device == "auto" and provider in ("cpu", "cuda") else device


def _model(
    model_path: str | os.PathLike[str], device: str, provider: str = "auto"
) -> tuple[nn.Module | OnnxModel, ModelInfo]:
    if is_exported(model_path):
        exported = load_exported(model_path, provider=provider)
        return exported, exported.info
    model, info, _ = load_checkpoint(model_path, select_device(_torch_device(device, provider)))
    return model.to(memory_format=torch.channels_last), info


def _info(worker: PredictWorker, engine: EngineOptions) -> tuple[ModelInfo, str]:
    """The model's description and what runs it."""
    if engine.name == "local":  # the driver's worker is the local engine's replica: its model is loaded once, here
        worker.setup()
        model, info = worker.model, worker.info
    elif is_exported(worker.model_path):  # a Ray driver: the replicas load their own copies
        model = load_exported(worker.model_path, provider=worker.provider)
        info = model.info
    else:
        device = select_device(_torch_device(worker.device, worker.provider))
        return read_info(worker.model_path), f"pytorch ({device})"
    assert model is not None and info is not None
    if isinstance(model, nn.Module):
        return info, f"pytorch ({next(model.parameters()).device})"
    return info, f"{model.backend} ({model.provider})"


def classify_chunk(
    model: nn.Module | OnnxModel,
    info: ModelInfo,
    paths: Sequence[Path],
    *,
    threshold: float | None = None,
    batch_size: int = 64,
    tta: str | None = None,
    decode: str = "auto",
    encoded: dict[Path, bytes | None] | None = None,
) -> list[Prediction]:
    """The predictions of ``paths`` (one chunk; the engine does the chunking), in order. A file that cannot be read
    becomes a prediction with ``error`` set. ``decode``: where JPEGs are decoded
    (:data:`~mieruka.inference.DECODE_CHOICES`); ``encoded``: files already read for the device decoder."""
    t = threshold if threshold is not None else info.decision_threshold
    options: dict[str, Any] = {"mean": info.mean, "std": info.std, "tta": tta or info.tta, "batch_size": batch_size}
    options["decode"], options["encoded"] = decode, encoded
    part = list(paths)
    probs, _, bad = classify_files(
        model, part, chunk=max(1, len(part)), image_size=info.image_size, bit_depth=info.bit_depth, **options
    )
    good = [i for i in range(len(part)) if i not in bad]
    read = probs[good] if good else np.zeros((0, len(info.classes)))  # a chunk of bad files has no columns
    p_ng, rejected = ng_probability(read, info.ng_classes), gate(read, info.ng_classes, t)
    row = {i: j for j, i in enumerate(good)}
    out = []
    for i, p in enumerate(part):
        if i in bad:
            out.append(Prediction(p, "", float("nan"), "", float("nan"), (), t, bad[i]))
            continue
        j = row[i]
        top = int(probs[i].argmax())
        verdict = "NG" if rejected[j] else "OK"
        values = tuple(float(v) for v in probs[i])
        out.append(Prediction(p, info.classes[top], float(probs[i, top]), verdict, float(p_ng[j]), values, t))
    return out


def _row(r: Prediction, classes: Sequence[str]) -> tuple[str, ...]:
    if r.error:
        return (str(r.image), "", "", "", "", *("" for _ in classes), r.error)
    numbers = (f"{v:.6f}" for v in r.probabilities)
    return (str(r.image), r.label, f"{r.probability:.6f}", r.verdict, f"{r.ng_probability:.6f}", *numbers, "")


class PredictWorker:
    """The model step of ``predict`` on either engine (:class:`mieruka.batch.engine.Worker`): loads the model once
    per replica and answers chunks of images (unreadable ones as predictions with ``error`` set)."""

    def __init__(
        self,
        model_path: str,
        device: str,
        threshold: float | None,
        batch_size: int,
        tta: str | None,
        decode: str = "auto",
        provider: str = "auto",
    ) -> None:
        self.model_path, self.device, self.threshold, self.provider = model_path, device, threshold, provider
        self.batch_size, self.tta, self.decode = batch_size, tta, decode
        self.model: nn.Module | OnnxModel | None = None
        self.info: ModelInfo | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._ahead: tuple[tuple[Path, ...], Future[dict[Path, bytes | None]]] | None = None

    def __getstate__(self) -> dict[str, Any]:  # replicas load their own model
        return {**self.__dict__, "model": None, "info": None, "_reader": None, "_ahead": None}

    def prefetch(self, items: Sequence[Item]) -> None:
        """Start reading the next chunk's JPEGs in the background when they will be decoded on the device: the files
        are read while the GPU classifies this chunk."""
        if self.model is None or decode_device(self.model, self.decode) is None:
            return
        from mieruka.data.jpeg import read_ahead

        # a thread (a process per run measured 2.6× slower on an H200: its start and the bytes' trip back cost more
        # than the lock the reader threads compete for; docs/benchmarks-history.md#gpu)
        self._reader = self._reader or ThreadPoolExecutor(1, thread_name_prefix="mieruka-read-ahead")
        paths = tuple(Path(it.path) for it in items)
        self._ahead = (paths, self._reader.submit(read_ahead, paths))

    def close(self) -> None:
        """Stop the read-ahead thread, if one was started."""
        if self._reader is not None:
            self._reader.shutdown(cancel_futures=True)
            self._reader, self._ahead = None, None

    def _prefetched(self, paths: Sequence[Path]) -> dict[Path, bytes | None] | None:
        ahead, self._ahead = self._ahead, None
        if ahead is None or ahead[0] != tuple(paths):
            return None
        return ahead[1].result()

    def setup(self) -> None:
        if self.model is None:
            self.model, self.info = _model(self.model_path, self.device, self.provider)

    def process(self, items: Sequence[Item]) -> list[Prediction]:
        assert self.model is not None and self.info is not None, "setup() first"
        options: dict[str, Any] = {"threshold": self.threshold, "batch_size": self.batch_size, "tta": self.tta}
        paths = [Path(it.path) for it in items]
        options["decode"], options["encoded"] = self.decode, self._prefetched(paths)
        return classify_chunk(self.model, self.info, paths, **options)


def _shard_dir(out: str | os.PathLike[str] | None) -> Path:
    """Where the Ray engine keeps its shards while a job runs: beside the output, else in a temporary folder."""
    if out is None:
        return Path(tempfile.mkdtemp(prefix="mieruka-ray-")) / "shards"
    out = Path(out)
    return out.with_name(f".{out.name}.ray-shards")


def predict(
    model_path: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    *,
    out: str | os.PathLike[str] | None = None,
    threshold: float | None = None,
    device: str = "auto",
    batch_size: int = 64,
    tta: str | None = None,
    progress: bool = True,
    strict: bool = False,
    resume: bool = False,
    keep: bool = True,
    engine: EngineOptions | None = None,
    decode: str = "auto",
    provider: str = "auto",
) -> PredictRun:
    """Class, probability and verdict of every image, streamed in chunks (``tta`` default: the model's).

    ``model_path`` is a ``.safetensors`` checkpoint (PyTorch), or a file from ``mieruka export``: ``.onnx`` (ONNX
    Runtime on ``provider``) or OpenVINO ``.xml`` (``device`` is then ignored). All get the same preprocessing. The
    verdict is the gate of :func:`mieruka.metrics.gate` at ``threshold`` (default: the model's
    :attr:`~mieruka.checkpoint.ModelInfo.decision_threshold`).

    Args:
        out: Write rows here as they are made: CSV, or Parquet for a ``.parquet`` name (:mod:`mieruka.batch.sinks`).
        strict: Stop at the first unreadable image with its message (default: a row with ``error`` set).
        resume: Skip the images ``out`` already holds (from a killed or finished earlier run) and append.
        keep: Return every prediction (off for very long runs that only write ``out``).
        engine: Where the model runs (:class:`~mieruka.batch.engine.EngineOptions`; default: this process).
        decode: Where JPEGs are decoded (:data:`~mieruka.inference.DECODE_CHOICES`; ``auto``: on the GPU when the
            model runs on one).
        provider: ONNX Runtime's execution provider for an ``.onnx`` model (:mod:`mieruka.deploy.providers`);
            ``cpu``/``cuda`` also choose the device of a ``.safetensors`` model when ``device`` is ``auto``.

    Raises:
        DataError: ``strict`` and an unreadable image; or every image failed.
    """
    engine = engine or EngineOptions()
    worker = PredictWorker(str(model_path), device, threshold, batch_size, tta, decode, provider)
    paths = collect_images(inputs)
    info, runtime = _info(worker, engine)
    header = ("image", "class", "probability", "verdict", "ng_probability", *(f"p[{c}]" for c in info.classes))
    sink = open_sink(out, (*header, "error"), resume=resume) if out is not None else None
    done = sink.done() if sink is not None else set()
    todo = [Item(i, str(p)) for i, p in enumerate(p for p in paths if str(p) not in done)]
    run = PredictRun(images=len(todo), skipped=len(paths) - len(todo), runtime=runtime)
    try:
        chunks = run_items(
            worker,
            todo,
            engine=engine,
            chunk=PREDICT_CHUNK,
            shard_dir=_shard_dir(out),
            progress=progress,
            desc="predicting",
        )
        for results in chunks:
            first_bad = next((r for r in results if r.error), None)
            if strict and first_bad is not None:
                raise DataError(f"{first_bad.image}: {first_bad.error}")
            if sink is not None:
                sink.write([_row(r, info.classes) for r in results])
            run.add(results, keep)
    finally:
        worker.close()
        if sink is not None:
            sink.close()
    if todo and run.errors == len(todo):
        raise DataError(f"none of the {len(todo)} images could be read (the first: {run.first_error})")
    return run


@dataclass
class PredictRun:
    """What a predict run did: counts, the threshold, and (with ``keep``) every prediction in input order."""

    images: int
    skipped: int = 0
    ok: int = 0
    ng: int = 0
    errors: int = 0
    threshold: float | None = None
    first_error: str = ""
    results: list[Prediction] = field(default_factory=list)
    runtime: str = ""
    """What ran the model: ``onnxruntime (cpu)``, ``openvino (openvino:CPU)``, ``pytorch (cuda)``…"""

    def add(self, results: Sequence[Prediction], keep: bool) -> None:
        for r in results:
            if r.error and not self.first_error:
                self.first_error = f"{r.image}: {r.error}"
            self.errors += bool(r.error)
            self.ok += r.verdict == "OK"
            self.ng += r.verdict == "NG"
            self.threshold = r.threshold
        if keep:
            self.results.extend(results)

    def __iter__(self) -> Iterator[Prediction]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, i: int) -> Prediction:
        return self.results[i]
