"""Read a pickled PyTorch checkpoint without running any code from it.

RVT's and LEOD's Lightning checkpoints cannot be read with ``torch.load(weights_only=True)``:
their ``lr_schedulers`` entry pickles a bound method of a ``OneCycleLR`` holding an ``AdamW``
(facts: ``../shared/fixtures/rvt-parity/README.md``). So torch's zip container is read here:
storages are built from their raw bytes, only tensor rebuild functions and plain containers
resolve, and every other global becomes an :class:`Inert` record that runs nothing.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import IO, Any

import torch

from leod.plumbing.errors import DataFormatError


class Inert:
    """Stands for a global the loader does not trust (``getattr``, optimizers, ``os.system``...);
    instances only record their inputs, so a ``__reduce__`` payload builds a record instead of running."""

    ref = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Inert:
        obj = object.__new__(cls)
        obj.__dict__["args"] = args
        obj.__dict__["state"] = None
        obj.__dict__["items"] = []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:  # BUILD
        self.__dict__["state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:  # SETITEM(S)
        self.__dict__["items"].append((key, value))

    def append(self, value: Any) -> None:  # APPEND(S)
        self.__dict__["items"].append(value)

    def extend(self, values: Any) -> None:
        self.__dict__["items"].extend(values)

    def __call__(self, *args: Any, **kwargs: Any) -> Inert:  # REDUCE with an Inert callable
        return Inert(*args)

    def __repr__(self) -> str:
        return f"<inert {self.ref}>"


def _placeholder(module: str, name: str) -> type[Inert]:
    return type(f"Inert_{name}", (Inert,), {"ref": f"{module}.{name}", "__module__": __name__})


def _rebuild_tensor(storage: Any, offset: int, size: Any, stride: Any, requires_grad: Any, *_: Any) -> Any:
    """``torch._utils._rebuild_tensor_v2`` without backward hooks or metadata from the file."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError("tensor without a storage")
    return torch._utils._rebuild_tensor_v2(
        storage, int(offset), tuple(size), tuple(stride), bool(requires_grad), collections.OrderedDict()
    )


def _rebuild_parameter(data: Any, requires_grad: Any, *_: Any) -> torch.nn.Parameter:
    """A Parameter from its tensor; the hooks and extra state a file may carry are dropped."""
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("parameter without a tensor")
    return torch.nn.Parameter(data, bool(requires_grad))


#: the only globals resolved to real objects; all are pure data constructors
_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


#: storage classes a checkpoint names for its tensors, by the dtype of their bytes
_STORAGE_DTYPES = {
    f"{name}Storage": dtype
    for name, dtype in (
        ("Float", torch.float32), ("Double", torch.float64), ("Half", torch.float16),
        ("BFloat16", torch.bfloat16), ("Long", torch.int64), ("Int", torch.int32),
        ("Short", torch.int16), ("Char", torch.int8), ("Byte", torch.uint8), ("Bool", torch.bool),
    )
}  # fmt: skip


class Unpickler(pickle.Unpickler):
    """Resolves the allow-listed globals (anything else becomes an :class:`Inert` subclass)
    and reads the storages a zip checkpoint refers to from ``archive``."""

    def __init__(self, file: IO[bytes], archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(file)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str) -> Any:
        # protocol-2 pickles name Python 2's module (fix_imports is skipped by an override)
        module = "builtins" if module == "__builtin__" else module
        allowed = _ALLOWED.get((module, name))
        return allowed if allowed is not None else _placeholder(module, name)

    def persistent_load(self, pid: Any) -> torch.storage.TypedStorage:
        # torch's record: ("storage", storage class, key, location, numel)
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        kind, key = pid[1], str(pid[2])
        dtype = _STORAGE_DTYPES.get(getattr(kind, "ref", "").removeprefix("torch."))
        if dtype is None:
            raise pickle.UnpicklingError(f"unsupported storage {getattr(kind, 'ref', kind)!r}")
        raw = bytearray(self.archive.read(f"{self.prefix}/data/{key}"))
        data = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        return torch.storage.TypedStorage(wrap_storage=data.untyped_storage(), dtype=dtype, _internal=True)


def load_checkpoint(path: Path) -> Any:
    """The unpickled contents of a torch (zip format) checkpoint file, tensors on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: checkpoint file not found")
    try:
        with zipfile.ZipFile(path) as archive:
            pkl = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
            prefix = pkl.removesuffix("/data.pkl")
            order = f"{prefix}/byteorder"
            if order in archive.namelist() and archive.read(order) != b"little":
                raise pickle.UnpicklingError("big-endian checkpoints are not supported")
            with archive.open(pkl) as f:
                return Unpickler(f, archive, prefix).load()
    except Exception as exc:  # a damaged zip or pickle fails in many ways
        raise DataFormatError(
            f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
