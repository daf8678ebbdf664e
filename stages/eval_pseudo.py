"""Stage eval_pseudo@rK: precision/recall and COCO AP of a round's pseudo labels against the
ground truth that the subsample stage withheld, as the student receives them: boxes under
selftrain.soft_thresh count as ignore regions, not as objects.

Example (what `dvc repro eval_pseudo@r1` runs):
  python stages/eval_pseudo.py --round r1 --data data/preprocessed \
      --split data/splits/train_split.json --pseudo pseudo/r1 \
      --out metrics/pseudo_r1.json --pr reports/pseudo_r1/pr.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from leod.config import Params
from leod.data.layout import load_manifest
from leod.data.sequence import load_split, open_sequences
from leod.plumbing.atomic import write_json, write_text
from leod.plumbing.stage import parser, run
from leod.plumbing.tracking import stage_run
from leod.pseudo.quality import pr_curve, pseudo_label_quality, quality_inputs
from leod.pseudo.store import LABELS_FILE, check_against_dataset, check_split_names, load_pseudo_labels


def body(args: argparse.Namespace, params: Params) -> None:
    root = Path(args.data)
    manifest = load_manifest(root)
    kept = load_split(args.split).sequences
    labels_file = Path(args.pseudo) / LABELS_FILE
    pseudo = load_pseudo_labels(labels_file)
    seqs = open_sequences(root, manifest, "train")
    check_split_names(args.split, kept, [s.name for s in seqs])
    check_against_dataset(labels_file, pseudo, {s.name: s.timestamps_us for s in seqs}, manifest.classes)
    soft_thresh = params.for_round(args.round).selftrain.soft_thresh
    inputs = quality_inputs(seqs, pseudo, kept, manifest.downsample, soft_thresh)
    with stage_run(
        f"eval_pseudo_{args.round}", {"round": args.round}, params.tracking.experiment, round_name=args.round
    ) as tracker:
        metrics = pseudo_label_quality(inputs.pseudo, inputs.gt, inputs.withheld, manifest.classes)
        rows = pr_curve(inputs.pseudo, inputs.gt, inputs.withheld, manifest.classes)
        write_json(args.out, metrics)
        header = "threshold,precision,recall\n"
        write_text(
            args.pr,
            header + "".join(f"{r['threshold']:.4f},{r['precision']:.6f},{r['recall']:.6f}\n" for r in rows),
        )
        tracker.log_metrics({f"pseudo/{k.replace('@', '_at_')}": v for k, v in metrics.items()})
        tracker.log_artifact(args.out)
    print(
        f"eval_pseudo@{args.round}: precision@0.5 {metrics['precision@0.5']:.3f}, recall@0.5 "
        f"{metrics['recall@0.5']:.3f}, AP {metrics['AP']:.3f} on {int(metrics['frames_evaluated'])} "
        "withheld frames"
    )


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--round", required=True, help="round name (r1, r2, ...)")
    p.add_argument("--data", required=True, help="preprocessed dataset folder (full ground truth)")
    p.add_argument("--split", required=True, help="split JSON (which GT frames were kept)")
    p.add_argument("--pseudo", required=True, help="the round's pseudo-label folder")
    p.add_argument("--out", required=True, help="metrics JSON to write")
    p.add_argument("--pr", required=True, help="precision/recall curve CSV to write")
    return run(body, p, argv)


if __name__ == "__main__":
    sys.exit(main())
