"""Benchmark: the numba pseudo-label tracker against the figure of LEOD's original tracker.

Run: ``.venv/bin/python benchmarks/bench_tracker.py`` (``--help`` for sizes). The input is one
sequence of ``--frames`` frames (Gen1 size, 304x240, 50 ms apart) holding ``--objects`` objects
that move linearly with random sizes, speeds and directions (so paths cross), each replaced by
a fresh one when its random lifetime ends, plus ``--fps`` false positives per frame at random
places. Detections jitter by up to 1 px. The reference figure, 611 frames/s, is LEOD's
``LinearTracker`` with its forward+backward filter and inpainting, measured on this CPU for
2000 frames with 10 objects and 2 false positives per frame (no misses): the first case here.
A second case drops ``--miss`` of the object detections so that inpainting has work to do.

``track_filter`` runs once to warm up (numba compilation or cache load), then the median and the
minimum of ``--repeats`` timed runs are reported; the timings include input validation and the
assembly of the output arrays. The machine is shared, so the load average is printed before and
after.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from leod.labels.boxes import BOX_DTYPE
from leod.pseudo.config import PseudoConfig, TrackerConfig
from leod.pseudo.tracker import TrackStats, track_filter

REFERENCE_FPS = 611.0
HEIGHT, WIDTH = 240, 304
FRAME_US = 50_000


def synthetic_sequence(
    rng: np.random.Generator, n_frames: int, n_objects: int, n_fps: int, miss: float
) -> list[np.ndarray]:
    """Per-frame detections of ``n_objects`` linearly moving objects plus random false positives."""
    frames = []
    pos = np.zeros((n_objects, 2))
    vel = np.zeros((n_objects, 2))
    size = np.zeros((n_objects, 2))
    cls = np.zeros(n_objects, np.uint32)
    ends = np.zeros(n_objects, np.int64)
    for f in range(n_frames):
        fresh = ends <= f
        k = int(fresh.sum())
        if k:
            size[fresh] = rng.uniform([15, 15], [80, 60], (k, 2))
            pos[fresh] = rng.uniform(0, 1, (k, 2)) * ([WIDTH, HEIGHT] - size[fresh])
            vel[fresh] = rng.uniform(-4, 4, (k, 2))
            cls[fresh] = rng.integers(0, 2, k)
            ends[fresh] = f + rng.integers(30, 300, k)
        seen = rng.random(n_objects) >= miss
        n = int(seen.sum()) + n_fps
        boxes = np.zeros(n, BOX_DTYPE)
        boxes["t"] = f * FRAME_US
        xy = np.concatenate((pos[seen] + rng.uniform(-1, 1, (n - n_fps, 2)), rng.uniform(0, 250, (n_fps, 2))))
        wh = np.concatenate((size[seen], rng.uniform(10, 50, (n_fps, 2))))
        boxes["x"], boxes["y"] = xy[:, 0], xy[:, 1]
        boxes["w"], boxes["h"] = wh[:, 0], wh[:, 1]
        boxes["class_id"] = np.concatenate((cls[seen], rng.integers(0, 2, n_fps)))
        boxes["class_confidence"] = boxes["objectness"] = rng.uniform(0.5, 1.0, n)
        frames.append(boxes)
        pos += vel
    return frames


def time_filter(
    frames: list[np.ndarray], cfg: TrackerConfig, repeats: int
) -> tuple[float, float, TrackStats]:
    """Median and minimum seconds of one ``track_filter`` call, after one warm-up call."""
    is_gt = np.zeros(len(frames), bool)
    _, stats = track_filter(frames, is_gt, cfg)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        track_filter(frames, is_gt, cfg)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), float(np.min(times)), stats


def loadavg() -> str:
    with open("/proc/loadavg") as fh:
        return " ".join(fh.read().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--objects", type=int, default=10)
    parser.add_argument("--fps", type=int, default=2, help="false positives per frame")
    parser.add_argument("--miss", type=float, default=0.1, help="miss rate of the second case")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    # LEOD's tracker settings (min_track_len 6), as the reference figure was measured with
    pseudo = PseudoConfig(obj_thresh=[0.5], cls_thresh=[0.5], min_track_len=6)
    cfg = replace(pseudo, track_method="forward_or_backward", inpaint=True).tracker
    print(f"load average before: {loadavg()}")
    print(f"{'case':<22} {'median ms':>10} {'min ms':>8} {'frames/s':>10} {'x 611':>7}   stats")
    for name, miss in (("reference input", 0.0), (f"{args.miss:.0%} misses", args.miss)):
        rng = np.random.default_rng(args.seed)
        frames = synthetic_sequence(rng, args.frames, args.objects, args.fps, miss)
        median, best, stats = time_filter(frames, cfg, args.repeats)
        fps = args.frames / median
        ratio = fps / REFERENCE_FPS
        print(
            f"{name:<22} {median * 1e3:>10.2f} {best * 1e3:>8.2f} {fps:>10,.0f} {ratio:>7.1f}   "
            f"in={stats.boxes_in} ignored={stats.boxes_ignored} inpainted={stats.boxes_inpainted} "
            f"tracks={stats.tracks} long={stats.long_tracks}"
        )
    print(f"load average after:  {loadavg()}")


if __name__ == "__main__":
    main()
