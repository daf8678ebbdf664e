"""The in-memory event packet shared by every reader, writer and the preprocessing."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Events:
    """A packet of events as parallel arrays (struct-of-arrays, numba and numpy friendly).

    ``t`` is in microseconds (int64, non-decreasing once a reader has clamped it),
    ``x``/``y`` are pixel coordinates (uint16) and ``p`` the polarity (uint8, 0=OFF, 1=ON).
    """

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    p: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.t)
        if not (len(self.x) == len(self.y) == len(self.p) == n):
            raise ValueError("event arrays differ in length")

    def __len__(self) -> int:
        return len(self.t)

    @staticmethod
    def empty() -> Events:
        return Events(
            t=np.zeros(0, np.int64),
            x=np.zeros(0, np.uint16),
            y=np.zeros(0, np.uint16),
            p=np.zeros(0, np.uint8),
        )

    @staticmethod
    def concatenate(packets: list[Events]) -> Events:
        if not packets:
            return Events.empty()
        return Events(
            t=np.concatenate([e.t for e in packets]),
            x=np.concatenate([e.x for e in packets]),
            y=np.concatenate([e.y for e in packets]),
            p=np.concatenate([e.p for e in packets]),
        )

    def slice(self, start: int, stop: int) -> Events:
        return Events(self.t[start:stop], self.x[start:stop], self.y[start:stop], self.p[start:stop])


@dataclass(frozen=True)
class ReadStats:
    """What one pass of a reader over a file kept, repaired and skipped (see ``leod.events.policy``).

    ``events`` were kept; ``clamped`` of them had their timestamp raised to the running
    maximum; ``dropped_outside`` lay outside the sensor and were dropped; ``corrupt_words``
    are undefined EVT words that were skipped; ``records`` counts what the file was cut into
    (DAT records, EVT words, HDF5 rows).
    """

    events: int = 0
    clamped: int = 0
    dropped_outside: int = 0
    corrupt_words: int = 0
    records: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
