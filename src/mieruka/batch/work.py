"""The vocabulary of batch jobs: an :class:`Item` of work, the :class:`Worker` that answers items, and the
:class:`EngineOptions` that say where it runs (:mod:`mieruka.batch.engine`)."""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mieruka.errors import MierukaError

__all__ = ["ENGINES", "RAY_CONNECT_TIMEOUT_S", "EngineOptions", "Item", "Worker"]

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class Item:
    """One image of a batch job: its position in the job, file, class index (-1: unknown) and mask ("": none)."""

    index: int
    image: str
    label: int = -1
    mask: str = ""

    @property
    def path(self) -> Path:
        return Path(self.image)


class Worker(Protocol):
    """A picklable job step: ``setup`` once per replica (load the model), then ``process`` chunk after chunk.

    A worker may also have ``prefetch(items)``: the local engine calls it with the next chunk just before it calls
    ``process`` with this one, so that reading files can overlap the model's work (predict's GPU path does)."""

    def setup(self) -> None: ...

    def process(self, items: Sequence[Item]) -> list[Any]:
        """One record per item, in order; an unreadable image gives a record with its error, not an exception."""
        ...


RAY_CONNECT_TIMEOUT_S = 10.0
"""How long ``--ray-address HOST:PORT`` may take to accept a connection before the job is refused."""

_ADDRESS = re.compile(r"(ray://)?(\[[0-9a-fA-F:]+\]|[\w.\-]+):(\d{1,5})")


@dataclass(frozen=True)
class EngineOptions:
    """How to run a batch job.

    Attributes:
        name: ``local`` or ``ray``.
        address: Ray only: ``None`` starts a local Ray instance; ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``
            joins a cluster (refused when nothing answers there within :data:`RAY_CONNECT_TIMEOUT_S`).
        workers: Ray only: model replicas (actors); default: one per GPU with ``gpus_per_worker``, else one per
            ``cpus_per_worker`` CPUs.
        gpus_per_worker: Ray only: GPUs each replica holds (0: run on CPUs).
        cpus_per_worker: Ray only: CPUs each replica holds (its PyTorch threads); default: a local instance's
            cores shared by up to 4 replicas, up to 4 on a cluster (:func:`mieruka.batch.ray_engine.replica_plan`).
    """

    name: str = "local"
    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float = 0.0
    cpus_per_worker: float | None = None

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise ValueError(f"--engine {self.name!r}: choose {' or '.join(ENGINES)}")
        ray_only = (self.address, self.workers, self.gpus_per_worker or None, self.cpus_per_worker)
        if self.name == "local" and any(v is not None for v in ray_only):
            raise ValueError("--ray-address, --workers, --num-gpus-per-worker and --cpus-per-worker need --engine ray")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--workers {self.workers}: give at least 1")
        if self.gpus_per_worker < 0 or (self.cpus_per_worker is not None and self.cpus_per_worker <= 0):
            raise ValueError("--num-gpus-per-worker must be at least 0 and --cpus-per-worker above 0")
        if self.address is not None and self.address != "auto" and not _ADDRESS.fullmatch(self.address):
            raise ValueError(f"--ray-address {self.address!r}: give auto, HOST:PORT or ray://HOST:PORT")

    def check_reachable(self, timeout: float = RAY_CONNECT_TIMEOUT_S) -> None:
        """Raise naming ``--ray-address`` unless something accepts a connection there within ``timeout`` seconds
        (``auto`` and a local instance are left to Ray)."""
        match = _ADDRESS.fullmatch(self.address or "")
        if match is None:
            return
        host, port = match.group(2), int(match.group(3))
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as exc:
            raise MierukaError(
                f"--ray-address {self.address}: nothing answers at {host}:{port} within {timeout:g} s "
                f"({exc.strerror or exc}); start the cluster there or correct the address"
            ) from None
