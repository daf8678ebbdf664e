"""MLflow's UI as a user opens it: `python -m leod ui` on a store with stage runs, the page
it prints loaded in headless Chromium, and the runs table checked in the rendered page."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from leod.plumbing.mlflow_store import VIEW_COLUMNS, VIEW_KEY, runs_url
from leod.plumbing.tracking import ensure_store, stage_run

ROOT = Path(__file__).resolve().parents[1]
_BROWSERS = ("chromium", "chromium-browser", "google-chrome")
_RUNS = {
    "train_r0": {"best_val_AP": 0.301},
    "evaluate@r0": {"test/AP": 0.223, "test/AP50": 0.574},
    "eval_pseudo@r1": {"pseudo/precision_at_0.5": 0.841, "pseudo/recall_at_0.5": 0.658},
}


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder whose store holds one run per stage, logged as the stages log."""
    for name in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LEOD_TRACKING", "1")
    repo = tmp_path / "project"
    repo.mkdir()
    (repo / "dvc.yaml").write_text("stages: {}\n")
    shutil.copyfile(ROOT / "params.yaml", repo / "params.yaml")
    monkeypatch.chdir(repo)
    for run_name, metrics in _RUNS.items():
        monkeypatch.setenv("DVC_STAGE", run_name)
        with stage_run(run_name.split("@")[0], {"seed": 0}, "leod") as tracker:
            tracker.log_metrics(metrics)
    monkeypatch.delenv("DVC_STAGE")
    return repo


def test_runs_url_and_view_state(store: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri, experiment_id = ensure_store("leod")
    url = runs_url(experiment_id, "http://host:5000/")
    assert url == (
        f"http://host:5000/#/experiments/{experiment_id}/runs"
        f"?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"
    )
    tags = MlflowClient(uri).get_experiment(experiment_id).tags
    view = json.loads(tags[f"mlflow.sharedViewState.{VIEW_KEY}"])
    assert view["selectedColumns"] == view["columnOrder"] == list(VIEW_COLUMNS)
    # every metric column is one the runs carry (a renamed metric would show an empty column)
    logged = {key for metrics in _RUNS.values() for key in metrics}
    assert {c[len("metrics.`") : -1] for c in VIEW_COLUMNS if c.startswith("metrics.")} == logged


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in time")


@pytest.mark.slow
def test_ui_opens_on_the_runs_table(store: Path, tmp_path: Path) -> None:
    browser = next((b for b in map(shutil.which, _BROWSERS) if b), None)
    if browser is None:
        pytest.skip("no Chromium to render the MLflow page")
    port = _free_port()
    log = tmp_path / "ui.log"
    with open(log, "w") as out:
        ui = subprocess.Popen(
            [sys.executable, "-m", "leod", "ui", "--port", str(port)],
            cwd=store,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 240
        _wait_http(f"http://127.0.0.1:{port}/health", deadline)
        printed = [line for line in log.read_text().splitlines() if line.startswith("runs of experiment")]
        url = printed[0].split(": ", 1)[1]
        assert url.startswith(f"http://127.0.0.1:{port}/#/experiments/")
        page = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--window-size=1600,900",
                "--virtual-time-budget=30000",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=180,
            check=True,
        ).stdout
        # pointed at a tracking server, `ui` starts nothing and prints that server's address
        server = f"http://127.0.0.1:{port}"
        again = subprocess.run(
            [sys.executable, "-m", "leod", "ui"],
            cwd=store,
            env={**os.environ, "MLFLOW_TRACKING_URI": server},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip().endswith(url.replace(f"http://127.0.0.1:{port}", server))
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        try:
            ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
            ui.wait()
    for run_name in _RUNS:
        assert f">{run_name}<" in page, f"run {run_name} not in the rendered runs table"
    for column in ("test/AP", "best_val_AP", "pseudo/precision_at_0.5"):
        assert column in page


@pytest.mark.parametrize("keep_original", [False, True], ids=["moved", "copied"])
def test_store_follows_a_moved_or_copied_repository(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_original: bool
) -> None:
    from mlflow.tracking import MlflowClient

    uri, experiment_id = ensure_store("leod")
    client = MlflowClient(uri)
    run = client.search_runs([experiment_id], "attributes.run_name = 'train_r0'")[0]
    note = tmp_path / "note.txt"
    note.write_text("artefact\n")
    client.log_artifact(run.info.run_id, str(note))

    elsewhere = tmp_path / "elsewhere" / "project copy_1"
    elsewhere.parent.mkdir()
    (shutil.copytree if keep_original else shutil.move)(store, elsewhere)
    monkeypatch.chdir(elsewhere)
    new_uri, new_id = ensure_store("leod")
    assert (new_uri, new_id) == (f"sqlite:///{elsewhere}/mlflow.db", experiment_id)
    client = MlflowClient(new_uri)
    assert client.get_experiment(new_id).artifact_location == f"{elsewhere}/mlruns"
    runs = client.search_runs([new_id])
    assert len(runs) == len(_RUNS)
    assert all(r.info.artifact_uri.startswith(f"{elsewhere}/mlruns/") for r in runs)
    local = Path(client.download_artifacts(run.info.run_id, "note.txt", str(tmp_path / "dl")))
    assert local.read_text() == "artefact\n"
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["note.txt"]
    if keep_original:  # the original keeps its own paths
        monkeypatch.chdir(store)
        assert (
            MlflowClient(ensure_store("leod")[0])
            .get_run(run.info.run_id)
            .info.artifact_uri.startswith(f"{store}/mlruns/")
        )
