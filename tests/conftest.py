"""Shared fixtures: the repository root, the real-event samples, and params loading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REAL_EVENTS = REPO.parent / "shared" / "real-events"

# Unit tests never write to the user's MLflow store unless a test opts in.
os.environ.setdefault("LEOD_TRACKING", "0")


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
