"""Stages ``train_r0``, ``train_full`` and ``train@rK``: train the recurrent detector.

``--split`` trains on the kept ground truth of a subsample split (or ``full``: every
label); ``--pseudo`` trains a self-training round on GT + the round's pseudo labels, with
LEOD's soft thresholds, after the quality gate.

Resumable: a killed run continues from ``<ckpt>/last.pt`` (a git-ignored scratch folder,
so the stage's outputs stay eligible for DVC's run-cache) when rerun with the same params.
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import sys
from pathlib import Path

from leod.atomic import atomic_path, write_json, write_text
from leod.config import Params
from leod.data.sequence import load_split
from leod.errors import read_json
from leod.pseudo.gate import gate_reason
from leod.pseudo.soft import training_labels
from leod.pseudo.store import LABELS_FILE, load_pseudo_labels
from leod.schema import to_dict
from leod.stage import parser, run
from leod.tracking import print_ui_hint, stage_run
from leod.training.loop import train

LOSS_COLUMNS = ["step", "lr", "loss", "iou_loss", "obj_loss", "cls_loss", "num_fg"]
VAL_COLUMNS = ["step", "val/AP"]


def rows_to_csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_curves(curves: Path, history: list[dict]) -> None:
    write_text(curves / "train.csv", rows_to_csv([r for r in history if "loss" in r], LOSS_COLUMNS))
    write_text(curves / "val.csv", rows_to_csv([r for r in history if "val/AP" in r], VAL_COLUMNS))


def carry_forward(args: argparse.Namespace, reason: str) -> None:
    """A gated round: the previous round's model, copied atomically, with metrics saying why."""
    with atomic_path(args.model, is_dir=True) as tmp:
        shutil.copytree(args.prev, tmp, dirs_exist_ok=True)
    prev = read_json(Path(args.prev) / "model.json", "model description")
    write_json(
        args.metrics,
        {
            "gated": True,
            "gate_reason": reason,
            "best_val_AP": prev.get("val_AP", 0.0),
            "best_step": -1,
            "steps": 0,
        },
    )
    write_curves(Path(args.curves), [])
    print(f"{args.name}: gated: {reason}")


def body(args: argparse.Namespace, params: Params) -> None:
    if args.round:
        params = params.for_round(args.round)
    reason = (
        gate_reason(params.selftrain.min_precision, read_json(args.quality, "pseudo-label quality metrics"))
        if args.quality
        else None
    )
    if reason is not None:
        carry_forward(args, reason)
        return
    if args.pseudo:
        pseudo = load_pseudo_labels(Path(args.pseudo) / LABELS_FILE)
        overrides, kept = training_labels(pseudo, params.selftrain.soft_thresh, args.pseudo)
    else:
        overrides, kept = None, None if args.split == "full" else load_split(args.split).sequences
    init = Path(args.prev) if args.prev and params.selftrain.init == "previous" else None
    log_params = _params_for_log(params)
    with stage_run(
        f"train_{args.name}", log_params, params.tracking.experiment, round_name=args.round
    ) as tracker:
        result = train(
            params,
            Path(args.data),
            kept,
            Path(args.model),
            Path(args.ckpt),
            tracker=tracker,
            labels_override=overrides,
            init_weights=init,
            progress=not args.no_progress,
        )
        write_curves(Path(args.curves), result.history)
        metrics: dict = {"best_val_AP": result.best_ap, "best_step": result.best_step, "steps": result.steps}
        if args.round:
            metrics["gated"] = False
        write_json(args.metrics, metrics)
        tracker.log_metrics({"best_val_AP": result.best_ap})
        curves = Path(args.curves)
        for path in (
            Path(args.metrics),
            curves / "train.csv",
            curves / "val.csv",
            Path(args.model) / "model.json",
        ):
            tracker.log_artifact(str(path))
    print(f"{args.name}: best val AP {result.best_ap:.4f} at step {result.best_step}; model in {args.model}")
    if getattr(tracker, "uri", None):
        print(f"MLflow: {print_ui_hint(tracker.uri)}")


def _params_for_log(params: Params) -> dict:
    return {
        "dataset": params.dataset,
        "seed": params.seed,
        "subsample": to_dict(params.subsample),
        "loader": to_dict(params.loader),
        "model": to_dict(params.model_config),
        "train": to_dict(params.train),
        "selftrain": to_dict(params.selftrain),
    }


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--name", required=True, help="run name (r0, full, r1, ...)")
    p.add_argument("--round", default=None, help="self-training round (applies its params overrides)")
    p.add_argument("--data", required=True, help="preprocessed dataset folder")
    p.add_argument("--split", help="split JSON from subsample, or 'full' for every label")
    p.add_argument("--pseudo", help="a round's pseudo-label folder: train on GT + pseudo labels")
    p.add_argument("--quality", help="the round's pseudo-label metrics JSON (for the quality gate)")
    p.add_argument("--prev", help="the previous round's model folder (init and gate fallback)")
    p.add_argument("--model", required=True, help="output folder for the trained model")
    p.add_argument("--ckpt", required=True, help="scratch folder for the resumable checkpoint")
    p.add_argument("--metrics", required=True, help="metrics JSON to write")
    p.add_argument("--curves", required=True, help="folder for the training curves (CSV)")
    known = p.parse_known_args(argv)[0]
    if bool(known.split) == bool(known.pseudo):
        p.error("give exactly one of --split and --pseudo")
    return run(body, p, argv)


if __name__ == "__main__":
    sys.exit(main())
