"""The format-independent side of event readers: one decoding pass, in chunks or whole.

Every format module (dat, evt, h5) cuts its file into blocks of records and decodes a block
with one numba call that hands each event to :func:`leod.events.policy.keep_event`; this
module drives that pass identically for all of them, so preprocessing sees one contract:
non-decreasing timestamps (clamped as RVT does; binary searches and histogram binning rely
on it), events inside the sensor when its size is known, bounded chunks or one set of arrays.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sized
from pathlib import Path

import numpy as np

from leod.events.policy import (
    A_BASE,
    A_ERROR,
    A_ERROR_INDEX,
    ReadPolicy,
    check_pass,
    jump_error,
    new_accumulator,
    stats_of,
)
from leod.events.types import Events, ReadStats
from leod.plumbing.errors import DataFormatError, MissingInputError

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


def count_records(path: Path, offset: int, size: int, unit: str) -> int:
    """How many ``size``-byte records follow the ``offset``-byte header; a truncated body (not a
    multiple of ``unit``, the size in words) is an error."""
    body = path.stat().st_size - offset
    if body % size:
        raise DataFormatError(f"{path}: truncated body ({body} bytes is not a multiple of {unit})")
    return body // size


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


class OutputBuffer:
    """Output arrays filled by a decoder from slot ``n`` on; grown when a decoder runs out."""

    def __init__(self, capacity: int) -> None:
        self.t = np.empty(capacity, np.int64)
        self.x = np.empty(capacity, np.uint16)
        self.y = np.empty(capacity, np.uint16)
        self.p = np.empty(capacity, np.uint8)
        self.n = 0

    def grow(self, extra: int) -> None:
        capacity = max(len(self.t) * 3 // 2, self.n + extra)
        for name in ("t", "x", "y", "p"):
            old = getattr(self, name)
            new = np.empty(capacity, old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    def events(self) -> Events:
        return Events(self.t[: self.n], self.x[: self.n], self.y[: self.n], self.p[: self.n])


def read_blocks(path: Path, offset: int, dtype: np.dtype, count: int) -> Iterator[np.ndarray]:
    """Read a binary body from ``offset`` as blocks of ``count`` items into one reused buffer.

    Each block is only valid until the next one is read.
    """
    buffer = np.empty(count * dtype.itemsize, np.uint8)
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        while True:
            filled = 0
            while filled < len(buffer) and (got := f.readinto(memoryview(buffer)[filled:])):
                filled += got
            usable = filled - filled % dtype.itemsize
            if usable:
                yield buffer[:usable].view(dtype)
            if filled < len(buffer):
                return


class EventReader(ABC):
    """A recording opened for streaming; subclasses decode one file format.

    ``height``/``width`` are the sensor size, ``None`` where neither the file nor the caller
    gave it. ``stats`` tells what the most recent pass kept, repaired and skipped (final once
    the pass has finished); ``policy`` sets the limits of :mod:`leod.events.policy`.
    A reader holds no open file between passes, so it needs no closing.
    """

    _corrupt_what = "undefined word type"
    """How :func:`leod.events.policy.check_pass` names a skipped record in its error."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        policy: ReadPolicy | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise MissingInputError(f"event file not found: {self.path}")
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        self.chunk_size = chunk_size
        self.policy = policy or ReadPolicy()
        self.height: int | None = None
        self.width: int | None = None
        self.stats = ReadStats()

    # -- what a format module provides

    @abstractmethod
    def _blocks(self) -> Iterator[Sized]:
        """The file's records in file order, at most ``chunk_size`` per block."""

    @abstractmethod
    def _new_state(self) -> np.ndarray:
        """The decoder state carried from block to block (counter wraps, time base, ...)."""

    @abstractmethod
    def _decode(self, block: Sized, start: int, state: np.ndarray, acc: np.ndarray, out: OutputBuffer) -> int:
        """Decode ``block[start:]`` into ``out`` from ``out.n`` on, through
        :func:`leod.events.policy.keep_event`; update ``out.n`` and return how many records
        were consumed (fewer than all only when ``out`` ran out of room)."""

    @abstractmethod
    def _position(self, index: int) -> str:
        """Where record ``index`` lies in the file, for error messages."""

    def _capacity(self, records: int) -> int:
        """Output slots to reserve for ``records`` records (exact bound for 1 event/record)."""
        return records

    # -- the format-independent pass

    def _pass(self, shared: OutputBuffer | None) -> Iterator[OutputBuffer]:
        """Decode the file once, yielding the output after each block: ``shared`` when
        given (the whole file lands in it), else a fresh one per block."""
        self.stats = ReadStats()
        acc = new_accumulator(self.policy, self.height, self.width)
        state = self._new_state()
        base = events = 0
        for block in self._blocks():
            out = shared if shared is not None else OutputBuffer(self._capacity(len(block)))
            before, done = out.n, 0
            while True:
                acc[A_BASE] = base + done
                done += self._decode(block, done, state, acc, out)
                if acc[A_ERROR]:
                    raise jump_error(self.path, acc, self._position(int(acc[A_ERROR_INDEX])), self.policy)
                if done >= len(block):
                    break
                out.grow(self._capacity(len(block) - done))
            base += len(block)
            events += out.n - before
            self.stats = stats_of(acc, events, base)
            yield out
        check_pass(self.path, acc, self.stats, self.policy, self._position, self._corrupt_what)

    def iter_chunks(self) -> Iterator[Events]:
        """Stream the whole file as non-empty chunks of checked events with clamped timestamps."""
        for out in self._pass(None):
            if out.n:
                yield out.events()

    def read_all(self) -> Events:
        """Decode the whole recording into memory (small files, tests, label-free tools)."""
        out = OutputBuffer(self._capacity(self._total_records()))
        for _ in self._pass(out):
            pass
        return out.events()

    @abstractmethod
    def _total_records(self) -> int:
        """How many records the file holds (sizes :meth:`read_all`'s output)."""
