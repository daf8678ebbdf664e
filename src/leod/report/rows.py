"""One row per run: what the metrics files of the baseline, each round and full supervision hold.

Reads ``<metrics>/{test,pseudo,train}_<run>.json`` and ``<reports>/pseudo_<round>/pr.csv``.
Stages can be gated or not yet run, so a missing file is a finding to report
(``RunRow.missing``), not an error; a file that is not what its producer writes is an error.
Per round two headline numbers: the *self-training gain* ``AP_rK - AP_control_rK`` over
its compute-matched control (same initialisation and steps, sparse ground truth only), and
the *gap closed* ``(AP_rK - AP_r0) / (AP_full - AP_r0)``.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from leod.plumbing.errors import ConfigError, DataFormatError, read_json
from leod.training.chain import TrainMetrics

#: IoU threshold of the pseudo-label operating point shown in the table and the PR figure.
POINT_IOU = "0.5"
PRECISION_KEY = f"precision@{POINT_IOU}"
RECALL_KEY = f"recall@{POINT_IOU}"
#: a round's control run is named ``control_<round>`` (its files: ``test_control_<round>.json``)
CONTROL_PREFIX = "control_"
PR_COLUMNS = ("threshold", "precision", "recall")


@dataclass(frozen=True)
class PRCurve:
    """A pseudo-label precision/recall curve over score thresholds (one round's ``pr.csv``)."""

    threshold: np.ndarray
    precision: np.ndarray
    recall: np.ndarray


@dataclass(frozen=True)
class RunRow:
    """Everything the report knows about one run; ``None`` where the producing file is missing."""

    name: str
    #: position on the round axis: 0 for the baseline, K for round K, last + 1 for full
    round: int
    kind: Literal["baseline", "round", "full"]
    test: Mapping[str, float] | None
    train: TrainMetrics | None
    pseudo: Mapping[str, float] | None  # always None for the baseline and full
    pr: PRCurve | None  # always None for the baseline and full
    gap_closed: float | None
    gap_note: str  # why gap_closed is None ("" when it is a number)
    control: Mapping[str, float] | None  # the control's test metrics (rounds only)
    missing: tuple[Path, ...]  # expected input files that were not found

    @property
    def is_round(self) -> bool:
        return self.kind == "round"

    @property
    def best_val_ap(self) -> float | None:
        return _usable(self.train.best_val_AP) if self.train else None

    @property
    def gated(self) -> bool:
        return bool(self.train and self.train.gated)

    @property
    def gate_reason(self) -> str:
        return (self.train.gate_reason or "") if self.train else ""

    @property
    def teacher(self) -> str | None:
        """The imported model published as this run (the baseline only), or None."""
        return self.train.teacher if self.train else None

    def ap(self, key: str = "AP") -> float | None:
        """A test metric; None when missing or undefined (the evaluator writes -1 without GT)."""
        return _defined(self.test, key)

    def pseudo_value(self, key: str) -> float | None:
        return _defined(self.pseudo, key)

    @property
    def control_ap(self) -> float | None:
        """Test AP of the round's compute-matched control; None when missing or not a round."""
        return _defined(self.control, "AP")

    @property
    def gain(self) -> float | None:
        """Self-training gain: the round's test AP minus its control's."""
        ap, control = self.ap("AP"), self.control_ap
        return None if ap is None or control is None else ap - control


def _defined(metrics: Mapping[str, float] | None, key: str) -> float | None:
    return _usable(metrics.get(key)) if metrics is not None else None


def _usable(value: float | None) -> float | None:
    """A metric as a number, None when absent or undefined (negative or not finite)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) and value >= 0 else None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_metrics(path: Path) -> dict | None:
    """A metrics JSON object of numbers only, or None when the file does not exist (a report
    never silently shows a string or a nested object as a metric)."""
    if not path.is_file():
        return None
    data = read_json(path, "metrics")
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: expected a JSON object of metrics, got {type(data).__name__}")
    for key, value in data.items():
        if not _is_number(value):
            raise DataFormatError(f"{path}: key '{key}' is {value!r}, expected a number")
    return data


def read_train_metrics(path: Path) -> TrainMetrics | None:
    """A training stage's metrics, or None when the file does not exist."""
    return TrainMetrics.from_dict(read_json(path, "training metrics"), path) if path.is_file() else None


def read_pr_curve(path: Path) -> PRCurve | None:
    """A round's ``pr.csv`` (columns threshold, precision, recall) sorted by threshold; None if absent.

    NaN is accepted (precision is 0/0 above the highest score) and drawn as a gap.
    """
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        lacking = [c for c in PR_COLUMNS if c not in (reader.fieldnames or [])]
        if lacking:
            raise DataFormatError(
                f"{path}: lacks column(s) {lacking}; expected header {','.join(PR_COLUMNS)}"
            )
        values: list[list[float]] = []
        for line, record in enumerate(reader, start=2):
            try:
                values.append([float(record[c]) for c in PR_COLUMNS])
            except (TypeError, ValueError) as exc:
                raise DataFormatError(f"{path}:{line}: not a number in {dict(record)}") from exc
    table = np.array(values, np.float64).reshape(-1, len(PR_COLUMNS))
    table = table[np.argsort(table[:, 0], kind="stable")]
    return PRCurve(table[:, 0], table[:, 1], table[:, 2])


def gap_closed(ap: float | None, ap_base: float | None, ap_full: float | None) -> tuple[float | None, str]:
    """``(ap - ap_base) / (ap_full - ap_base)`` and, when undefined, the reason why."""
    if ap is None:
        return None, "no test AP of this run"
    if ap_base is None:
        return None, "no test AP of the baseline"
    if ap_full is None:
        return None, "no test AP of the fully supervised run"
    if ap_full - ap_base <= 0:
        return None, f"full AP {ap_full:.3f} <= baseline AP {ap_base:.3f}: no gap to close"
    return (ap - ap_base) / (ap_full - ap_base), ""


def control_name(round_name: str) -> str:
    """The name of a round's control run (its model, curves and metrics files)."""
    return f"{CONTROL_PREFIX}{round_name}"


def _check_names(runs: Sequence[str], full: str | None) -> None:
    names = [*runs, *([full] if full else [])]
    if not runs:
        raise ConfigError("report: --runs must name at least the baseline run (r0)")
    if len(set(names)) != len(names):
        raise ConfigError(f"report: run names must be distinct, got {names}")
    bad = [n for n in names if not n or "/" in n or os.sep in n]
    if bad:
        raise ConfigError(f"report: run names must be plain file-name parts, got {bad}")


def collect_rows(
    metrics_dir: str | os.PathLike[str],
    reports_dir: str | os.PathLike[str] | None,
    runs: Sequence[str],
    full: str | None,
) -> list[RunRow]:
    """One row per run, in the order given (``runs[0]`` is the baseline), then ``full``.

    ``runs`` is the round chain as params.yaml's ``prev`` links order it (r0, r1, r2, ...).
    ``reports_dir`` None: the pseudo-label PR curves are not read (tables do not need them).
    """
    _check_names(runs, full)
    metrics_dir = Path(metrics_dir)
    names = [*runs, *([full] if full else [])]
    test = {n: read_metrics(metrics_dir / f"test_{n}.json") for n in names}
    base_ap = _defined(test[runs[0]], "AP")
    full_ap = _defined(test[full], "AP") if full else None
    rows = []
    for index, name in enumerate(names):
        kind: Literal["baseline", "round", "full"] = (
            "baseline" if index == 0 else "full" if name == full else "round"
        )
        paths = {"test": metrics_dir / f"test_{name}.json", "train": metrics_dir / f"train_{name}.json"}
        if kind == "round":
            paths["pseudo"] = metrics_dir / f"pseudo_{name}.json"
            paths["control"] = metrics_dir / f"test_{control_name(name)}.json"
            if reports_dir is not None:
                paths["pr"] = Path(reports_dir) / f"pseudo_{name}" / "pr.csv"
        train = read_train_metrics(paths["train"])
        pseudo = read_metrics(paths["pseudo"]) if kind == "round" else None
        pr = read_pr_curve(paths["pr"]) if "pr" in paths else None
        control = read_metrics(paths["control"]) if kind == "round" else None
        if kind == "round":
            gap, note = gap_closed(_defined(test[name], "AP"), base_ap, full_ap)
        else:
            gap, note = None, "baseline" if kind == "baseline" else "upper bound"
        rows.append(
            RunRow(
                name=name,
                round=index,
                kind=kind,
                test=test[name],
                train=train,
                pseudo=pseudo,
                pr=pr,
                gap_closed=gap,
                gap_note=note,
                control=control,
                missing=tuple(p for p in paths.values() if not p.is_file()),
            )
        )
    return rows
