"""Readers and writers of event-camera recordings, one module per file format.

:func:`open_recording` picks the reader from the file suffix; :mod:`leod.events.policy`
decides, for every format alike, what happens to implausible input.
"""

from __future__ import annotations

import os
from pathlib import Path

from leod.events.dat import DatReader
from leod.events.evt import EvtReader
from leod.events.h5 import H5Reader
from leod.events.policy import ReadPolicy
from leod.events.reader import DEFAULT_CHUNK_SIZE, EventReader
from leod.plumbing.errors import DataFormatError, MissingInputError

_READERS: dict[str, type[DatReader] | type[EvtReader] | type[H5Reader]] = {
    ".dat": DatReader,
    ".raw": EvtReader,
    ".h5": H5Reader,
    ".hdf5": H5Reader,
}


def open_recording(
    path: str | os.PathLike[str],
    height: int | None = None,
    width: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    policy: ReadPolicy | None = None,
) -> EventReader:
    """Open an event recording, choosing the reader from the file suffix.

    ``.dat`` is Prophesee DAT v2, ``.raw`` is EVT 2.0/3.0 (the header tells which),
    ``.h5``/``.hdf5`` is the RVT/DSEC HDF5 layout. ``height``/``width`` fill in what the
    file does not declare and must agree with what it does.
    """
    target = Path(path)
    reader = _READERS.get(target.suffix.lower())
    if reader is None:
        if not target.exists():
            raise MissingInputError(f"event file not found: {target}")
        raise DataFormatError(f"{target}: unknown event file suffix (expected one of {sorted(_READERS)})")
    return reader(target, height=height, width=width, chunk_size=chunk_size, policy=policy)
