"""Stage pseudolabel@rK: the model of round K-1 labels every training frame (TTA + tracking).

Example (what `dvc repro pseudolabel@r1` runs):
  python stages/pseudolabel.py --round r1 --data data/preprocessed \
      --split data/splits/train_split.json --model models/r0 --out pseudo/r1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from leod.config import Params
from leod.data.layout import load_manifest
from leod.data.sequence import load_split, open_sequences
from leod.distributed.group import Ranks, process_device, process_group
from leod.distributed.launch import LaunchSpec, relaunch
from leod.plumbing.atomic import atomic_path, write_json
from leod.plumbing.stage import parser, run
from leod.plumbing.tracking import RunLogger, stage_run
from leod.pseudo.label import PseudoStats, pseudo_label_shared
from leod.pseudo.store import LABELS_FILE, SequenceLabels, check_split_names, save_pseudo_labels
from leod.schema import to_dict
from leod.training.device import pick_device
from leod.training.model_files import build_model


def body(args: argparse.Namespace, params: Params, argv: list[str]) -> None:
    params = params.for_round(args.round)
    if relaunch(LaunchSpec(params.shard.nproc_per_node), [__file__, *argv], "ranks"):
        return
    ranks = Ranks.from_env()
    root = Path(args.data)
    manifest = load_manifest(root)
    kept = load_split(args.split).sequences
    seqs = open_sequences(root, manifest, "train")
    check_split_names(args.split, kept, [s.name for s in seqs])
    device = process_device(pick_device(params.train.device))
    model = build_model(Path(args.model), params).to(device)
    log_params = {"round": args.round, "teacher": args.model, "pseudo": to_dict(params.pseudo)}
    # rank 0 alone logs and writes; the others label their share and hand it over
    with (
        stage_run(
            f"pseudolabel_{args.round}", log_params, params.tracking.experiment, round_name=args.round
        ) as tr,
        process_group("gloo"),
    ):
        progress = ranks.is_root and not args.no_progress
        result = pseudo_label_shared(model, seqs, kept, params, device, ranks, progress=progress)
        if result is not None:
            write(args, *result, tr)


def write(
    args: argparse.Namespace, labels: dict[str, SequenceLabels], stats: PseudoStats, tr: RunLogger
) -> None:
    summary = {
        "frames": stats.frames,
        "gt_frames": stats.gt_frames,
        "boxes": stats.boxes,
        "ignored": stats.ignored,
        **stats.tracker.metrics(),
        "teacher": args.model,
    }
    with atomic_path(args.out, is_dir=True) as tmp:
        save_pseudo_labels(tmp / LABELS_FILE, labels)
        write_json(tmp / "summary.json", summary)
    tr.log_metrics({f"pseudo/{k}": float(v) for k, v in summary.items() if k != "teacher"})
    print(
        f"pseudolabel@{args.round}: {stats.frames} frames ({stats.gt_frames} with kept GT), "
        f"{stats.boxes} boxes, "
        f"{stats.ignored} of them ignore regions (tracker: {stats.tracker.boxes_kept} kept, "
        f"{stats.tracker.boxes_ignored} turned into ignore regions, {stats.tracker.boxes_inpainted} "
        f"inpainted) -> {args.out}"
    )


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__)
    p.add_argument("--round", required=True, help="round name (r1, r2, ...)")
    p.add_argument("--data", required=True, help="preprocessed dataset folder")
    p.add_argument("--split", required=True, help="split JSON from subsample (kept GT frames)")
    p.add_argument("--model", required=True, help="the previous round's model folder (the teacher)")
    p.add_argument("--out", required=True, help="output folder (pseudo/<round>)")
    argv = sys.argv[1:] if argv is None else list(argv)
    return run(lambda args, params: body(args, params, argv), p, argv)


if __name__ == "__main__":
    sys.exit(main())
