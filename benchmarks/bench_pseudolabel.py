"""Pseudo-labelling throughput: frames per second of the whole pseudolabel@rK computation.

Runs :func:`leod.pseudo.label.pseudo_label_sequences` (all TTA passes, merge, thresholds,
tracker) on the first training sequences of the preprocessed dataset with a trained model
(default ``models/r0``; run ``dvc repro train_r0`` first) and prints frames per second,
per labelled frame and per network pass.

    .venv/bin/python benchmarks/bench_pseudolabel.py [--sequences 4] [--model models/r0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from leod.config import load_params
from leod.data.layout import load_manifest
from leod.data.sequence import load_split, open_sequences
from leod.pseudo.label import pseudo_label_sequences, tta_passes
from leod.training.device import pick_device
from leod.training.model_files import build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--data", default="data/preprocessed")
    p.add_argument("--split", default="data/splits/train_split.json")
    p.add_argument("--model", default="models/r0")
    p.add_argument("--sequences", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    root = Path(args.data)
    seqs = open_sequences(root, load_manifest(root), "train")[: args.sequences]
    kept = load_split(args.split).sequences
    device = pick_device(params.train.device)
    model = build_model(Path(args.model), params).to(device)
    pseudo_label_sequences(model, seqs[:1], kept, params, device, progress=False)  # warm-up
    start = time.perf_counter()
    _, stats = pseudo_label_sequences(model, seqs, kept, params, device, progress=False)
    seconds = time.perf_counter() - start
    passes = len(tta_passes(params.pseudo))
    frames = sum(s.num_frames for s in seqs)
    print(f"device {device}, {args.threads} threads, {len(seqs)} sequences, {frames} frames, {passes} passes")
    rate, net = frames / seconds, frames * passes / seconds
    print(f"total {seconds:.2f} s: {rate:.1f} labelled frames/s, {net:.1f} network frames/s")
    print(f"{stats.boxes} boxes, {stats.ignored} ignore regions")


if __name__ == "__main__":
    main()
