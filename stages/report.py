"""Stage report: tables, rounds.csv, figures, a clip per round and the offline dvc
plots page over every run.

Example (what `dvc repro report` runs):
  python stages/report.py --metrics metrics --reports reports --full full \
      --data data/preprocessed --split data/splits/train_split.json --out reports
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from leod.config import Params
from leod.data.layout import load_manifest
from leod.data.sequence import load_split
from leod.plumbing.errors import ConfigError
from leod.plumbing.stage import parser, run
from leod.plumbing.tracking import stage_run
from leod.report.clips import ClipInputs
from leod.report.document import write_report
from leod.report.frames import FrameInputs
from leod.report.plots_page import PAGE_NAME, write_plots_page
from leod.report.rows import collect_rows


def body(args: argparse.Namespace, params: Params) -> None:
    if not 0.0 <= args.score <= 1.0:
        raise ConfigError(f"report: --score must lie in [0, 1], got {args.score}")
    runs = args.runs or ["r0", *params.round_order()]
    last = runs[-1]
    pseudo = args.pseudo or (str(Path(args.pseudo_root) / last / "labels.npz") if len(runs) > 1 else None)
    predictions = args.predictions or str(Path(args.reports) / last / "test_predictions.npz")
    rows = collect_rows(args.metrics, args.reports, runs, args.full)
    classes, frames, clips = None, None, None
    if args.data:
        if not args.split:
            raise ConfigError("report: --data needs --split (which train frames had their labels withheld)")
        classes = load_manifest(args.data).classes
        frames = FrameInputs(
            data=Path(args.data),
            split=load_split(args.split),
            pseudo=Path(pseudo) if pseudo else None,
            predictions=Path(predictions),
            score=args.score,
            min_time_us=params.preset.evaluation.skip_first_us,
        )
        rounds = [r for r in runs[1:] if r != args.full]
        clips = ClipInputs(
            Path(args.data), Path(args.pseudo_root), rounds, params.preset.evaluation.skip_first_us
        )
    with stage_run("report", {"runs": " ".join(runs), "full": args.full}, params.tracking.experiment) as tr:
        written = write_report(args.out, rows, classes, frames, clips)
        write_plots_page(Path(args.out) / PAGE_NAME)
        for path in written:
            tr.log_artifact(path, "report")
        tr.log_metrics({f"gap_closed/{r.name}": r.gap_closed for r in rows if r.gap_closed is not None})
        tr.log_metrics({f"gain/{r.name}": r.gain for r in rows if r.gain is not None})
    missing = sum(len(r.missing) for r in rows)
    print(f"wrote {written[0]} ({len(rows)} runs, {missing} missing input file(s))")


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--metrics", required=True, help="folder of the metrics JSON files")
    p.add_argument("--reports", required=True, help="folder holding pseudo_<round>/pr.csv")
    p.add_argument("--runs", nargs="+", help="baseline then rounds in order (default: r0 + params' rounds)")
    p.add_argument("--full", default=None, help="name of the fully supervised run (upper bound)")
    p.add_argument("--data", default=None, help="preprocessed dataset folder (example frames)")
    p.add_argument("--split", default=None, help="subsample split JSON (which train labels were withheld)")
    p.add_argument("--pseudo", default=None, help="pseudo labels to draw (default: the last round's)")
    p.add_argument("--pseudo-root", default="pseudo", help="folder of the rounds' pseudo labels")
    p.add_argument("--predictions", default=None, help="test predictions to draw (default: the last run's)")
    p.add_argument("--score", type=float, default=0.3, help="draw predictions with obj*cls >= this")
    p.add_argument("--out", required=True, help="folder for report.md, rounds.csv, PNGs, plots_page.html")
    return run(body, p, argv)


if __name__ == "__main__":
    sys.exit(main())
