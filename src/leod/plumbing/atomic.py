"""Atomic output writing: a killed stage never leaves a half-written file or folder.

Everything is first written to a temporary sibling ``.<name>.<pid>-<random>.tmp``, then moved
into place with ``os.replace`` (atomic on POSIX within one file system). A process killed
outright cannot remove its temporaries, so each write first removes the stale ones of its
output (:func:`stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from leod.plumbing.errors import OutputError

if TYPE_CHECKING:
    import h5py

#: errnos of a failed write that only the output location can cause
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS})


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_sibling(path: Path, is_dir: bool) -> Path:
    """A fresh temporary beside ``path``, with the permissions a plain open/mkdir would give
    (mkstemp/mkdtemp create private 0600/0700 entries)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.{os.getpid()}-"
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
        tmp.chmod(0o777 & ~_umask())
        return tmp
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(name, 0o666 & ~_umask())
    return Path(name)


def _process_gone(pid: int) -> bool:
    """True only when no process ``pid`` exists here (a zombie or another user's still counts)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


def stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """The temporaries of ``path`` (named as :func:`_tmp_sibling` names them) whose process is gone
    (the id of a live process, or of one on another host sharing the folder, keeps them)."""
    target = Path(path)
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)-[a-z0-9_]+\.tmp")
    try:
        names = [entry.name for entry in os.scandir(target.parent)]
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [
        target.parent / name
        for name in sorted(names)
        if (match := pattern.fullmatch(name)) and _process_gone(int(match.group(1)))
    ]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def check_writable(*paths: str | os.PathLike[str]) -> None:
    """Fail before a long computation when an output cannot be written: the nearest existing
    folder above each output must be a writable folder (not a file)."""
    for path in paths:
        above = Path(path).absolute().parent
        while not above.exists():
            above = above.parent
        if not above.is_dir() or not os.access(above, os.W_OK):
            raise OutputError(f"cannot write {path}: {above} is not a writable folder")


def _output_error(target: Path, exc: OSError) -> OutputError:
    reason = os.strerror(exc.errno) if exc.errno else str(exc).splitlines()[0]
    where = f" ({exc.filename})" if exc.filename and Path(exc.filename) != target else ""
    return OutputError(f"{target}: cannot write output: {reason}{where}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``path`` atomically.

    On any exception the temporary is removed and ``path`` is left untouched; an OSError that
    only the output location can cause (no space left, file too large, read-only file system,
    a parent path that is a file) is raised as :class:`OutputError` naming the output, so a
    stage reports it in one line like any other bad input.
    For folders an existing target is removed first (``os.replace`` cannot replace a
    non-empty folder); the window between removal and rename holds no partial output.
    """
    target = Path(path)
    try:
        for stale in stale_temporaries(target):
            _remove(stale)
        tmp = _tmp_sibling(target, is_dir)
    except OSError as exc:
        raise _output_error(target, exc) from exc
    try:
        yield tmp
    except BaseException as exc:
        _remove(tmp)
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            raise _output_error(target, exc) from exc
        if isinstance(exc, OutputError):  # a file inside a temporary folder: name its final path
            raise OutputError(str(exc).replace(str(tmp), str(target))) from exc
        raise
    try:
        if is_dir and target.exists():
            _remove(target)
        os.replace(tmp, target)
    except BaseException as exc:
        _remove(tmp)
        if isinstance(exc, OSError):
            raise _output_error(target, exc) from exc
        raise


class _GuardedFile:
    """The file object under an HDF5 file being written: a failed write is kept, not raised.

    HDF5 cannot recover from a failed write: the file stays open however often it is closed
    and the library crashes at interpreter exit (h5py#914, #1120). So HDF5 is never told: the
    first OSError is kept, every later write is skipped, and :meth:`check` raises it between
    HDF5 calls. The file on disk is then garbage, but it lives in a temporary the caller removes.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.error: OSError | None = None
        self._file = open(path, "w+b", buffering=0)  # noqa: SIM115  (closed by write_h5)

    def _guard(self, op: str, *args: Any) -> Any:
        if self.error is None:
            try:
                return getattr(self._file, op)(*args)
            except OSError as exc:
                self.error = exc
        return None

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while self.error is None and done < len(view):
            done += self._guard("write", view[done:]) or 0
        return len(view)

    def read(self, size: int = -1) -> bytes | None:
        return self._file.read(size)

    def readinto(self, buffer: Any) -> int | None:
        return self._file.readinto(buffer)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def truncate(self, size: int | None = None) -> None:
        self._guard("truncate", size)

    def flush(self) -> None:
        self._guard("flush")

    def close(self) -> None:
        self._file.close()

    def check(self) -> None:
        """Raise the kept write failure, if any, as :class:`OutputError`."""
        if self.error is not None:
            raise _output_error(self.path, self.error) from self.error


class H5Output:
    """An HDF5 file open for writing (``file``) and the guard that reports its write failures."""

    def __init__(self, file: h5py.File, guard: _GuardedFile) -> None:
        self.file = file
        self.check = guard.check


@contextlib.contextmanager
def write_h5(path: str | os.PathLike[str]) -> Iterator[H5Output]:
    """Create the HDF5 file ``path`` (not atomically: write it inside an atomic temporary).

    Call ``check()`` after each large write to stop at the first failure; the file is closed
    before this returns or raises, so no HDF5 handle outlives a failed write.
    """
    import h5py

    guard = _GuardedFile(Path(path))
    try:
        with h5py.File(guard, "w") as h5:
            yield H5Output(h5, guard)
    except Exception:
        guard.check()  # a kept write failure explains whatever failed after it
        raise
    finally:
        guard.close()
    guard.check()


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON (stable diffs for metrics files)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


class _Writer:
    """Hides a real file from numpy, whose fast path (``ndarray.tofile``) reports a full disk
    as an OSError without errno; through ``write`` numpy copies in 16 MiB pieces instead."""

    def __init__(self, file: Any) -> None:
        self.write = file.write


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(_Writer(f), array, allow_pickle=False)


def save_npz(path: str | os.PathLike[str], **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
