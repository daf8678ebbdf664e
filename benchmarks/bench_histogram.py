"""Benchmark: numba stacked histogram vs RVT's torch ``put_(accumulate=True)`` construction.

Run: ``.venv/bin/python benchmarks/bench_histogram.py`` (``--help`` for sizes). Cases:

1. one window, 1M events at 240x304, 10 bins (Gen1): uniform random x, y, p, sorted t over 50 ms;
2. the batched preprocessing path, ``--windows`` consecutive 50 ms windows at the same density,
   against RVT's loop (slice each window with searchsorted, construct, as preprocess_dataset.py);
3. one 1Mpx window (720x1280, downsampled by 2 like RVT's ``_ds2_nearest``).

Each implementation runs once to warm up (numba compilation, torch allocator), then the median
of ``--repeats`` timed runs is reported. The numba timings include input validation and the
output allocation; torch gets its int64 tensors ready-made, as RVT's reader hands them over.
The machine is shared, so the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from histogram_reference import reference_downsample, reference_histogram  # noqa: E402
from leod.events.types import Events  # noqa: E402
from leod.preprocess.histogram import stacked_histogram, stacked_histograms  # noqa: E402
from timing import wall_ms  # noqa: E402  (benchmarks/, the script's own folder)

WINDOW_US = 50_000


@dataclass(frozen=True)
class Row:
    case: str
    impl: str
    threads: int
    ms: float
    min_ms: float
    events: int


def uniform_events(rng: np.random.Generator, n: int, height: int, width: int, duration_us: int) -> Events:
    return Events(
        np.sort(rng.integers(0, duration_us, n)).astype(np.int64),
        rng.integers(0, width, n).astype(np.uint16),
        rng.integers(0, height, n).astype(np.uint16),
        rng.integers(0, 2, n).astype(np.uint8),
    )


def as_tensors(events: Events) -> tuple[torch.Tensor, ...]:
    """RVT's reader output: int64 tensors (made before timing, like RVT's h5 read)."""
    return tuple(torch.from_numpy(col.astype(np.int64)) for col in (events.t, events.x, events.y, events.p))


def rvt_windows(
    cols: tuple[torch.Tensor, ...],
    ends: np.ndarray,
    height: int,
    width: int,
    nbins: int,
    cutoff: int,
    downsample: bool,
) -> list[torch.Tensor]:
    """RVT's preprocessing loop: slice every window with searchsorted, build it, downsample it."""
    t_np = cols[0].numpy()
    first = np.searchsorted(t_np, ends - WINDOW_US, side="left")
    stop = np.searchsorted(t_np, ends, side="right")
    out = []
    for a, z in zip(first, stop, strict=True):
        hist = reference_histogram(*(c[a:z] for c in cols), height, width, nbins, cutoff)
        out.append(reference_downsample(hist) if downsample else hist)
    return out


def thread_counts() -> list[int]:
    return sorted({1, numba.config.NUMBA_NUM_THREADS})


def bench_case(
    name: str,
    events: Events,
    ends: np.ndarray | None,
    height: int,
    width: int,
    nbins: int,
    cutoff: int,
    downsample: bool,
    repeats: int,
) -> list[Row]:
    """Time numba and torch at 1 and all threads on one case, after checking they agree exactly."""
    cols = as_tensors(events)
    if ends is None:

        def numba_fn() -> np.ndarray:
            return stacked_histogram(events, height, width, nbins, cutoff, downsample)[None]

        def torch_fn() -> list[torch.Tensor]:
            hist = reference_histogram(*cols, height, width, nbins, cutoff)
            return [reference_downsample(hist) if downsample else hist]
    else:

        def numba_fn() -> np.ndarray:
            return stacked_histograms(events, ends, WINDOW_US, height, width, nbins, cutoff, downsample)

        def torch_fn() -> list[torch.Tensor]:
            return rvt_windows(cols, ends, height, width, nbins, cutoff, downsample)

    if not np.array_equal(numba_fn(), torch.stack(torch_fn()).numpy()):
        raise SystemExit(f"{name}: numba and torch histograms differ")
    rows = []
    for threads in thread_counts():
        numba.set_num_threads(threads)
        torch.set_num_threads(threads)
        rows.append(Row(name, "numba", threads, *wall_ms(numba_fn, repeats), len(events)))
        rows.append(Row(name, "torch put_ (RVT)", threads, *wall_ms(torch_fn, repeats), len(events)))
    return rows


def print_table(rows: list[Row]) -> None:
    torch_ms = {(r.case, r.threads): r.ms for r in rows if r.impl != "numba"}
    torch_best = {case: min(ms for (c, _), ms in torch_ms.items() if c == case) for case, _ in torch_ms}
    header = (
        f"{'case':<34} {'implementation':<17} {'thr':>3} {'median ms':>9} {'M ev/s':>7} {'min ms':>8} "
        f"{'x torch':>7} {'x best':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        rate = r.events / r.ms / 1e3
        same = torch_ms[(r.case, r.threads)] / r.ms
        best = torch_best[r.case] / r.ms
        print(
            f"{r.case:<34} {r.impl:<17} {r.threads:>3} {r.ms:>9.2f} {rate:>7.0f} {r.min_ms:>8.2f} "
            f"{same:>7.1f} {best:>6.1f}"
        )
    print("M ev/s from the median; x torch: speed-up over torch at the same thread count; x best: over")
    print("torch's best thread count (all from medians)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events per 50 ms window")
    parser.add_argument("--windows", type=int, default=20, help="windows in the batched case")
    parser.add_argument("--nbins", type=int, default=10)
    parser.add_argument("--cutoff", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    load_before = os.getloadavg()
    gen1 = uniform_events(rng, args.events, 240, 304, WINDOW_US)
    rows = bench_case("1 window 240x304", gen1, None, 240, 304, args.nbins, args.cutoff, False, args.repeats)
    batch = uniform_events(rng, args.events * args.windows, 240, 304, WINDOW_US * args.windows)
    ends = WINDOW_US * np.arange(1, args.windows + 1, dtype=np.int64)
    rows += bench_case(
        f"{args.windows} windows x 50 ms 240x304",
        batch,
        ends,
        240,
        304,
        args.nbins,
        args.cutoff,
        False,
        max(3, args.repeats // 3),
    )
    mpx = uniform_events(rng, args.events, 720, 1280, WINDOW_US)
    rows += bench_case(
        "1 window 720x1280 ds2", mpx, None, 720, 1280, args.nbins, args.cutoff, True, args.repeats
    )
    print_table(rows)
    print(
        f"numba threading layer {numba.threading_layer()}, {numba.config.NUMBA_NUM_THREADS} threads max, "
        f"{os.cpu_count()} CPUs; load average before {load_before}, after {os.getloadavg()}"
    )


if __name__ == "__main__":
    main()
