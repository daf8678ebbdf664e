"""EVT 2.0 / 3.0 encoders for tests and benchmarks (the pipeline itself only reads RAW files).

Both take time-sorted events and follow the Prophesee format rules: EVT 2.0 emits a TIME_HIGH
word whenever ``t >> 6`` changes; EVT 3.0 emits TIME_HIGH/TIME_LOW/ADDR_Y only when they
change and packs runs of events sharing ``t``, ``y`` and ``p`` within 12 columns into a
VECT_BASE_X + VECT_12 pair, as the sensors do, else one ADDR_X word per event.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numba import njit

from leod.events.types import Events


def encode_evt2(events: Events) -> np.ndarray:
    """The EVT 2.0 words of ``events`` (``t`` non-decreasing, below 2^34 us)."""
    t = events.t.astype(np.int64)
    high = t >> 6
    new_high = np.ones(len(t), bool)
    new_high[1:] = high[1:] != high[:-1]
    position = np.arange(len(t)) + np.cumsum(new_high)  # each event after its TIME_HIGH words
    words = np.empty(len(t) + int(new_high.sum()), np.uint32)
    words[position[new_high] - 1] = (0x8 << 28) | (high[new_high] & 0xFFFFFFF)
    words[position] = (
        (events.p.astype(np.int64) << 28) | ((t & 0x3F) << 22) | (events.x.astype(np.int64) << 11) | events.y
    )
    return words


@njit(cache=True)
def _encode_evt3(t: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray, out: np.ndarray) -> int:
    m = 0
    high = -1
    low = -1
    row = -1
    i = 0
    n = t.shape[0]
    while i < n:
        if t[i] >> 12 != high:
            high = t[i] >> 12
            out[m] = 0x8000 | (high & 0xFFF)
            m += 1
            low = -1
        if t[i] & 0xFFF != low:
            low = t[i] & 0xFFF
            out[m] = 0x6000 | low
            m += 1
        if y[i] != row:
            row = y[i]
            out[m] = row
            m += 1
        j = i + 1
        while (
            j < n and t[j] == t[i] and y[j] == y[i] and p[j] == p[i] and x[j] > x[j - 1] and x[j] < x[i] + 12
        ):
            j += 1
        if j - i >= 2:
            mask = 0
            for k in range(i, j):
                mask |= 1 << (x[k] - x[i])
            out[m] = 0x3000 | (p[i] << 11) | x[i]
            out[m + 1] = 0x4000 | mask
            m += 2
        else:
            out[m] = 0x2000 | (p[i] << 11) | x[i]
            m += 1
        i = j
    return m


def encode_evt3(events: Events) -> np.ndarray:
    """The EVT 3.0 words of ``events`` (``t`` non-decreasing, ``x``/``y`` below 2048)."""
    out = np.empty(4 * len(events), np.uint16)
    m = _encode_evt3(events.t.astype(np.int64), events.x.astype(np.int64), events.y, events.p, out)
    return out[:m]


def write_raw(path: Path, events: Events, encoding: str, height: int, width: int) -> Path:
    """Write ``events`` as a RAW file in EVT ``encoding`` ("2.0" or "3.0") with a geometry line."""
    words = encode_evt2(events) if encoding == "2.0" else encode_evt3(events)
    header = f"% evt {encoding}\n% geometry {width}x{height}\n% end\n".encode("ascii")
    with open(path, "wb") as f:
        f.write(header)
        words.tofile(f)
    return path
