"""Sequences shared out over the ranks of a torch.distributed job, results united on rank 0.

pseudolabel and evaluate split whole sequences across ranks (balanced by frame count); each
rank streams its own with its own recurrent state, then sends rank 0 plain numpy arrays (an
in-memory npz read without pickle, over gloo on CPU and GPU alike), which puts them back in
the single-process order: the result is byte-identical to one process's (tests/test_shard.py).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Protocol, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from leod.distributed.group import Ranks

T = TypeVar("T")
S = TypeVar("S", bound="HasFrames")


class HasFrames(Protocol):
    @property
    def num_frames(self) -> int: ...


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
