"""The format-independent side of event readers: chunk streaming, clamping, time windows.

Every format module (:mod:`leod.events.dat`, :mod:`leod.events.evt`, :mod:`leod.events.h5`)
only decodes its file into bounded chunks of :class:`Events` in file order. This module adds
what must behave identically for all of them, so that the preprocessing sees one contract:

* timestamps are clamped to their running maximum (as RVT does) and the clamps are counted,
  because real sensors emit slightly out-of-order events and downstream binary searches and
  histogram binning assume a non-decreasing ``t``;
* coordinates are checked against the sensor size, so a wrong size or a corrupt file fails
  loudly instead of producing histograms with events silently dropped or wrapped;
* the stream is re-cut into consecutive half-open time windows without ever holding more
  than one window plus one chunk in memory.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from leod.errors import DataFormatError, MissingInputError
from leod.events.types import Events

DEFAULT_CHUNK_SIZE = 1 << 20
"""File records decoded per step (DAT events, EVT words, HDF5 rows): bounds the memory of a pass."""

_HEADER_LINE_LIMIT = 4096


def read_percent_header(path: Path) -> tuple[list[tuple[str, str]], int]:
    """Read the Prophesee text header shared by DAT and RAW files; return ``(key, value)`` pairs
    and the byte offset right after it.

    The header is the run of lines starting with ``"% "``; it ends at the first other line or
    after an optional ``% end`` line. Lines are length-limited so that a binary file without
    newlines cannot be swallowed whole as "header".
    """
    entries: list[tuple[str, str]] = []
    with open(path, "rb") as f:
        while True:
            start = f.tell()
            if f.read(2) != b"% ":
                f.seek(start)
                break
            raw = f.readline(_HEADER_LINE_LIMIT)
            if not raw.endswith(b"\n"):
                raise DataFormatError(f"{path}: unterminated or over-long header line at byte {start}")
            try:
                key, _, value = raw.decode("ascii").strip().partition(" ")
            except UnicodeDecodeError:
                raise DataFormatError(f"{path}: non-ASCII header line at byte {start}") from None
            if key == "end":
                break
            entries.append((key, value.strip()))
        return entries, f.tell()


def parse_header_int(path: Path, what: str, text: str) -> int:
    """Read an integer header value; anything else is a corrupt header, reported by name."""
    try:
        return int(text)
    except ValueError:
        raise DataFormatError(f"{path}: header {what} {text!r} is not an integer") from None


def resolve_dimension(path: Path, name: str, declared: int | None, requested: int | None) -> int | None:
    """Pick one sensor dimension: what the file declares wins, the caller fills the gaps.

    A caller value that contradicts the file is an error, not an override: it means the
    caller's dataset preset and the recording disagree, and one of them is wrong.
    """
    if declared is not None and requested is not None and declared != requested:
        raise DataFormatError(f"{path}: file declares sensor {name} {declared}, caller expects {requested}")
    size = declared if declared is not None else requested
    if size is not None and size <= 0:
        raise DataFormatError(f"{path}: sensor {name} must be positive, got {size}")
    return size


class EventReader(ABC):
    """A recording opened for streaming; subclasses decode one file format.

    ``height``/``width`` are the sensor size, ``None`` where neither the file nor the caller
    gave it. ``clamped_count`` is the number of timestamps raised to the running maximum in
    the most recent pass over the file (final once that pass has finished).
    A reader holds no open file between passes, so it needs no closing.
    """

    def __init__(self, path: str | os.PathLike[str], chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise MissingInputError(f"event file not found: {self.path}")
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.chunk_size = chunk_size
        self.height: int | None = None
        self.width: int | None = None
        self.clamped_count = 0

    @abstractmethod
    def _decoded_chunks(self) -> Iterator[Events]:
        """Decode the file in file order, at most about ``chunk_size`` records per chunk.

        Timestamps are absolute (counter wraps unrolled) but not yet clamped.
        """

    def iter_chunks(self) -> Iterator[Events]:
        """Stream the whole file as non-empty chunks with clamped, checked events."""
        self.clamped_count = 0
        running_max = np.iinfo(np.int64).min
        for chunk in self._decoded_chunks():
            if len(chunk) == 0:
                continue
            self._check_coordinates(chunk)
            clamped = np.maximum(np.maximum.accumulate(chunk.t), running_max)
            n_back = int(np.count_nonzero(chunk.t < clamped))
            if n_back:
                self.clamped_count += n_back
                chunk = Events(clamped, chunk.x, chunk.y, chunk.p)
            running_max = int(clamped[-1])
            yield chunk

    def read_all(self) -> Events:
        """Decode the whole recording into memory (small files, tests, label-free tools)."""
        return Events.concatenate(list(self.iter_chunks()))

    def iter_windows(self, window_us: int, t_start: int | None = None) -> Iterator[Events]:
        """Yield the events of consecutive half-open windows ``[s + k*w, s + (k+1)*w)``.

        ``s`` is ``t_start`` when given (earlier events are skipped), else the first event's
        timestamp rounded down to a multiple of ``window_us``, so windows sit on a grid that
        does not depend on where a file happens to start. The first window yielded therefore
        always holds the first kept event, which lets a caller recover ``s`` as
        ``window.t[0] // window_us * window_us`` when it did not pass ``t_start``.
        Empty windows inside gaps are yielded (a consumer counting windows stays aligned);
        iteration stops after the window holding the last event.
        """
        if window_us <= 0:
            raise ValueError(f"window_us must be positive, got {window_us}")
        start = t_start
        pending: list[Events] = []
        for chunk in self.iter_chunks():
            if start is None:
                start = int(chunk.t[0]) // window_us * window_us
            i = int(np.searchsorted(chunk.t, start, side="left"))
            n = len(chunk)
            while i < n:
                stop = start + window_us
                j = int(np.searchsorted(chunk.t, stop, side="left"))
                if j == n:
                    pending.append(chunk.slice(i, n))
                    break
                pending.append(chunk.slice(i, j))
                yield Events.concatenate(pending)
                pending = []
                start, i = stop, j
        if any(len(part) for part in pending):
            yield Events.concatenate(pending)

    def _check_coordinates(self, chunk: Events) -> None:
        for axis, dimension, values, size in (
            ("x", "width", chunk.x, self.width),
            ("y", "height", chunk.y, self.height),
        ):
            if size is not None and (largest := int(values.max())) >= size:
                raise DataFormatError(
                    f"{self.path}: event {axis}={largest} outside the sensor ({dimension} {size})"
                )


def open_recording(
    path: str | os.PathLike[str],
    height: int | None = None,
    width: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> EventReader:
    """Open an event recording, choosing the reader from the file suffix.

    ``.dat`` is Prophesee DAT v2, ``.raw`` is EVT 2.0/3.0 (the header tells which),
    ``.h5``/``.hdf5`` is the RVT/DSEC HDF5 layout. ``height``/``width`` fill in what the
    file does not declare and must agree with what it does.
    """
    # Imported here: the format modules build on EventReader, so importing them at module
    # level would be circular.
    from leod.events.dat import DatReader
    from leod.events.evt import EvtReader
    from leod.events.h5 import H5Reader

    readers: dict[str, type[DatReader] | type[EvtReader] | type[H5Reader]] = {
        ".dat": DatReader,
        ".raw": EvtReader,
        ".h5": H5Reader,
        ".hdf5": H5Reader,
    }
    target = Path(path)
    reader = readers.get(target.suffix.lower())
    if reader is None:
        if not target.exists():
            raise MissingInputError(f"event file not found: {target}")
        raise DataFormatError(f"{target}: unknown event file suffix (expected one of {sorted(readers)})")
    return reader(target, height=height, width=width, chunk_size=chunk_size)
