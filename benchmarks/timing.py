"""Wall-clock timing shared by the benchmark scripts (each imports it from its own folder)."""

from __future__ import annotations

import time
from collections.abc import Callable

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
