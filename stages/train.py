"""Stages train_r0, train_full and train@rK: train the recurrent detector.

--split trains on the kept ground truth of a subsample split (or "full": every label);
--pseudo trains a self-training round on GT + the round's pseudo labels, with LEOD's soft
thresholds, after the quality gate (a gated round carries the previous model forward).
A round's control (control@rK) is --round with --split: the round's params, initialisation
and steps on the sparse ground truth only. A control whose recipe is that of --same-as (r0:
a from-scratch round of train.steps steps) publishes that model instead of training again.
With selftrain.teacher set, --baseline (train_r0) publishes that imported model instead of
training; train.init_from starts every run that would start from random weights from an
imported model instead.

Resumable: a killed run continues from <ckpt>/last.pt (a git-ignored scratch folder, so
the stage's outputs stay eligible for DVC's run-cache) when rerun with the same inputs.
The model folder, its curves and metrics are published together at the end
(leod.training.chain), so a killed or failed run leaves the previous model as it was.

Examples (what `dvc repro train_r0` and `dvc repro train@r1` run):
  python stages/train.py --name r0 --data data/preprocessed \
      --split data/splits/train_split.json --baseline --imported models/imported \
      --model models/r0 --ckpt checkpoints/r0 --metrics metrics/train_r0.json --curves reports/r0
  python stages/train.py --name r1 --round r1 --data data/preprocessed --pseudo pseudo/r1 \
      --quality metrics/pseudo_r1.json --prev models/r0 --r0-model models/r0 --imported models/imported \
      --model models/r1 --ckpt checkpoints/r1 --metrics metrics/train_r1.json --curves reports/r1
  python stages/train.py --name control_r1 --round r1 --data data/preprocessed \
      --split data/splits/train_split.json --prev models/r0 --r0-model models/r0 \
      --imported models/imported --same-as models/r0 --model models/control_r1 --ckpt checkpoints/control_r1 \
      --metrics metrics/train_control_r1.json --curves reports/control_r1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from leod.config import Params
from leod.data.layout import load_manifest
from leod.data.sequence import load_split
from leod.plumbing.atomic import check_writable
from leod.plumbing.stage import parser, run
from leod.plumbing.tracking import stage_run
from leod.pseudo.gate import gate_reason, read_quality
from leod.pseudo.soft import training_labels
from leod.pseudo.store import LABELS_FILE, load_pseudo_labels
from leod.schema import to_dict
from leod.training.chain import (
    TrainOutputs,
    carry_forward,
    imported_model,
    publish,
    publish_repeat,
    publish_teacher,
    start_weights,
    trained,
)
from leod.training.distributed import is_main, relaunch_under_torchrun
from leod.training.loop import clear_scratch, train
from leod.training.model_files import build_model, read_model_info, write_model
from leod.training.recipe import recipe_digest


def body(args: argparse.Namespace, params: Params) -> None:
    if args.round:
        params = params.for_round(args.round)
    out = TrainOutputs(Path(args.model), Path(args.curves), Path(args.metrics))
    check_writable(args.model, args.metrics, args.curves, args.ckpt)
    imported = Path(args.imported)
    if args.baseline and params.selftrain.teacher:
        teacher = imported_model(imported, params.selftrain.teacher, "selftrain.teacher")
        build_model(teacher, params)  # its whole model config and every weight, against params
        publish_teacher(teacher, read_model_info(teacher), params.preset.classes, out)
        print(f"{args.name}: the imported model {teacher} published as {args.model} (not trained)")
        return
    quality = read_quality(Path(args.quality)) if args.quality else None
    reason = gate_reason(params.selftrain.min_precision, quality) if quality else None
    if reason is not None:
        carry_forward(Path(args.prev), read_model_info(Path(args.prev)), reason, out)
        print(f"{args.name}: gated: {reason}")
        return
    prev = Path(args.prev) if args.prev else None
    r0 = Path(args.r0_model) if args.r0_model else None
    init = start_weights(prev, r0, params.selftrain.init, params.train.init_from, imported)
    data = Path(args.data)
    kept = load_split(args.split).sequences if args.split not in (None, "full") else None
    if args.same_as and not args.pseudo:
        same = Path(args.same_as)
        recipe = recipe_digest(params, data, load_manifest(data), kept, None, init)
        if publish_repeat(same, read_model_info(same), recipe, params.train.steps, out) is not None:
            print(f"{args.name}: {same}'s recipe: its model published as {args.model} (not retrained)")
            return
    if relaunch_under_torchrun(params.train, params.loader.batch_size):  # its workers trained
        return
    overrides = None
    if args.pseudo:
        labels_file = Path(args.pseudo) / LABELS_FILE
        pseudo = load_pseudo_labels(labels_file)
        overrides, kept = training_labels(pseudo, params.selftrain.soft_thresh, str(labels_file))
    log_params = _params_for_log(params)
    with stage_run(
        f"train_{args.name}", log_params, params.tracking.experiment, round_name=args.round
    ) as tracker:  # under torchrun, rank 0 alone tracks and publishes
        result = train(
            params,
            data,
            kept,
            Path(args.ckpt),
            tracker=tracker,
            labels_override=overrides,
            init_weights=init,
            progress=not args.no_progress,
        )
        if not is_main():
            return
        weights, step, val_ap = result.published(params.train.select)
        info = {"step": step, "val_AP": val_ap, "recipe": result.recipe}
        metrics = trained(val_ap, step, result.steps, is_round=bool(args.pseudo))
        publish(out, lambda model: write_model(model, weights, params, info), result.history, metrics)
        clear_scratch(Path(args.ckpt))
        tracker.log_metrics({"best_val_AP": val_ap})
        for path in (out.metrics, out.curves / "train.csv", out.curves / "val.csv", out.model / "model.json"):
            tracker.log_artifact(str(path))
    print(
        f"{args.name}: published the weights of step {step} (train.select: {params.train.select}), "
        f"val AP {val_ap:.4f}; model in {args.model}"
    )
    if getattr(tracker, "uri", None):
        print("MLflow: python -m leod ui   (opens the runs table)")


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
    p.add_argument("--r0-model", help="r0's model folder: a round's start under selftrain.init: r0")
    p.add_argument("--same-as", help="a model folder published instead when its recipe is this run's (r0)")
    p.add_argument(
        "--imported",
        default="models/imported",
        help="imported models, named by selftrain.teacher and train.init_from (default: %(default)s)",
    )
    p.add_argument("--baseline", action="store_true", help="this run is r0: selftrain.teacher replaces it")
    p.add_argument("--model", required=True, help="output folder for the trained model")
    p.add_argument("--ckpt", required=True, help="scratch folder for the resumable checkpoint")
    p.add_argument("--metrics", required=True, help="metrics JSON to write")
    p.add_argument("--curves", required=True, help="folder for the training curves (CSV)")
    return run(body, p, argv)


if __name__ == "__main__":
    sys.exit(main())
