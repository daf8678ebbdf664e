"""The whole report: ``report.md``, ``rounds.csv`` and the figures, written into one folder."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from leod.evaluation.prophesee import METRIC_NAMES
from leod.plumbing.atomic import write_json, write_text
from leod.pseudo.store import load_pseudo_labels
from leod.report.clips import ClipInputs, write_round_clips
from leod.report.figures import plot_ap, plot_frames, plot_pr
from leod.report.frames import FrameInputs, load_predictions, select_examples
from leod.report.rows import RunRow
from leod.report.tables import gains, per_class_table, rounds_csv, runs_table

AP_FIGURE, PR_FIGURE, FRAMES_FIGURE = "ap_per_round.png", "pseudo_pr.png", "frames.png"
#: the report's DVC metrics file: per round AP, control AP, gain, gap closed
GAINS_FILE = "gains.json"


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


_HOW_TO_READ = """\
- **test AP / AP50**: COCO mAP over IoU 0.5:0.95 / at IoU 0.5 on the test split, Prophesee protocol
  (first 0.5 s and tiny boxes skipped). The baseline is trained on the sparse labels only, the
  fully supervised run on every label: together they bracket what self-training can reach.
- **control AP / gain**: a round's compute-matched control starts from the same weights and trains
  the same steps with the same seed on the sparse ground truth only, no pseudo labels; the *gain*
  (round AP - control AP) is what the pseudo labels added beyond the extra training steps.
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
  fully supervised run last + 1) and its `kind` (baseline, round, full) for `dvc plots`; empty
  cells are undefined values."""


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
    clips: ClipInputs | None = None,
) -> list[Path]:
    """Write report.md, rounds.csv, gains.json, ap_per_round.png, pseudo_pr.png (and frames.png when
    ``frames`` is given, clips/<round>.gif with ``clips``) into ``out_dir``; returns the files
    written, report.md first."""
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
    if clips is not None:
        clip_figures, clip_notes = write_round_clips(clips, out)
        figures.update(clip_figures)
        notes += clip_notes
    write_text(out / "rounds.csv", rounds_csv(rows))
    write_json(out / GAINS_FILE, gains(rows))
    write_text(out / "report.md", render_markdown(rows, figures, classes, notes))
    return [out / "report.md", out / "rounds.csv", out / GAINS_FILE, *(out / f for f in figures)]
