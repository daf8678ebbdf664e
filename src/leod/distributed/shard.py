"""Sequences shared out over the ranks of a torch.distributed job, results united on rank 0.

Inference stages (pseudolabel, evaluate) split whole sequences across ranks: each rank
streams its sequences with its own recurrent states, then every rank's result travels to
rank 0 as plain numpy arrays (an in-memory npz, read back without pickle), where the
caller reassembles them in the single-process order. A batch always holds ``batch_size``
slots (padded when sequences run out), so each sequence meets the same kernels, and the
united result is byte-identical to one process's (tests/test_shard.py).

A rank learns its place from the environment ``torchrun`` (and :mod:`leod.distributed.launch`)
sets: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``. Without
them the process is the only rank and nothing is exchanged. Only CPU bytes are exchanged,
once, at the end, so the group is gloo on CPU and GPU machines alike.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol, TypeVar

import numpy as np
import torch
import torch.distributed as dist

T = TypeVar("T")
S = TypeVar("S", bound="HasFrames")

#: how long a rank that finished its share waits for the others at the gather (shares are
#: balanced by frame count, but a slow rank at 1Mpx on CPU may lag by hours)
GATHER_TIMEOUT = timedelta(hours=12)


class HasFrames(Protocol):
    @property
    def num_frames(self) -> int: ...


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    @staticmethod
    def from_env() -> Ranks:
        """The place torchrun's variables give; the single rank when they are absent."""
        if "WORLD_SIZE" not in os.environ:
            return Ranks()
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        return Ranks(rank, world, int(os.environ.get("LOCAL_RANK", rank)))


def assign(lengths: Sequence[int], world_size: int) -> list[list[int]]:
    """Indices of the items each rank takes, balanced by length (longest first to the least
    loaded rank, ties to the lower index and rank); each rank's list is in the input order."""
    load = [0] * world_size
    shares: list[list[int]] = [[] for _ in range(world_size)]
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        r = min(range(world_size), key=lambda k: (load[k], k))
        shares[r].append(i)
        load[r] += lengths[i]
    return [sorted(s) for s in shares]


def share(seqs: Sequence[S], ranks: Ranks) -> list[S]:
    """The sequences (anything with ``num_frames``) this rank takes, balanced by frame count."""
    return [seqs[i] for i in assign([s.num_frames for s in seqs], ranks.world_size)[ranks.rank]]


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """One GPU per local rank (ranks beyond the GPU count share them round-robin)."""
    if device.type != "cuda" or ranks.world_size == 1:
        return device
    index = ranks.local_rank % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


@contextlib.contextmanager
def process_group(ranks: Ranks) -> Iterator[None]:
    """The gloo group of a multi-rank job for the duration of the block (nothing for one rank)."""
    if ranks.world_size == 1:
        yield
        return
    dist.init_process_group("gloo", rank=ranks.rank, world_size=ranks.world_size, timeout=GATHER_TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _pack(arrays: Mapping[str, np.ndarray]) -> torch.Tensor:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


def _unpack(data: torch.Tensor) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data.numpy().tobytes()), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def gather_arrays(arrays: Mapping[str, np.ndarray], ranks: Ranks) -> list[dict[str, np.ndarray]] | None:
    """Every rank's ``arrays``, in rank order, on rank 0; None on the other ranks."""
    if ranks.world_size == 1:
        return [dict(arrays)]
    data = _pack(arrays)
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(ranks.world_size)]
    dist.all_gather(sizes, torch.tensor([data.numel()], dtype=torch.int64))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros(longest, dtype=torch.uint8)
    padded[: data.numel()] = data
    parts = [torch.empty(longest, dtype=torch.uint8) for _ in range(ranks.world_size)]
    dist.gather(padded, parts if ranks.is_root else None, dst=0)
    if not ranks.is_root:
        return None
    return [_unpack(p[: int(s.item())]) for p, s in zip(parts, sizes, strict=True)]


def in_order(parts: Sequence[Mapping[str, T]], names: Sequence[str]) -> dict[str, T]:
    """The ranks' ``name -> item`` parts united in the order of ``names`` (the single-process order)."""
    united: dict[str, T] = {}
    for part in parts:
        united.update(part)
    return {n: united[n] for n in names if n in united}
