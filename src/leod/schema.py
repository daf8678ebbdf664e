"""The validator behind every params section: typed dataclasses built from plain YAML data.

:func:`from_dict` checks types from the annotations and ranges from
``field(metadata=rng(...))``, rejects unknown keys, and always names the dotted key.
Domain modules declare their own section dataclasses with these helpers;
:mod:`leod.config` assembles them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar, Union

from leod.plumbing.errors import ConfigError

T = TypeVar("T")


def rng(**bounds: float) -> dict[str, float]:
    """Field metadata for a numeric range, e.g. ``field(metadata=rng(gt=0, le=1))``."""
    return bounds


def optional(**bounds: float) -> dict[str, Any]:
    """Field metadata of a key that params.yaml may omit (the field's default then applies)."""
    return {**bounds, "optional": True}


def check_unit_interval(values: list[float], key: str) -> None:
    """Per-class thresholds and the like: every value within [0, 1], naming the bad index."""
    for i, v in enumerate(values):
        if not 0 <= v <= 1:
            raise ConfigError(f"params key '{key}[{i}]' = {v} must be within [0, 1]")


def _check_range(value: Any, meta: typing.Mapping[str, Any], key: str) -> None:
    ops = {
        "ge": (lambda v, b: v >= b, ">="),
        "gt": (lambda v, b: v > b, ">"),
        "le": (lambda v, b: v <= b, "<="),
        "lt": (lambda v, b: v < b, "<"),
    }
    for name, (ok, sym) in ops.items():
        if name in meta and not ok(value, meta[name]):
            raise ConfigError(f"params key '{key}' = {value!r} must be {sym} {meta[name]}")


def _convert(hint: Any, value: Any, key: str, meta: typing.Mapping[str, Any]) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        candidates = [a for a in args if a is not type(None)]
        errors = []
        for cand in candidates:
            try:
                return _convert(cand, value, key, meta)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"params key '{key}' = {value!r} matches none of {hint}"
        )
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"params key '{key}' = {value!r} must be one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"params key '{key}' must be a list, got {type(value).__name__}")
        item = args[0] if args else Any
        out = [_convert(item, v, f"{key}[{i}]", meta) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"params key '{key}' must be a mapping, got {type(value).__name__}")
        return {str(k): _convert(args[1], v, f"{key}.{k}", meta) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key)
    if hint is Any:
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"params key '{key}' must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"params key '{key}' must be an integer, got {value!r}")
        _check_range(value, meta, key)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"params key '{key}' must be a number, got {value!r}")
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"params key '{key}' must be finite, got {value!r}")
        _check_range(float(value), meta, key)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"params key '{key}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {hint!r} for params key '{key}'")


def from_dict(cls: type[T], data: Any, key: str = "") -> T:
    """Build the dataclass ``cls`` from a mapping, validating every field.

    Every field is required in params.yaml, defaults or not (deleting a key must not
    silently change the experiment), except fields marked ``optional(...)``: overrides
    whose absence means "no override" and constants that params.yaml does not list.
    Defaults exist so code and tests can build a config directly; a test keeps them equal
    to params.yaml. Cross-field rules live in each dataclass's ``check(key)`` method.
    """
    where = f"'{key}'" if key else "the top level"
    if not isinstance(data, dict):
        raise ConfigError(f"params section {where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    prefix = f"{key}." if key else ""
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown params key '{prefix}{unknown[0]}' (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], f"{prefix}{name}", f.metadata)
        elif not f.metadata.get("optional"):
            raise ConfigError(f"missing params key '{prefix}{name}'")
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if callable(check):
        check(key)
    return obj


def to_dict(obj: Any) -> Any:
    """The plain-data form of a config (for logging params and for provenance files)."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys (``train.lr``), as MLflow params want."""
    if dataclasses.is_dataclass(data):
        data = dataclasses.asdict(data)
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}
