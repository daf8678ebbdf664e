"""This process's place in a torch.distributed job and the job's process group.

torchrun tells a rank its place through ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without
them the process is the only rank and every helper here is the identity.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

#: how long ranks wait for each other (rank 0 validates alone; a slow rank at 1Mpx on a CPU
#: may finish its share of pseudo labelling hours after the others)
TIMEOUT = datetime.timedelta(hours=12)


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_root(self) -> bool:
        """Rank 0: the only process that writes models, labels, metrics and MLflow runs."""
        return self.rank == 0

    @staticmethod
    def from_env() -> Ranks:
        if "WORLD_SIZE" not in os.environ:
            return Ranks()
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        return Ranks(rank, world, int(os.environ.get("LOCAL_RANK", rank)))


def process_device(device: torch.device) -> torch.device:
    """A rank's own GPU (``cuda:LOCAL_RANK``, round-robin beyond the GPU count); ``device``
    unchanged on CPU or for a single process."""
    ranks = Ranks.from_env()
    if device.type != "cuda" or ranks.world_size == 1:
        return device
    local = torch.device("cuda", ranks.local_rank % torch.cuda.device_count())
    torch.cuda.set_device(local)
    return local


@contextlib.contextmanager
def process_group(backend: str) -> Iterator[None]:
    """The job's process group for the duration of the block (nothing for a single process).
    ``backend``: ``nccl`` for CUDA tensors, ``gloo`` for CPU ones."""
    if Ranks.from_env().world_size == 1 or dist.is_initialized():
        yield
        return
    dist.init_process_group(backend, timeout=TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
