"""The experiment and sharing workflow of docs/workflow.md, for real, on the tiny chain.

One temporary project (a git repository with the tiny pipeline run and committed, and a
local-folder DVC remote as default) serves every test here:

* two experiments queued with ``dvc exp run --queue`` and run in parallel by
  ``dvc queue start -j 2`` log into the one MLflow store at the project root, tagged with
  their experiment names, with artefacts under the root's ``mlruns``; they recompute only
  the stages their params touch;
* the run-cache restores a stage whose command, deps and params were seen before, a
  training and an evaluation included;
* ``dvc push`` / ``dvc pull`` round trips through a local folder and through S3 (moto's
  server on 127.0.0.1), and a fresh clone + ``dvc pull`` has nothing left to reproduce;
* ``dvc exp push`` / ``dvc exp pull`` share an experiment through a bare git remote.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from leod.plumbing.compare import compare
from tiny import dvc_env, git, make_repo_copy, sh, start_queue, tiny_chain, wait_for_queues

pytestmark = pytest.mark.slow

DVC = [sys.executable, "-m", "dvc"]
EXPERIMENTS = {"mtl2": 2, "mtl4": 4}  # name -> pseudo.min_track_len
#: stages that do not depend on pseudo.* and so must never run inside those experiments
SHARED_STAGES = {"train_r0", "train_full", "evaluate@r0", "evaluate@full"}
QUEUE_TIMEOUT_S = 900


def _metrics(root: Path, env: dict) -> dict:
    return json.loads(sh([*DVC, "metrics", "show", "--json"], root, env).stdout)


def _runs(root: Path) -> list:
    """Every MLflow run in the store at the project root."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, max_results=10_000)


def _cached_outputs(root: Path) -> list[str]:
    """The outputs dvc.lock records that git does not track (metrics and the report are in
    git, a folder such as reports/clips by its files)."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    tracked = set(git(root, "ls-files").splitlines())
    outs = {out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])}
    return sorted(o for o in outs - tracked if not any(t.startswith(f"{o}/") for t in tracked))


def _lower(creds: dict[str, str]) -> dict[str, str]:
    """AWS_* environment names as boto3 keyword arguments."""
    return {k.lower(): v for k, v in creds.items()}


def _clone(source: str | Path, dest: Path, env: dict) -> Path:
    sh(["git", "clone", "-q", str(source), str(dest)], dest.parent, env)
    return dest


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny chain reproduced and committed, with a default local-folder DVC remote."""
    base = tmp_path_factory.mktemp("workflow")
    root = make_repo_copy(base / "project", tiny_chain)
    env = dvc_env()
    sh([*DVC, "repro"], root, env)
    sh([*DVC, "remote", "add", "-d", "storage", str(base / "dvc-storage")], root, env)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "results of the tiny chain")
    return root


@pytest.fixture(scope="module")
def experiments(project: Path) -> str:
    """The queued sweep of docs/workflow.md: two experiments run in parallel; returns `dvc queue status`."""
    env = dvc_env()
    for name, length in EXPERIMENTS.items():
        sh(
            [*DVC, "exp", "run", "--queue", "-n", name, "-S", f"pseudo.min_track_len={length}"],
            project,
            env,
        )
    start_queue(project, env, jobs=2)
    status = wait_for_queues({project: list(EXPERIMENTS)}, env, QUEUE_TIMEOUT_S)[project]
    sh([*DVC, "queue", "stop"], project, env)
    return status


def test_queued_experiments_log_into_the_root_store(project: Path, experiments: str) -> None:
    status = experiments
    for name in EXPERIMENTS:
        assert any(name in line and "Success" in line for line in status.splitlines()), status

    runs = _runs(project)
    by_exp: dict[str, set[str]] = {name: set() for name in EXPERIMENTS}
    for run in runs:
        exp = run.data.tags.get("dvc.exp_name")
        if exp in by_exp:
            by_exp[exp].add(run.data.tags["dvc.stage"])
            assert run.info.status == "FINISHED"
            # artefacts live beside the root store, never in the deleted .dvc/tmp/exps copy
            where = run.info.artifact_uri.removeprefix("file://")
            assert where.startswith(f"{project}/mlruns") and ".dvc/tmp" not in where, where
    for name, stages in by_exp.items():
        # the tiny teacher's pseudo labels may not depend on min_track_len; then DVC rightly
        # skips everything downstream of pseudolabel@r1, so only that stage is required here
        assert "pseudolabel@r1" in stages, (name, stages)
        assert not stages & SHARED_STAGES, (name, stages & SHARED_STAGES)

    table = compare(project, list(EXPERIMENTS))
    for name in EXPERIMENTS:
        assert f"| {name} | r1 |" in table


def test_run_cache_restores_stages_seen_in_an_experiment(project: Path, experiments: str) -> None:
    """In the workspace, the params of experiment mtl2 find every changed stage in the run-cache."""
    env = dvc_env()
    before = len(_runs(project))
    out = sh([*DVC, "exp", "run", "-S", f"pseudo.min_track_len={EXPERIMENTS['mtl2']}"], project, env).stdout
    assert "Stage 'pseudolabel@r1' is cached - skipping run, checking out outputs" in out
    assert len(_runs(project)) == before  # nothing executed, so MLflow got no new run
    # back to the committed baseline for the tests that follow
    git(project, "checkout", "--", ".")
    sh([*DVC, "checkout", "--force"], project, env)
    assert "up to date" in sh([*DVC, "status"], project, env).stdout


def test_run_cache_restores_a_training_and_its_evaluation(project: Path) -> None:
    """Trainings and evaluations land in the run-cache as the data stages do (DVC keeps no
    entry for a stage with an uncached output): with r0's outputs gone, ``dvc repro``
    restores them instead of training and evaluating again."""
    env = dvc_env()
    before = len(_runs(project))
    shutil.rmtree(project / "models" / "r0")
    for name in ("train.csv", "test_predictions.npz", "confusion.csv"):
        (project / "reports" / "r0" / name).unlink()
    out = sh([*DVC, "repro", "evaluate@r0"], project, env).stdout
    for stage in ("train_r0", "evaluate@r0"):
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in out, out
    assert len(_runs(project)) == before  # nothing trained or evaluated
    assert "up to date" in sh([*DVC, "status"], project, env).stdout


def test_local_remote_push_pull_and_fresh_clone(project: Path, experiments: str, tmp_path: Path) -> None:
    env = dvc_env()
    sh([*DVC, "push"], project, env)
    metrics = _metrics(project, env)

    # lose the cache and every cached output (not the git-tracked files beside them, such
    # as the .gitignore files DVC writes), then get them back from the remote
    shutil.rmtree(project / ".dvc" / "cache")
    outs = _cached_outputs(project)
    assert "models/r1" in outs and "pseudo/r1" in outs
    for out in outs:
        path = project / out
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    sh([*DVC, "pull"], project, env)
    assert "up to date" in sh([*DVC, "status"], project, env).stdout
    assert _metrics(project, env) == metrics

    clone = _clone(project, tmp_path / "clone", env)
    sh([*DVC, "pull"], clone, env)
    assert (clone / "models" / "r1" / "model.pt").is_file()
    assert "Data and pipelines are up to date" in sh([*DVC, "repro"], clone, env).stdout
    assert json.loads(sh([*DVC, "metrics", "show", "--json"], clone, env).stdout)[""] == metrics[""]


def test_s3_remote_round_trip(project: Path, experiments: str, tmp_path: Path) -> None:
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    pytest.importorskip("dvc_s3")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_lower(creds))
        s3.create_bucket(Bucket="leod")  # DVC never creates buckets
        env = dvc_env(**creds)
        clone = _clone(project, tmp_path / "clone", env)
        for repo in (project, clone):
            sh([*DVC, "remote", "add", "--local", "s3", "s3://leod/cache"], repo, env)
            sh([*DVC, "remote", "modify", "--local", "s3", "endpointurl", endpoint], repo, env)
        sh([*DVC, "push", "-r", "s3"], project, env)
        sh([*DVC, "pull", "-r", "s3"], clone, env)
        assert "up to date" in sh([*DVC, "status"], clone, env).stdout
        assert (clone / "models" / "r1" / "model.pt").read_bytes() == (
            project / "models" / "r1" / "model.pt"
        ).read_bytes()
    finally:
        server.stop()


def test_exp_push_and_pull_through_a_bare_git_remote(
    project: Path, experiments: dict, tmp_path: Path
) -> None:
    env = dvc_env()
    origin = tmp_path / "origin.git"
    sh(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path, env)
    git(project, "remote", "add", "origin", str(origin))
    git(project, "push", "-q", "origin", "main")
    sh([*DVC, "exp", "push", "origin", "mtl2"], project, env)

    clone = _clone(origin, tmp_path / "clone", env)
    sh([*DVC, "exp", "pull", "origin", "mtl2"], clone, env)
    assert compare(clone, ["mtl2"]) == compare(project, ["mtl2"])
    shown = sh([*DVC, "exp", "show", "--json"], clone, env).stdout
    assert "mtl2" in shown
