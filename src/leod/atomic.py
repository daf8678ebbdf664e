"""Atomic output writing: a killed stage never leaves a half-written file or folder.

Everything is first written to a temporary sibling path, then moved into place with
``os.replace`` (atomic on POSIX within one file system).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_sibling(path: Path, is_dir: bool) -> Path:
    """A fresh temporary beside ``path``, with the permissions a plain open/mkdir would give
    (mkstemp/mkdtemp create private 0600/0700 entries)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        tmp.chmod(0o777 & ~_umask())
        return tmp
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(name, 0o666 & ~_umask())
    return Path(name)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``path`` atomically.

    On any exception the temporary is removed and ``path`` is left untouched.
    For folders an existing target is removed first (``os.replace`` cannot replace a
    non-empty folder); the window between removal and rename holds no partial output.
    """
    target = Path(path)
    tmp = _tmp_sibling(target, is_dir)
    try:
        yield tmp
        if is_dir and target.exists():
            _remove(target)
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON (stable diffs for metrics files)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def save_npz(path: str | os.PathLike[str], **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
