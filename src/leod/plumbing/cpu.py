"""How many OMP/MKL threads each of several parallel jobs gets on this machine."""

from __future__ import annotations

import os

#: the variables sizing the CPU thread pools of torch's kernels (OpenMP) and of MKL
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, which containers and taskset narrow
    (``os.cpu_count()`` counts the whole machine's)."""
    return len(os.sched_getaffinity(0))


def threads_per_job(cpus: int, jobs: int) -> int:
    """OMP/MKL threads of each of ``jobs`` parallel jobs on ``cpus`` cores (no oversubscription)."""
    return max(1, cpus // max(1, jobs))


def thread_env(threads: int) -> dict[str, str]:
    """Environment entries that give a child process ``threads`` OMP and MKL threads."""
    return dict.fromkeys(THREAD_VARS, str(threads))


def job_thread_env(jobs: int) -> dict[str, str]:
    """:func:`thread_env` for one of ``jobs`` jobs sharing this process's cores."""
    return thread_env(threads_per_job(usable_cores(), jobs))
