"""Benchmark: end-to-end preprocessing throughput (read + histogram + Blosc write) at 1Mpx.

Run: ``.venv/bin/python benchmarks/bench_preprocess.py`` (``--help`` for sizes).

Synthetic 1280x720 recordings (the ``gen4`` preset of params.yaml: representation
downsampled by 2 to 640x360, 10 bins, 50 ms windows) are written as DAT files with one car
box per 100 ms label frame, spread over the train/val/test folders, and converted with the
pipeline's own :func:`leod.preprocess.dataset.convert_dataset` once with 1 worker and once
with 2 (numba uses one thread per worker there). Throughput is all events over the wall time
of the whole conversion (process start-up included), and over its CPU time (workers
included), the steadier figure on a shared machine. Events are uniform over the sensor at
``--rate`` million events per second. Files live in a temporary folder deleted at the end.
The machine may be shared: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter for h5py)
import numpy as np
import yaml

from leod.config import params_from_dict
from leod.events.dat import write_dat
from leod.events.types import Events
from leod.labels.boxes import EVALUATOR_DTYPE
from leod.preprocess.dataset import convert_dataset

REPO = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 720, 1280


def write_recording(folder: Path, name: str, seconds: float, rate: float, seed: int) -> int:
    rng = np.random.default_rng(seed)
    n = int(seconds * rate * 1e6)
    events = Events(
        t=np.sort(rng.integers(0, int(seconds * 1e6), n)).astype(np.int64),
        x=rng.integers(0, WIDTH, n).astype(np.uint16),
        y=rng.integers(0, HEIGHT, n).astype(np.uint16),
        p=rng.integers(0, 2, n).astype(np.uint8),
    )
    write_dat(folder / f"{name}_td.dat", events, HEIGHT, WIDTH)
    frames = np.arange(200_000, int(seconds * 1e6) - 1, 100_000)
    boxes = np.zeros(len(frames), EVALUATOR_DTYPE)
    boxes["t"], boxes["x"], boxes["y"], boxes["w"], boxes["h"] = frames, 400, 300, 120, 80
    boxes["class_id"], boxes["class_confidence"] = 2, 1.0
    np.save(folder / f"{name}_bbox.npy", boxes)
    return n


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the pool's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=6, help="spread over train/val/test")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each recording")
    parser.add_argument("--rate", type=float, default=2.0, help="million events per second")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["dataset"] = "gen4"
    classes = len(data["datasets"]["gen4"]["classes"])
    for section in [data["pseudo"], data["selftrain"], *data["rounds"].values()]:  # per-class: 1 value each
        for key, value in section.items():
            if isinstance(value, list) and key.endswith("_thresh"):
                section[key] = [value[0]] * classes
    folder = Path(tempfile.mkdtemp(prefix="bench_preprocess_"))
    try:
        total = 0
        for k in range(args.recordings):
            split = ("train", "val", "test")[k % 3]
            (folder / "raw" / split).mkdir(parents=True, exist_ok=True)
            total += write_recording(folder / "raw" / split, f"rec{k}", args.seconds, args.rate, k)
        size = f"{args.recordings} recordings x {args.seconds:g} s at {args.rate:g} M ev/s"
        print(f"{size}: {total / 1e6:.1f}M events")
        for workers in (1, 2):
            data["preprocess"]["workers"] = workers
            params = params_from_dict(data)
            out = folder / f"out{workers}"
            cpu_before = _cpu_seconds()
            start = time.perf_counter()
            convert_dataset(params, folder / "raw", out, log=lambda _: None, progress=False)
            seconds = time.perf_counter() - start
            cpu = _cpu_seconds() - cpu_before
            frames = 0
            for path in out.rglob("*.h5"):
                with h5py.File(path, "r") as f:
                    frames += f["data"].shape[0]
            print(
                f"workers {workers}: {seconds:6.1f} s wall ({total / seconds / 1e6:5.1f} M ev/s, "
                f"{frames / seconds:6.1f} frames/s), {cpu:6.1f} s CPU ({total / cpu / 1e6:5.1f} M ev/s, "
                f"{1e3 * cpu / frames:5.1f} ms per frame), {frames} frames of 2x{params.representation.nbins}"
                f"x{HEIGHT // 2}x{WIDTH // 2}",
                flush=True,
            )
            shutil.rmtree(out)
    finally:
        shutil.rmtree(folder)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
