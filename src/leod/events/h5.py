"""HDF5 event files in the RVT / DSEC layout: datasets ``events/{x,y,p,t}``.

RVT's Gen1/1Mpx files (``*_td.dat.h5``, ``*_td.h5``) may add scalar ``events/height`` and
``events/width``; DSEC's ``events.h5`` stores relative ``t`` plus a root scalar ``t_offset``
to add. Both are Blosc-compressed, which h5py can only read once ``hdf5plugin`` has
registered the filter, hence the import for its side effect.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter for h5py)
import numpy as np
from numba import njit

from leod.events.policy import A_LAST, KERNEL, ReadPolicy, keep_event, limits
from leod.events.reader import DEFAULT_CHUNK_SIZE, EventReader, OutputBuffer, resolve_dimension
from leod.events.types import Events
from leod.plumbing.errors import DataFormatError

_FIELDS = ("x", "y", "p", "t")
_MAX_COORD = np.iinfo(np.uint16).max


def _scalar(path: Path, node: h5py.Group, name: str) -> int | None:
    if name not in node:
        return None
    dataset = node[name]
    if not isinstance(dataset, h5py.Dataset) or dataset.shape != () or dataset.dtype.kind not in "iu":
        raise DataFormatError(f"{path}: '{dataset.name}' must be an integer scalar")
    return int(dataset[()])


@njit(**KERNEL)
def _decode_rows(
    t: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    p: np.ndarray,
    acc: np.ndarray,
    out_t: np.ndarray,
    out_x: np.ndarray,
    out_y: np.ndarray,
    out_p: np.ndarray,
    n: int,
) -> int:
    """Pass validated rows through the policy; return the next free slot (-1 on an error)."""
    bounds = limits(acc)
    last = acc[A_LAST]
    for i in range(t.shape[0]):
        n, last = keep_event(acc, bounds, i, t[i], x[i], y[i], p[i], out_t, out_x, out_y, out_p, n, last)
        if n < 0:
            break
    acc[A_LAST] = last
    return n


def _integers(path: Path, name: str, values: np.ndarray, start: int, low: int, high: int) -> np.ndarray:
    """Check that ``values`` (rows from ``start`` on) are integers in ``[low, high]``.

    Float datasets are accepted when every value is a finite integer (some converters store
    ``t`` as float64); NaN, inf, fractions or out-of-range values name the first bad row.
    """
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values) | (values != np.round(values)) | (values < low) | (values > high)
    elif values.dtype.kind in "iu":
        bad = (values < low) | (values > high) if len(values) else np.zeros(0, bool)
    else:
        raise DataFormatError(f"{path}: events/{name} has dtype {values.dtype}, expected numbers")
    if bad.any():
        row = int(np.argmax(bad))
        raise DataFormatError(
            f"{path}: events/{name} holds {values[row].item()!r} at row {start + row} "
            f"(expected integers in {low}..{high})"
        )
    return values.astype(np.int64) if values.dtype.kind == "f" else values


class H5Reader(EventReader):
    """Streams ``events/{x,y,p,t}`` in slices of ``chunk_size`` rows; the file is opened per pass."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        height: int | None = None,
        width: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        policy: ReadPolicy | None = None,
    ) -> None:
        super().__init__(path, chunk_size, policy)
        with self._open() as f:
            group = f.get("events")
            if not isinstance(group, h5py.Group):
                raise DataFormatError(f"{self.path}: no 'events' group")
            missing = [name for name in _FIELDS if not isinstance(group.get(name), h5py.Dataset)]
            if missing:
                raise DataFormatError(f"{self.path}: missing datasets {['events/' + m for m in missing]}")
            lengths = {name: group[name].shape for name in _FIELDS}
            if len(set(lengths.values())) != 1 or len(lengths["t"]) != 1:
                raise DataFormatError(
                    f"{self.path}: events/x,y,p,t must be 1-D of equal length, got {lengths}"
                )
            self.num_events = lengths["t"][0]
            self.t_offset = _scalar(self.path, f, "t_offset") or 0
            declared_h = _scalar(self.path, group, "height")
            declared_w = _scalar(self.path, group, "width")
        self.height = resolve_dimension(self.path, "height", declared_h, height)
        self.width = resolve_dimension(self.path, "width", declared_w, width)

    def _open(self) -> h5py.File:
        try:
            return h5py.File(self.path, "r")
        except OSError as exc:
            raise DataFormatError(f"{self.path}: not a readable HDF5 file ({exc})") from None

    def _total_records(self) -> int:
        return self.num_events

    def _read(self, group: h5py.Group, name: str, rows: slice) -> np.ndarray:
        try:
            return group[name][rows]
        except (OSError, ValueError) as exc:  # a corrupt compressed chunk, a bad filter
            raise DataFormatError(
                f"{self.path}: cannot read events/{name} rows {rows.start}..{rows.stop - 1} ({exc})"
            ) from None

    def _blocks(self) -> Iterator[Events]:
        int64 = np.iinfo(np.int64)
        with self._open() as f:
            group = f["events"]
            for start in range(0, self.num_events, self.chunk_size):
                rows = slice(start, min(start + self.chunk_size, self.num_events))
                t = _integers(self.path, "t", self._read(group, "t", rows), start, int64.min, int64.max)
                x = _integers(self.path, "x", self._read(group, "x", rows), start, 0, _MAX_COORD)
                y = _integers(self.path, "y", self._read(group, "y", rows), start, 0, _MAX_COORD)
                p = _integers(self.path, "p", self._read(group, "p", rows), start, -1, 1)
                t = t.astype(np.int64) + self.t_offset
                yield Events(t, x, y, (p > 0).astype(np.uint8))  # OFF may be coded -1, as in RVT

    def _new_state(self) -> np.ndarray:
        return np.zeros(0, np.int64)

    def _decode(
        self, block: Events, start: int, state: np.ndarray, acc: np.ndarray, out: OutputBuffer
    ) -> int:
        n = _decode_rows(block.t, block.x, block.y, block.p, acc, out.t, out.x, out.y, out.p, out.n)
        if n >= 0:
            out.n = n
        return len(block)

    def _position(self, index: int) -> str:
        return f"row {index}"
