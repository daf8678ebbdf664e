"""The tiny synthetic configuration that the slow and end-to-end tests share."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from leod.plumbing.cpu import job_thread_env

REPO = Path(__file__).resolve().parents[1]


def tiny_dict(params: dict, train_sequences: int = 2) -> dict:
    """params.yaml shrunk to a 64x48 sensor and 1 s sequences: a dataset in seconds."""
    d = copy.deepcopy(params)
    d["datasets"]["synthetic"].update(height=48, width=64, min_box_diag=4, min_box_side=2)
    d["datasets"]["synthetic"]["evaluation"] = {"skip_first_us": 0, "min_diag": 4, "min_side": 2}
    d["synthetic"].update(sequences={"train": train_sequences, "val": 1, "test": 1}, duration_s=1.0)
    d["synthetic"]["objects"]["car"].update(width_px={"min": 12, "max": 16}, height_px={"min": 7, "max": 9})
    d["synthetic"]["objects"]["pedestrian"].update(
        width_px={"min": 4, "max": 6}, height_px={"min": 9, "max": 12}
    )
    d["preprocess"]["workers"] = 1
    d["loader"].update(batch_size=2, sequence_length=3)
    d["selftrain"]["round_steps"] = None  # rounds follow the tests' few train.steps
    return d


def tiny_chain(params: dict) -> dict:
    """The whole DVC chain shrunk to seconds: 3 train sequences, 4 steps, one round."""
    p = tiny_dict(params, train_sequences=3)
    p["subsample"]["ratio"] = 0.2
    p["train"].update(steps=4, eval_every=4, checkpoint_every=2, log_every=1, pct_start=0.5, device="cpu")
    p["pseudo"].update(batch_size=2)
    p["rounds"] = {"r1": {"prev": "r0"}}
    return p


def git(repo: Path, *args: str) -> str:
    """A git command in ``repo`` with a fixed identity; its stdout."""
    cmd = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def make_repo_copy(dest: Path, edit: Callable[[dict], dict]) -> Path:
    """The project's tracked files (no results) in a new git repository at ``dest``, with
    params.yaml passed through ``edit``, committed: what a fresh clone would hold."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    for name in files.stdout.split():
        src = REPO / name
        if src.is_file() and not name.startswith(("metrics/", "reports/")) and name != "dvc.lock":
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    params = edit(yaml.safe_load((dest / "params.yaml").read_text()))
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-qm", "tiny")
    return dest


def dvc_env(**extra: str) -> dict[str, str]:
    """Environment for running dvc (and the stages it spawns) from this venv, offline."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)  # default: the store at the repository root
    env.update(DVC_NO_ANALYTICS="1", LEOD_TRACKING="1", PYTHONUNBUFFERED="1", **extra)
    return env


def sh(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a command; fail the test with its output tail when it fails."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def start_queue(cwd: Path, env: dict[str, str], jobs: int, side_by_side: int | None = None) -> None:
    """``dvc queue start -j jobs``, returning once the workers run, with OMP/MKL threads for
    ``side_by_side`` trainings sharing the cores (default ``jobs``; two 2-thread trainings on 2
    cores wait on each other's threads many times over). The workers inherit dvc's stdout and
    stderr: through pipes (:func:`sh`) the call would last until they all ended."""
    log = cwd.parent / f"{cwd.name}-queue-start.log"
    with log.open("w") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "dvc", "queue", "start", "-j", str(jobs)],
            cwd=cwd,
            env={**env, **job_thread_env(side_by_side or jobs)},
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=300,
        )
    assert proc.returncode == 0, f"dvc queue start failed:\n{log.read_text()[-3000:]}"


def wait_for_queues(queued: dict[Path, list[str]], env: dict[str, str], timeout_s: float) -> dict[Path, str]:
    """Wait until the experiments queued in each repository (repository -> their names) have
    ended; returns each repository's final ``dvc queue status``. A finished experiment shows as
    its git ref, which costs nothing to read; ``dvc queue status`` (seconds of CPU, taken from the
    experiments) runs when all of a repository's refs are there, every 30 s to notice a failed
    experiment, and until it lists none queued or running."""
    from leod.plumbing.compare import experiment_commits  # 0.5 s to import: only the queue tests pay it

    deadline = time.monotonic() + timeout_s
    pending = dict(queued)
    status: dict[Path, str] = {}
    next_check = time.monotonic() + 30
    while pending:
        check = time.monotonic() >= next_check
        for repo, names in list(pending.items()):
            if check or all(experiment_commits(repo, name) for name in names):
                text = sh([sys.executable, "-m", "dvc", "queue", "status"], repo, env).stdout
                if not any(word in text for word in ("Queued", "Running")):
                    status[repo] = text
                    del pending[repo]
        if check:
            next_check = time.monotonic() + 30
        assert time.monotonic() < deadline, f"queues still run after {timeout_s} s: {list(pending)}"
        time.sleep(2)
    return status
