"""``python -m leod compare``: the round table from metrics/ of the workspace, commits and experiments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from leod.plumbing.compare import compare, discover_runs, resolve
from leod.plumbing.errors import ConfigError
from leod.plumbing.git import git as run_git
from tiny import git

REPO = Path(__file__).resolve().parents[1]


def _write_metrics(folder: Path, ap: dict[str, float], precision: dict[str, float]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in ap.items():
        (folder / f"test_{name}.json").write_text(json.dumps({"AP": value, "AP50": 2 * value}))
        train = {"best_val_AP": value, "best_step": 10, "steps": 20}
        (folder / f"train_{name}.json").write_text(json.dumps(train))
    for name, value in precision.items():
        (folder / f"pseudo_{name}.json").write_text(json.dumps({"precision@0.5": value, "recall@0.5": 0.5}))
        train = {"best_val_AP": 0.1, "best_step": 10, "steps": 20, "gated": False}
        (folder / f"train_{name}.json").write_text(json.dumps(train))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repo whose first commit has rounds r1 (with its control), r2, r10; an experiment
    ref; a changed workspace."""
    root = tmp_path / "repo"
    _write_metrics(
        root / "metrics",
        {"r0": 0.2, "r1": 0.3, "r2": 0.35, "r10": 0.36, "full": 0.4, "control_r1": 0.28},
        {"r1": 0.9, "r2": 0.8, "r10": 0.7},
    )
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "base")
    # a DVC experiment is a commit kept under refs/exps/<2 hex>/<38 hex>/<name>
    _write_metrics(root / "metrics", {"r1": 0.25}, {})
    git(root, "add", "-A")
    git(root, "commit", "-qm", "exp")
    exp = git(root, "rev-parse", "HEAD")
    base = git(root, "rev-parse", "HEAD~1")
    git(root, "update-ref", f"refs/exps/{base[:2]}/{base[2:]}/tidy-tram", exp)
    git(root, "reset", "-q", "--hard", "HEAD~1")
    _write_metrics(root / "metrics", {"r1": 0.4}, {})  # uncommitted workspace change
    return root


def test_runs_are_discovered_in_natural_order(repo: Path) -> None:
    # control_r1 is r1's control, shown in r1's row, not a round of its own
    assert discover_runs(repo / "metrics") == (["r0", "r1", "r2", "r10"], "full")


def test_workspace_commit_and_experiment_side_by_side(repo: Path) -> None:
    table = compare(repo, ["workspace", "HEAD", "tidy-tram"])
    lines = {tuple(c.strip() for c in line.strip("|").split("|")) for line in table.splitlines()[2:]}
    # gain = AP_r1 - AP_control_r1; gap closed = (AP_r1 - AP_r0) / (AP_full - AP_r0)
    assert ("workspace", "r1", "0.400", "0.800", "0.280", "0.120", "0.900", "0.500", "1.000", "no") in lines
    assert ("HEAD", "r1", "0.300", "0.600", "0.280", "0.020", "0.900", "0.500", "0.500", "no") in lines
    assert ("tidy-tram", "r1", "0.250", "0.500", "0.280", "-0.030", "0.900", "0.500", "0.250", "no") in lines
    assert ("HEAD", "r2", "0.350", "0.700", "missing", "missing", "0.800", "0.500", "0.750", "no") in lines
    assert ("HEAD", "full", "0.400", "0.800", "-", "-", "-", "-", "-", "-") in lines
    assert len(lines) == 3 * 5


def test_rounds_that_params_no_longer_declares_are_left_out(repo: Path) -> None:
    """An experiment run with ``-S '~rounds.r2'`` keeps its parent's metrics of r2 (and r10):
    the table shows the rounds its params.yaml declares, the workspace without one shows all."""
    (repo / "params.yaml").write_text("rounds:\n  r1: {prev: r0}\n")
    git(repo, "add", "params.yaml")
    git(repo, "commit", "-qm", "r1 only")
    table = compare(repo, ["HEAD", "HEAD~1"])
    runs = [tuple(c.strip() for c in line.strip("|").split("|"))[:2] for line in table.splitlines()[2:]]
    assert [r for s, r in runs if s == "HEAD"] == ["r0", "r1", "full"]
    assert [r for s, r in runs if s == "HEAD~1"] == ["r0", "r1", "r2", "r10", "full"]
    (repo / "params.yaml").write_text("rounds: [unclosed\n")
    with pytest.raises(ConfigError, match="workspace: params.yaml is not valid YAML"):
        compare(repo, ["workspace"])


def test_unknown_source_is_one_clear_error(repo: Path) -> None:
    with pytest.raises(ConfigError, match="neither 'workspace', a DVC experiment nor a git revision"):
        resolve(repo, "no-such-thing")
    done = subprocess.run(
        [sys.executable, "-m", "leod", "compare", "--repo", str(repo), "no-such-thing"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and done.stderr.startswith("error: ") and done.stdout == ""


def test_make_repro_ends_with_the_table_the_report_and_mlflow(repo: Path, monkeypatch) -> None:
    """The last command of ``make repro``, run on a finished workspace (metrics/, report, store)."""
    from leod.plumbing.mlflow_store import ensure_store, runs_url

    recipe = (REPO / "Makefile").read_text().split("\nrepro:")[1].split("\n\n")[0]
    last = recipe.strip().splitlines()[-1]
    assert "dvc metrics show" not in recipe and last.endswith("-m leod compare --next-steps")
    (repo / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (repo / "reports").mkdir()
    (repo / "reports" / "report.md").write_text("# report\n")
    for key in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "LEOD_TRACKING"):
        monkeypatch.delenv(key, raising=False)
    uri, experiment_id = ensure_store("leod", root=repo)
    done = subprocess.run(
        [sys.executable, "-m", "leod", "compare", "--next-steps", "--repo", str(repo)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out[0].startswith("| source | run | test AP") and "| workspace | r1 | 0.400 |" in out[3]
    assert f"report: {repo / 'reports' / 'report.md'}" in out
    assert f"MLflow: python -m leod ui   (or: mlflow ui --backend-store-uri {uri})" in out
    assert out[-1].strip() == f"then open {runs_url(experiment_id)}"
    url = runs_url(experiment_id)
    assert f"#/experiments/{experiment_id}/runs?workflowType=machine_learning&" in url


def test_next_steps_creates_no_store_and_honours_tracking_off(tmp_path: Path, monkeypatch) -> None:
    from leod.plumbing.compare import next_steps

    for key in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "LEOD_TRACKING"):
        monkeypatch.delenv(key, raising=False)
    text = next_steps(tmp_path, "leod")
    assert f"report: {tmp_path / 'reports' / 'report.md'} (not written yet)" in text
    assert "mlflow ui --backend-store-uri" in text and "then open" not in text
    assert not (tmp_path / "mlflow.db").exists()
    monkeypatch.setenv("LEOD_TRACKING", "0")
    assert next_steps(tmp_path, "leod").endswith("MLflow: tracking is off (LEOD_TRACKING=0)")


def test_git_failure_is_none_or_an_error_naming_the_command(tmp_path: Path) -> None:
    assert run_git("rev-parse", "HEAD", cwd=tmp_path) is None  # not a repository
    with pytest.raises(ConfigError, match=f"git rev-parse HEAD failed in {tmp_path}: .*not a git repository"):
        run_git("rev-parse", "HEAD", cwd=tmp_path, required=True)
    git(tmp_path, "init", "-q")
    assert run_git("rev-parse", "--git-dir", cwd=tmp_path, required=True) == ".git\n"
