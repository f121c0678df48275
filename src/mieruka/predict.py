"""Classify images with a trained model: ``mieruka predict MODEL IMAGE_OR_DIR... --out preds.csv``.

The images are read, classified and written in chunks of :data:`PREDICT_CHUNK`, so memory does not grow with their
number; a file that cannot be read becomes a row with an ``error`` (``--strict`` stops instead), and ``--resume``
continues a killed run from the rows its output already holds.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mieruka.batch.engine import EngineOptions, Item
from mieruka.batch.job import Job, JobOptions, ModelWorker
from mieruka.batch.sinks import open_sink
from mieruka.checkpoint import ModelInfo, read_info
from mieruka.data.inputs import collect_images
from mieruka.inference import ClassifyOptions, classify_files, decode_device
from mieruka.model_file import OpenedModel, open_model, torch_device
from mieruka.results import Prediction, predictions
from mieruka.runtime import is_exported

__all__ = [
    "PREDICT_CHUNK",
    "PredictOptions",
    "PredictRun",
    "PredictWorker",
    "Prediction",
    "classify_chunk",
    "collect_images",
    "predict",
]


@dataclass(frozen=True)
class PredictOptions:
    """How ``predict`` classifies (the command's options; :func:`predict` takes them as keywords).

    Attributes:
        threshold: The NG threshold of the verdict (default: the model's
            :attr:`~mieruka.checkpoint.ModelInfo.decision_threshold`).
        device: Where a ``.safetensors`` model runs (``auto``, ``cpu``, ``cuda``; ignored for OpenVINO ``.xml``).
        batch_size: Images per forward pass.
        tta: Test-time augmentation (default: the model's).
        decode: Where JPEGs are decoded (:data:`~mieruka.inference.DECODE_CHOICES`; ``auto``: on the GPU when the
            model runs on one).
        provider: ONNX Runtime's execution provider for an ``.onnx`` model (:mod:`mieruka.deploy.providers`);
            ``cpu``/``cuda`` also choose the device of a ``.safetensors`` model when ``device`` is ``auto``.
        progress: Show a progress bar.
        strict: Stop at the first unreadable image with its message (default: a row with ``error`` set).
        engine: Where the model runs (:class:`~mieruka.batch.engine.EngineOptions`; default: this process).
    """

    threshold: float | None = None
    device: str = "auto"
    batch_size: int = 64
    tta: str | None = None
    decode: str = "auto"
    provider: str = "auto"
    progress: bool = True
    strict: bool = False
    engine: EngineOptions = field(default_factory=EngineOptions)


PREDICT_CHUNK = 256
"""Images decoded, classified and written per step: memory stays flat however many images there are."""


def classify_chunk(
    model: OpenedModel,
    paths: Sequence[Path],
    options: PredictOptions,
    encoded: dict[Path, bytes | None] | None = None,
) -> list[Prediction]:
    """The predictions of ``paths`` (one chunk; the engine does the chunking), in order. A file that cannot be read
    becomes a prediction with ``error`` set. ``encoded``: files already read for the device decoder."""
    info = model.info
    t = options.threshold if options.threshold is not None else info.decision_threshold
    part = list(paths)
    how = ClassifyOptions(tta=options.tta or info.tta, batch_size=options.batch_size, decode=options.decode)
    probs, _, bad = classify_files(model.runner, part, info, replace(how, chunk=max(1, len(part))), encoded)
    good = [i for i in range(len(part)) if i not in bad]
    read = iter(predictions([str(part[i]) for i in good], probs[good], info.classes, info.ng_classes, t))
    return [Prediction.unreadable(str(p), bad[i], t) if i in bad else next(read) for i, p in enumerate(part)]


def _row(r: Prediction, classes: Sequence[str]) -> tuple[str, ...]:
    if r.error:
        return (r.image, "", "", "", "", *("" for _ in classes), r.error)
    numbers = (f"{v:.6f}" for v in r.probabilities.values())
    return (r.image, r.label, f"{r.probability:.6f}", r.verdict, f"{r.ng_probability:.6f}", *numbers, "")


class PredictWorker(ModelWorker):
    """The model step of ``predict`` on either engine: answers chunks of images (unreadable ones as predictions
    with ``error`` set), reading the next chunk's JPEGs ahead when they are decoded on the GPU."""

    per_replica = ("opened", "_reader", "_ahead")

    def __init__(self, model_path: str, options: PredictOptions) -> None:
        super().__init__(model_path, options.device, options.provider)
        self.options = options
        self._reader: ThreadPoolExecutor | None = None
        self._ahead: tuple[tuple[Path, ...], Future[dict[Path, bytes | None]]] | None = None

    def prefetch(self, items: Sequence[Item]) -> None:
        """Start reading the next chunk's JPEGs in the background when they will be decoded on the device: the files
        are read while the GPU classifies this chunk."""
        if self.opened is None or decode_device(self.opened.runner, self.options.decode) is None:
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

    def process(self, items: Sequence[Item]) -> list[Prediction]:
        paths = [Path(it.path) for it in items]
        return classify_chunk(self.model, paths, self.options, self._prefetched(paths))


def _runtime(worker: PredictWorker, engine: EngineOptions) -> tuple[ModelInfo, str]:
    """The model's description and what runs it, said before the job starts. The local engine's replica is this
    process's worker (its model is loaded once, here); a Ray driver opens only what it must describe."""
    if engine.name == "local":
        worker.setup()
        return worker.info, worker.model.runtime_name
    if is_exported(worker.model_path):
        opened = open_model(worker.model_path, provider=worker.provider)
        return opened.info, opened.runtime_name
    return read_info(worker.model_path), f"pytorch ({torch_device(worker.device, worker.provider)})"


def _shard_dir(out: str | os.PathLike[str] | None, engine: EngineOptions) -> tuple[Path, Path | None]:
    """Where the Ray engine keeps its shards while a job runs (beside the output), and a temporary folder made for
    them when there is no output (None: none made; the caller removes it). The local engine needs none."""
    if out is not None:
        path = Path(out)
        return path.with_name(f".{path.name}.ray-shards"), None
    if engine.name != "ray":
        return Path(tempfile.gettempdir()) / "mieruka-unused-shards", None
    temporary = Path(tempfile.mkdtemp(prefix="mieruka-ray-"))
    return temporary / "shards", temporary


def predict(
    model_path: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    *,
    out: str | os.PathLike[str] | None = None,
    resume: bool = False,
    keep: bool = True,
    **options: Any,
) -> PredictRun:
    """Class, probability and verdict of every image, streamed in chunks.

    ``model_path`` is a ``.safetensors`` checkpoint (PyTorch), or a file from ``mieruka export``: ``.onnx`` (ONNX
    Runtime) or OpenVINO ``.xml``. All get the same preprocessing. The verdict is the gate of
    :func:`mieruka.metrics.gate` at the threshold.

    Args:
        out: Write rows here as they are made: CSV, or Parquet for a ``.parquet`` name (:mod:`mieruka.batch.sinks`).
        resume: Skip the images ``out`` already holds (from a killed or finished earlier run) and append.
        keep: Return every prediction (off for very long runs that only write ``out``).
        options: :class:`PredictOptions`' fields (``threshold=…``, ``device=…``, ``strict=…``, ``engine=…``…).

    Raises:
        DataError: ``strict`` and an unreadable image; or every image failed.
    """
    opts = PredictOptions(**options)
    worker = PredictWorker(str(model_path), opts)
    paths = collect_images(inputs)
    info, runtime = _runtime(worker, opts.engine)
    header = ("image", "class", "probability", "verdict", "ng_probability", *(f"p[{c}]" for c in info.classes))
    sink = open_sink(out, (*header, "error"), resume=resume) if out is not None else None
    done = sink.done() if sink is not None else set()
    todo = [Item(i, str(p)) for i, p in enumerate(p for p in paths if str(p) not in done)]
    run = PredictRun(images=len(todo), skipped=len(paths) - len(todo), runtime=runtime)
    shards, temporary = _shard_dir(out, opts.engine)
    job = Job(worker, todo, lambda r: r.error, what="predicting", chunk=PREDICT_CHUNK, shard_dir=shards)
    try:
        for pairs in job.chunks(JobOptions(opts.engine, opts.progress, opts.strict)):
            results = [r for _, r in pairs]
            if sink is not None:
                sink.write([_row(r, info.classes) for r in results])
            run.add(results, keep)
    finally:
        if sink is not None:
            sink.close()
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
    run.errors, run.first_error = job.errors, job.first_error
    job.check_some_read()
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
