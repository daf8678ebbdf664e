"""Which frames go into which batch slot: streaming, random access, mixed (the batch split
between the two as RVT does), and inference.

Samplers only plan (cheap, in the main process, deterministic from a seed); loading the
planned frames happens in :mod:`leod.data.loader`, possibly in DataLoader workers. Since
batches arrive in plan order, one recurrent state per batch slot is all the trainer keeps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from leod.data.augment import IDENTITY, AugParams, draw_augmentation
from leod.data.config import DataConfig
from leod.data.sequence import SequenceData
from leod.plumbing.errors import ConfigError, DataFormatError

T = TypeVar("T")


@dataclass(frozen=True)
class SampleSpec:
    """Frames ``[start, stop)`` of sequence ``seq`` (an index into the sequence list) for one slot."""

    seq: int
    start: int
    stop: int
    is_first: bool
    reverse: bool = False  # deliver frames stop-1 down to start
    pad_front: bool = False  # padding before the frames (random access) instead of after
    aug: AugParams = IDENTITY


@dataclass(frozen=True)
class BatchPlan:
    """What to load for one batch; a None slot is fully padded (inference ran out of sequences)."""

    samples: tuple[SampleSpec | None, ...]
    length: int
    n_stream: int

    def shard(self, rank: int, world: int) -> BatchPlan:
        """Slots ``rank, rank + world, ...``: one of ``world`` data-parallel processes' share.

        Streaming slots stay first; a streaming slot belongs to one process for the whole
        run, so that process alone carries its recurrent state.
        """
        if world == 1:
            return self
        picked = range(rank, len(self.samples), world)
        n_stream = sum(1 for i in picked if i < self.n_stream)
        return BatchPlan(tuple(self.samples[i] for i in picked), self.length, n_stream)


def stream_stretches(seq: SequenceData, length: int) -> list[tuple[int, int]]:
    """The ``[start, stop)`` repr ranges of ``seq`` that streaming walks.

    RVT's "guaranteed labels" range: from L-1 frames before a label frame to the last label
    frame, split where two label frames lie more than L frames apart; stretches without a
    kept frame are skipped.
    """
    idx = seq.label_repr
    if len(idx) == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > length)
    firsts = np.concatenate(([0], breaks + 1))
    lasts = np.concatenate((breaks, [len(idx) - 1]))
    out = []
    for a, b in zip(firsts, lasts, strict=True):
        start, stop = max(int(idx[a]) - length + 1, 0), int(idx[b]) + 1
        if seq.supervised[start:stop].any():
            out.append((start, stop))
    return out


class _Epochs(Generic[T]):
    """An endless walk through ``items``, reshuffled at the start of every epoch."""

    def __init__(self, items: list[T], gen: np.random.Generator) -> None:
        self._items = items
        self._gen = gen
        self._order: list[int] = []

    def next(self) -> T:
        if not self._order:
            self._order = self._gen.permutation(len(self._items)).tolist()[::-1]
        return self._items[self._order.pop()]


@dataclass
class _Stream:
    """Where one streaming slot stands: its stretch of sequence ``seq`` and next start."""

    seq: int = 0
    pos: int = 0
    stop: int = 0
    aug: AugParams = IDENTITY


class TrainSampler:
    """Endless, seeded plans of training batches: ``n_stream`` streaming slots, then random ones.

    A streaming slot walks through a queue of stretches (shared by the streaming slots,
    reshuffled per epoch), L frames per batch, so the next batch continues where this one
    ended. A random slot takes L frames ending at a kept label frame, state fresh. Each
    ``iter()`` restarts from the seed, so two loaders over one sampler agree.
    """

    def __init__(self, sequences: Sequence[SequenceData], cfg: DataConfig, seed: int) -> None:
        self.sequences = list(sequences)
        self.cfg = cfg
        self.seed = seed
        length = cfg.sequence_length
        self._stretches = [
            (i, a, b) for i, s in enumerate(self.sequences) for a, b in stream_stretches(s, length)
        ]
        self._kept = [(i, int(r)) for i, s in enumerate(self.sequences) for r in s.kept_repr]
        if not self._kept:  # every kept frame lies in a stretch, so this covers streaming too
            raise DataFormatError("no kept label frame in any training sequence: nothing to train on")

    def _random_spec(self, item: tuple[int, int], gen: np.random.Generator) -> SampleSpec:
        i, end = item
        seq = self.sequences[i]
        # fewer than L frames of history: padded at the front (RVT drops it), so that
        # sparse splits lose no labels
        start = max(end - self.cfg.sequence_length + 1, 0)
        focus = None
        for r in range(end, start - 1, -1):
            if seq.supervised[r] and len(seq.boxes(r)):
                focus = seq.boxes(r)
                break
        aug = draw_augmentation(gen, self.cfg.augment_random, seq.frame_shape[1:], focus)
        return SampleSpec(i, start, end + 1, is_first=True, pad_front=True, aug=aug)

    def __iter__(self) -> Iterator[BatchPlan]:
        length = self.cfg.sequence_length
        n_stream, n_random = self.cfg.slots
        stream_gen = np.random.default_rng([self.seed, 0])
        random_gen = np.random.default_rng([self.seed, 1])
        stretches = _Epochs(self._stretches, stream_gen)
        kept = _Epochs(self._kept, random_gen)
        slots = [_Stream() for _ in range(n_stream)]
        while True:
            specs: list[SampleSpec | None] = []
            for slot in slots:
                first = slot.pos >= slot.stop
                if first:  # augmentation is drawn per (slot, stretch), not per chunk
                    slot.seq, slot.pos, slot.stop = stretches.next()
                    hw = self.sequences[slot.seq].frame_shape[1:]
                    slot.aug = draw_augmentation(stream_gen, self.cfg.augment_stream, hw, None)
                # a stretch's last chunk is padded at the end (RVT pads and masks; shortening
                # would desynchronise the slots); the slot's next chunk starts a new stretch,
                # so padding never leaks into a carried state
                specs.append(
                    SampleSpec(
                        slot.seq, slot.pos, min(slot.pos + length, slot.stop), is_first=first, aug=slot.aug
                    )
                )
                slot.pos += length
            specs.extend(self._random_spec(kept.next(), random_gen) for _ in range(n_random))
            yield BatchPlan(tuple(specs), length, n_stream)


class InferenceSampler:
    """Plans that cover every frame of every sequence once, ``batch_size`` sequences in parallel.

    Slots take the next sequence (in list order) when theirs ends and are fully padded
    once none is left. ``reverse`` delivers each sequence from its last frame to its first
    (test-time augmentation in time).
    """

    def __init__(
        self, sequences: Sequence[SequenceData], batch_size: int, chunk_length: int, reverse: bool = False
    ) -> None:
        if batch_size < 1 or chunk_length < 1:
            raise ConfigError(f"batch_size ({batch_size}) and chunk_length ({chunk_length}) must be >= 1")
        self.sequences = list(sequences)
        self.batch_size = batch_size
        self.chunk_length = chunk_length
        self.reverse = reverse

    def _chunks(self, i: int) -> Iterator[SampleSpec]:
        n, step = self.sequences[i].num_frames, self.chunk_length
        if self.reverse:
            for k, stop in enumerate(range(n, 0, -step)):
                yield SampleSpec(i, max(stop - step, 0), stop, is_first=k == 0, reverse=True)
        else:
            for k, start in enumerate(range(0, n, step)):
                yield SampleSpec(i, start, min(start + step, n), is_first=k == 0)

    def __iter__(self) -> Iterator[BatchPlan]:
        queue = iter(range(len(self.sequences)))
        slots: list[Iterator[SampleSpec] | None] = [None] * self.batch_size
        while True:
            specs: list[SampleSpec | None] = []
            for b in range(self.batch_size):
                spec = next(slots[b], None) if slots[b] is not None else None
                while spec is None:
                    i = next(queue, None)
                    if i is None:
                        slots[b] = None
                        break
                    slots[b] = self._chunks(i)
                    spec = next(slots[b], None)
                specs.append(spec)
            if all(s is None for s in specs):
                return
            yield BatchPlan(tuple(specs), self.chunk_length, self.batch_size)
