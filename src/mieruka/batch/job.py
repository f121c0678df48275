"""The one batch job over images that ``predict``, ``explain`` and ``audit`` run; each adds only its per-chunk work.

* :class:`ModelWorker` — the worker side: opens the model once per replica (:class:`~mieruka.model_file.ModelFile`),
  leaves it behind when pickled for Ray, and reads a chunk's images once (unreadable ones named with their reason).
* :class:`Job` — the driver side: runs the worker on an engine, hands the items with their records over in input
  order, counts the unreadable images, stops at the first one under ``--strict`` and fails when none could be read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mieruka.batch.engine import run_items
from mieruka.batch.work import EngineOptions, Item
from mieruka.checkpoint import ModelInfo
from mieruka.data.store import ImageStore
from mieruka.errors import DataError
from mieruka.model_file import OpenedModel, open_model

__all__ = ["Job", "JobOptions", "ModelWorker"]


@dataclass(frozen=True)
class JobOptions:
    """How a batch job runs: where (``engine``), how many images per chunk, with a progress bar, and whether the
    first unreadable image stops it (``strict``)."""

    engine: EngineOptions = field(default_factory=EngineOptions)
    progress: bool = True
    strict: bool = False


class ModelWorker:
    """The model step of a batch job (:class:`~mieruka.batch.work.Worker`): subclasses add :meth:`process`.

    Args:
        model_path: The model file.
        device: Where a checkpoint runs (``auto``, ``cpu``, ``cuda``).
        provider: ONNX Runtime's execution provider for an ``.onnx`` file.
    """

    per_replica: tuple[str, ...] = ("opened",)
    """Attributes each replica makes for itself in :meth:`setup`: left out when the worker is pickled."""

    def __init__(self, model_path: str, device: str = "auto", provider: str = "auto") -> None:
        self.model_path, self.device, self.provider = model_path, device, provider
        self.opened: OpenedModel | None = None

    def __getstate__(self) -> dict[str, Any]:  # replicas load their own model
        return {**self.__dict__, **dict.fromkeys(self.per_replica)}

    def setup(self) -> None:
        if self.opened is None:
            self.opened = open_model(self.model_path, self.device, provider=self.provider)
            self.after_setup()

    def after_setup(self) -> None:
        """What a job adds once its model is open (nothing by default)."""

    @property
    def model(self) -> OpenedModel:
        assert self.opened is not None, "setup() first"
        return self.opened

    @property
    def info(self) -> ModelInfo:
        return self.model.info

    def read(self, items: Sequence[Item]) -> tuple[ImageStore, dict[Path, str]]:
        """The chunk's images at the model's input size, and the unreadable ones with their reasons."""
        info = self.info
        store = ImageStore([it.path for it in items], info.image_size, progress=False, bit_depth=info.bit_depth)
        return store, {b.path: b.reason for b in store.bad}

    def process(self, items: Sequence[Item]) -> list[Any]:  # pragma: no cover - every job defines it
        raise NotImplementedError

    def close(self) -> None:
        """Stop what the worker started beside its model (predict's read-ahead thread); nothing by default."""


class Job:
    """A batch job's driver (see the module docstring).

    Args:
        worker: The job's worker.
        items: The images, in order.
        error_of: The error of a record ("" when the image was read).
        what: The job's words for its progress bar and messages (``predicting``, ``explaining``, ``auditing``).
        chunk: Images per step.
        shard_dir: Where the Ray engine keeps its shards while the job runs.
    """

    def __init__(
        self,
        worker: ModelWorker,
        items: Sequence[Item],
        error_of: Callable[[Any], str],
        *,
        what: str,
        chunk: int,
        shard_dir: Path,
    ) -> None:
        self.worker, self.items, self.error_of, self.what = worker, items, error_of, what
        self.chunk, self.shard_dir = chunk, shard_dir
        self.errors, self.first_error = 0, ""

    def chunks(self, options: JobOptions, desc: str | None = None) -> Iterator[list[tuple[Item, Any]]]:
        """Chunk after chunk, each item with its record, in input order; ``strict``: a :class:`DataError` naming the
        first unreadable image, before its chunk is handed over. The worker's read-ahead thread, if any, is
        stopped at the end."""
        try:
            chunks = run_items(self.worker, self.items, engine=options.engine, chunk=self.chunk,
                               shard_dir=self.shard_dir, progress=options.progress, desc=desc or self.what)  # fmt: skip
            done = 0
            for records in chunks:
                pairs = list(zip(self.items[done : done + len(records)], records, strict=True))
                done += len(records)
                for item, record in pairs:
                    error = self.error_of(record)
                    if error and options.strict:
                        raise DataError(f"{item.image}: {error}")
                    if error:
                        self.errors += 1
                        self.first_error = self.first_error or f"{item.image}: {error}"
                yield pairs
        finally:
            self.worker.close()

    def check_some_read(self, verb: str = "read") -> None:
        """Fail when the job had images and none of them could be ``verb`` (read, audited)."""
        if self.items and self.errors == len(self.items):
            raise DataError(f"none of the {len(self.items)} images could be {verb} (the first: {self.first_error})")
