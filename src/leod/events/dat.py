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

from leod.atomic import atomic_path
from leod.errors import DataFormatError
from leod.events.reader import (
    DEFAULT_CHUNK_SIZE,
    EventReader,
    parse_header_int,
    read_percent_header,
    resolve_dimension,
)
from leod.events.types import Events

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
        records.tofile(f)


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


def unwrap_timestamps(t_raw: np.ndarray, previous: int | None, wraps: int) -> tuple[np.ndarray, int]:
    """Turn 32-bit timestamps into absolute int64 ones; return them and the wrap count so far.

    A backward jump of more than half the counter range is a wrap (the counter passed
    2^32 us, about 71.6 min); smaller backward jumps are sensor jitter, left for clamping.
    ``previous`` is the last raw timestamp of the preceding chunk (``None`` at file start).
    """
    t = t_raw.astype(np.int64)
    step_from = np.empty_like(t)
    step_from[0] = t[0] if previous is None else previous
    step_from[1:] = t[:-1]
    counts = wraps + np.cumsum(t - step_from < -(_TIMESTAMP_PERIOD // 2))
    return t + counts * _TIMESTAMP_PERIOD, int(counts[-1])


def decode_records(records: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unpack the 32-bit words of DAT records into ``x``, ``y``, ``p`` (bit 28 only, as openeb)."""
    w = records["w"].view(np.uint32)
    x = (w & 0x3FFF).astype(np.uint16)
    y = ((w >> 14) & 0x3FFF).astype(np.uint16)
    p = ((w >> 28) & 1).astype(np.uint8)
    return x, y, p


class DatReader(EventReader):
    """Streams a DAT v2 file, ``chunk_size`` records at a time."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        height: int | None = None,
        width: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        super().__init__(path, chunk_size)
        self.header = read_dat_header(self.path)
        body = self.path.stat().st_size - self.header.body_offset
        if body % EVENT_SIZE:
            raise DataFormatError(
                f"{self.path}: truncated body ({body} bytes is not a multiple of {EVENT_SIZE})"
            )
        self.num_events = body // EVENT_SIZE
        self.height = resolve_dimension(self.path, "height", self.header.height, height)
        self.width = resolve_dimension(self.path, "width", self.header.width, width)

    def _decoded_chunks(self) -> Iterator[Events]:
        if self.num_events == 0:
            return
        # plain reads, not a memory map: mapped pages count towards the process's resident
        # memory until unmapped, so a map would make peak RSS grow with the file size
        with open(self.path, "rb") as f:
            f.seek(self.header.body_offset)
            previous: int | None = None
            wraps = 0
            while len(block := np.fromfile(f, dtype=RECORD_DTYPE, count=self.chunk_size)):
                t, wraps = unwrap_timestamps(block["t"], previous, wraps)
                previous = int(block["t"][-1])
                yield Events(t, *decode_records(block))
