"""Training on several processes or GPUs: ``torchrun --nproc-per-node N -m mieruka train …``.

torchrun starts N copies of the command and sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; :func:`from_env` reads
them, and with more than one process the run joins a ``torch.distributed`` process group (NCCL on CUDA, one GPU per
local rank; gloo on CPUs) and trains with DistributedDataParallel. Every rank draws the same square-root-balanced
sample of each epoch (the same seeded generator) and trains on its share of every batch, so the gradient step is
that of the whole batch; only rank 0 validates, saves and logs. A rank that fails ends the job: torchrun stops the
others, and collectives time out after :data:`COLLECTIVE_TIMEOUT` rather than hang.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

__all__ = ["COLLECTIVE_TIMEOUT", "Ranks", "from_env"]

COLLECTIVE_TIMEOUT = timedelta(minutes=30)
"""How long a rank waits for the others at a collective (validation of a large split runs on rank 0 meanwhile)."""


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """Whether this process validates, writes and logs."""
        return self.rank == 0

    def device(self, requested: torch.device) -> torch.device:
        """The device of this rank: its local GPU when the run is on CUDA."""
        if self.enabled and requested.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return requested

    def start(self, device: torch.device) -> None:
        """Join the process group (no-op for one process)."""
        if not self.enabled or dist.is_initialized():
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend, timeout=COLLECTIVE_TIMEOUT, device_id=device if device.type == "cuda" else None
        )

    def stop(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag``, on every rank (e.g. early stopping, decided where validation runs)."""
        if not self.enabled:
            return flag
        value = torch.tensor([int(flag)], dtype=torch.int64, device=self._collective_device())
        dist.broadcast(value, src=0)
        return bool(value.item())

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._collective_device())
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def _collective_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")

    @contextlib.contextmanager
    def quiet_unless_main(self) -> Iterator[None]:
        """Standard output of ranks other than 0 is dropped (their errors still reach standard error)."""
        if self.main:
            yield
            return
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            yield


def from_env() -> Ranks:
    """The ranks torchrun set (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``); one process without them."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    return Ranks(rank=int(os.environ["RANK"]), world=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")))
