"""benchmarks/selftrain_seeds.py: the chain over several seeds, aggregated per run from each
seed's DVC experiment (experiments faked as git refs, as DVC keeps them; no training)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from leod.plumbing.cpu import threads_per_job
from leod.plumbing.errors import ConfigError
from leod.plumbing.seeds import (
    aggregate,
    lost_experiments,
    markdown,
    progress_line,
    queue_command,
    queue_states,
    queue_workers,
    seed_runs,
    stat_cell,
    workers_idle,
    workers_missing,
)
from leod.report.rows import collect_rows
from tiny import git

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("selftrain_seeds", REPO / "benchmarks" / "selftrain_seeds.py")
assert _spec and _spec.loader
selftrain_seeds = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(selftrain_seeds)

# per seed: test AP of r0, r1, control_r1, r2 (None: gated, no test file), full; r1's pseudo precision
SEEDS = {
    0: {"r0": 0.20, "r1": 0.30, "control_r1": 0.25, "r2": 0.33, "full": 0.40, "p1": 0.90},
    1: {"r0": 0.22, "r1": 0.26, "control_r1": 0.27, "r2": None, "full": 0.42, "p1": 0.80},
    2: {"r0": 0.18, "r1": 0.31, "control_r1": 0.24, "r2": 0.35, "full": 0.38, "p1": 0.85},
}


def _write_seed(folder: Path, values: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("r0", "r1", "control_r1", "r2", "full"):
        if values[name] is not None:
            (folder / f"test_{name}.json").write_text(json.dumps({"AP": values[name], "AP50": 0.5}))
    for name in ("r0", "full"):
        (folder / f"train_{name}.json").write_text(
            json.dumps({"best_val_AP": 0.1, "best_step": 4, "steps": 4})
        )
    for name in ("r1", "r2"):
        gated = values[name] is None
        train = {
            "best_val_AP": 0.1,
            "best_step": -1 if gated else 4,
            "steps": 0 if gated else 4,
            "gated": gated,
        }
        if gated:
            train["gate_reason"] = "too few pseudo labels"
        (folder / f"train_{name}.json").write_text(json.dumps(train))
        (folder / f"pseudo_{name}.json").write_text(
            json.dumps({"precision@0.5": values["p1"], "recall@0.5": 0.5})
        )


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repo whose experiments seed-0, seed-1, seed-2 hold one seed's metrics each."""
    root = tmp_path / "repo"
    (root / "metrics").mkdir(parents=True)
    (root / "README").write_text("x\n")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "base")
    base = git(root, "rev-parse", "HEAD")
    for seed, values in SEEDS.items():
        _write_seed(root / "metrics", values)
        git(root, "add", "-A")
        git(root, "commit", "-qm", f"seed {seed}")
        # a DVC experiment is a commit kept under refs/exps/<2 hex>/<38 hex>/<name>
        git(
            root, "update-ref", f"refs/exps/{base[:2]}/{base[2:]}/seed-{seed}", git(root, "rev-parse", "HEAD")
        )
        git(root, "reset", "-q", "--hard", base)
    return root


def _summary(tmp_path: Path):
    runs = seed_runs([0, 1, 2], "seed", [])
    per_seed = {}
    for run in runs:
        folder = tmp_path / run.name
        _write_seed(folder, SEEDS[run.seed])
        per_seed[run.name] = collect_rows(folder, None, ["r0", "r1", "r2"], "full")
    return aggregate(runs, per_seed)


def test_aggregation_is_mean_sample_std_min_max_over_seeds(tmp_path: Path) -> None:
    summary = _summary(tmp_path)
    assert [(r.run, r.kind) for r in summary.runs] == [
        ("r0", "baseline"),
        ("r1", "round"),
        ("r2", "round"),
        ("full", "full"),
    ]
    r0, r1, r2, full = summary.runs
    assert set(r0.metrics) == {"AP"} and set(full.metrics) == {"AP"}
    ap = r1.metrics["AP"]
    assert ap.values == (0.30, 0.26, 0.31) and ap.n == 3 and ap.missing == 0
    assert ap.mean == pytest.approx(0.29, abs=1e-12)
    assert ap.std == pytest.approx(statistics.stdev([0.30, 0.26, 0.31]), abs=1e-12)
    assert ap.std == pytest.approx(((0.01**2 + 0.03**2 + 0.02**2) / 2) ** 0.5, abs=1e-12)  # n - 1
    assert (ap.min, ap.max) == (0.26, 0.31)
    gain = r1.metrics["gain"]
    assert gain.values == pytest.approx((0.05, -0.01, 0.07))
    assert r1.gain_positive_everywhere is False  # seed 1's round lost to its control
    assert r1.metrics["pseudo_precision50"].values == (0.90, 0.80, 0.85)
    # gap closed of seed 0: (0.30 - 0.20) / (0.40 - 0.20)
    assert r1.metrics["gap_closed"].values[0] == pytest.approx(0.5)
    assert r0.metrics["AP"].mean == pytest.approx(0.20) and full.gain_positive_everywhere is None


def test_a_missing_value_is_counted_not_dropped(tmp_path: Path) -> None:
    r2 = _summary(tmp_path).runs[2]
    ap = r2.metrics["AP"]
    assert ap.values == (0.33, None, 0.35) and ap.n == 2 and ap.missing == 1
    assert ap.mean == pytest.approx(0.34) and ap.std == pytest.approx(statistics.stdev([0.33, 0.35]))
    assert r2.gated == ("seed-1",) and r2.absent == ()
    control = r2.metrics["control_AP"]  # r2 has no control in any seed
    assert control.n == 0 and control.missing == 3 and control.mean is None
    assert stat_cell(control) == "missing in 3/3"
    assert stat_cell(ap) == "0.340 ± 0.014 (min 0.330, max 0.350), n 2/3"
    assert r2.gain_positive_everywhere is None


def test_an_undefined_gap_closed_says_why(tmp_path: Path) -> None:
    runs = seed_runs([5], "seed", [])
    _write_seed(tmp_path, {**SEEDS[0], "full": 0.1})  # full below the baseline: no gap to close
    summary = aggregate(runs, {"seed-5": collect_rows(tmp_path, None, ["r0", "r1", "r2"], "full")})
    assert summary.runs[1].metrics["gap_closed"].values == (None,)
    text = markdown(summary)
    assert "- r1: no gap closed in seed-5: full AP 0.100 <= baseline AP 0.200: no gap to close" in text
    assert "| r1 | 0.300 (min 0.300, max 0.300) |" in text  # one seed: no standard deviation


def test_gain_positive_in_every_seed(tmp_path: Path) -> None:
    positive = {s: {**v, "control_r1": 0.1} for s, v in SEEDS.items()}
    runs = seed_runs([0, 1, 2], "seed", [])
    per_seed = {}
    for run in runs:
        _write_seed(tmp_path / run.name, positive[run.seed])
        per_seed[run.name] = collect_rows(tmp_path / run.name, None, ["r0", "r1"], "full")
    assert aggregate(runs, per_seed).runs[1].gain_positive_everywhere is True
    (tmp_path / "seed-2" / "test_control_r1.json").unlink()
    per_seed["seed-2"] = collect_rows(tmp_path / "seed-2", None, ["r0", "r1"], "full")
    assert aggregate(runs, per_seed).runs[1].gain_positive_everywhere is None  # unknown, not "yes"


def test_seed_runs_and_their_queue_commands() -> None:
    run = seed_runs([3], "ratio01", ["subsample.ratio=0.01", "~rounds.r2", "+rounds.r1.steps=60"])[0]
    assert queue_command(run) == [
        "dvc", "exp", "run", "--queue", "-n", "ratio01-3",
        "-S", "seed=3", "-S", "synthetic.seed=3", "-S", "subsample.ratio=0.01", "-S", "~rounds.r2",
        "-S", "+rounds.r1.steps=60",
    ]  # fmt: skip
    assert threads_per_job(16, 2) == 8 and threads_per_job(2, 3) == 1
    for seeds, prefix, extra, message in (
        ([], "seed", [], "--seeds: give at least one seed"),
        ([1, 1], "seed", [], "each seed once"),
        ([0], "a/b", [], "--prefix 'a/b'"),
        ([0], "seed", ["subsample.ratio"], "--set 'subsample.ratio': expected key=value"),
        ([0], "seed", ["~rounds.r2=1"], "expected key=value .* or ~key"),
        ([0], "seed", ["seed=4"], "set per seed by --seeds"),
        ([0], "seed", ["++synthetic.seed=4"], "set per seed by --seeds"),
        ([0], "seed", ["+++rounds.r1.steps=9"], "expected key=value"),
    ):
        with pytest.raises(ConfigError, match=message):
            seed_runs(seeds, prefix, extra)


def test_queue_states_and_progress_line() -> None:
    status = """Task     Name      Created    Status
a1b2c3d  seed-0    09:00 PM   Running
e4f5a6b  seed-1    09:00 PM   Queued
0a1b2c3  seed-2    08:00 PM   Failed
9f8e7d6  seed-2    09:01 PM   Queued
1234567  seed-10   09:01 PM   Failed
"""
    names = ["seed-0", "seed-1", "seed-2", "seed-3", "seed-4"]
    states = queue_states(status, names, finished={"seed-4"})
    # a retried seed-2 is queued again; seed-10's failure is not seed-1's
    assert states == {
        "seed-0": "Running",
        "seed-1": "Queued",
        "seed-2": "Queued",
        "seed-3": "Unknown",
        "seed-4": "Success",
    }
    line = progress_line(states, 125.0)
    assert line == "done 1/5, running 1, queued 2, failed 0, not listed 1, 2:05 elapsed, ETA ~9 min"
    assert progress_line({"a": "Queued"}, 5).endswith("0:05 elapsed, ETA after the first experiment")
    assert progress_line({"a": "Success", "b": "Failed"}, 60).endswith("1:00 elapsed, finished")
    assert queue_workers(status) is None
    assert queue_workers(status + "\nWorker status: 0 active, 0 idle\n") == 0
    assert queue_workers(status + "\nWorker status: 0 active, 1 idle\n") == 1
    # 1 running, 2 queued: 2 jobs want 2 workers; never more than the experiments left
    assert workers_missing(states, 1, jobs=2) == 1
    assert workers_missing(states, 0, jobs=2) == 2
    assert workers_missing(states, 0, jobs=8) == 3
    assert workers_missing(states, 2, jobs=2) == 0
    assert workers_missing(states, None, jobs=2) == 0  # no worker line: unknown, start nothing
    assert workers_missing({"a": "Running", "b": "Success"}, 0, jobs=2) == 0  # nothing queued
    assert workers_missing({"a": "Queued", "b": "Queued"}, 0, jobs=2) == 0  # none ended: workers starting


def test_a_running_experiment_without_workers_is_lost_and_idle_workers_are_waited_for() -> None:
    running = "Task     Name    Created    Status\n0c8d5cc  seed-2  05:48 AM   Running\n"
    done = "Task     Name    Created    Status\n00bf0f8  seed-0  05:48 AM   Success\n"
    both = running + "00bf0f8  seed-0  05:48 AM   Success\n"
    assert lost_experiments(both, 0, ["00bf0f8a509a"]) == ["seed-2"]
    assert lost_experiments(both, 0, ["00bf0f8a509a", "0c8d5cc27e1f"]) == []  # started: its own process
    assert lost_experiments(both, 1, []) == []
    assert lost_experiments(both, None, []) == []  # no worker line: unknown
    assert lost_experiments(both.replace("Running", "Queued"), 0, []) == []
    assert workers_idle(done + "\nWorker status: 0 active, 1 idle\n")
    assert not workers_idle(done + "\nWorker status: 0 active, 0 idle\n")
    assert not workers_idle(running + "\nWorker status: 1 active, 0 idle\n")  # busy, not exiting
    assert not workers_idle(done)


def test_wait_kills_an_experiment_the_queue_lost(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Seen in a full test run: a worker shutting down took seed-2 and ended; dvc listed it
    Running for ever. wait() kills it after LOST_AFTER_S and reports it failed."""
    calls: list[list[str]] = []
    killed: set[str] = set()

    def fake_dvc(args: list[str], repo: Path, env: dict[str, str] | None = None) -> str:
        calls.append(list(args))
        if args[:2] == ["queue", "kill"]:
            killed.update(args[2:])
        state = "Failed" if "seed-2" in killed else "Running"
        workers = "Worker status: 0 active, 0 idle"
        return f"Task  Name  Created  Status\n0c8d5cc  seed-2  05:48 AM  {state}\n\n{workers}\n"

    monkeypatch.setattr(selftrain_seeds, "_dvc", fake_dvc)
    monkeypatch.setattr(selftrain_seeds, "experiment_commits", lambda repo, name: [])
    monkeypatch.setattr(selftrain_seeds, "LOST_AFTER_S", 0.05)
    assert selftrain_seeds.wait(tmp_path, ["seed-2"], jobs=1, poll_s=0.02) == ["seed-2"]
    assert ["queue", "kill", "seed-2"] in calls


def test_collect_only_end_to_end(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert selftrain_seeds.main(["--collect-only", "--repo", str(repo)]) == 0
    out = capsys.readouterr().out
    md = (repo / "reports" / "seeds.md").read_text()
    assert out.startswith(md) and out.endswith(
        f"wrote {repo}/reports/seeds.md and {repo}/reports/seeds.json\n"
    )
    lines = md.splitlines()
    assert lines[0] == "# Self-training over 3 seeds"
    assert "| r1 | 0.290 ± 0.026 (min 0.260, max 0.310) | 0.253 ± 0.015 (min 0.240, max 0.270) |" in md
    assert "| r2 | 0.340 ± 0.014 (min 0.330, max 0.350), n 2/3 | missing in 3/3 |" in md
    assert "- r2: gated (not trained) in seed-1" in lines
    assert not [line for line in lines if "no gap closed" in line]  # every seed's full AP > r0's
    assert "| seed-1 | 1 | r1 | 0.260 | 0.270 | -0.010 |" in md
    data = json.loads((repo / "reports" / "seeds.json").read_text())
    assert [e["name"] for e in data["experiments"]] == ["seed-0", "seed-1", "seed-2"]
    assert data["experiments"][1]["set"] == ["seed=1", "synthetic.seed=1"]
    runs = {r["run"]: r for r in data["runs"]}
    assert [r["run"] for r in data["runs"]] == ["r0", "r1", "r2", "full"]
    r1 = runs["r1"]
    assert r1["gain_positive_in_every_seed"] is False and r1["metrics"]["AP"]["n"] == 3
    assert r1["metrics"]["AP"]["mean"] == pytest.approx(0.29)
    assert runs["r2"]["metrics"]["AP"]["values"] == [0.33, None, 0.35] and runs["r2"]["gated_in"] == [
        "seed-1"
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seeds", "0", "7"], "'seed-7' is neither 'workspace', a DVC experiment nor a git revision"),
        (["--seeds"], "--seeds: give at least one seed"),
        (["--set", "subsample.ratio"], "--set 'subsample.ratio': expected key=value"),
        (["--jobs", "0"], "--jobs: at least 1"),
        (["--out", "reports/seeds.txt"], "expected a .md file"),
    ],
)
def test_bad_input_is_one_error_line(
    repo: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert selftrain_seeds.main(["--collect-only", "--repo", str(repo), *argv]) == 2
    captured = capsys.readouterr()
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, captured.err
    assert captured.out == "" and not (repo / "reports").exists()  # nothing half-written


STAGE = """import json, os, sys, yaml
p = yaml.safe_load(open("params.yaml"))
if p["seed"] == 2:
    sys.exit("seed 2 breaks on purpose")
ap = 0.1 * p["seed"] + 0.01 * p["synthetic"]["seed"] + p["lever"]
os.makedirs("metrics", exist_ok=True)
json.dump({"AP": ap}, open("metrics/test_r0.json", "w"))
json.dump({"AP": ap + 0.5}, open("metrics/test_full.json", "w"))
"""
DVC_YAML = """stages:
  run:
    cmd: python stage.py
    deps: [stage.py]
    params: [seed, synthetic.seed, lever]
    metrics:
      - metrics/test_r0.json: {cache: false}
      - metrics/test_full.json: {cache: false}
"""


@pytest.mark.slow
def test_queue_runs_reuses_and_reports_a_failed_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real `dvc queue` on a one-stage project (seconds; tests/test_workflow.py queues the
    leod chain): queued, run, collected; existing experiments reused; a failing seed named."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "stage.py").write_text(STAGE)
    (root / "params.yaml").write_text("seed: 0\nsynthetic:\n  seed: 0\nlever: 0.0\n")
    (root / "dvc.yaml").write_text(DVC_YAML)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    git(root, "init", "-q")
    subprocess.run(["dvc", "init", "-q"], cwd=root, check=True)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "one stage")
    argv = ["--repo", str(root), "--poll-s", "1", "--set", "lever=0.25"]
    real_dvc, status_calls = selftrain_seeds._dvc, []

    def first_status_fails(args: list[str], repo: Path, env: dict[str, str] | None = None) -> str:
        # `dvc queue status` can fail while a running experiment holds DVC's lock
        if args[:2] == ["queue", "status"]:
            status_calls.append(args)
            if len(status_calls) == 1:
                raise selftrain_seeds.LeodError("dvc queue status failed in .: Having any troubles?")
        return real_dvc(args, repo, env)

    monkeypatch.setattr(selftrain_seeds, "_dvc", first_status_fails)
    assert selftrain_seeds.main([*argv, "--seeds", "0", "1"]) == 0
    out = capsys.readouterr().out
    assert "warning: dvc queue status failed in .: Having any troubles?; polling again in 1 s" in out
    assert "seed-0: queued (seed=0 synthetic.seed=0 lever=0.25)" in out
    assert "queue started: 1 job(s)" in out and "done 2/2, running 0, queued 0, failed 0" in out
    assert re.search(r"done 0/2, running [01], queued [12], failed 0", out)  # polled while it runs
    assert "| r0 | 0.305 ± 0.078 (min 0.250, max 0.360) |" in out  # 0.25 + 0.11 * seed

    assert selftrain_seeds.main([*argv, "--seeds", "0", "1", "2"]) == 2
    captured = capsys.readouterr()
    assert "seed-0: experiment exists, reused (--force runs it again)" in captured.out
    assert "seed-2: queued" in captured.out and "seed-1: queued" not in captured.out
    assert "seed 2 breaks on purpose" in captured.err  # the tail of its queue log
    assert captured.err.strip().splitlines()[-1].startswith("error: experiment(s) seed-2 failed")
    seeds = json.loads((root / "reports" / "seeds.json").read_text())["experiments"]
    assert [e["name"] for e in seeds] == ["seed-0", "seed-1"]  # the failed run wrote nothing
