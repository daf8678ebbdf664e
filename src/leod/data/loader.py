"""Turn batch plans into :class:`~leod.data.batch.Batch` objects, in process or in workers.

The sampler runs in the main process and hands each whole :class:`BatchPlan` to a torch
DataLoader (``batch_size=None``), whose workers only read and augment; DataLoader keeps
plan order, so streaming continuity does not depend on the number of workers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from torch.utils.data import DataLoader, Dataset

from leod.data.augment import augment_boxes, augment_frames
from leod.data.batch import Batch, Sample, collate
from leod.data.sampling import BatchPlan, InferenceSampler, SampleSpec
from leod.data.sequence import SequenceData, check_sequence_length
from leod.labels.boxes import empty_boxes


def load_sample(seq: SequenceData, spec: SampleSpec, length: int) -> Sample:
    """Read, order, augment and pad the frames and labels of one slot."""
    n = spec.stop - spec.start
    idx = np.arange(spec.start, spec.stop)
    frames = seq.read_frames(spec.start, spec.stop)
    if spec.reverse:
        idx, frames = idx[::-1], frames[::-1]
    offset = length - n if spec.pad_front else 0
    at = slice(offset, offset + n)
    hw = seq.frame_shape[1:]

    repr_index = np.full(length, -1, np.int64)
    repr_index[at] = idx
    timestamps = np.full(length, -1, np.int64)
    timestamps[at] = seq.timestamps_us[idx]
    label_time = np.full(length, -1, np.int64)
    label_time[at] = seq.repr_label_time_us[idx]
    supervised = np.zeros(length, bool)
    supervised[at] = seq.supervised[idx]
    boxes = [
        augment_boxes(seq.boxes(int(r)), spec.aug, hw) if s else empty_boxes()
        for r, s in zip(repr_index, supervised, strict=True)
    ]
    frames = augment_frames(frames, spec.aug)
    return Sample(
        frames, offset, boxes, supervised, repr_index, timestamps, label_time, spec.is_first, seq.name
    )


def padding_sample(frame_shape: tuple[int, int, int], length: int) -> Sample:
    """A slot with no sequence left: zero frames, all padded, state reset."""
    minus = np.full(length, -1, np.int64)
    return Sample(
        np.zeros((0,) + frame_shape, np.uint8),
        0,
        [empty_boxes() for _ in range(length)],
        np.zeros(length, bool),
        minus,
        minus.copy(),
        minus.copy(),
        True,
        "",
    )


def load_batch(sequences: Sequence[SequenceData], plan: BatchPlan) -> Batch:
    """Load every slot of ``plan`` and collate them."""
    shape = sequences[0].frame_shape
    samples = [
        padding_sample(shape, plan.length)
        if spec is None
        else load_sample(sequences[spec.seq], spec, plan.length)
        for spec in plan.samples
    ]
    return collate(samples, plan.n_stream)


class _PlanDataset(Dataset[Batch]):
    """Map-style dataset whose "index" is a whole batch plan (DataLoader with batch_size=None)."""

    def __init__(self, sequences: Sequence[SequenceData]) -> None:
        self.sequences = list(sequences)

    def __getitem__(self, plan: BatchPlan) -> Batch:
        return load_batch(self.sequences, plan)


def _unchanged(batch: Batch) -> Batch:
    return batch


def _checked(sequences: Sequence[SequenceData], plans: Iterable[BatchPlan]) -> Iterator[BatchPlan]:
    """``plans``, each checked against the data before any of its frames is allocated."""
    counts = [seq.num_frames for seq in sequences]
    for plan in plans:
        check_sequence_length(plan.length, counts, f"the {len(counts)} sequence(s) loaded")
        yield plan


def iterate_batches(
    sequences: Sequence[SequenceData],
    plans: Iterable[BatchPlan],
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[Batch]:
    """Batches for ``plans`` in order; ``num_workers > 0`` loads them in DataLoader workers."""
    plans = _checked(sequences, plans)
    if num_workers == 0:
        for plan in plans:
            batch = load_batch(sequences, plan)
            yield batch.pin_memory() if pin_memory else batch
        return
    loader = DataLoader(
        _PlanDataset(sequences),
        batch_size=None,
        sampler=plans,  # type: ignore[arg-type]  (any iterable of indices is accepted)
        num_workers=num_workers,
        collate_fn=_unchanged,
        pin_memory=pin_memory,
    )
    yield from loader


def inference_batches(
    sequences: Sequence[SequenceData],
    batch_size: int,
    chunk_length: int,
    reverse: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[Batch]:
    """Every frame of every sequence once, ``chunk_length`` frames per batch, no augmentation."""
    plans = InferenceSampler(sequences, batch_size, chunk_length, reverse)
    return iterate_batches(sequences, plans, num_workers, pin_memory)
