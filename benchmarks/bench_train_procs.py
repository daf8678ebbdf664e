"""The training stage on one process against data-parallel processes on the same cores.

Runs ``stages/train.py --split full`` (the dense-label run of ``train_full``) for ``--steps``
steps under each ``--configs`` entry ``PxT``: ``train.nproc_per_node = P`` processes (torchrun,
gloo on CPU, the same global batch, docs/scaling-training.md) with ``T`` OMP/MKL threads each,
alternating the configurations ``--repeats`` times. Validation runs once, at the end; MLflow
tracking is off. Per run it prints the stage's wall time (what a chain pays: start-up,
torchrun, training, the final validation and publishing) and the steady-state step time from
the stage's own log lines, (t(steps) - t(skip)) / (steps - skip) with t(n) = n / rate(n), which
leaves out the first ``--skip`` steps (warm-up); then the median of each over the repeats, the
final training loss of each run (the same global batch: close, not equal, between
configurations) and ``/proc/loadavg``.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_train_procs.py --steps 120 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from leod.plumbing.cpu import thread_env
from timing import loadavg  # benchmarks/, the script's own folder

ROOT = Path(__file__).resolve().parents[1]
#: the training loop's periodic log line (--no-progress): "step 20/120 loss 9.1 lr 1e-3 3.41 step/s ..."
_LOG = re.compile(r"step (\d+)/\d+ loss ([0-9.naif]+) lr \S+ ([0-9.]+) step/s")
_CONFIG = re.compile(r"^(\d+)x(\d+)$")


@dataclass(frozen=True)
class Run:
    config: str
    wall_s: float
    step_ms: float
    loss: float


def parse_config(text: str) -> tuple[int, int]:
    """``PxT`` -> (processes, threads per process)."""
    match = _CONFIG.match(text)
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise SystemExit(f"error: --configs entry {text!r}: expected PxT, e.g. 2x1 (processes x threads)")
    return int(match[1]), int(match[2])


def steady_step_ms(log: str, skip: int, steps: int) -> tuple[float, float]:
    """Steady-state ms per step and the last logged loss, from the training log lines."""
    rates: dict[int, tuple[float, float]] = {}
    for match in _LOG.finditer(log):
        rates.setdefault(int(match[1]), (float(match[3]), float(match[2])))  # rank 0's line first
    if skip not in rates or steps not in rates:
        raise SystemExit(f"error: the training log has no step/s line at step {skip} or {steps}")
    elapsed = {n: n / rates[n][0] for n in (skip, steps)}
    return (elapsed[steps] - elapsed[skip]) / (steps - skip) * 1e3, rates[steps][1]


def run_once(args: argparse.Namespace, config: str, work: Path) -> Run:
    procs, threads = parse_config(config)
    params = yaml.safe_load(Path(args.params).read_text())
    train = params["train"]
    train.update(steps=args.steps, eval_every=args.steps, checkpoint_every=args.steps, nproc_per_node=procs)
    train["log_every"] = args.skip  # the log lines the step time is read from
    params["selftrain"]["round_steps"] = None  # rounds may not outlast train.steps
    out = work / config
    work.mkdir(parents=True, exist_ok=True)
    params_file = work / f"params-{config}.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    cmd = [
        sys.executable, "stages/train.py", "--name", "bench", "--data", args.data, "--split", "full",
        "--imported", "models/imported", "--model", str(out / "model"), "--ckpt", str(out / "ckpt"),
        "--metrics", str(out / "metrics.json"), "--curves", str(out / "curves"),
        "--params", str(params_file), "--no-progress",
    ]  # fmt: skip
    env = {
        **os.environ,
        **thread_env(threads),
        "LEOD_TRACKING": "0",
        "PYTHONPATH": str(ROOT / "src"),
    }
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise SystemExit(f"error: {config}: the training stage failed: {tail[0]}")
    step_ms, loss = steady_step_ms(proc.stdout + proc.stderr, args.skip, args.steps)
    return Run(config, wall, step_ms, loss)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--data", default="data/preprocessed")
    p.add_argument("--steps", type=int, default=120, help="training steps per run")
    p.add_argument("--skip", type=int, default=20, help="warm-up steps left out of the step time")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--configs", default="1x2,2x1", help="processes x threads each, comma-separated")
    args = p.parse_args(argv)
    if not 0 < args.skip < args.steps or args.steps % args.skip:
        raise SystemExit("error: --skip must be positive, below --steps and divide it")
    configs = args.configs.split(",")
    for config in configs:
        parse_config(config)
    load_before = loadavg()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-procs-") as tmp:
        for repeat in range(args.repeats):
            for config in configs:
                run = run_once(args, config, Path(tmp) / str(repeat))
                runs.append(run)
                print(
                    f"{config}: stage {run.wall_s:6.1f} s, step {run.step_ms:6.1f} ms, loss {run.loss:.3f}",
                    flush=True,
                )
    print(f"\nmedians over {args.repeats} runs of {args.steps} steps (dense labels, {args.params}):")
    base = None
    for config in configs:
        mine = [r for r in runs if r.config == config]
        wall = statistics.median(r.wall_s for r in mine)
        step = statistics.median(r.step_ms for r in mine)
        base = base or (wall, step)
        print(
            f"  {config}: stage {wall:6.1f} s ({base[0] / wall:.2f}x), "
            f"step {step:6.1f} ms ({base[1] / step:.2f}x)"
        )
    print(f"loadavg before/after: {load_before} / {loadavg()}")


if __name__ == "__main__":
    main()
