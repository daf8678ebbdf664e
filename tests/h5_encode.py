"""HDF5 event files in the RVT layout for tests (the pipeline itself only reads them)."""

from __future__ import annotations

import os

import h5py
import hdf5plugin
import numpy as np

from leod.events.types import Events
from leod.plumbing.atomic import atomic_path

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
