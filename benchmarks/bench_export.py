"""Benchmark: batch-1 latency of one recurrent step, onnxruntime vs PyTorch, on this CPU.

Run: ``.venv/bin/python benchmarks/bench_export.py [--steps N]``. Two models, randomly
initialised (latency does not depend on the weights): the default ``nano`` preset at the
default dataset's size (params.yaml, synthetic 96x128) and RVT-T at Gen1 size (240x304).
Each is exported with :func:`leod.export.onnx.export_onnx`, then both runtimes stream the
same random count frames with the LSTM states carried, after ``--warmup`` steps; the median
step time is printed side by side. Threads: both use all cores torch sees (intra-op). The
machine may be shared, so the load average is printed too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

from leod.export.onnx import RecurrentStep, export_onnx, state_names, state_shapes
from leod.model.config import ModelConfig
from leod.model.detector import RecurrentDetector

CASES = {"nano @ 96x128 (default)": ("nano", 96, 128), "RVT-T @ 240x304 (Gen1)": ("tiny", 240, 304)}


def bench(
    preset: str, height: int, width: int, steps: int, warmup: int, workdir: Path
) -> tuple[float, float]:
    torch.manual_seed(0)
    model = RecurrentDetector(ModelConfig(preset=preset)).eval()
    path = workdir / f"{preset}.onnx"
    export_onnx(model, path, height, width)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    step, names = RecurrentStep(model), state_names(4)
    frames = torch.randint(0, 11, (steps + warmup, 1, 20, height, width)).float()
    pt_states = [torch.zeros(s) for s in state_shapes(model, height, width)]
    ort_states = [s.numpy() for s in pt_states]
    pt_times, ort_times = [], []
    for i, frame in enumerate(frames):
        start = time.perf_counter()
        with torch.inference_mode():
            out = step(frame, *pt_states)
        pt_states = list(out[1:])
        mid = time.perf_counter()
        got = session.run(None, {"events": frame.numpy(), **dict(zip(names, ort_states, strict=True))})
        ort_states = got[1:]
        end = time.perf_counter()
        if i >= warmup:
            pt_times.append(mid - start)
            ort_times.append(end - mid)
    return statistics.median(pt_times) * 1e3, statistics.median(ort_times) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20, help="timed steps per model and runtime")
    p.add_argument("--warmup", type=int, default=3)
    args = p.parse_args()
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {ort.__version__}")
    print(f"load average before: {os.getloadavg()[0]:.1f}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (preset, h, w) in CASES.items():
            rows.append((name, *bench(preset, h, w, args.steps, args.warmup, Path(tmp))))
    print(f"{'model (batch 1, one step)':<28}{'PyTorch ms':>12}{'ORT ms':>10}{'speed-up':>10}")
    for name, pt, onnx_ms in rows:
        print(f"{name:<28}{pt:>12.2f}{onnx_ms:>10.2f}{pt / onnx_ms:>9.2f}x")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
