"""Shared fixtures: the repository root, the real-event samples, and params loading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from leod.plumbing.cpu import job_thread_env

REPO = Path(__file__).resolve().parents[1]
REAL_EVENTS = REPO.parent / "shared" / "real-events"

# Unit tests never write to the user's MLflow store unless a test opts in.
os.environ.setdefault("LEOD_TRACKING", "0")


def _share_cores_between_workers() -> None:
    """Under pytest-xdist (``make test``) the workers split the cores: each, and every stage or
    training it starts, gets cores / workers OMP/MKL threads unless the caller chose a count
    (2-thread trainings side by side on 2 cores run many times slower). Set before torch loads."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ.update(job_thread_env(workers))


_share_cores_between_workers()


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture
def params_dict() -> dict:
    """The repository's params.yaml as plain data (tests derive variants from it)."""
    import yaml

    return yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.fixture
def run_stage():
    """Run a stage script as DVC would (a fresh process), returning its exit status and output."""
    import subprocess
    import sys

    def run(stage: str, *args: object) -> subprocess.CompletedProcess:
        script = REPO / "stages" / f"{stage}.py"
        return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True)

    return run


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files with end-to-end (``slow``) tests first: ``make test`` hands whole files to its
    workers in this order, so the short files fill the end rather than one long file alone."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: order within a file kept
