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
import hdf5plugin
import numpy as np

from leod.atomic import atomic_path
from leod.errors import DataFormatError
from leod.events.reader import DEFAULT_CHUNK_SIZE, EventReader, resolve_dimension
from leod.events.types import Events

_FIELDS = ("x", "y", "p", "t")
_WRITE_CHUNK = 1 << 16


def write_h5_events(path: str | os.PathLike[str], events: Events, height: int, width: int) -> None:
    """Write ``events`` in the RVT layout (with ``events/height|width``), Blosc zstd, atomically."""
    if len(events) and (int(events.x.max()) >= width or int(events.y.max()) >= height):
        raise ValueError("event coordinates outside the declared sensor size")
    compression = hdf5plugin.Blosc(cname="zstd", clevel=1, shuffle=hdf5plugin.Blosc.SHUFFLE)
    # An unlimited maxshape lets h5py chunk (hence compress) an empty recording too.
    chunk = (max(1, min(len(events), _WRITE_CHUNK)),)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        group = f.create_group("events")
        for name in _FIELDS:
            group.create_dataset(
                name, data=getattr(events, name), chunks=chunk, maxshape=(None,), **compression
            )
        group.create_dataset("height", data=np.int64(height))
        group.create_dataset("width", data=np.int64(width))


def _scalar(path: Path, node: h5py.Group, name: str) -> int | None:
    if name not in node:
        return None
    dataset = node[name]
    if not isinstance(dataset, h5py.Dataset) or dataset.shape != () or dataset.dtype.kind not in "iu":
        raise DataFormatError(f"{path}: '{dataset.name}' must be an integer scalar")
    return int(dataset[()])


def _as_coordinate(path: Path, name: str, values: np.ndarray) -> np.ndarray:
    if len(values) and (int(values.min()) < 0 or int(values.max()) > np.iinfo(np.uint16).max):
        raise DataFormatError(f"{path}: events/{name} holds values outside 0..65535")
    return values.astype(np.uint16)


def _as_polarity(path: Path, values: np.ndarray) -> np.ndarray:
    """Map polarity to 0/1; negative OFF codes (-1) become 0 as in RVT, anything above 1 is corrupt."""
    if len(values) and int(values.max()) > 1:
        raise DataFormatError(f"{path}: events/p holds value {int(values.max())} (expected 0/1)")
    return np.clip(values, 0, 1).astype(np.uint8)


class H5Reader(EventReader):
    """Streams ``events/{x,y,p,t}`` in slices of ``chunk_size`` rows; the file is opened per pass."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        height: int | None = None,
        width: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        super().__init__(path, chunk_size)
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

    def _decoded_chunks(self) -> Iterator[Events]:
        with self._open() as f:
            group = f["events"]
            for start in range(0, self.num_events, self.chunk_size):
                rows = slice(start, start + self.chunk_size)
                yield Events(
                    t=group["t"][rows].astype(np.int64) + self.t_offset,
                    x=_as_coordinate(self.path, "x", group["x"][rows]),
                    y=_as_coordinate(self.path, "y", group["y"][rows]),
                    p=_as_polarity(self.path, group["p"][rows]),
                )
