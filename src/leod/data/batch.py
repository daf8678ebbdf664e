"""The training / inference batch: time-major frames, padded targets, recurrence flags.

Layout is time-major ``(L, B, ...)`` because the recurrent detector steps through time
and keeps one LSTM state per batch slot; ``is_first`` tells it which slots start a new
sequence (reset the state) and ``supervised`` which (step, slot) pairs carry labels that
count in the loss. Frames are raw event counts as float (RVT feeds them unnormalised).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

#: Target columns, YOLOX style, in representation pixels.
TARGET_FIELDS = ("class_id", "cx", "cy", "w", "h")


@dataclass
class Sample:
    """One loaded batch slot: L time steps of one sequence (or padding)."""

    frames: np.ndarray  # (n, C, H, W) uint8, the real frames (n <= L), at steps [offset, offset + n)
    offset: int  # steps before the frames are padding (random access); those after them too
    boxes: list[np.ndarray]  # L BOX_DTYPE arrays, empty where not supervised
    supervised: np.ndarray  # (L,) bool
    repr_index: np.ndarray  # (L,) int64, -1 where padded
    timestamps_us: np.ndarray  # (L,) int64 representation end times, -1 where padded
    label_time_us: np.ndarray  # (L,) int64 label-frame times, -1 where no label frame
    is_first: bool
    sequence: str  # "" for a fully padded slot


@dataclass
class Batch:
    """B samples of L steps; tensors are time-major. Slots ``[0, n_stream)`` are streamed."""

    frames: torch.Tensor  # (L, B, C, H, W) float32 event counts, channels-last in memory
    is_first: torch.Tensor  # (B,) bool: reset the recurrent state of this slot first
    padded: torch.Tensor  # (L, B) bool: no real frame (tail of a stream, start of a random sample)
    supervised: torch.Tensor  # (L, B) bool: the frame is a kept label frame
    targets: torch.Tensor  # (L, B, N, 5) float32 [class_id, cx, cy, w, h] in pixels
    valid: torch.Tensor  # (L, B, N) bool: the target row is a real box
    ignore: torch.Tensor  # (L, B, N) bool: neither object nor background
    class_confidence: torch.Tensor  # (L, B, N) float32
    objectness: torch.Tensor  # (L, B, N) float32
    repr_index: torch.Tensor  # (L, B) int64, -1 where padded
    timestamps_us: torch.Tensor  # (L, B) int64, -1 where padded
    label_time_us: torch.Tensor  # (L, B) int64, -1 where the frame is no label frame
    sequences: tuple[str, ...]  # (B,) sequence names, "" for fully padded slots
    n_stream: int

    @property
    def shape(self) -> tuple[int, int]:
        """(L, B)."""
        return int(self.frames.shape[0]), int(self.frames.shape[1])

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        changes = {
            f.name: fn(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy with every tensor on ``device``."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Page-locked copy (DataLoader ``pin_memory=True`` calls this) for fast GPU transfer."""
        return self._map(lambda t: t.pin_memory())


def collate(samples: Sequence[Sample], n_stream: int) -> Batch:
    """Stack loaded slots into a :class:`Batch`; targets are padded to the most boxes per step."""
    length, batch = len(samples[0].supervised), len(samples)
    n_max = max(1, max(len(b) for s in samples for b in s.boxes))
    # Filled slot by slot, converting uint8 -> float32 in the copy: no full-size intermediate.
    # Channels-last memory (returned as (L, B, C, H, W)): the layout the stem conv runs on, so
    # the model needs no second full-size copy to change it.
    channels, height, width = samples[0].frames.shape[1:]
    frames = torch.empty((length, batch, height, width, channels), dtype=torch.float32)
    targets = torch.zeros((length, batch, n_max, len(TARGET_FIELDS)), dtype=torch.float32)
    valid = torch.zeros((length, batch, n_max), dtype=torch.bool)
    ignore = torch.zeros((length, batch, n_max), dtype=torch.bool)
    class_confidence = torch.zeros((length, batch, n_max), dtype=torch.float32)
    objectness = torch.zeros((length, batch, n_max), dtype=torch.float32)
    for b, sample in enumerate(samples):
        first, stop = sample.offset, sample.offset + len(sample.frames)
        view = frames[:, b]
        view[:first] = 0
        # torch's transposing cast is 1.5x numpy's; torch takes no negative strides (flips)
        src = sample.frames if min(sample.frames.strides) >= 0 else sample.frames.copy()
        view[first:stop] = torch.from_numpy(src).permute(0, 2, 3, 1)
        view[stop:] = 0
        for t, boxes in enumerate(sample.boxes):
            n = len(boxes)
            if n == 0:
                continue
            rows = np.stack(
                [
                    boxes["class_id"],
                    boxes["x"] + boxes["w"] / 2,
                    boxes["y"] + boxes["h"] / 2,
                    boxes["w"],
                    boxes["h"],
                ],
                axis=1,
            ).astype(np.float32)
            targets[t, b, :n] = torch.from_numpy(rows)
            valid[t, b, :n] = True
            ignore[t, b, :n] = torch.from_numpy(boxes["ignore"].astype(bool))
            class_confidence[t, b, :n] = torch.from_numpy(boxes["class_confidence"].astype(np.float32))
            objectness[t, b, :n] = torch.from_numpy(boxes["objectness"].astype(np.float32))

    def stacked(key: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([getattr(s, key) for s in samples], axis=1))

    return Batch(
        frames=frames.permute(0, 1, 4, 2, 3),
        is_first=torch.tensor([s.is_first for s in samples], dtype=torch.bool),
        padded=stacked("repr_index") < 0,
        supervised=stacked("supervised"),
        targets=targets,
        valid=valid,
        ignore=ignore,
        class_confidence=class_confidence,
        objectness=objectness,
        repr_index=stacked("repr_index"),
        timestamps_us=stacked("timestamps_us"),
        label_time_us=stacked("label_time_us"),
        sequences=tuple(s.sequence for s in samples),
        n_stream=n_stream,
    )
