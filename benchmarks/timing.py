"""Wall-clock timing shared by the benchmark scripts (each imports it from its own folder)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def wall_ms(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median and minimum wall time of ``fn`` in ms over ``repeats`` runs, after one warm-up run.

    The minimum is the least disturbed run, a useful second figure on a shared machine.
    """
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3, float(np.min(times)) * 1e3


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages (other jobs on the machine skew timings)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"
