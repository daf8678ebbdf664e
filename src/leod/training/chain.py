"""One link of the self-training chain: what a training stage starts from and what it publishes.

Every training stage (``train_r0``, ``train_full``, ``train@rK``, ``control@rK``) publishes a
model folder, its curves and :class:`TrainMetrics`, renamed into place together, whether it
trained, was stopped by the quality gate (the previous model carried forward), published an
imported teacher or repeats the recipe of a published model (a from-scratch round's control
is r0). No torch here: the report and ``python -m leod compare`` import this module.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leod.plumbing.atomic import atomic_path, write_json
from leod.plumbing.errors import ConfigError, DataFormatError, MissingInputError
from leod.schema import from_dict, optional, to_dict

#: columns of a run's ``train.csv`` (logged steps) and ``val.csv`` (validations)
LOSS_COLUMNS = ("step", "lr", "loss", "iou_loss", "obj_loss", "cls_loss", "num_fg")
VAL_COLUMNS = ("step", "val/AP")


@dataclass(frozen=True)
class TrainMetrics:
    """``metrics/train_<run>.json``; ``None`` fields are left out of the file."""

    #: validation AP of the published weights; None: not validated here (an imported teacher)
    best_val_AP: float | None = field(default=None, metadata=optional())
    #: step of the published weights; -1 when they were not trained by this run
    best_step: int = -1
    steps: int = 0
    #: rounds only: whether the quality gate stopped the round, and why
    gated: bool | None = field(default=None, metadata=optional())
    gate_reason: str | None = field(default=None, metadata=optional())
    #: the imported model (``selftrain.teacher``) published instead of training r0
    teacher: str | None = field(default=None, metadata=optional())
    #: the run whose recipe this one repeats, published instead of training it again
    same_as: str | None = field(default=None, metadata=optional())

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in to_dict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: Any, source: Path) -> TrainMetrics:
        """The metrics of ``source``; anything but what a training stage writes names the file."""
        if not isinstance(data, dict):
            raise DataFormatError(f"{source}: expected a JSON object of training metrics")
        try:
            return from_dict(cls, data)
        except ConfigError as exc:
            raise DataFormatError(f"{source}: {exc}") from exc


@dataclass(frozen=True)
class TrainOutputs:
    """Where a training stage publishes: the model folder, the curves folder, the metrics JSON."""

    model: Path
    curves: Path
    metrics: Path


def curves_csv(rows: Sequence[Mapping[str, float]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def publish(
    out: TrainOutputs,
    fill_model: Callable[[Path], None],
    history: Sequence[Mapping[str, float]],
    metrics: TrainMetrics,
) -> None:
    """Write the model folder (by ``fill_model``), the curves and the metrics beside their
    targets and rename them into place together, only once all of them were written.

    A failure (disk full, ...) is one error line (from ``atomic_path``) and leaves every
    previous output as it was.
    """
    with (
        atomic_path(out.model, is_dir=True) as model,
        atomic_path(out.curves / "train.csv") as train_csv,
        atomic_path(out.curves / "val.csv") as val_csv,
        atomic_path(out.metrics) as metrics_json,
    ):
        fill_model(model)
        train_csv.write_text(curves_csv([r for r in history if "loss" in r], LOSS_COLUMNS))
        val_csv.write_text(curves_csv([r for r in history if "val/AP" in r], VAL_COLUMNS))
        write_json(metrics_json, metrics.to_dict())


def _copy_of(folder: Path) -> Callable[[Path], None]:
    return lambda model: shutil.copytree(folder, model, dirs_exist_ok=True)


def trained(best_ap: float, best_step: int, steps: int, is_round: bool) -> TrainMetrics:
    """A run that trained: rounds also say that the gate let them through."""
    return TrainMetrics(best_ap, best_step, steps, gated=False if is_round else None)


def carry_forward(prev: Path, prev_info: Mapping[str, Any], reason: str, out: TrainOutputs) -> TrainMetrics:
    """A gated round publishes the previous round's model (``prev``, whose ``model.json`` is
    ``prev_info``) unchanged, with metrics saying why."""
    metrics = TrainMetrics(prev_info.get("val_AP"), -1, 0, gated=True, gate_reason=reason)
    publish(out, _copy_of(prev), [], metrics)
    return metrics


def imported_model(root: Path, name: str, key: str) -> Path:
    """The model folder ``<root>/<name>`` that params key ``key`` names (``models/imported``)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ConfigError(f"params key '{key}' = {name!r} must be the name of a folder in {root}")
    folder = root / name
    if not folder.is_dir():
        have = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise MissingInputError(
            f"{folder}: no imported model here (params key '{key}'; folders in {root}: "
            f"{', '.join(have) or 'none'}); make one with `python -m leod import-rvt CKPT --out {folder} ...`"
        )
    return folder


def start_weights(
    prev: Path | None, r0: Path | None, init: str, init_from: str | None, imported: Path
) -> Path | None:
    """The model folder a run starts from, None for random weights.

    A round (``prev``: the previous round's model; ``r0``: r0's) starts from ``prev`` under
    ``selftrain.init: previous`` and from ``r0`` under ``init: r0``; any
    other run (r0, full, a round with ``init: scratch``) from ``train.init_from`` when set,
    else from random weights.
    """
    if prev is not None and init == "previous":
        return prev
    if prev is not None and init == "r0":
        if r0 is None:
            raise ConfigError("params key 'selftrain.init' = 'r0' needs r0's model folder (--r0-model)")
        return r0
    return imported_model(imported, init_from, "train.init_from") if init_from else None


def publish_repeat(
    folder: Path, info: Mapping[str, Any], recipe: str, steps: int, out: TrainOutputs
) -> TrainMetrics | None:
    """A run of recipe digest ``recipe`` publishes the model ``folder`` (``model.json``:
    ``info``) when that model was trained by the same recipe: on the same machine, training
    would give back the same weights. None (nothing published) when the recipes differ."""
    if info.get("recipe") != recipe:
        return None
    metrics = TrainMetrics(info.get("val_AP"), info.get("step", -1), steps, same_as=folder.name)
    publish(out, _copy_of(folder), [], metrics)
    return metrics


def publish_teacher(
    folder: Path, info: Mapping[str, Any], classes: Sequence[str], out: TrainOutputs
) -> TrainMetrics:
    """``train_r0`` replaced by the imported model ``folder`` (``model.json``: ``info``),
    published unchanged. Its classes must be the dataset's, in order: the next round's pseudo
    labels take their class ids from it."""
    have = info.get("classes")
    if have != list(classes):
        raise DataFormatError(
            f"{folder}: the model detects classes {have} but the dataset has {list(classes)} "
            "(params key 'selftrain.teacher')"
        )
    metrics = TrainMetrics(None, -1, 0, teacher=folder.name)
    publish(out, _copy_of(folder), [], metrics)
    return metrics
