"""Profile the training step of a params file: where each step's time goes, median over steps.

Runs the training loop's own parts (:mod:`leod.training.loop`: sampler, loader, recurrent
forward, YOLOX loss, backward, gradient clipping, AdamW) on a preprocessed dataset and
times every phase of every step with a wall clock (``torch.cuda.synchronize`` around each
phase on CUDA):

* ``data``: the next batch from the loader, moved to the device, states reset;
* ``forward``: :meth:`RecurrentDetector.forward_sequence` (backbone over the L steps, neck
  and head on the supervised frames);
* ``assign``: the SimOTA assignment inside the loss (timed by wrapping
  :func:`leod.model.simota.simota_assign` where the loss calls it);
* ``loss``: the rest of :meth:`RecurrentDetector.loss` (target checks, ignore regions,
  IoU / objectness / class terms);
* ``backward`` and ``optimizer`` (gradient clipping + AdamW step + zero_grad).

Medians over the measured steps are reported (after ``--warmup`` steps), of the wall time
and of the process CPU time: other processes on a shared machine inflate single steps
and wall times much more than CPU times (use ``--threads 1`` there, so that no thread
waits for another); ``/proc/loadavg`` is printed.
``--split full`` (default) is the dense-label run (``train_full``); a subsample split
JSON gives the sparse one.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_train_step.py --data data/preprocessed
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

import leod.model.losses as losses_module
from leod.config import load_params
from leod.data.layout import load_manifest
from leod.data.loader import iterate_batches
from leod.data.sampling import TrainSampler
from leod.data.sequence import load_split, open_sequences
from leod.model.detector import RecurrentDetector
from leod.training.device import autocast, pick_device
from leod.training.loop import make_optimizer, seed_everything, supervised_targets
from timing import loadavg  # benchmarks/, the script's own folder

PHASES = ("data", "forward", "assign", "loss", "backward", "optimizer")


class PhaseTimer:
    """Wall-clock and process CPU seconds per phase of the current step (device-synchronised)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.step: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.sync()
        start, cpu_start = time.perf_counter(), time.process_time()
        yield
        self.sync()
        self.step[name] += time.perf_counter() - start
        self.cpu[name] += time.process_time() - cpu_start

    def timed(self, fn: Callable[..., Any], name: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name):
                return fn(*args, **kwargs)

        return wrapper


def profile(args: argparse.Namespace) -> dict[str, Any]:
    params = load_params(args.params)
    torch.set_num_threads(args.threads)
    seed_everything(params.seed)
    device = pick_device(args.device or params.train.device)
    root = Path(args.data)
    manifest = load_manifest(root)
    kept = None if args.split == "full" else load_split(args.split).sequences
    seqs = open_sequences(root, manifest, "train", kept=kept)
    sampler = TrainSampler(seqs, params.loader, params.seed)
    batches = iterate_batches(seqs, iter(sampler), params.loader.num_workers)
    model = RecurrentDetector(params.model_config).to(device).train()
    optimizer = make_optimizer(model, params.train.lr, params.train.weight_decay)

    timer = PhaseTimer(device)
    # the loss calls the assignment through its module namespace: time it there
    losses_module.simota_assign = timer.timed(losses_module.simota_assign, "assign")
    records: list[dict[str, float]] = []
    cpu_records: list[dict[str, float]] = []
    states, supervised_frames, boxes = None, [], []
    while len(records) < args.warmup + args.steps:
        timer.step, timer.cpu = defaultdict(float), defaultdict(float)
        with timer.phase("data"):
            batch = next(batches).to(device)
            states = model.reset(states, batch.is_first)
        with autocast(device, params.train.amp):
            with timer.phase("forward"):
                preds, new_states = model.forward_sequence(batch.frames, states, batch.supervised)
            if preds is None:
                continue
            with timer.phase("loss"):
                targets = supervised_targets(batch).to(device)
                terms = model.loss(preds, targets)
        states = model.detach(new_states)
        with timer.phase("backward"):
            terms.total.backward()
        with timer.phase("optimizer"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), params.train.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        for times, out in ((timer.step, records), (timer.cpu, cpu_records)):
            step = dict(times)
            step["loss"] -= step.get("assign", 0.0)  # "loss" is the loss call minus its assignment
            out.append(step)
        supervised_frames.append(len(targets))
        boxes.append(int((targets.valid & ~targets.ignore).sum()))
    measured, cpu_measured = records[args.warmup :], cpu_records[args.warmup :]
    medians = {p: statistics.median(r.get(p, 0.0) for r in measured) * 1000 for p in PHASES}
    cpu_medians = {p: statistics.median(r.get(p, 0.0) for r in cpu_measured) * 1000 for p in PHASES}
    totals = [sum(r.values()) for r in measured]
    return {
        "device": str(device),
        "threads": args.threads,
        "split": args.split,
        "steps": args.steps,
        "supervised_frames_per_step": statistics.median(supervised_frames),
        "boxes_per_step": statistics.median(boxes),
        "phase_ms": medians,
        "phase_cpu_ms": cpu_medians,
        "step_ms": statistics.median(totals) * 1000,
        "step_cpu_ms": statistics.median(sum(r.values()) for r in cpu_measured) * 1000,
        "step_ms_min": min(totals) * 1000,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--data", default="data/preprocessed")
    p.add_argument("--split", default="full", help="'full' (dense labels) or a subsample split JSON")
    p.add_argument("--steps", type=int, default=20, help="measured steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="CPU intra-op threads")
    p.add_argument("--device", help="cpu or cuda (default: the params' train.device)")
    p.add_argument("--json", type=Path, help="also write the result to this file")
    args = p.parse_args(argv)
    load_before = loadavg()
    rec = profile(args)
    rec["loadavg"] = [load_before, loadavg()]
    print(
        f"device {rec['device']}, {rec['threads']} threads, split {rec['split']}: "
        f"{rec['supervised_frames_per_step']:.0f} supervised frames and {rec['boxes_per_step']:.0f} boxes "
        f"per step (medians); loadavg before/after: {load_before} / {rec['loadavg'][1]}"
    )
    step, cpu = rec["step_ms"], rec["step_cpu_ms"]
    print(f"  {'phase':<10} {'wall ms':>8} {'share':>6} {'CPU ms':>8} {'share':>6}")
    for phase, ms in rec["phase_ms"].items():
        cpu_ms = rec["phase_cpu_ms"][phase]
        print(f"  {phase:<10} {ms:8.1f} {100 * ms / step:5.1f}% {cpu_ms:8.1f} {100 * cpu_ms / cpu:5.1f}%")
    note = f"(medians of {rec['steps']} steps; wall min {rec['step_ms_min']:.1f})"
    print(f"  {'step':<10} {step:8.1f} {'':6} {cpu:8.1f}   {note}")
    if args.json:
        args.json.write_text(json.dumps(rec, indent=1) + "\n")


if __name__ == "__main__":
    main()
