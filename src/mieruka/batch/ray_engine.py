"""The Ray Data engine of batch jobs (``--engine ray``; ``pip install 'mieruka[ray]'``).

The job's items become a Ray dataset of one block per chunk; a pool of worker replicas runs as actors in
``map_batches`` (each loads the model once; CPU or GPU), and each answered block is written by Ray as a Parquet shard
(``index``, and the pickled record) under the job's shard folder. The driver then merges the shards back in input
order, checks that every item was answered exactly once, and hands the records to the same writer the local engine
feeds. An actor that dies is restarted by Ray and its block retried; a block is only written once it is complete, so
a retried block is not answered twice.

Images and outputs are read and written by the workers where they run: on a cluster, the input files and the output
folder must be on storage every node sees (as for any Ray Data job reading local paths).

Without an address a local Ray instance is started for the job (a laptop needs nothing else) and stopped after it;
it declares two more logical CPUs than the machine has, which Ray Data's own small tasks (writing the shards) use, so
that they never wait behind the model replicas. With ``auto`` or ``ray://…`` the job joins that cluster.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mieruka.batch.work import EngineOptions, Item, Worker
from mieruka.errors import MierukaError

__all__ = ["LOCAL_EXTRA_CPUS", "MAX_LOCAL_REPLICAS", "replica_plan", "run_ray"]

LOCAL_EXTRA_CPUS = 2
"""Logical CPUs a local Ray instance declares beyond the machine's cores, for Ray Data's shard-writing tasks."""

WRITE_TASK_CPUS = 0.25
"""CPUs a shard-writing task asks for: it only serializes records the replicas made."""


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MierukaError("--engine ray needs Ray Data: pip install 'mieruka[ray]'") from None
    return ray


MAX_LOCAL_REPLICAS = 4
"""A local instance runs up to this many replicas by default (each holds a model and PyTorch: about 1 GB)."""


def replica_plan(
    options: EngineOptions, resources: dict[str, float], local: bool, node_cpus: Sequence[float] = ()
) -> tuple[int, float, float]:
    """(replicas, CPUs each, GPUs each) for a job on a cluster with ``resources`` (``ray.cluster_resources()``)
    whose nodes have ``node_cpus`` CPUs each.

    Defaults: a local instance splits the machine's cores among up to :data:`MAX_LOCAL_REPLICAS` replicas (on 2 cores,
    two replicas of one thread ran 1.26× the images/s of one replica of two threads: docs/benchmarks-history.md#scale);
    a cluster runs one replica per GPU with ``gpus_per_worker``, else replicas of up to 4 CPUs (no more than its
    smallest node has) on all of its CPUs.
    """
    gpus = options.gpus_per_worker
    cores = max(1.0, resources.get("CPU", 1.0) - (LOCAL_EXTRA_CPUS if local else 0))
    if gpus > resources.get("GPU", 0.0):
        raise MierukaError(f"--num-gpus-per-worker {gpus:g}: the Ray cluster has {resources.get('GPU', 0):g} GPUs")
    if options.cpus_per_worker is not None:
        cpus = options.cpus_per_worker
    elif local:
        cpus = max(1.0, float(int(cores) // MAX_LOCAL_REPLICAS))
    else:
        cpus = max(1.0, min(4.0, *(node_cpus or (4.0,))))
    if options.workers is not None:
        workers = options.workers
    elif gpus:
        workers = max(1, int(resources.get("GPU", 0.0) // gpus))
    else:
        workers = max(1, int(cores // cpus))
    return workers, cpus, gpus


@dataclass(frozen=True)
class _Refused:
    """What a replica answers for a chunk when the worker refused its input (a bad option or file: ValueError or
    OSError, as the local engine raises them); the driver raises it again instead of Ray's wrapped error."""

    error: BaseException


class _Replica:
    """One model replica as a Ray actor: ``setup`` once, then chunks of items in, pickled records out."""

    def __init__(self, worker: Worker, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        self.worker = worker
        self.worker.setup()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [
            Item(int(i), str(image), int(label), str(mask))
            for i, image, label, mask in zip(batch["index"], batch["image"], batch["label"], batch["mask"], strict=True)
        ]
        try:
            records: list[Any] = self.worker.process(items)
        except (ValueError, OSError) as exc:  # deterministic: a retry would fail the same way
            records = [_Refused(exc)] * len(items)
        if len(records) != len(items):
            raise RuntimeError(f"the worker answered {len(records)} of {len(items)} images")
        out = np.empty(len(records), dtype=object)
        out[:] = [pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL) for r in records]
        return {"index": np.asarray(batch["index"], dtype=np.int64), "record": out}


def _start(ray: Any, options: EngineOptions, progress: bool) -> bool:
    """Connect to (or start) Ray; True when this call started or joined it and must stop it."""
    if ray.is_initialized():
        return False
    level = logging.INFO if progress else logging.WARNING
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": level}
    if options.address is None:
        kwargs["num_cpus"] = (os.cpu_count() or 1) + LOCAL_EXTRA_CPUS
    else:
        options.check_reachable()
        kwargs["address"] = options.address
    ray.init(**kwargs)
    return True


def run_ray(
    worker: Worker,
    items: Sequence[Item],
    *,
    options: EngineOptions,
    chunk: int,
    shard_dir: Path,
    progress: bool,
) -> Iterator[list[Any]]:
    """The worker's records of ``items`` in input order, in chunks of ``chunk``, computed on Ray Data."""
    ray = _ray()
    started = _start(ray, options, progress)
    try:
        local = started and options.address is None
        node_cpus = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
        workers, cpus, gpus = replica_plan(options, ray.cluster_resources(), local, node_cpus)
        if not progress:  # --quiet: Ray Data's progress lines too
            for name in ("ray", "ray.data"):
                logging.getLogger(name).setLevel(logging.WARNING)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = progress
        context.execution_options.verbose_progress = False
        shutil.rmtree(shard_dir, ignore_errors=True)
        rows = [{"index": it.index, "image": it.image, "label": it.label, "mask": it.mask} for it in items]
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / chunk)))
        del rows
        answered = dataset.map_batches(
            _Replica,
            fn_constructor_args=(worker, max(1, round(cpus))),
            batch_size=chunk,
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=cpus,
            num_gpus=gpus,
        )
        answered.write_parquet(str(shard_dir), ray_remote_args={"num_cpus": WRITE_TASK_CPUS})
    finally:
        if started:
            ray.shutdown()
    yield from _merge(shard_dir, [it.index for it in items], chunk)
    shutil.rmtree(shard_dir, ignore_errors=True)


def _shard_ranges(shard_dir: Path) -> list[tuple[int, int, Path]]:
    """(first index, last index, file) of every non-empty shard, in order of their first index."""
    import pyarrow.parquet as pq

    ranges = []
    for path in shard_dir.glob("*.parquet"):
        column = pq.read_table(path, columns=["index"]).column("index").to_numpy()
        if len(column) == 0:
            continue
        if np.any(np.diff(column) <= 0):
            raise RuntimeError(f"{path}: a shard whose rows are not in input order")
        ranges.append((int(column[0]), int(column[-1]), path))
    return sorted(ranges)


def _merge(shard_dir: Path, expected: Sequence[int], chunk: int) -> Iterator[list[Any]]:
    """Records of the shards in input order (each shard holds a run of consecutive items), ``chunk`` at a time;
    an item answered twice, or not at all, is an error."""
    import pyarrow.parquet as pq

    position = 0
    pending: list[Any] = []
    for _, _, path in _shard_ranges(shard_dir):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk, columns=["index", "record"]):
            for index, blob in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True):
                if position >= len(expected) or index != expected[position]:
                    want = expected[position] if position < len(expected) else "none"
                    raise RuntimeError(f"Ray answered image {index} where image {want} was due (shards: {shard_dir})")
                record = pickle.loads(blob)
                if isinstance(record, _Refused):
                    raise record.error
                pending.append(record)
                position += 1
                if len(pending) == chunk:
                    yield pending
                    pending = []
    if pending:
        yield pending
    if position != len(expected):
        raise RuntimeError(f"Ray answered {position} of {len(expected)} images (shards: {shard_dir})")
