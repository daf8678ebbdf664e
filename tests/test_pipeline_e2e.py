"""The whole DVC chain on a tiny configuration, in a temporary copy of the repository.

Runs `dvc repro` for real (synthesize -> ... -> one self-training round -> evaluate ->
report) with the quality gate closed, checks the outputs and the gate, and that a second
`dvc repro` has nothing to do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tiny import tiny_dict

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def tiny(params: dict) -> dict:
    p = tiny_dict(params, train_sequences=3)
    p["subsample"]["ratio"] = 0.2
    p["train"].update(steps=4, eval_every=4, checkpoint_every=2, log_every=1, pct_start=0.5, device="cpu")
    p["pseudo"].update(batch_size=2)
    p["selftrain"]["min_precision"] = 0.999  # closed gate: r1 carries r0 forward
    p["rounds"] = {"r1": {"prev": "r0"}}
    return p


def run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_tiny_chain_with_one_gated_round(tmp_path):
    work = tmp_path / "repo"
    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files + ["dvc.yaml", "params.yaml"]:
        src = REPO / name
        if src.is_file() and not name.startswith(("metrics/", "reports/")) and name != "dvc.lock":
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, work / name)
    params = tiny(yaml.safe_load((work / "params.yaml").read_text()))
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "LEOD_TRACKING": "1",
    }
    run(["git", "init", "-q"], work, env)
    run(["git", "add", "-A"], work, env)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "tiny"], work, env)
    run([sys.executable, "-m", "dvc", "repro"], work, env)

    gate = json.loads((work / "metrics" / "train_r1.json").read_text())
    assert gate["gated"] is True and "precision@0.5" in gate["gate_reason"]
    assert (work / "models" / "r1" / "model.pt").read_bytes() == (
        work / "models" / "r0" / "model.pt"
    ).read_bytes()
    quality = json.loads((work / "metrics" / "pseudo_r1.json").read_text())
    assert 0 <= quality["precision@0.5"] <= 1 and quality["frames_evaluated"] > 0
    for name in ("r0", "full", "r1"):
        assert "AP" in json.loads((work / "metrics" / f"test_{name}.json").read_text())
    assert (work / "reports" / "report.md").is_file()
    assert "gated" in (work / "reports" / "report.md").read_text()

    again = run([sys.executable, "-m", "dvc", "repro"], work, env)
    assert "Data and pipelines are up to date" in again.stdout
