"""Where a batch job's model runs: in this process (``local``, the default) or on Ray Data (``ray``).

A batch job is split in two. A *worker* (:class:`Worker`) holds the model and turns a chunk of :class:`Item`
(image files, with their label and mask when known) into one picklable record per item, in order; a per-image fault
is a record with its error, never an exception. The *driver* (``predict``, ``explain``, ``audit``) consumes the
records in input order and writes every output file. Both engines run the same worker, so their answers are the same
numbers; only where the worker runs differs:

* ``local``: chunk after chunk in this process (:func:`run_local`);
* ``ray``: a pool of worker replicas as Ray actors in ``map_batches``, results written as Parquet shards and merged
  back in input order (:mod:`mieruka.batch.ray_engine`, ``pip install 'mieruka[ray]'``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mieruka.batch.work import ENGINES, EngineOptions, Item, Worker

__all__ = ["ENGINES", "EngineOptions", "Item", "Worker", "run_items", "run_local"]


def run_local(worker: Worker, items: Sequence[Item], *, chunk: int, progress: bool, desc: str) -> Iterator[list[Any]]:
    """The worker's records of ``items``, chunk by chunk, in this process."""
    if chunk < 1:
        raise ValueError(f"chunk {chunk}: give at least 1")
    worker.setup()
    prefetch = getattr(worker, "prefetch", None)  # optional: start reading the next chunk while this one runs
    with tqdm(total=len(items), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, len(items), chunk):
            part = items[start : start + chunk]
            ahead = items[start + chunk : start + 2 * chunk]
            if prefetch is not None and ahead:
                prefetch(ahead)
            records = worker.process(part)
            if len(records) != len(part):
                raise RuntimeError(f"the worker answered {len(records)} of {len(part)} images")
            bar.update(len(part))
            yield records


def run_items(
    worker: Worker,
    items: Sequence[Item],
    *,
    engine: EngineOptions,
    chunk: int,
    shard_dir: Path,
    progress: bool,
    desc: str,
) -> Iterator[list[Any]]:
    """The worker's records of ``items`` in input order, in chunks, on ``engine``. The Ray engine keeps its Parquet
    shards under ``shard_dir`` while the job runs and removes them once they are merged."""
    if not items:  # e.g. a resumed run with nothing left: no engine to start
        return iter(())
    if engine.name == "ray":
        from mieruka.batch.ray_engine import run_ray

        return run_ray(worker, items, options=engine, chunk=chunk, shard_dir=shard_dir, progress=progress)
    return run_local(worker, items, chunk=chunk, progress=progress, desc=desc)
