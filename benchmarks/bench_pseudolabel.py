"""Pseudo-labelling throughput: frames per second of the whole pseudolabel@rK computation, in one
process and in two (torch.distributed ranks, as ``shard.nproc_per_node: 2`` runs it), and with the
TTA passes one after the other or side by side in one batch (``pseudo.batch_tta``).

Runs :func:`leod.pseudo.label.pseudo_label_shared` (all TTA passes, merge, thresholds, tracker)
on the first training sequences of the preprocessed dataset with a trained model (default
``models/r0``; run ``dvc repro train_r0`` first) and prints labelled frames per second for each
way side by side, with whether its labels are byte-identical to the first row's (one process,
passes in turn).
One process gets all ``--threads``; each of the two ranks gets half.

    .venv/bin/python benchmarks/bench_pseudolabel.py [--sequences 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from leod.config import Params, load_params
from leod.data.layout import load_manifest
from leod.data.sequence import load_split, open_sequences
from leod.distributed.group import Ranks, process_device, process_group
from leod.distributed.launch import LaunchSpec, relaunch
from leod.pseudo.label import pseudo_label_shared, tta_passes
from leod.pseudo.store import SequenceLabels, label_arrays
from leod.training.device import pick_device
from leod.training.model_files import build_model


def digest(labels: dict[str, SequenceLabels]) -> str:
    """sha256 of the labels as the stage writes them (npz bytes)."""
    buf = io.BytesIO()
    np.savez(buf, **label_arrays(labels))
    return hashlib.sha256(buf.getvalue()).hexdigest()[:16]


def with_batch_tta(params: Params, batched: bool) -> Params:
    return dataclasses.replace(params, pseudo=dataclasses.replace(params.pseudo, batch_tta=batched))


def label_once(args: argparse.Namespace, params: Params, ranks: Ranks) -> dict | None:
    """Time one labelling of the sequences by this rank (after a barrier, up to the gather)."""
    root = Path(args.data)
    seqs = open_sequences(root, load_manifest(root), "train")[: args.sequences]
    kept = load_split(args.split).sequences
    device = process_device(pick_device(args.device))
    model = build_model(Path(args.model), params).to(device)
    with process_group("gloo"):
        if ranks.world_size > 1:
            torch.distributed.barrier()
        start = time.perf_counter()
        result = pseudo_label_shared(model, seqs, kept, params, device, ranks, progress=False)
        seconds = time.perf_counter() - start
    if result is None:
        return None
    labels, stats = result
    xy = np.concatenate([np.stack([s.labels[k] for k in "xywh"], 1).ravel() for s in labels.values()])
    frames = sum(s.num_frames for s in seqs)
    return {"seconds": seconds, "frames": frames, "digest": digest(labels), "boxes": stats.boxes, "xywh": xy}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--data", default="data/preprocessed")
    p.add_argument("--split", default="data/splits/train_split.json")
    p.add_argument("--model", default="models/r0")
    p.add_argument("--sequences", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--rank-result", help=argparse.SUPPRESS)  # set for the two ranks
    args = p.parse_args()
    params = load_params(args.params)
    if args.rank_result:  # one of the two ranks
        torch.set_num_threads(max(1, args.threads // 2))
        res = label_once(args, with_batch_tta(params, False), Ranks.from_env())
        if res is not None:
            res.pop("xywh")
            Path(args.rank_result).write_text(json.dumps(res))
        return
    torch.set_num_threads(args.threads)
    in_turn, batched = (with_batch_tta(params, b) for b in (False, True))
    rows = {}
    for name, prm in (("1 process, passes in turn", in_turn), ("1 process, passes batched", batched)):
        rows[name] = label_once(args, prm, Ranks())
        print(f"{name}: {rows[name]['seconds']:.1f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rank0.json"
        start = time.perf_counter()
        relaunch(LaunchSpec(2), [__file__, *sys.argv[1:], "--rank-result", str(out)], "ranks")
        wall = time.perf_counter() - start
        rows["2 processes, passes in turn"] = {**json.loads(out.read_text()), "wall": wall}
    base = rows["1 process, passes in turn"]
    passes = len(tta_passes(params.pseudo))
    print(
        f"{args.sequences} sequences, {base['frames']} frames x {passes} TTA passes, {args.device}, "
        f"{args.threads} threads in all, model {args.model} ({params.model.preset}); "
        f"loadavg {' '.join(Path('/proc/loadavg').read_text().split()[:3])} (others' load slows it)"
    )
    print(f"{'':30s} {'seconds':>8s} {'frames/s':>9s} {'speed-up':>8s}  labels")
    for name, r in rows.items():
        same = "identical" if r["digest"] == base["digest"] else "DIFFERENT"
        if same != "identical" and "xywh" in r and len(r["xywh"]) == len(base["xywh"]):
            same += f" (max |dx| {np.abs(r['xywh'] - base['xywh']).max():.2e} px)"
        extra = f"  (wall {r['wall']:.1f} s with start-up)" if "wall" in r else ""
        print(
            f"{name:30s} {r['seconds']:8.2f} {r['frames'] / r['seconds']:9.1f} "
            f"{base['seconds'] / r['seconds']:7.2f}x  {same}, {r['boxes']} boxes{extra}"
        )


if __name__ == "__main__":
    main()
