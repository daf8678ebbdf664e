"""Stages evaluate@<name>: test-split COCO metrics (Prophesee protocol), a confusion matrix and the
test predictions of a trained model.

Example (what `dvc repro evaluate@r0` runs):
  python stages/evaluate.py --name r0 --data data/preprocessed --model models/r0 \
      --out metrics/test_r0.json --confusion reports/r0/confusion.csv \
      --predictions reports/r0/test_predictions.npz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from leod.config import Params
from leod.data.layout import load_manifest
from leod.data.sequence import open_sequences
from leod.detect.dataset import evaluate_model
from leod.distributed.group import Ranks, process_device, process_group
from leod.distributed.launch import LaunchSpec, relaunch
from leod.evaluation.confusion import confusion_matrix, write_confusion_csv
from leod.evaluation.prophesee import UNDEFINED
from leod.plumbing.atomic import save_npz, write_json
from leod.plumbing.stage import parser, run
from leod.plumbing.tracking import stage_run
from leod.training.device import pick_device
from leod.training.model_files import build_model


def body(args: argparse.Namespace, params: Params, argv: list[str]) -> None:
    if relaunch(LaunchSpec(params.shard.nproc_per_node), [__file__, *argv], "ranks"):
        return
    ranks = Ranks.from_env()
    root = Path(args.data)
    manifest = load_manifest(root)
    seqs = open_sequences(root, manifest, args.split)
    device = process_device(pick_device(params.train.device))
    model = build_model(Path(args.model), params).to(device)
    log_params = {"model": args.model, "split": args.split}
    # rank 0 alone scores, logs and writes; the others predict their share and hand it over
    with (
        stage_run(
            f"evaluate_{args.name}", log_params, params.tracking.experiment, round_name=args.name
        ) as tracker,
        process_group("gloo"),
    ):
        ev = evaluate_model(model, seqs, manifest, params, device, params.train.eval_batch_size, ranks)
        if ev is None:
            return
        matrix = confusion_matrix(
            ev.gt, ev.predictions, manifest.classes, ev.filt, time_tol_us=ev.time_tol_us
        )
        write_json(args.out, ev.result.metrics)
        write_confusion_csv(args.confusion, matrix, manifest.classes)
        save_npz(args.predictions, **dict(zip(ev.names, ev.predictions, strict=True)))
        # COCO's undefined -1 (no objects of a size) stays in the JSON but is no score to chart
        tracker.log_metrics({f"test/{k}": v for k, v in ev.result.metrics.items() if v != UNDEFINED})
        tracker.log_artifact(args.out)
        tracker.log_artifact(args.confusion)
    shown = {k: "n/a" if v == UNDEFINED else f"{v:.4f}" for k, v in ev.result.metrics.items()}
    print(f"{args.name}: {args.split} AP {shown['AP']}, AP50 {shown['AP50']}")


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--name", required=True, help="what is evaluated (r0, full, r1, ...)")
    p.add_argument("--data", required=True, help="preprocessed dataset folder")
    p.add_argument("--model", required=True, help="trained model folder")
    p.add_argument(
        "--split", default="test", choices=["train", "val", "test"], help="split to evaluate (default: test)"
    )
    p.add_argument("--out", required=True, help="metrics JSON to write")
    p.add_argument("--confusion", required=True, help="confusion-matrix CSV to write")
    p.add_argument("--predictions", required=True, help="predictions to write (npz, one array per sequence)")
    argv = sys.argv[1:] if argv is None else list(argv)
    return run(lambda args, params: body(args, params, argv), p, argv)


if __name__ == "__main__":
    sys.exit(main())
