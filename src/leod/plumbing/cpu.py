"""How many OMP/MKL threads each of several parallel jobs gets on this machine."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, which containers and taskset narrow
    (``os.cpu_count()`` counts the whole machine's)."""
    return len(os.sched_getaffinity(0))


def threads_per_job(cpus: int, jobs: int) -> int:
    """OMP/MKL threads of each of ``jobs`` parallel jobs on ``cpus`` cores (no oversubscription)."""
    return max(1, cpus // max(1, jobs))
