"""Exception types shared by every module, and the one-line form of an error.

Stages catch :class:`LeodError` (and :class:`OSError`) at the top level and turn it into
one clear line on stderr and a non-zero exit, so each error message must name the
offending file or key.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any


class LeodError(Exception):
    """Base class of all errors that a user can fix (bad input, bad params, missing data)."""


class ConfigError(LeodError):
    """A params.yaml key is missing, unknown, of the wrong type or out of range."""


class DataFormatError(LeodError):
    """An input file is corrupt, truncated or inconsistent with its declared format."""


class MissingInputError(LeodError):
    """A required input path does not exist (usually: an upstream stage has not run)."""


class OutputError(LeodError):
    """An output cannot be written: disk full, file too large, read-only or a parent that is a file."""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# torch.load(weights_only=True) refusing a pickled object: keep what it refused, never its
# advice to retry with weights_only=False (that would run code from the file)
_TORCH_REFUSAL = re.compile(
    r"Weights only load failed\..*?(?:WeightsUnpickler error: (?P<what>.*?)(?: Please use .*|"
    r" Check the documentation .*)?)?$"
)


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line: an OS error as ``<file>: <reason>``, whitespace
    collapsed, torch's advice to load untrusted files with ``weights_only=False`` removed."""
    if isinstance(exc, OSError) and exc.strerror:
        files = [f for f in (exc.filename, exc.filename2) if f is not None]
        text = f"{' -> '.join(map(str, files))}: {exc.strerror}" if files else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    text = " ".join(_ANSI.sub("", text).split())
    refusal = _TORCH_REFUSAL.search(text)
    if refusal:
        what = refusal["what"] or ""
        name = re.search(r"GLOBAL (\S+)", what)
        what = name[1] if name else what.rstrip(".") or "an object"
        text = (
            text[: refusal.start()]
            + f"refused to unpickle {what}: not plain tensor data (no code from the file is run)"
        )
    return text


def read_json(path: str | Path, what: str) -> Any:
    """The parsed JSON file ``path``, described as ``what`` in errors (``"pseudo-label metrics"``).

    A missing file is a :class:`MissingInputError`, a file that is not UTF-8 JSON a
    :class:`DataFormatError`; both name the file.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError as exc:
        raise MissingInputError(f"{path}: {what} not found") from exc
    except IsADirectoryError as exc:
        raise DataFormatError(f"{path}: {what} expected, found a folder") from exc
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: {what} is not UTF-8 text (byte {exc.start})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(
            f"{path}: {what} is not valid JSON (line {exc.lineno}:{exc.colno}: {exc.msg})"
        ) from exc
