"""Stages ``train_r0``, ``train_full`` and ``train@rK``: train the recurrent detector.

``--split`` trains on the kept ground truth of a subsample split (or ``full``: every
label); ``--pseudo`` trains a self-training round on GT + the round's pseudo labels, with
LEOD's soft thresholds, after the quality gate.

Resumable: a killed run continues from ``<ckpt>/last.pt`` (a git-ignored scratch folder,
so the stage's outputs stay eligible for DVC's run-cache) when rerun with the same inputs.
The best weights stay in that scratch checkpoint until the end; the model folder, its
curves and metrics are then published together (written beside, renamed into place), so a
killed or failed run leaves the previous model as it was.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from leod.config import Params
from leod.data.sequence import load_split
from leod.plumbing.atomic import atomic_path, check_writable, write_json
from leod.plumbing.stage import parser, run
from leod.plumbing.tracking import NullTracker, print_ui_hint, stage_run
from leod.pseudo.gate import gate_reason, read_quality
from leod.pseudo.soft import training_labels
from leod.pseudo.store import LABELS_FILE, load_pseudo_labels
from leod.schema import to_dict
from leod.training.distributed import is_main, relaunch_under_torchrun
from leod.training.loop import clear_scratch, train
from leod.training.model_files import read_model_info, write_model

LOSS_COLUMNS = ["step", "lr", "loss", "iou_loss", "obj_loss", "cls_loss", "num_fg"]
VAL_COLUMNS = ["step", "val/AP"]


def rows_to_csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def publish(
    args: argparse.Namespace, fill_model: Callable[[Path], None], history: list[dict], summary: dict
) -> None:
    """Write the model folder (by ``fill_model``), its curves and metrics beside their targets
    and rename them into place together, only once all of them were written.

    A failure (disk full, ...) is one error line (from ``atomic_path``) and leaves every
    previous output as it was.
    """
    curves = Path(args.curves)
    with (
        atomic_path(args.model, is_dir=True) as model,
        atomic_path(curves / "train.csv") as train_csv,
        atomic_path(curves / "val.csv") as val_csv,
        atomic_path(args.metrics) as metrics,
    ):
        fill_model(model)
        train_csv.write_text(rows_to_csv([r for r in history if "loss" in r], LOSS_COLUMNS))
        val_csv.write_text(rows_to_csv([r for r in history if "val/AP" in r], VAL_COLUMNS))
        write_json(metrics, summary)


def carry_forward(args: argparse.Namespace, reason: str) -> None:
    """A gated round: the previous round's model, with metrics saying why."""
    prev = read_model_info(Path(args.prev))
    summary = {
        "gated": True,
        "gate_reason": reason,
        "best_val_AP": prev.get("val_AP", 0.0),
        "best_step": -1,
        "steps": 0,
    }
    publish(args, lambda model: shutil.copytree(args.prev, model, dirs_exist_ok=True), [], summary)
    print(f"{args.name}: gated: {reason}")


def body(args: argparse.Namespace, params: Params) -> None:
    if args.round:
        params = params.for_round(args.round)
    check_writable(args.model, args.metrics, args.curves, args.ckpt)
    quality = read_quality(Path(args.quality)) if args.quality else None
    reason = gate_reason(params.selftrain.min_precision, quality) if quality else None
    if reason is not None:
        carry_forward(args, reason)
        return
    if relaunch_under_torchrun(params.train, params.loader.batch_size):  # its workers trained
        return
    if args.pseudo:
        labels_file = Path(args.pseudo) / LABELS_FILE
        pseudo = load_pseudo_labels(labels_file)
        overrides, kept = training_labels(pseudo, params.selftrain.soft_thresh, str(labels_file))
    else:
        overrides, kept = None, None if args.split == "full" else load_split(args.split).sequences
    init = Path(args.prev) if args.prev and params.selftrain.init == "previous" else None
    log_params = _params_for_log(params)
    # under torchrun, rank 0 alone tracks and publishes
    tracking = (
        stage_run(f"train_{args.name}", log_params, params.tracking.experiment, round_name=args.round)
        if is_main()
        else contextlib.nullcontext(NullTracker())
    )
    with tracking as tracker:
        result = train(
            params,
            Path(args.data),
            kept,
            Path(args.ckpt),
            tracker=tracker,
            labels_override=overrides,
            init_weights=init,
            progress=not args.no_progress,
        )
        if not is_main():
            return
        summary: dict = {"best_val_AP": result.best_ap, "best_step": result.best_step, "steps": result.steps}
        if args.round:
            summary["gated"] = False
        info = {"step": result.best_step, "val_AP": result.best_ap}
        best = result.best_weights
        publish(args, lambda out: write_model(out, best, params, info), result.history, summary)
        clear_scratch(Path(args.ckpt))
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
    labels = p.add_mutually_exclusive_group(required=True)
    labels.add_argument("--split", help="split JSON from subsample, or 'full' for every label")
    labels.add_argument("--pseudo", help="a round's pseudo-label folder: train on GT + pseudo labels")
    p.add_argument("--quality", help="the round's pseudo-label metrics JSON (for the quality gate)")
    p.add_argument("--prev", help="the previous round's model folder (init and gate fallback)")
    p.add_argument("--model", required=True, help="output folder for the trained model")
    p.add_argument("--ckpt", required=True, help="scratch folder for the resumable checkpoint")
    p.add_argument("--metrics", required=True, help="metrics JSON to write")
    p.add_argument("--curves", required=True, help="folder for the training curves (CSV)")
    return run(body, p, argv)


if __name__ == "__main__":
    sys.exit(main())
