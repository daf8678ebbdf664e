"""COCO evaluation time: the pipeline's evaluator (faster-coco-eval) against pycocotools.

Both evaluate the same random ground truth and detections (the generator and the
pycocotools reference of tests/test_evaluation.py) through the same Prophesee pairing;
the largest metric difference is printed beside the times.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_coco_eval.py [--frames 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from leod.evaluation.config import EvalFilter  # noqa: E402
from leod.evaluation.prophesee import evaluate_detection  # noqa: E402
from test_evaluation import pycocotools_metrics, random_sequences  # noqa: E402

CLASSES = ["car", "pedestrian"]
TOL_US = 24_999


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sequences", type=int, default=10)
    p.add_argument("--frames", type=int, default=500, help="label frames per sequence")
    p.add_argument("--boxes", type=float, default=4.4, help="mean GT boxes per frame")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    gts, dts = random_sequences(0, args.sequences, args.frames, args.boxes, len(CLASSES))
    filt = EvalFilter(skip_first_us=0, min_diag=0.0, min_side=0.0)
    n_gt = sum(int((~g["ignore"]).sum()) for g in gts)
    n_dt = sum(len(d) for d in dts)
    print(
        f"{n_gt} GT boxes, {n_dt} detections, {args.sequences * args.frames} frames; median of {args.repeats}"
    )
    times: dict[str, list[float]] = {"faster-coco-eval": [], "pycocotools": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        fast = evaluate_detection(gts, dts, CLASSES, 480, 640, filt, time_tol_us=TOL_US).metrics
        times["faster-coco-eval"].append(time.perf_counter() - start)
        start = time.perf_counter()
        ref = pycocotools_metrics(gts, dts, CLASSES, filt, TOL_US)
        times["pycocotools"].append(time.perf_counter() - start)
    medians = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    for name, seconds in medians.items():
        print(f"  {name:<17} {seconds:6.2f} s")
    print(
        f"  speed-up {medians['pycocotools'] / medians['faster-coco-eval']:.1f}x; AP {fast['AP']:.4f}; "
        f"largest metric difference {max(abs(fast[k] - ref[k]) for k in ref):.1e}"
    )


if __name__ == "__main__":
    main()
