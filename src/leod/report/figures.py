"""The report's figures: test AP per round, pseudo-label PR curves and example frames.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas, never
through ``pyplot``, so no global backend or figure registry is touched.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from leod.plumbing.atomic import atomic_path
from leod.report.frames import FrameExample
from leod.report.rows import POINT_IOU, PRECISION_KEY, RECALL_KEY, PRCurve, RunRow

#: Box colours of the example-frame figure (white background, red/blue events).
GT_COLOR, PSEUDO_COLOR, PRED_COLOR = "#00a000", "#0040ff", "#e00000"
DPI = 110
#: score thresholds labelled along each pseudo-label PR curve
THRESHOLD_MARKS = (0.1, 0.3, 0.5, 0.7, 0.9)


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
    """Test AP and AP50 per round, each round's control AP as a cross, the fully supervised level
    as dashed lines."""
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
    controls = [(r.round, r.control_ap) for r in chain if r.control_ap is not None]
    if controls:
        cx, cy = zip(*controls, strict=True)
        ax.plot(
            cx,
            cy,
            "x",
            color="C2",
            markersize=9,
            mew=2,
            label="control AP (same init and steps, no pseudo labels)",
        )
        top = max(top, *cy)
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
