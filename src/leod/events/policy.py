"""What every event reader does with implausible input, decided in one place.

The decoders (dat, evt, h5) hand each event to :func:`keep_event` inside their numba loops;
:func:`check_pass` judges the fractions at the end of a pass, over the whole file, so the
outcome does not depend on the chunk size. Each case and its limit is a field of
:class:`ReadPolicy`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from leod.events.types import ReadStats
from leod.plumbing.errors import DataFormatError


@dataclass(frozen=True)
class ReadPolicy:
    """The limits of :mod:`leod.events.policy`; the defaults are what every stage uses."""

    #: A step of the timestamp from its running maximum beyond this, forward or backward, is an
    #: error naming the record (a flipped bit, a corrupt EVT 3.0 TIME_HIGH word, a false DAT
    #: counter wrap): cameras emit noise events at every instant, so seconds without one mean
    #: corrupt time. A corrupt time within the gap passes for real; the events after it are
    #: clamped until time catches up (the clamped fraction bounds it).
    max_gap_us: int = 5_000_000
    #: Timestamps a little behind the running maximum (jitter) are clamped to it, as RVT does,
    #: and counted; a larger fraction (reversed or shuffled time) is an error.
    max_clamped_fraction: float = 0.1
    #: Events outside the declared sensor are dropped and counted (public datasets hold a few,
    #: e.g. y >= 720 on 1280x720); a larger fraction means a wrong sensor size or garbage.
    max_outside_fraction: float = 0.01
    #: Undefined EVT words are skipped and counted; a larger fraction (a mislabelled encoding,
    #: garbage) is an error. (HDF5 NaN/inf/negative values are always an error, see h5.py.)
    max_corrupt_fraction: float = 0.01

    def __post_init__(self) -> None:
        if self.max_gap_us <= 0:
            raise ValueError(f"max_gap_us must be positive, got {self.max_gap_us}")
        for name in ("max_clamped_fraction", "max_outside_fraction", "max_corrupt_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")


# Slots of the int64 accumulator array that the decoders carry through a pass.
(
    A_LAST,  # running maximum of the kept timestamps (NO_TIME before the first event)
    A_CLAMPED,
    A_DROPPED,
    A_CORRUPT,
    A_WIDTH,  # sensor size; a huge value when unknown, so nothing is dropped
    A_HEIGHT,
    A_MAX_GAP,
    A_BASE,  # file index of the current block's first record, for error positions
    A_ERROR,  # 0, or one of the ERR_* codes
    A_ERROR_INDEX,
    A_ERROR_T,
    A_OUTSIDE_INDEX,  # first event outside the sensor: record index, x, y
    A_OUTSIDE_X,
    A_OUTSIDE_Y,
    A_CORRUPT_INDEX,  # first undefined word: record index and word type
    A_CORRUPT_TYPE,
) = range(16)
ACC_SIZE = 16
ERR_JUMP_FORWARD, ERR_JUMP_BACKWARD = 1, 2
NO_TIME = np.iinfo(np.int64).min
_UNKNOWN_SIZE = 1 << 62


def new_accumulator(policy: ReadPolicy, height: int | None, width: int | None) -> np.ndarray:
    acc = np.zeros(ACC_SIZE, np.int64)
    acc[A_LAST] = NO_TIME
    acc[A_WIDTH] = _UNKNOWN_SIZE if width is None else width
    acc[A_HEIGHT] = _UNKNOWN_SIZE if height is None else height
    acc[A_MAX_GAP] = policy.max_gap_us
    acc[A_OUTSIDE_INDEX] = acc[A_CORRUPT_INDEX] = -1
    return acc


# The kernels below and the decoders calling them run without numba's reference counting
# (``_nrt=False``): they allocate nothing, and the atomic increments and decrements of the
# output arrays around every per-event call made the decoding loops several times slower.
KERNEL = {"cache": True, "_nrt": False}


@njit(**KERNEL)
def limits(acc: np.ndarray) -> tuple[int, int, int]:
    """The per-event limits ``(width, height, max_gap)``, for a decoder to hold in registers."""
    return acc[A_WIDTH], acc[A_HEIGHT], acc[A_MAX_GAP]


@njit(**KERNEL)
def _note_outside(acc: np.ndarray, index: int, x: int, y: int) -> None:
    if acc[A_DROPPED] == 0:
        acc[A_OUTSIDE_INDEX] = acc[A_BASE] + index
        acc[A_OUTSIDE_X] = x
        acc[A_OUTSIDE_Y] = y
    acc[A_DROPPED] += 1


@njit(**KERNEL)
def _note_jump(acc: np.ndarray, code: int, index: int, t: int, last: int) -> None:
    acc[A_ERROR] = code
    acc[A_ERROR_INDEX] = acc[A_BASE] + index
    acc[A_ERROR_T] = t
    acc[A_LAST] = last


@njit(**KERNEL)
def keep_event(
    acc: np.ndarray,
    bounds: tuple[int, int, int],
    index: int,
    t: int,
    x: int,
    y: int,
    p: int,
    out_t: np.ndarray,
    out_x: np.ndarray,
    out_y: np.ndarray,
    out_p: np.ndarray,
    n: int,
    last: int,
) -> tuple[int, int]:
    """Apply the policy to one decoded event and write it at slot ``n`` if kept.

    ``bounds`` comes from :func:`limits`, ``last`` is the running maximum of the kept
    timestamps (``NO_TIME`` before the first; the decoder stores it in ``acc[A_LAST]`` when
    it stops). Returns the next free slot and the new running maximum; the slot is -1 after
    an implausible jump was recorded in ``acc`` (the decoder then stops). ``index`` is the
    record's position from ``acc[A_BASE]`` on.
    """
    width, height, max_gap = bounds
    if x >= width or y >= height:
        _note_outside(acc, index, x, y)
        return n, last
    if t < last:
        if last - t > max_gap:
            _note_jump(acc, ERR_JUMP_BACKWARD, index, t, last)
            return -1, last
        acc[A_CLAMPED] += 1
        t = last
    elif t - last > max_gap and last != NO_TIME:
        _note_jump(acc, ERR_JUMP_FORWARD, index, t, last)
        return -1, last
    out_t[n] = t
    out_x[n] = x
    out_y[n] = y
    out_p[n] = p
    return n + 1, t


@njit(**KERNEL)
def clean_run(bounds: tuple[int, int, int], t: int, y: int, x_max: int, last: int) -> bool:
    """Whether events at time ``t`` in row ``y`` with columns up to ``x_max`` all pass
    :func:`keep_event` unchanged, so that a decoder may write a whole EVT 3.0 vector at
    once (and set the running maximum to ``t``)."""
    width, height, max_gap = bounds
    return (x_max < width) & (y < height) & (t >= last) & ((t - last <= max_gap) | (last == NO_TIME))


@njit(**KERNEL)
def count_corrupt_word(acc: np.ndarray, index: int, word_type: int) -> None:
    """Count an undefined word (skipped by the decoder), remembering the first one."""
    if acc[A_CORRUPT] == 0:
        acc[A_CORRUPT_INDEX] = acc[A_BASE] + index
        acc[A_CORRUPT_TYPE] = word_type
    acc[A_CORRUPT] += 1


def stats_of(acc: np.ndarray, events: int, records: int) -> ReadStats:
    return ReadStats(
        events=events,
        clamped=int(acc[A_CLAMPED]),
        dropped_outside=int(acc[A_DROPPED]),
        corrupt_words=int(acc[A_CORRUPT]),
        records=records,
    )


def jump_error(path: object, acc: np.ndarray, position: str, policy: ReadPolicy) -> DataFormatError:
    """The error for an implausible jump that :func:`keep_event` recorded in ``acc``."""
    step = int(acc[A_ERROR_T]) - int(acc[A_LAST])
    return DataFormatError(
        f"{path}: implausible timestamp jump of {step / 1e6:+.3f} s at {position} "
        f"(t {int(acc[A_LAST])} -> {int(acc[A_ERROR_T])} us, beyond the {policy.max_gap_us / 1e6:g} s "
        "any recording pauses): corrupt timestamp (flipped bit, bad TIME_HIGH word or false counter wrap)"
    )


def _share(part: int, whole: int) -> str:
    return f"{part} of {whole} ({100 * part / max(whole, 1):.2f}%)"


def check_pass(
    path: object,
    acc: np.ndarray,
    stats: ReadStats,
    policy: ReadPolicy,
    position: object,
    corrupt_what: str = "undefined word type",
) -> None:
    """Refuse a finished pass whose repairs exceed the policy's fractions.

    ``position`` maps a record index to its description in the file (e.g. ``byte 12``).
    """
    if stats.corrupt_words > policy.max_corrupt_fraction * stats.records:
        raise DataFormatError(
            f"{path}: {corrupt_what} {int(acc[A_CORRUPT_TYPE]):#x} at {position(int(acc[A_CORRUPT_INDEX]))}; "
            f"{_share(stats.corrupt_words, stats.records)} words are undefined, more than the "
            f"{policy.max_corrupt_fraction:.0%} tolerated (corrupt file or wrong encoding)"
        )
    decoded = stats.events + stats.dropped_outside
    if stats.dropped_outside > policy.max_outside_fraction * decoded:
        x, y = int(acc[A_OUTSIDE_X]), int(acc[A_OUTSIDE_Y])
        width, height = int(acc[A_WIDTH]), int(acc[A_HEIGHT])
        axis = (
            f"x={x} outside the sensor (width {width})"
            if x >= width
            else (f"y={y} outside the sensor (height {height})")
        )
        raise DataFormatError(
            f"{path}: event {axis} at {position(int(acc[A_OUTSIDE_INDEX]))}; "
            f"{_share(stats.dropped_outside, decoded)} events lie outside the {width}x{height} sensor, "
            f"more than the {policy.max_outside_fraction:.0%} dropped silently (wrong sensor size?)"
        )
    if stats.clamped > policy.max_clamped_fraction * stats.events:
        raise DataFormatError(
            f"{path}: {_share(stats.clamped, stats.events)} timestamps go backwards and were "
            f"clamped, more than the {policy.max_clamped_fraction:.0%} of sensor jitter "
            "(file in reverse or shuffled time order?)"
        )
