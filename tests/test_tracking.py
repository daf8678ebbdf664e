"""MLflow tracking against a real sqlite store in a temporary git repository (no mocks)."""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from leod.plumbing.errors import LeodError
from leod.plumbing.tracking import (
    NullTracker,
    ensure_store,
    find_root,
    git_tags,
    print_ui_hint,
    stage_run,
    tracking_uri,
)
from tiny import git

_ENV = ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_STAGE", "DVC_EXP_NAME", "DVC_EXP_BASELINE_REV")


@pytest.fixture(scope="session")
def initialised_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow database with its schema created once: creating the schema runs
    dozens of migrations (seconds), which only the concurrency test needs to repeat."""
    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    _client(f"sqlite:///{db}").search_experiments()
    return db


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, initialised_db: Path) -> Path:
    """A committed git repository with a dvc.yaml and an empty store, as the working
    directory, with tracking on."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LEOD_TRACKING", "1")
    root = tmp_path / "repo"
    root.mkdir()
    (root / "dvc.yaml").write_text("stages: {}\n")
    git(root, "init", "-q")
    git(root, "add", "dvc.yaml")
    git(root, "commit", "-q", "-m", "init")
    shutil.copyfile(initialised_db, root / "mlflow.db")
    monkeypatch.chdir(root)
    return root


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_uri_resolution(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nested = repo / "src" / "deep"
    nested.mkdir(parents=True)
    monkeypatch.chdir(nested)
    assert find_root() == repo
    assert tracking_uri() == f"sqlite:///{repo}/mlflow.db"
    assert tracking_uri().startswith("sqlite:////")  # absolute: survives DVC's temp folders

    # A queued DVC experiment runs in a temp checkout; DVC_ROOT names the main repository.
    exp_dir = repo / ".dvc" / "tmp" / "exps" / "tmpabc"
    exp_dir.mkdir(parents=True)
    (exp_dir / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(exp_dir)
    assert find_root() == exp_dir
    monkeypatch.setenv("DVC_ROOT", str(repo))
    assert tracking_uri() == f"sqlite:///{repo}/mlflow.db"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"
    assert print_ui_hint(f"sqlite:///{repo}/my runs.db") == (
        f"mlflow ui --backend-store-uri 'sqlite:///{repo}/my runs.db'"
    )


def test_find_root_falls_back_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DVC_ROOT", raising=False)
    bare = tmp_path / "bare"
    bare.mkdir()
    if any((p / m).exists() for p in bare.parents for m in ("dvc.yaml", ".git")):
        pytest.skip("the temp folder lies inside a repository")
    monkeypatch.chdir(bare)
    assert find_root() == bare


def test_stage_run_logs_params_metrics_tags_and_artifacts(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DVC_STAGE", "train_round@r1")
    monkeypatch.setenv("DVC_EXP_NAME", "lucky-exp")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "abc123")
    params = {
        "train": {"lr": 0.001, "sizes": [64, 128], "mixed": {"on": True}},
        "model": {"preset": "tiny"},
        "notes": "x" * 7000,
    }
    report = repo / "report.txt"
    report.write_text("hello\n")
    with stage_run("train", params, "leod-test", round_name="r1", extra_tags={"seed": 7}) as tracker:
        for step in range(3):
            tracker.log_metrics(
                {"loss": 1.0 / (step + 1), "ap": float("nan") if step == 1 else 0.1 * step}, step
            )
        tracker.log_artifact(report)
        tracker.log_dict({"classes": ["car", "ped"]}, "meta/classes.json")
        tracker.set_tags({"best_step": 2})
        run_id = tracker.run_id

    uri = f"sqlite:///{repo}/mlflow.db"
    client = _client(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "train_round@r1"

    logged = run.data.params
    assert {k: logged[k] for k in ("train.lr", "train.sizes", "train.mixed.on", "model.preset")} == {
        "train.lr": "0.001",
        "train.sizes": "[64,128]",
        "train.mixed.on": "True",
        "model.preset": "tiny",
    }
    assert len(logged["notes"]) == 6000 and logged["notes"].endswith("[truncated]")

    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")] == [
        (0, 1.0),
        (1, 0.5),
        (2, pytest.approx(1 / 3)),
    ]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "ap")] == [(0, 0.0), (2, 0.2)]

    tags = run.data.tags
    assert tags["mlflow.source.git.commit"] == git(repo, "rev-parse", "HEAD")
    assert tags["git.dirty"] == "false"
    assert tags["dvc.exp_name"] == "lucky-exp"
    assert tags["dvc.exp_baseline_rev"] == "abc123"
    assert tags["dvc.stage"] == "train_round@r1"
    assert (tags["stage"], tags["round"], tags["seed"], tags["best_step"]) == ("train", "r1", "7", "2")

    artifact_dir = Path(run.info.artifact_uri)
    assert artifact_dir.is_absolute()
    assert artifact_dir.is_relative_to(repo / "mlruns")
    assert (artifact_dir / "report.txt").read_text() == "hello\n"
    assert (artifact_dir / "meta" / "classes.json").is_file()
    assert sorted(a.path for a in client.list_artifacts(run_id)) == ["meta", "report.txt"]

    assert tags["leod.pid"] == str(os.getpid()) and tags["leod.host"]


def test_git_dirty_is_judged_on_code_and_params_only(repo: Path) -> None:
    # dvc.lock, dvc.yaml and outputs change during every `dvc repro`: they do not make a run dirty
    (repo / "dvc.yaml").write_text("stages: {changed: {}}\n")
    (repo / "dvc.lock").write_text("schema: '2.0'\n")
    assert git_tags()["git.dirty"] == "false"
    (repo / "src" / "leod").mkdir(parents=True)
    (repo / "src" / "leod" / "new.py").write_text("x = 1\n")
    assert git_tags()["git.dirty"] == "true"
    shutil.rmtree(repo / "src")
    (repo / "params.yaml").write_text("seed: 0\n")
    assert git_tags()["git.dirty"] == "true"


def test_experiment_opens_in_the_runs_view(repo: Path) -> None:
    """MLflow 3's UI shows an experiment without this tag as a GenAI (traces) experiment."""
    client = _client(f"sqlite:///{repo}/mlflow.db")
    client.create_experiment("old")  # made before the tag existed
    for name in ("leod-test", "old"):
        _, experiment_id = ensure_store(name)
        assert (
            client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
        )


def test_unreachable_http_server_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    import time

    with socket.socket() as sock:  # a port that was just free: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("LEOD_TRACKING", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    with pytest.raises(LeodError, match=f"MLflow server http://127.0.0.1:{port} cannot be reached"):
        ensure_store("leod-test")
    assert time.monotonic() - start < 30


_KILLED_CHILD = """
import os, signal
from leod.plumbing.tracking import stage_run
with stage_run("train", {"a": 1}, "leod-test") as tracker:
    print(tracker.run_id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_run_of_a_killed_stage_is_marked_killed_by_the_next_run(repo: Path) -> None:
    child = subprocess.run([sys.executable, "-c", _KILLED_CHILD], capture_output=True, text=True, check=False)
    assert child.returncode == -9
    killed_id = child.stdout.split()[0]
    client = _client(f"sqlite:///{repo}/mlflow.db")
    assert client.get_run(killed_id).info.status == "RUNNING"
    # a RUNNING run of a live process (this one) is left alone
    live = client.create_run(
        client.get_run(killed_id).info.experiment_id,
        tags={"leod.host": client.get_run(killed_id).data.tags["leod.host"], "leod.pid": str(os.getpid())},
    )
    with stage_run("train", {"a": 1}, "leod-test"):
        assert client.get_run(killed_id).info.status == "KILLED"
        assert client.get_run(live.info.run_id).info.status == "RUNNING"


def test_failing_body_marks_run_failed(repo: Path) -> None:
    with pytest.raises(ZeroDivisionError), stage_run("eval", {"a": 1}, "leod-test") as tracker:
        run_id = tracker.run_id
        _ = 1 / 0
    run = _client(f"sqlite:///{repo}/mlflow.db").get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.info.run_name == "eval"
    assert run.data.params == {"a": "1"}


def test_ensure_store_is_idempotent_and_rejects_deleted_experiment(repo: Path) -> None:
    uri, first = ensure_store("leod-test")
    assert ensure_store("leod-test", root=repo) == (uri, first)
    client = _client(uri)
    assert client.get_experiment(first).artifact_location == str(repo / "mlruns")
    client.delete_experiment(first)
    with pytest.raises(LeodError, match="'leod-test' .* is deleted; restore it"):
        ensure_store("leod-test")


def _create_concurrently(root: str, barrier, results) -> None:
    import mlflow  # noqa: F401  (import first so both processes reach the barrier ready to race)

    barrier.wait(timeout=60)
    try:
        results.put(ensure_store("shared-exp", root=Path(root)))
    except Exception as exc:  # reported to the parent, which fails the test with it
        results.put(repr(exc))


def test_concurrent_creation_yields_one_experiment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_create_concurrently, args=(str(tmp_path), barrier, results)) for _ in range(2)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert outcomes[0] == outcomes[1] and outcomes[0][0] == uri, outcomes
    found = _client(uri).search_experiments(filter_string="name = 'shared-exp'")
    assert [e.experiment_id for e in found] == [outcomes[0][1]]


def test_missing_store_folder_fails_before_the_body(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo}/no/such/dir/mlflow.db")
    entered = []
    with (
        pytest.raises(
            LeodError,
            match=r"cannot be written: folder .*no/such/dir does not exist; set MLFLOW_TRACKING_URI",
        ),
        stage_run("train", {}, "leod-test"),
    ):
        entered.append(True)
    assert entered == []


def test_read_only_root_fails_before_the_body(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DVC_ROOT", str(repo))
    mode = repo.stat().st_mode
    repo.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(repo, os.W_OK):
            pytest.skip("running as root: chmod does not stop writes")
        entered = []
        with pytest.raises(LeodError, match="is not writable"), stage_run("train", {}, "leod-test"):
            entered.append(True)
        assert entered == []
    finally:
        repo.chmod(mode)


def test_disabled_tracking_is_a_no_op(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEOD_TRACKING", "0")
    db_before = (repo / "mlflow.db").read_bytes()
    with stage_run("train", {"a": 1}, "leod-test") as tracker:
        assert isinstance(tracker, NullTracker) and tracker.run_id is None
        tracker.log_metrics({"loss": math.inf}, step=1)
        tracker.log_artifact(repo / "missing.txt")
        tracker.log_dict({}, "x.json")
        tracker.set_tags({"a": 1})
        tracker.log_params({"b": 2})
    assert (repo / "mlflow.db").read_bytes() == db_before
    assert not (repo / "mlruns").exists()  # the store was never opened


def test_ranks_other_than_0_log_nothing(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torchrun (RANK set) only rank 0 opens the store and records the stage."""
    monkeypatch.setenv("LEOD_TRACKING", "1")
    monkeypatch.setenv("RANK", "1")
    db_before = (repo / "mlflow.db").read_bytes()
    with stage_run("train", {"a": 1}, "leod-test") as tracker:
        assert isinstance(tracker, NullTracker)
    assert (repo / "mlflow.db").read_bytes() == db_before
    monkeypatch.setenv("RANK", "0")
    with stage_run("train", {"a": 1}, "leod-test") as tracker:
        assert not isinstance(tracker, NullTracker)


def test_import_does_not_load_mlflow() -> None:
    code = "import sys, leod.plumbing.tracking; print('mlflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert done.stdout.strip() == "False"
