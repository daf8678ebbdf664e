"""The self-training report: one table, one CSV and three figures over every run of the pipeline.

It reads what the other stages left behind and never recomputes a metric:

* ``<metrics>/test_<run>.json`` (test AP of r0, every round and the fully supervised run),
* ``<metrics>/pseudo_<round>.json`` and ``<reports>/pseudo_<round>/pr.csv`` (pseudo-label
  quality of a round, only rounds have pseudo labels),
* ``<metrics>/train_<run>.json`` (best validation AP, and for rounds whether the quality
  gate stopped the round).

Stages can be gated or not yet run, so a missing file is a finding to report, not an error:
the table shows "missing" and a section lists every absent file. A file that exists but is
not what its producer writes is an error (:class:`~leod.errors.DataFormatError`).

``rounds.csv`` repeats the main columns one line per run with a numeric ``round`` (baseline 0,
round K is K, the fully supervised run last + 1) for ``dvc plots``.

The headline number is the *gap closed* of a round, ``(AP_rK - AP_r0) / (AP_full - AP_r0)``:
the share of the AP lost by training on sparse labels that self-training won back.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas, never
through ``pyplot``, so no global backend or figure registry is touched.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from leod.atomic import atomic_path, write_text
from leod.data.layout import load_manifest
from leod.data.sequence import IGNORE_CLASS_ID, SequenceData, Split
from leod.errors import ConfigError, DataFormatError
from leod.evaluation.prophesee import METRIC_NAMES
from leod.labels.boxes import BOX_DTYPE, validate_boxes
from leod.pseudo.store import SequenceLabels, load_pseudo_labels

#: IoU threshold of the pseudo-label operating point shown in the table and the PR figure.
POINT_IOU = "0.5"
PRECISION_KEY = f"precision@{POINT_IOU}"
RECALL_KEY = f"recall@{POINT_IOU}"
PR_COLUMNS = ("threshold", "precision", "recall")
#: (metrics key, decimals; None: integer or 3 decimals) of the pseudo-label columns of the runs table.
PSEUDO_COLUMNS = (
    (PRECISION_KEY, 3),
    (RECALL_KEY, 3),
    ("boxes_per_frame", 2),
    ("gt_per_frame", 2),
    ("ignore_per_frame", 2),
    ("frames_labelled", None),
)
#: rounds.csv header. Vega-Lite (DVC plots) reads a dot in a field name as a nested path,
#: so the pseudo-label columns are spelled without ``@0.5``.
CSV_COLUMNS = ("round", "name", "AP", "AP50", "pseudo_precision50", "pseudo_recall50", "gap_closed")

#: Box colours of the example-frame figure (white background, red/blue events).
GT_COLOR, PSEUDO_COLOR, PRED_COLOR = "#00a000", "#0040ff", "#e00000"
DPI = 110
AP_FIGURE, PR_FIGURE, FRAMES_FIGURE = "ap_per_round.png", "pseudo_pr.png", "frames.png"
#: score thresholds labelled along each pseudo-label PR curve
THRESHOLD_MARKS = (0.1, 0.3, 0.5, 0.7, 0.9)


# --------------------------------------------------------------------------- metrics


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
    train: Mapping[str, float | bool | str] | None
    pseudo: Mapping[str, float] | None  # always None for the baseline and full
    pr: PRCurve | None  # always None for the baseline and full
    gap_closed: float | None
    gap_note: str  # why gap_closed is None ("" when it is a number)
    missing: tuple[Path, ...]  # expected input files that were not found

    @property
    def is_round(self) -> bool:
        return self.kind == "round"

    @property
    def gated(self) -> bool:
        return bool(self.train and self.train.get("gated", False))

    @property
    def gate_reason(self) -> str:
        return str(self.train.get("gate_reason", "")) if self.train else ""

    def ap(self, key: str = "AP") -> float | None:
        """A test metric; None when missing or undefined (the evaluator writes -1 without GT)."""
        return _defined(self.test, key)

    def pseudo_value(self, key: str) -> float | None:
        return _defined(self.pseudo, key)


def _defined(metrics: Mapping[str, float] | None, key: str) -> float | None:
    if metrics is None or key not in metrics:
        return None
    value = float(metrics[key])
    return value if math.isfinite(value) and value >= 0 else None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_metrics(path: Path, flags: Mapping[str, type] | None = None) -> dict | None:
    """A metrics JSON object, or None when the file does not exist.

    Every value must be a number except the keys in ``flags`` (name -> required type), so a
    report never silently shows a string or a nested object as a metric.
    """
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: expected a JSON object of metrics, got {type(data).__name__}")
    flags = flags or {}
    for key, value in data.items():
        wanted = flags.get(key)
        ok = isinstance(value, wanted) if wanted else _is_number(value)
        if not ok:
            expected = wanted.__name__ if wanted else "a number"
            raise DataFormatError(f"{path}: key '{key}' is {value!r}, expected {expected}")
    return data


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
            if reports_dir is not None:
                paths["pr"] = Path(reports_dir) / f"pseudo_{name}" / "pr.csv"
        train = read_metrics(paths["train"], {"gated": bool, "gate_reason": str})
        pseudo = read_metrics(paths["pseudo"]) if kind == "round" else None
        pr = read_pr_curve(paths["pr"]) if "pr" in paths else None
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
                missing=tuple(p for p in paths.values() if not p.is_file()),
            )
        )
    return rows


# --------------------------------------------------------------------------- tables


def class_names(rows: Sequence[RunRow], classes: Sequence[str] | None = None) -> list[str]:
    """Classes of the per-class table: ``classes`` (manifest order) or those the metrics name."""
    if classes is not None:
        return list(classes)
    found: list[str] = []
    for row in rows:
        for key in row.test or {}:
            name = key[3:]
            if key.startswith("AP_") and key not in METRIC_NAMES and name not in found:
                found.append(name)
    return found


def _fmt(value: float | None, digits: int | None = 3) -> str:
    """``digits`` None: an integer as such (a count), anything else with 3 decimals (a fraction)."""
    if value is None:
        return "n/a"
    if digits is None:
        return str(int(value)) if float(value).is_integer() else f"{value:.3f}"
    return f"{value:.{digits}f}"


def _cell(
    source: Mapping | None, value: float | None, digits: int | None = 3, applicable: bool = True
) -> str:
    """A table cell: the number, "missing" when its file is absent, "-" when not applicable."""
    if not applicable:
        return "-"
    if source is None:
        return "missing"
    return _fmt(value, digits)


def _gate_cell(row: RunRow) -> str:
    if row.train is None:
        return "missing" if row.is_round else "-"
    if row.gated:
        reason = " ".join((row.gate_reason or "no reason given").split()).replace("|", "\\|")
        return f"**yes**: {reason}"  # one line, no bare "|": the reason sits in a table cell
    return "no" if row.is_round else "-"


def _gap_cell(row: RunRow) -> str:
    return f"{row.gap_closed:.3f}" if row.gap_closed is not None else f"n/a ({row.gap_note})"


def _table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(out)


_KIND_LABELS = {"baseline": "sparse labels", "full": "all labels"}


def runs_table(rows: Sequence[RunRow]) -> str:
    header = [
        "run",
        "test AP",
        "AP50",
        "best val AP",
        f"pseudo P@{POINT_IOU}",
        f"pseudo R@{POINT_IOU}",
        "boxes/frame",
        "GT/frame",
        "ignore/frame",
        "frames labelled",
        "gap closed",
        "gated",
    ]
    lines = []
    for r in rows:
        lines.append(
            [
                f"{r.name} ({_KIND_LABELS[r.kind]})" if not r.is_round else r.name,
                _cell(r.test, r.ap("AP")),
                _cell(r.test, r.ap("AP50")),
                _cell(r.train, _defined(r.train, "best_val_AP")),
                *(
                    _cell(r.pseudo, r.pseudo_value(key), digits, applicable=r.is_round)
                    for key, digits in PSEUDO_COLUMNS
                ),
                _gap_cell(r),
                _gate_cell(r),
            ]
        )
    return _table(header, lines)


def compact_table(sources: Mapping[str, Sequence[RunRow]]) -> str:
    """The headline columns of several sources' runs in one table (``python -m leod compare``)."""
    header = ["source", "run", "test AP", "AP50", f"pseudo P@{POINT_IOU}", f"pseudo R@{POINT_IOU}"]
    header += ["gap closed", "gated"]
    lines = []
    for label, rows in sources.items():
        for r in rows:
            lines.append(
                [
                    label,
                    r.name,
                    _cell(r.test, r.ap("AP")),
                    _cell(r.test, r.ap("AP50")),
                    _cell(r.pseudo, r.pseudo_value(PRECISION_KEY), applicable=r.is_round),
                    _cell(r.pseudo, r.pseudo_value(RECALL_KEY), applicable=r.is_round),
                    _gap_cell(r) if r.is_round else "-",
                    _gate_cell(r),
                ]
            )
    return _table(header, lines)


def per_class_table(rows: Sequence[RunRow], classes: Sequence[str]) -> str:
    header = ["run", "AP", *classes, "AP_S", "AP_M", "AP_L"]
    keys = ["AP", *(f"AP_{c}" for c in classes), "AP_S", "AP_M", "AP_L"]
    lines = [[r.name, *(_cell(r.test, r.ap(k)) for k in keys)] for r in rows]
    return _table(header, lines)


def rounds_csv(rows: Sequence[RunRow]) -> str:
    """``rounds.csv``: one line per run for DVC plots; an undefined value is an empty cell."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        values = (r.ap("AP"), r.ap("AP50"), r.pseudo_value(PRECISION_KEY), r.pseudo_value(RECALL_KEY))
        writer.writerow(
            [r.round, r.name, *("" if v is None else f"{v:.6g}" for v in (*values, r.gap_closed))]
        )
    return buf.getvalue()


_HOW_TO_READ = """\
- **test AP / AP50**: COCO mAP over IoU 0.5:0.95 / at IoU 0.5 on the test split, Prophesee protocol
  (first 0.5 s and tiny boxes skipped). The baseline is trained on the sparse labels only, the
  fully supervised run on every label: together they bracket what self-training can reach.
- **pseudo P/R@0.5**: precision and recall of a round's pseudo labels against the ground truth the
  split withheld, matched at IoU 0.5. *boxes/frame* against *GT/frame* shows whether the labels
  are too sparse (missed objects are learned as background) or too dense (false positives);
  *ignore/frame* counts regions excluded from the loss (short tracks, inpainted misses).
- **gap closed**: (AP_round - AP_baseline) / (AP_full - AP_baseline). 1 matches full supervision,
  0 is no gain over the baseline, negative means the round hurt. Undefined when a test metric is
  missing or when full supervision is not better than the baseline.
- **gated**: the round's quality gate judged its pseudo labels unfit and stopped the round; the
  reason is the gate's own message.
- **n/a** is an undefined metric (e.g. no ground truth of that class or size), **missing** a
  metrics file that does not exist (its stage is gated or has not run), **-** not applicable.
- `rounds.csv` has one line per run with a numeric `round` column (baseline 0, round K is K, the
  fully supervised run last + 1) for `dvc plots`; empty cells are undefined values."""


def render_markdown(
    rows: Sequence[RunRow],
    figures: Mapping[str, str],
    classes: Sequence[str] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The report text. ``figures`` maps paths relative to the report's folder to captions;
    ``notes`` are extra findings (e.g. why an example-frame overlay is absent)."""
    parts = ["# LEOD self-training report", "", "## Runs", "", runs_table(rows), ""]
    parts += ["## Per-class test AP", "", per_class_table(rows, class_names(rows, classes)), ""]
    if figures:
        parts += ["## Figures", ""]
        for rel, caption in figures.items():
            parts += [f"![{Path(rel).stem}]({rel})", "", f"*{caption}*", ""]
    missing = [
        f"- `{p}` not found{' (' + r.name + ' was gated)' if r.gated else ''}"
        for r in rows
        for p in r.missing
    ]
    if missing or notes:
        parts += ["## Missing inputs and notes", ""]
        parts += missing
        parts += [f"- {n}" for n in notes]
        parts += [""]
    parts += ["## How to read this", "", _HOW_TO_READ, ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------- figures


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> None:
    """Write ``fig`` as PNG atomically (format given explicitly: the temp name ends in .tmp)."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def _placeholder(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _tick_label(row: RunRow) -> str:
    """A run's name on the round axis, with why it has no point when it has none."""
    why = [w for w, flag in (("gated", row.gated), ("no test AP", row.ap() is None)) if flag]
    return "\n".join([row.name, *(f"({w})" for w in why)])


def plot_ap(rows: Sequence[RunRow], path: str | os.PathLike[str]) -> None:
    """Test AP and AP50 per round, with the fully supervised level as dashed lines."""
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    chain = [r for r in rows if r.kind != "full"]
    full = next((r for r in rows if r.kind == "full"), None)
    x = np.array([r.round for r in chain])
    top = 0.0
    for key, color, marker in (("AP", "C0", "o"), ("AP50", "C1", "s")):
        y = np.array([np.nan if r.ap(key) is None else r.ap(key) for r in chain])
        ax.plot(x, y, color=color, marker=marker, label=f"test {key}")
        level = full.ap(key) if full else None
        if level is not None:
            ax.axhline(level, color=color, linestyle="--", linewidth=1.2, label=f"full supervision {key}")
        top = max([top, level or 0.0, *np.nan_to_num(y)])
    ax.set_xticks(x, [_tick_label(r) for r in chain])
    if x.size:
        ax.set_xlim(x[0] - 0.5, x[-1] + 0.5)
    ax.set_ylim(0, top * 1.15 if top > 0 else 1)
    ax.set_xlabel("run")
    ax.set_ylabel("test AP")
    ax.set_title("Test AP per self-training round")
    ax.grid(alpha=0.3)
    if top > 0:
        ax.legend(loc="best", fontsize="small")
    else:
        _placeholder(ax, "no test metrics yet")
    save_figure(fig, path)


def _mark_thresholds(ax: Axes, curve: PRCurve, color: str) -> None:
    """Label the curve points nearest to a few score thresholds, to read a threshold off it."""
    if not curve.threshold.size:
        return
    for th in THRESHOLD_MARKS:
        i = int(np.argmin(np.abs(curve.threshold - th)))
        x, y = curve.recall[i], curve.precision[i]
        if np.isfinite(x) and np.isfinite(y):
            ax.plot(x, y, ".", color=color)
            ax.annotate(
                f"{curve.threshold[i]:.2g}",
                (x, y),
                xytext=(3, 3),
                textcoords="offset points",
                fontsize=7,
                color=color,
            )


def plot_pr(rows: Sequence[RunRow], path: str | os.PathLike[str]) -> None:
    """Per round, the pseudo-label PR curve over score thresholds and its operating point."""
    fig = Figure(figsize=(5.6, 4.6), layout="constrained")
    ax = fig.add_subplot()
    drawn = False
    for i, r in enumerate(r for r in rows if r.is_round):
        color = f"C{i % 10}"
        if r.pr is not None:
            ax.plot(r.pr.recall, r.pr.precision, color=color, label=f"{r.name} (score threshold sweep)")
            _mark_thresholds(ax, r.pr, color)
            drawn = True
        p, rec = r.pseudo_value(PRECISION_KEY), r.pseudo_value(RECALL_KEY)
        if p is not None and rec is not None:
            ax.plot(
                rec, p, "o", color=color, markeredgecolor="k", markersize=8, label=f"{r.name} pseudo labels"
            )
            drawn = True
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"recall (IoU {POINT_IOU})")
    ax.set_ylabel(f"precision (IoU {POINT_IOU})")
    ax.set_title("Pseudo-label quality per round")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(loc="lower left", fontsize="small")
    else:
        _placeholder(ax, "no pseudo-label metrics yet")
    save_figure(fig, path)


@dataclass(frozen=True)
class FrameExample:
    """One panel of the example-frame figure; boxes in representation pixels."""

    title: str
    image: np.ndarray  # (H, W, 3) float in [0, 1]
    gt: np.ndarray  # BOX_DTYPE
    pseudo: np.ndarray | None = None  # None: not shown (test frame or no pseudo labels)
    pred: np.ndarray | None = None  # None: not shown (train frame or no predictions)


def histogram_to_rgb(frame: np.ndarray) -> np.ndarray:
    """A stacked histogram ``(2*nbins, H, W)`` as an RGB image: white, ON events red, OFF blue.

    Counts are summed over time bins and divided by the 99th percentile of the non-zero
    counts, so one hot pixel does not make every other event invisible.
    """
    if frame.ndim != 3 or frame.shape[0] % 2:
        raise DataFormatError(f"event frame has shape {frame.shape}, expected (2*nbins, H, W)")
    nbins = frame.shape[0] // 2
    off = frame[:nbins].sum(axis=0, dtype=np.float64)  # polarity 0 first, as RVT stacks them
    on = frame[nbins:].sum(axis=0, dtype=np.float64)
    counts = np.concatenate([on[on > 0], off[off > 0]])
    scale = float(np.percentile(counts, 99)) if counts.size else 1.0
    on, off = np.clip(on / scale, 0, 1), np.clip(off / scale, 0, 1)
    rgb = np.ones((*on.shape, 3))
    rgb -= on[..., None] * np.array([0.0, 1.0, 1.0])  # leaves red
    rgb -= off[..., None] * np.array([1.0, 1.0, 0.0])  # leaves blue
    return np.clip(rgb, 0, 1)


def _draw_boxes(ax: Axes, boxes: np.ndarray, color: str, width: float) -> None:
    for b in boxes:
        style = "--" if b["ignore"] else "-"
        ax.add_patch(
            Rectangle(
                (float(b["x"]), float(b["y"])),
                float(b["w"]),
                float(b["h"]),
                fill=False,
                edgecolor=color,
                linewidth=width,
                linestyle=style,
            )
        )


def plot_frames(examples: Sequence[FrameExample], path: str | os.PathLike[str], score: float) -> None:
    """A grid of example frames with GT (green), pseudo (blue, ignore dashed), predicted (red) boxes."""
    cols = min(2, max(len(examples), 1))
    rows = max(1, math.ceil(len(examples) / cols))
    height, width = examples[0].image.shape[:2] if examples else (3, 4)
    panel_w = 4.2
    fig = Figure(figsize=(panel_w * cols, panel_w * height / width * rows + 0.9), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(examples) :]:
        ax.set_axis_off()
    for ax, ex in zip(axes.flat, examples, strict=False):
        h, w = ex.image.shape[:2]
        ax.imshow(ex.image, extent=(0, w, h, 0), interpolation="nearest")
        _draw_boxes(ax, ex.gt, GT_COLOR, 1.6)
        if ex.pseudo is not None:
            _draw_boxes(ax, ex.pseudo, PSEUDO_COLOR, 1.3)
        if ex.pred is not None:
            _draw_boxes(ax, ex.pred, PRED_COLOR, 1.3)
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_title(ex.title, fontsize="small")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor("0.6")
    if not examples:
        _placeholder(axes[0, 0], "no example frames")
    handles = [
        Line2D([], [], color=GT_COLOR, linewidth=1.6, label="ground truth"),
        Line2D([], [], color=PSEUDO_COLOR, linewidth=1.3, label="pseudo label"),
        Line2D([], [], color=PSEUDO_COLOR, linewidth=1.3, linestyle="--", label="pseudo ignore region"),
        Line2D([], [], color=PRED_COLOR, linewidth=1.3, label=f"prediction (score >= {score:g})"),
        Patch(color="red", alpha=0.6, label="ON events"),
        Patch(color="blue", alpha=0.6, label="OFF events"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize="small", frameon=False)
    save_figure(fig, path)


# --------------------------------------------------------------------------- example frames


def load_predictions(path: Path) -> dict[str, np.ndarray] | None:
    """Test predictions of a model (``test_predictions.npz``: sequence -> BOX_DTYPE); None if absent."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            out = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, EOFError) as exc:
        raise DataFormatError(f"{path}: not a readable .npz file ({exc})") from exc
    for name, boxes in out.items():
        if boxes.dtype != BOX_DTYPE:
            raise DataFormatError(f"{path}: predictions of '{name}' have dtype {boxes.dtype}, not BOX_DTYPE")
        validate_boxes(boxes, f"{path}:{name}")
    return out


def _spread_order(names: Sequence[str], n: int) -> list[str]:
    """``n`` names spread evenly over the list first, then the rest in order (fallbacks)."""
    if not names or n <= 0:
        return list(names)
    first = sorted({(2 * i + 1) * len(names) // (2 * n) for i in range(n)})
    return [names[i] for i in first] + [s for i, s in enumerate(names) if i not in first]


def _best_frame(seq: SequenceData, candidates: np.ndarray) -> int | None:
    """The candidate label frame with the most GT boxes (latest on ties: more model history)."""
    counts = np.array([len(seq.boxes(int(seq.label_repr[f]))) for f in candidates], np.int64)
    if not counts.size or counts.max() == 0:
        return None
    return int(candidates[np.flatnonzero(counts == counts.max())[-1]])


def _pseudo_at(labels: SequenceLabels | None, repr_idx: int, scale: float) -> np.ndarray:
    """A sequence's pseudo labels at one repr frame, in representation pixels."""
    if labels is None:
        return np.zeros(0, BOX_DTYPE)
    hits = np.flatnonzero(labels.repr_idx == repr_idx)
    boxes = labels.frame(int(hits[0])).copy() if hits.size else np.zeros(0, BOX_DTYPE)
    boxes["ignore"] |= boxes["class_id"] == IGNORE_CLASS_ID
    for key in ("x", "y", "w", "h"):
        boxes[key] *= scale
    return boxes


def _frame_title(split: str, seq: SequenceData, f: int, extra: str = "") -> str:
    return f"{split} {seq.name} @ {seq.label_times_us[f] / 1e6:.2f} s{extra}"


@dataclass(frozen=True)
class FrameInputs:
    """Inputs of the example-frame figure; the pseudo-label and prediction files may be absent."""

    data: Path  # preprocessed dataset folder
    split: Split  # which train label frames supervised r0 (the others were withheld)
    pseudo: Path | None  # labels.npz of the round whose pseudo labels are drawn
    predictions: Path | None  # test_predictions.npz of the model whose predictions are drawn
    score: float = 0.3  # predictions are drawn from objectness x class confidence >= score
    min_time_us: int = 0  # skip earlier frames (the recurrent model has no history yet)

    def caption(self) -> str:
        """What the figure shows, naming the files the overlays come from."""
        pseudo = f" (`{self.pseudo}`)" if self.pseudo else ""
        preds = f" (`{self.predictions}`)" if self.predictions else ""
        return (
            f"Example frames. Train frames whose labels the split withheld: ground truth green, pseudo "
            f"labels{pseudo} blue (dashed: ignore regions). Test frames: ground truth green, "
            f"predictions{preds} with objectness x class confidence >= {self.score:g} red. "
            "Events summed over the window: ON red, OFF blue."
        )


def select_examples(
    inputs: FrameInputs,
    pseudo: Mapping[str, SequenceLabels] | None,
    predictions: Mapping[str, np.ndarray] | None,
    n_train: int = 2,
    n_test: int = 2,
) -> list[FrameExample]:
    """Deterministic example frames spread over the sequences: withheld train frames with GT
    (with ``pseudo`` drawn there), then test frames (with ``predictions``); ``None`` for an
    overlay that is not available. Per sequence the frame with the most GT boxes is shown."""
    manifest = load_manifest(inputs.data)
    scale = 0.5 if manifest.downsample else 1.0
    out = []
    for split_name, n in (("train", n_train), ("test", n_test)):
        found = 0
        for name in _spread_order(manifest.splits.get(split_name, []), n):
            if found == n:
                break
            seq = SequenceData(manifest.sequence(inputs.data, split_name, name))
            frames = np.flatnonzero(seq.label_times_us >= inputs.min_time_us)
            if split_name == "train":
                frames = np.setdiff1d(frames, inputs.split.sequences.get(name, ()))
            f = _best_frame(seq, frames)
            if f is None:
                continue
            r = int(seq.label_repr[f])
            image = histogram_to_rgb(seq.read_frames(r, r + 1)[0])
            if split_name == "train":
                shown = None if pseudo is None else _pseudo_at(pseudo.get(name), r, scale)
                out.append(
                    FrameExample(_frame_title("train", seq, f, ", GT withheld"), image, seq.boxes(r), shown)
                )
            else:
                shown = (
                    None
                    if predictions is None
                    else _predictions_at(predictions.get(name), seq, f, inputs.score)
                )
                out.append(FrameExample(_frame_title("test", seq, f), image, seq.boxes(r), pred=shown))
            found += 1
    return out


def _predictions_at(boxes: np.ndarray | None, seq: SequenceData, f: int, score: float) -> np.ndarray:
    """The predictions stamped at label frame ``f`` whose objectness x class confidence reach ``score``."""
    if boxes is None:
        return np.zeros(0, BOX_DTYPE)
    keep = (boxes["t"] == seq.label_times_us[f]) & (boxes["class_confidence"] * boxes["objectness"] >= score)
    return boxes[keep]


# --------------------------------------------------------------------------- the whole report


def _frame_figure(inputs: FrameInputs, path: Path) -> list[str]:
    """Draw ``frames.png``; returns notes on overlays that could not be drawn."""
    notes = []
    pseudo = load_pseudo_labels(inputs.pseudo) if inputs.pseudo and inputs.pseudo.is_file() else None
    preds = load_predictions(inputs.predictions) if inputs.predictions else None
    if inputs.pseudo is not None and pseudo is None:
        notes.append(f"`{inputs.pseudo}` not found: example frames show no pseudo labels")
    if inputs.predictions is not None and preds is None:
        notes.append(f"`{inputs.predictions}` not found: example frames show no predictions")
    examples = select_examples(inputs, pseudo, preds)
    if not examples:
        notes.append(f"{inputs.data}: no label frame with ground truth to show as an example")
    plot_frames(examples, path, inputs.score)
    return notes


def write_report(
    out_dir: str | os.PathLike[str],
    rows: Sequence[RunRow],
    classes: Sequence[str] | None = None,
    frames: FrameInputs | None = None,
) -> list[Path]:
    """Write report.md, rounds.csv, ap_per_round.png, pseudo_pr.png (and frames.png when
    ``frames`` is given) into ``out_dir``; returns the files written, report.md first."""
    out = Path(out_dir)
    plot_ap(rows, out / AP_FIGURE)
    plot_pr(rows, out / PR_FIGURE)
    figures = {
        AP_FIGURE: "Test AP and AP50 per run; dashed lines: the fully supervised upper bound.",
        PR_FIGURE: "Pseudo-label precision against recall over score thresholds (labelled along each "
        "curve); dots: the pseudo labels each round trained on.",
    }
    notes = []
    if frames is not None:
        notes = _frame_figure(frames, out / FRAMES_FIGURE)
        figures[FRAMES_FIGURE] = frames.caption()
    write_text(out / "rounds.csv", rounds_csv(rows))
    write_text(out / "report.md", render_markdown(rows, figures, classes, notes))
    return [out / "report.md", out / "rounds.csv", *(out / f for f in figures)]
