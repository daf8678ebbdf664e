"""The whole DVC chain on a tiny configuration, in a temporary copy of the repository.

Runs `dvc repro` for real (synthesize -> ... -> one self-training round and its control ->
evaluate -> report) with the quality gate closed, checks the outputs and the gate, and that a second
`dvc repro` has nothing to do.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tiny import dvc_env, make_repo_copy, sh, tiny_chain

pytestmark = pytest.mark.slow


def gated(params: dict) -> dict:
    p = tiny_chain(params)
    p["selftrain"]["min_precision"] = 0.999  # closed gate: r1 carries r0 forward
    return p


def test_tiny_chain_with_one_gated_round(tmp_path: Path) -> None:
    work = make_repo_copy(tmp_path / "repo", gated)
    env = dvc_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
    sh([sys.executable, "-m", "dvc", "repro"], work, env)

    gate = json.loads((work / "metrics" / "train_r1.json").read_text())
    assert gate["gated"] is True and "precision@0.5" in gate["gate_reason"]
    assert (work / "models" / "r1" / "model.pt").read_bytes() == (
        work / "models" / "r0" / "model.pt"
    ).read_bytes()
    quality = json.loads((work / "metrics" / "pseudo_r1.json").read_text())
    assert 0 <= quality["precision@0.5"] <= 1 and quality["frames_evaluated"] > 0
    for name in ("r0", "full", "r1", "control_r1"):
        assert "AP" in json.loads((work / "metrics" / f"test_{name}.json").read_text())
    control = json.loads((work / "metrics" / "train_control_r1.json").read_text())
    assert control["steps"] == json.loads((work / "metrics" / "train_r0.json").read_text())["steps"]
    gains = json.loads((work / "reports" / "gains.json").read_text())["r1"]
    assert gains["gain"] == pytest.approx(gains["AP"] - gains["control_AP"])
    assert (work / "reports" / "report.md").is_file()
    assert "gated" in (work / "reports" / "report.md").read_text()
    assert "![r1](clips/r1.gif)" in (work / "reports" / "report.md").read_text()
    assert sorted(p.name for p in (work / "reports" / "clips").iterdir()) == ["r1.gif"]

    again = sh([sys.executable, "-m", "dvc", "repro"], work, env)
    assert "Data and pipelines are up to date" in again.stdout
