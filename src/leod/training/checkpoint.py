"""Training checkpoints that resume exactly and load without unpickling arbitrary code.

A checkpoint is one ``torch.save`` file holding only tensors and plain Python values, so
``torch.load(path, weights_only=True)`` reads it: a checkpoint from an untrusted source
cannot execute code. Its ``meta`` (what was trained) is checked on load, so a checkpoint is
never silently resumed or evaluated under different params.
"""

from __future__ import annotations

import os
import random
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leod.plumbing.atomic import atomic_path
from leod.plumbing.errors import DataFormatError, MissingInputError

FORMAT_VERSION = 1
_KEYS = (
    "format_version",
    "model_state",
    "optimizer_state",
    "scheduler_state",
    "step",
    "rng_state",
    "meta",
    "extra",
)
# Exactly what torch.load(weights_only=True) rebuilds. Exact types, not isinstance: numpy
# scalars subclass float but are pickled as numpy objects, which that loader rejects.
_PLAIN_SCALARS = (bool, int, float, str, type(None))
_PLAIN_MAPPINGS = (dict, OrderedDict)
_PLAIN_SEQUENCES = (list, tuple, torch.Size)


def capture_rng_state() -> dict[str, Any]:
    """The state of every global RNG as tensors and plain values.

    Torch CPU and CUDA, numpy's legacy global state and python ``random``, so a resumed run
    draws the same augmentations and samples as an uninterrupted one. ``numpy.random.Generator``
    objects owned by other code are not global: their owner re-derives them from seed and step.
    """
    bit_generator, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)  # noqa: NPY002
    py_version, py_internal, py_gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "bit_generator": str(bit_generator),
            # uint32 words widened to int64: the plainest dtype every torch loader accepts.
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss_next": py_gauss_next,
        },
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Put every global RNG back to ``state`` (from :func:`capture_rng_state`).

    CUDA states are restored for the devices present (none when resuming on a CPU).
    """
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])
    np_state = state["numpy"]
    np.random.set_state(  # noqa: NPY002  (the legacy global state is what we restore)
        (
            np_state["bit_generator"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py_state = state["python"]
    random.setstate((py_state["version"], tuple(py_state["internal"].tolist()), py_state["gauss_next"]))


def _check_plain(obj: Any, where: str) -> None:
    """Raise TypeError naming the first value that weights-only loading could not rebuild.

    Checking at save time turns a checkpoint that would fail to load at resume time (hours
    later) into an immediate error that names the offending field.
    """
    if isinstance(obj, torch.Tensor) or type(obj) in _PLAIN_SCALARS:
        return
    if type(obj) in _PLAIN_MAPPINGS:
        for key, value in obj.items():
            if type(key) not in (str, int):
                raise TypeError(f"checkpoint field {where} has a key of type {type(key).__name__}")
            _check_plain(value, f"{where}.{key}")
        return
    if type(obj) in _PLAIN_SEQUENCES:
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
        return
    raise TypeError(
        f"checkpoint field {where} holds a {type(obj).__name__}, which torch.load(weights_only=True) "
        "cannot read; store tensors or plain Python values instead"
    )


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model_state: Mapping[str, Any],
    optimizer_state: Mapping[str, Any] | None,
    scheduler_state: Mapping[str, Any] | None,
    step: int,
    rng_state: Mapping[str, Any],
    meta: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically (a killed run never leaves a truncated file behind).

    ``meta`` holds plain values describing what was trained (e.g. ``{"model.preset": "tiny",
    "num_classes": 2}``); ``extra`` holds run state the trainer needs for an exact resume beyond the model and
    optimiser (e.g. the recurrent states of the streaming slots).

    Raises TypeError, before writing anything, if a field holds a value that
    ``torch.load(weights_only=True)`` could not read back.
    """
    if type(step) is not int:
        raise TypeError(f"checkpoint step must be an int, got {type(step).__name__}")
    payload = {
        "format_version": FORMAT_VERSION,
        "model_state": model_state,
        "optimizer_state": optimizer_state,
        "scheduler_state": scheduler_state,
        "step": step,
        "rng_state": rng_state,
        "meta": meta,
        "extra": dict(extra or {}),
    }
    _check_plain(payload, "checkpoint")
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def load_plain(file: Path, what: str) -> Any:
    """``torch.load(file, weights_only=True)`` onto the CPU; any failure is one line naming ``file``.

    A pickled Python object is refused (never unpickled) and said so, without torch's advice
    to retry with ``weights_only=False``, which would run the file's code.
    """
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except PermissionError:
        raise
    except Exception as exc:
        # The file exists and is readable, so any failure is its content: a truncated zip or
        # damaged pickle stream fails in many ways (EOFError, RuntimeError, OSError, KeyError,
        # pickle.UnpicklingError for a non-plain object, ...) depending on where it broke.
        text = str(exc)
        refused = _GLOBAL.search(text)
        if refused:
            raise DataFormatError(
                f"refused {what} {file}: it holds a pickled Python object ({refused.group(1)}), "
                "not plain tensors; it was not loaded"
            ) from exc
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if lines and lines[0].startswith("Weights only load failed"):  # torch's advice, then the cause
            lines = [ln for ln in lines[1:] if "weights_only" not in ln and not ln.startswith("Check the")]
        reason = lines[0] if lines else type(exc).__name__
        raise DataFormatError(f"corrupt {what} {file}: {reason}") from exc


def load_checkpoint(
    path: str | os.PathLike[str], expected_meta: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Read a checkpoint onto the CPU and check ``meta`` against ``expected_meta``.

    Raises MissingInputError if the file is absent, DataFormatError if it is corrupt,
    truncated, not a leod checkpoint, or was trained with a different value for one of
    the keys of ``expected_meta``.
    """
    file = Path(path)
    if not file.is_file():
        raise MissingInputError(f"checkpoint {file} does not exist (has the training stage run?)")
    ckpt = load_plain(file, "checkpoint")
    if (
        not isinstance(ckpt, dict)
        or any(key not in ckpt for key in _KEYS)
        or not isinstance(ckpt["meta"], dict)
    ):
        raise DataFormatError(f"corrupt checkpoint {file}: not a leod checkpoint (expected keys {_KEYS})")
    if ckpt["format_version"] != FORMAT_VERSION:
        raise DataFormatError(
            f"checkpoint {file} has format version {ckpt['format_version']}, this code reads {FORMAT_VERSION}"
        )
    meta = ckpt["meta"]
    for key, wanted in (expected_meta or {}).items():
        if key not in meta:
            raise DataFormatError(f"checkpoint {file} has no meta key '{key}' (params say {wanted!r})")
        if meta[key] != wanted:
            raise DataFormatError(
                f"checkpoint {file} was trained with {key}={meta[key]!r} but params say {wanted!r}"
            )
    return ckpt
