"""Recipes: one params key (``recipe``) that switches a whole published training setup.

A recipe is ``<name>.yaml`` in this folder: the ``dataset`` it is for, dotted params keys to
``set`` (``*`` stands for every entry of a mapping), optionally a recipe it ``extends``.
:func:`apply_recipe` is the one home of the rule; docs/recipes.md explains it. DVC sees
both inputs: every stage lists ``recipe`` among its params and this folder among its deps.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from leod.plumbing.errors import ConfigError

#: where the recipe files live
RECIPES_DIR = Path(__file__).parent
#: the recipe params.yaml itself describes (it sets no key)
DEFAULT_RECIPE = "synthetic-nano"

_NO_DEFAULT = object()


@dataclass(frozen=True)
class Recipe:
    """One recipe file: the dataset it is for and the params keys it sets."""

    name: str
    #: the dataset preset params.yaml must select (None: any)
    dataset: str | None
    #: dotted params key (``*`` = every entry of a mapping) -> value
    values: dict[str, Any]


def recipe_names() -> list[str]:
    """Names of the shipped recipes (file stems), sorted."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def load_recipe(name: Any, _seen: tuple[str, ...] = ()) -> Recipe:
    """Read recipe ``name`` (following ``extends``); an unknown name is an error naming ``recipe``."""
    if not isinstance(name, str) or name not in recipe_names():
        key = f"recipe '{_seen[-1]}' key 'extends'" if _seen else "params key 'recipe'"
        raise ConfigError(
            f"{key} = {name!r} names no recipe in {RECIPES_DIR} (have: {', '.join(recipe_names())})"
        )
    path = RECIPES_DIR / f"{name}.yaml"
    if name in _seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself ({' -> '.join((*_seen, name))})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
    if not isinstance(data, dict) or set(data) - {"extends", "dataset", "set"}:
        raise ConfigError(f"{path}: a recipe is a mapping with the keys 'extends', 'dataset' and 'set' only")
    values = data.get("set") or {}
    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        raise ConfigError(f"{path}: 'set' must map dotted params keys to values")
    dataset = data.get("dataset")
    if dataset is not None and not isinstance(dataset, str):
        raise ConfigError(f"{path}: 'dataset' must be a dataset preset name")
    if "extends" in data:  # the parent's keys, then this file's over them
        parent = load_recipe(data["extends"], (*_seen, name))
        values = {**parent.values, **values}
        dataset = dataset if dataset is not None else parent.dataset
    return Recipe(name=name, dataset=dataset, values=values)


def _expand(data: dict[str, Any], parts: list[str], done: str = "") -> Iterator[str]:
    """The concrete dotted keys of ``data`` that the pattern ``parts`` names (``*`` = each entry)."""
    head, rest = parts[0], parts[1:]
    names = list(data) if head == "*" else [head]
    for name in names:
        key = f"{done}{name}"
        if not rest:
            yield key
            continue
        child = data.get(name)
        if not isinstance(child, dict):
            raise ConfigError(f"missing params key '{key}'")
        yield from _expand(child, rest, f"{key}.")


def params_field(schema: type, key: str) -> dataclasses.Field | None:
    """The dataclass field that reads dotted params ``key`` (None if no field does).

    ``schema`` is the dataclass of the whole params file; entries of ``dict[str, X]``
    sections (``rounds.r1``) are walked into ``X``.
    """
    cls: Any = schema
    parts = key.split(".")
    i = 0
    while dataclasses.is_dataclass(cls) and i < len(parts):
        f = {f.name: f for f in dataclasses.fields(cls)}.get(parts[i])
        if f is None:
            break
        if i == len(parts) - 1:
            return f
        hint = typing.get_type_hints(cls)[f.name]
        if typing.get_origin(hint) is dict:  # skip the entry's name
            cls, i = typing.get_args(hint)[1], i + 2
        else:
            cls, i = hint, i + 1
    return None


def _default(f: dataclasses.Field) -> Any:
    """A field's default in the form YAML gives it (``_NO_DEFAULT`` if it has none)."""
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return _NO_DEFAULT
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return list(value) if isinstance(value, tuple) else value


def apply_recipe(data: dict[str, Any], schema: type) -> dict[str, Any]:
    """params.yaml's mapping with its ``recipe``'s ``set`` values written over those keys.

    Every other key keeps its params.yaml value (``synthetic-nano``, the default, sets
    nothing). The recipe's ``dataset`` is a requirement, not an override: dvc.yaml builds
    paths from params.yaml's ``dataset``, so params.yaml must name the same one. A key the
    recipe sets may not also be changed in params.yaml: a value that differs from both the
    key's shipped default and the recipe's value fails, naming the key (``-S
    train.steps=1000`` next to a recipe is an error, not silently ignored). Keys with no
    typed default (per-class threshold lists) always take the recipe's value.

    Returns a new mapping; ``data`` is not modified. A mapping without ``recipe`` is
    returned unchanged (the schema then reports the missing key).
    """
    if "recipe" not in data:
        return data
    recipe = load_recipe(data["recipe"])
    if recipe.dataset is not None and data.get("dataset") != recipe.dataset:
        raise ConfigError(
            f"params key 'dataset' = {data.get('dataset')!r} but recipe '{recipe.name}' is for "
            f"'{recipe.dataset}' (dvc.yaml's paths follow params.yaml's dataset): "
            f"set both, e.g. dvc exp run -S recipe={recipe.name} -S dataset={recipe.dataset}"
        )
    out = copy.deepcopy(data)
    for pattern, value in recipe.values.items():
        f = params_field(schema, pattern)  # "*" stands where a dict entry's name goes
        if f is None:
            raise ConfigError(
                f"{RECIPES_DIR / recipe.name}.yaml (or a recipe it extends): key '{pattern}' "
                "is not a params key that holds a value"
            )
        default = _default(f)
        for key in _expand(out, pattern.split(".")):
            *parents, leaf = key.split(".")
            node = out
            for part in parents:
                node = node[part]
            if leaf in node:
                current = node[leaf]
            elif f.metadata.get("optional"):
                current = default
            else:
                raise ConfigError(f"missing params key '{key}'")
            if default is not _NO_DEFAULT and current not in (default, value):
                raise ConfigError(
                    f"params key '{key}' = {current!r} overrides recipe '{recipe.name}', which sets "
                    f"it to {value!r}: leave it at its default {default!r} or change it "
                    f"in a copy of {RECIPES_DIR / recipe.name}.yaml"
                )
            node[leaf] = copy.deepcopy(value)
    return out
