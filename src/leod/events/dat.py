"""Prophesee DAT v2 files (``*_td.dat``): event types 0 (Event2D) and 12 (EventCD).

Layout: ASCII header lines starting with ``"% "``, then one byte event type and one byte
event size (8), then little-endian records ``(t: u4, w: i4)`` with ``x = w & 0x3FFF``,
``y = (w >> 14) & 0x3FFF``, ``p = (w >> 28) & 1``. A file without any header line has no
type/size bytes either and holds type 0 records from byte 0 (older Prophesee tools).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from numba import njit

from leod.events.policy import A_LAST, KERNEL, ReadPolicy, keep_event, limits
from leod.events.reader import (
    DEFAULT_CHUNK_SIZE,
    EventReader,
    OutputBuffer,
    count_records,
    parse_header_int,
    read_blocks,
    read_percent_header,
    resolve_dimension,
)
from leod.events.types import Events
from leod.plumbing.atomic import atomic_path
from leod.plumbing.errors import DataFormatError

RECORD_DTYPE = np.dtype([("t", "<u4"), ("w", "<i4")])
EVENT_SIZE = 8
SUPPORTED_TYPES = (0, 12)
_MAX_COORD = (1 << 14) - 1
_TIMESTAMP_PERIOD = 1 << 32


def pack_words(x: np.ndarray, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Pack coordinates and polarity into the DAT v2 32-bit word."""
    return (x.astype(np.int64) | (y.astype(np.int64) << 14) | ((p.astype(np.int64) & 1) << 28)).astype(
        np.int32
    )


def write_dat(
    path: str | os.PathLike[str],
    events: Events,
    height: int,
    width: int,
    event_type: int = 12,
    date: datetime | None = None,
) -> None:
    """Write ``events`` as a DAT v2 file (atomically). Timestamps must fit in 32 bits.

    ``date`` goes into the ``% Date`` header line (default: now); generators pass a fixed
    one so that the same seed gives bit-identical files.
    """
    if event_type not in SUPPORTED_TYPES:
        raise ValueError(f"event type {event_type} not supported (use 0 or 12)")
    if height > _MAX_COORD or width > _MAX_COORD:
        raise ValueError(f"sensor {width}x{height} exceeds the 14-bit DAT coordinate range")
    if len(events) and (events.t.min() < 0 or events.t.max() > np.iinfo(np.uint32).max):
        raise ValueError("timestamps do not fit the 32-bit DAT field")
    if len(events) and (events.x.max() >= width or events.y.max() >= height):
        raise ValueError("event coordinates outside the declared sensor size")
    name = "Event2D" if event_type == 0 else "EventCD"
    stamp = (date or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S")
    header = (
        f"% Data file containing {name} events.\n% Version 2\n% Date {stamp}\n"
        f"% Height {height}\n% Width {width}\n"
    ).encode("ascii")
    records = np.empty(len(events), dtype=RECORD_DTYPE)
    records["t"] = events.t
    records["w"] = pack_words(events.x, events.y, events.p)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(header)
        f.write(bytes([event_type, EVENT_SIZE]))
        f.write(records.data)  # not tofile: it loses the errno of a full disk


@dataclass(frozen=True)
class DatHeader:
    """What the text header and the type/size bytes declare; ``body_offset`` is in bytes."""

    event_type: int
    height: int | None
    width: int | None
    body_offset: int


def read_dat_header(path: Path) -> DatHeader:
    """Parse the header, refusing anything whose records would decode as garbage.

    Only version 2 with 8-byte type 0/12 records is accepted: version 1 packs x/y/p at other
    bit positions and other event types (triggers, optical flow) are not CD events.
    """
    entries, offset = read_percent_header(path)
    if entries:
        with open(path, "rb") as f:
            f.seek(offset)
            type_size = f.read(2)
        if len(type_size) < 2:
            raise DataFormatError(f"{path}: truncated header (no event type/size bytes)")
        event_type, event_size = type_size[0], type_size[1]
        body_offset = offset + 2
    else:
        event_type, event_size, body_offset = 0, EVENT_SIZE, 0
    if event_type not in SUPPORTED_TYPES or event_size != EVENT_SIZE:
        raise DataFormatError(
            f"{path}: unsupported event type {event_type} / size {event_size} "
            f"(only CD types {SUPPORTED_TYPES} with {EVENT_SIZE}-byte records)"
        )
    dims: dict[str, int] = {}
    for key, value in entries:
        if key.lower() in ("height", "width"):
            dims[key.lower()] = parse_header_int(path, key, value)
        elif key.lower() == "version" and value not in ("2", "2.0"):
            raise DataFormatError(f"{path}: DAT version {value!r} not supported (only version 2)")
    return DatHeader(event_type, dims.get("height"), dims.get("width"), body_offset)


@njit(**KERNEL)
def _decode_dat(
    words: np.ndarray,
    state: np.ndarray,
    acc: np.ndarray,
    out_t: np.ndarray,
    out_x: np.ndarray,
    out_y: np.ndarray,
    out_p: np.ndarray,
    n: int,
) -> int:
    """Decode records given as ``uint32`` pairs ``(t, w)``; return the next free output slot.

    32-bit timestamps are unrolled: a backward step of more than half the counter range is a
    wrap (the counter passed 2^32 us, about 71.6 min); smaller backward steps are sensor
    jitter, left to the policy. ``state`` holds the previous raw timestamp (-1 at file start)
    and the wrap count. Polarity is bit 28 only, as openeb reads it.
    """
    previous = state[0]
    wraps = state[1]
    bounds = limits(acc)
    last = acc[A_LAST]
    for i in range(words.shape[0] // 2):
        raw = np.int64(words[2 * i])
        w = words[2 * i + 1]
        if previous - raw > _TIMESTAMP_PERIOD // 2 and previous >= 0:
            wraps += _TIMESTAMP_PERIOD
        previous = raw
        n, last = keep_event(
            acc,
            bounds,
            i,
            raw + wraps,
            w & 0x3FFF,
            (w >> 14) & 0x3FFF,
            (w >> 28) & 1,
            out_t,
            out_x,
            out_y,
            out_p,
            n,
            last,
        )
        if n < 0:
            break
    state[0] = previous
    state[1] = wraps
    acc[A_LAST] = last
    return n


class DatReader(EventReader):
    """Streams a DAT v2 file, ``chunk_size`` records at a time."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        height: int | None = None,
        width: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        policy: ReadPolicy | None = None,
    ) -> None:
        super().__init__(path, chunk_size, policy)
        self.header = read_dat_header(self.path)
        self.num_events = count_records(self.path, self.header.body_offset, EVENT_SIZE, str(EVENT_SIZE))
        self.height = resolve_dimension(self.path, "height", self.header.height, height)
        self.width = resolve_dimension(self.path, "width", self.header.width, width)

    def _total_records(self) -> int:
        return self.num_events

    def _blocks(self) -> Iterator[np.ndarray]:
        return read_blocks(self.path, self.header.body_offset, RECORD_DTYPE, self.chunk_size)

    def _new_state(self) -> np.ndarray:
        return np.asarray([-1, 0], np.int64)

    def _decode(
        self, block: np.ndarray, start: int, state: np.ndarray, acc: np.ndarray, out: OutputBuffer
    ) -> int:
        words = block[start:].view("<u4")  # a record is two little-endian uint32 words
        n = _decode_dat(words, state, acc, out.t, out.x, out.y, out.p, out.n)
        if n >= 0:
            out.n = n
        return len(block) - start

    def _position(self, index: int) -> str:
        return f"record {index} (byte {self.header.body_offset + EVENT_SIZE * index})"
