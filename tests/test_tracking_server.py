"""A team's shared tracking server, for real: PostgreSQL + S3 (moto) behind ``mlflow server``.

The test starts a throw-away PostgreSQL cluster (Debian's server binaries; ``.ci/run``
installs them when missing), moto's S3 server and ``mlflow server`` on 127.0.0.1, then two
clones of one tiny project each queue an experiment and run their queues at the same time
with ``MLFLOW_TRACKING_URI`` pointing at the server. Both experiments' stage runs, their
metrics and their artefacts (proxied by the server into the S3 bucket) must be there.
Every server is stopped and its folder removed at the end.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from leod.plumbing.cpu import thread_env
from tiny import dvc_env, git, make_repo_copy, sh, start_queue, tiny_chain, wait_for_queues

pytestmark = pytest.mark.slow

DVC = [sys.executable, "-m", "dvc"]
BUCKET = "mlflow-team"
CREDS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
#: experiment name -> the learning rate its round 1 overrides (so train@r1 really runs)
EXPERIMENTS = {"alice": 0.001, "bob": 0.003}
START_TIMEOUT_S = 60
QUEUE_TIMEOUT_S = 900


def _boto_kwargs() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDS["AWS_DEFAULT_REGION"],
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin(tool: str) -> str:
    """A PostgreSQL server binary: on PATH, or in Debian's versioned folder."""
    found = shutil.which(tool) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))), None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL's {tool} is missing: .ci/run must install postgresql")
        pytest.skip(f"PostgreSQL's {tool} is not installed (apt-get install postgresql)")
    return found


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the ``postgres`` user then."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _wait_http(url: str, what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{what} did not answer at {url} within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@dataclass(frozen=True)
class Services:
    tracking_uri: str
    s3_endpoint: str


@contextlib.contextmanager
def _postgres(folder: Path) -> Iterator[str]:
    """A PostgreSQL cluster in ``folder`` on a free port; yields its SQLAlchemy URI."""
    user = _as_postgres_user()
    data, port = folder / "pgdata", _free_port()
    folder.chmod(0o777)  # the postgres user writes its cluster and socket here
    if user:
        shutil.chown(folder, "postgres")
    subprocess.run(
        [*user, _pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    pg_ctl = [*user, _pg_bin("pg_ctl"), "-D", str(data)]
    subprocess.run([*pg_ctl, "-o", options, "-l", str(folder / "pg.log"), "-w", "start"], check=True)
    try:
        subprocess.run(
            [*user, _pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow"],
            check=True,
        )
        yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "-w", "stop"], check=False, capture_output=True)


@contextlib.contextmanager
def _moto_bucket() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 with the bucket created; yields its endpoint."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, **_boto_kwargs())
        s3.create_bucket(Bucket=BUCKET)  # neither MLflow nor DVC creates buckets
        yield endpoint
    finally:
        server.stop()


@contextlib.contextmanager
def _mlflow_server(backend: str, s3_endpoint: str, log: Path) -> Iterator[str]:
    """``mlflow server`` on the PostgreSQL store, proxying artefacts to S3; yields its URI."""
    port = _free_port()
    env = {**os.environ, **CREDS, "MLFLOW_S3_ENDPOINT_URL": s3_endpoint}
    with open(log, "w") as out:
        server = subprocess.Popen(
            [
                sys.executable, "-m", "mlflow", "server",
                "--backend-store-uri", backend,
                "--artifacts-destination", f"s3://{BUCKET}/artifacts",
                "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            ],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        uri = f"http://127.0.0.1:{port}"
        _wait_http(f"{uri}/health", "mlflow server", log)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server's worker processes too
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


@pytest.fixture(scope="module")
def services() -> Iterator[Services]:
    """PostgreSQL, moto's S3 and ``mlflow server`` on them; all stopped afterwards."""
    for module in ("boto3", "moto.server", "psycopg"):
        pytest.importorskip(module)
    # not pytest's tmp_path: its parents are private to root, and postgres must reach this
    folder = Path(tempfile.mkdtemp(prefix="leod-team-"))
    try:
        with contextlib.ExitStack() as stack:
            endpoint = stack.enter_context(_moto_bucket())
            backend = stack.enter_context(_postgres(folder))
            uri = stack.enter_context(_mlflow_server(backend, endpoint, folder / "mlflow.log"))
            yield Services(tracking_uri=uri, s3_endpoint=endpoint)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _queue_and_wait(clones: dict[str, Path], env: dict[str, str]) -> None:
    """Queue one experiment per clone, start both queues at once, wait for both."""
    for name, clone in clones.items():
        sh(
            [*DVC, "exp", "run", "--queue", "-n", name, "-S", f"+rounds.r1.lr={EXPERIMENTS[name]}"],
            clone,
            env,
        )
    for clone in clones.values():
        start_queue(clone, env, jobs=1, side_by_side=len(clones))
    status = wait_for_queues({clone: [name] for name, clone in clones.items()}, env, QUEUE_TIMEOUT_S)
    for name, clone in clones.items():
        assert any(name in line and "Success" in line for line in status[clone].splitlines()), status[clone]
        sh([*DVC, "queue", "stop"], clone, env)


def test_two_clones_log_queued_experiments_into_one_server(services: Services, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    # clients know only the server: artefacts go through it, S3 credentials stay there
    env = dvc_env(MLFLOW_TRACKING_URI=services.tracking_uri, **thread_env(1))
    project = make_repo_copy(tmp_path / "project", tiny_chain)
    sh([*DVC, "repro"], project, env)
    storage = tmp_path / "dvc-storage"
    sh([*DVC, "remote", "add", "-d", "storage", str(storage)], project, env)
    git(project, "add", "-A")
    git(project, "commit", "-qm", "tiny chain results")
    sh([*DVC, "push"], project, env)

    clones = {}
    for name in EXPERIMENTS:
        clones[name] = tmp_path / f"clone-{name}"
        sh(["git", "clone", "-q", str(project), str(clones[name])], tmp_path, env)
        sh([*DVC, "pull"], clones[name], env)
    _queue_and_wait(clones, env)

    client = MlflowClient(tracking_uri=services.tracking_uri)
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments], max_results=10_000)
    baseline = [r for r in runs if not r.data.tags.get("dvc.exp_name")]
    assert {r.data.tags["dvc.stage"] for r in baseline} >= {"train_r0", "pseudolabel@r1", "train@r1"}
    for name, lr in EXPERIMENTS.items():
        mine = {r.data.tags["dvc.stage"]: r for r in runs if r.data.tags.get("dvc.exp_name") == name}
        # only the round's training and what follows it depend on rounds.r1.lr
        assert {"train@r1", "evaluate_round@r1"} <= set(mine), (name, sorted(mine))
        assert "train_r0" not in mine
        train = mine["train@r1"]
        assert train.info.status == "FINISHED"
        assert float(train.data.params["train.lr"]) == pytest.approx(lr)
        assert "val/AP" in train.data.metrics
        assert "test/AP" in mine["evaluate_round@r1"].data.metrics
        assert train.info.artifact_uri.startswith("mlflow-artifacts:"), train.info.artifact_uri
        listed = [a.path for a in client.list_artifacts(train.info.run_id)]
        assert listed, f"{name}: train@r1 logged no artefact"

    # the server stored every artefact in the bucket, not on a client's disk
    import boto3

    s3 = boto3.client("s3", endpoint_url=services.s3_endpoint, **_boto_kwargs())
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for o in page.get("Contents", [])]  # fmt: skip
    for name in EXPERIMENTS:
        run_id = next(
            r.info.run_id
            for r in runs
            if r.data.tags.get("dvc.exp_name") == name and r.data.tags["dvc.stage"] == "train@r1"
        )
        assert any(f"/{run_id}/artifacts/" in key for key in keys), (name, keys[:10])
