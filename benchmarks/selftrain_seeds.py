"""The self-training chain over several seeds: queue one DVC experiment per seed, run them, and
report each run's test AP, control AP, gain, gap closed and pseudo-label precision/recall as
mean ± sample std (min, max) over the seeds (src/leod/plumbing/seeds.py).

Each seed's experiment ``<prefix>-<seed>`` sets ``seed`` and ``synthetic.seed`` (training and
data) plus every ``--set key=value``. An experiment that already exists is reused, not run again
(``--force`` removes and reruns it). The queue runs ``--jobs`` experiments side by side, each
with OMP/MKL threads = cores / jobs. A failed experiment: the tail of its log is printed, the
others are waited for (and kept, so rerunning the same command retries only the failed seeds),
and the command ends with an ``error:`` line naming it, exit status 2, writing nothing.
``--collect-only`` only reads the existing experiments. ``--set '~rounds.r2'`` runs round 1 only
(a cheaper lever screen); ``--set +key=value`` adds a key params.yaml lacks (a round's own
``steps``); the summary lists the rounds each experiment's params.yaml declares.
Output: ``--out`` (markdown) and the JSON beside it (default reports/seeds.md and
reports/seeds.json).

    OMP_NUM_THREADS=1 python benchmarks/selftrain_seeds.py --seeds 0 1 2 --jobs 2
    python benchmarks/selftrain_seeds.py --set subsample.ratio=0.01 --prefix ratio01
    python benchmarks/selftrain_seeds.py --set '~rounds.r2' --set pseudo.min_side=4 --prefix side4
    python benchmarks/selftrain_seeds.py --set train.steps=1800 --set +rounds.r1.steps=600 --prefix conv3x
    python benchmarks/selftrain_seeds.py --collect-only
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from leod.plumbing.atomic import check_writable, write_json, write_text
from leod.plumbing.compare import experiment_commits, resolve, source_rows
from leod.plumbing.cpu import thread_env, threads_per_job, usable_cores
from leod.plumbing.errors import ConfigError, LeodError, one_line
from leod.plumbing.seeds import (
    SeedRun,
    aggregate,
    as_json,
    lost_experiments,
    markdown,
    progress_line,
    queue_command,
    queue_states,
    queue_workers,
    seed_runs,
    workers_idle,
    workers_missing,
)
from leod.plumbing.stage import report_error

LOG_TAIL_LINES = 30
#: polls in a row with none of our experiments running or queued before "not listed" is an error,
#: and failed `dvc queue status` calls in a row before that is one
IDLE_POLLS = 3
#: seconds an experiment may stay listed Running with no queue worker before it counts as lost
LOST_AFTER_S = 60.0
#: seconds to wait, once ours ended, for idle workers to exit before more can be queued safely
WORKER_EXIT_S = 60.0


def _dvc(args: Sequence[str], repo: Path, env: dict[str, str] | None = None) -> str:
    """stdout of ``dvc args`` in ``repo``; a failure is a :class:`LeodError` with dvc's last line.

    Output goes through temporary files, not pipes: ``dvc queue start`` leaves workers behind
    that inherit its stdout and stderr, and reading a pipe would wait until they exit."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        code = subprocess.run(
            ["dvc", *args], cwd=repo, env=env, stdout=out, stderr=err, check=False
        ).returncode
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if code != 0:
        tail = (stderr.strip() or stdout.strip()).splitlines()[-1:] or ["no output"]
        raise LeodError(f"dvc {' '.join(args)} failed in {repo}: {one_line(Exception(tail[0]))}")
    return stdout


def queue(repo: Path, runs: Sequence[SeedRun], force: bool) -> list[SeedRun]:
    """Queue each seed's experiment unless it exists (then say so); returns the queued ones."""
    queued = []
    for run in runs:
        if experiment_commits(repo, run.name):
            if not force:
                print(f"{run.name}: experiment exists, reused (--force runs it again)", flush=True)
                continue
            _dvc(["exp", "remove", run.name], repo)
        _dvc(queue_command(run)[1:], repo)
        print(f"{run.name}: queued ({' '.join(run.overrides)})", flush=True)
        queued.append(run)
    return queued


def wait(repo: Path, names: Sequence[str], jobs: int, poll_s: float) -> list[str]:
    """Start the queue and poll it until every experiment of ``names`` ended; returns the failed."""
    threads = threads_per_job(usable_cores(), jobs)
    env = {**os.environ, **thread_env(threads)}
    _dvc(["queue", "start", "-j", str(jobs)], repo, env)
    print(f"queue started: {jobs} job(s), {threads} thread(s) each", flush=True)
    start, idle, failures, lost_since = time.monotonic(), 0, 0, None
    while True:
        finished = {n for n in names if experiment_commits(repo, n)}
        try:
            status = _dvc(["queue", "status"], repo)
        except LeodError as exc:  # transient while an experiment holds DVC's lock; the queue runs on
            failures += 1
            if failures >= IDLE_POLLS:
                raise
            print(f"warning: {exc}; polling again in {poll_s:.0f} s", flush=True)
            time.sleep(poll_s)
            continue
        failures = 0
        states = queue_states(status, names, finished)
        print(progress_line(states, time.monotonic() - start), flush=True)
        pending = [n for n, s in states.items() if s in ("Running", "Queued", "Unknown")]
        if not pending:
            _let_idle_workers_exit(repo, status, min(poll_s, 2.0))
            return [n for n, s in states.items() if s == "Failed"]
        workers = queue_workers(status)
        runs = repo / ".dvc" / "tmp" / "exps" / "run"  # one folder per task that started
        run_dirs = [d.name for d in runs.iterdir()] if workers == 0 and runs.is_dir() else []
        lost = [n for n in lost_experiments(status, workers, run_dirs) if n in states]
        lost_since = (lost_since or time.monotonic()) if lost else None
        if lost and time.monotonic() - lost_since >= LOST_AFTER_S:
            _dvc(["queue", "kill", *lost], repo)  # listed Failed from now on, so rerunning retries them
            print(f"warning: dvc's queue lost experiment(s) {', '.join(lost)} (Running, no worker for "
                  f"{LOST_AFTER_S:.0f} s): killed, reported as failed", flush=True)  # fmt: skip
        missing = workers_missing(states, workers, jobs)
        if missing:
            _dvc(["queue", "start", "-j", str(missing)], repo, env)
            print(f"experiments queued with fewer workers than --jobs: started {missing} more", flush=True)
        idle = 0 if any(states[n] != "Unknown" for n in pending) else idle + 1
        if idle >= IDLE_POLLS:
            raise LeodError(f"dvc queue status does not list experiment(s) {', '.join(pending)}")
        time.sleep(poll_s)


def _let_idle_workers_exit(repo: Path, status: str, poll_s: float) -> None:
    """Wait until the queue's idle workers exit (bounded by :data:`WORKER_EXIT_S`): one that is
    shutting down can take an experiment queued next and end without running it."""
    deadline = time.monotonic() + WORKER_EXIT_S
    while workers_idle(status):
        if time.monotonic() > deadline:
            return
        time.sleep(poll_s)
        try:
            status = _dvc(["queue", "status"], repo)
        except LeodError:  # transient, as in wait(): the same status is read as still idle
            continue


def print_failures(repo: Path, failed: Sequence[str]) -> None:
    for name in failed:
        try:
            log = _dvc(["queue", "logs", name], repo)
        except LeodError as exc:
            log = str(exc)
        tail = log.rstrip().splitlines()[-LOG_TAIL_LINES:]
        print(f"--- {name}: last {len(tail)} lines of `dvc queue logs {name}` ---", file=sys.stderr)
        print("\n".join(tail), file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    p.add_argument("--jobs", type=int, default=1, help="experiments run side by side (default: 1)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a params.yaml override for every seed (repeatable): key=value, +key=value (adds a key), ~key",
    )
    p.add_argument("--prefix", default="seed", help="experiment names: <prefix>-<seed> (default: seed)")
    p.add_argument("--force", action="store_true", help="rerun experiments that already exist")
    p.add_argument("--collect-only", action="store_true", help="only read the existing experiments")
    p.add_argument("--repo", type=Path, default=Path("."), help="the DVC project (default: .)")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("reports/seeds.md"),
        help="markdown output (relative: to --repo); the JSON goes beside it (default: reports/seeds.md)",
    )
    p.add_argument("--poll-s", type=float, default=20.0, help="seconds between queue polls (default: 20)")
    args = p.parse_args(argv)
    try:
        if args.jobs < 1:
            raise ConfigError(f"--jobs: at least 1, got {args.jobs}")
        runs = seed_runs(args.seeds, args.prefix, args.overrides)
        if args.out.suffix != ".md":
            raise ConfigError(f"--out {args.out}: expected a .md file (the JSON is written beside it)")
        out = args.out if args.out.is_absolute() else args.repo / args.out
        out_json = out.with_suffix(".json")
        check_writable(out, out_json)
        if not args.collect_only:
            if shutil.which("dvc") is None:
                raise ConfigError("dvc not found on PATH: activate the project's .venv first")
            queued = queue(args.repo, runs, args.force)
            if queued:
                failed = wait(args.repo, [r.name for r in queued], args.jobs, args.poll_s)
                if failed:
                    print_failures(args.repo, failed)
                    raise LeodError(
                        f"experiment(s) {', '.join(failed)} failed (log tails above); the others are "
                        "kept: rerun the same command to retry only the failed seeds"
                    )
        per_seed = {r.name: source_rows(args.repo, resolve(args.repo, r.name)) for r in runs}
        summary = aggregate(runs, per_seed)
        text = markdown(summary)
        write_text(out, text)
        write_json(out_json, as_json(summary))
    except (LeodError, OSError) as exc:
        return report_error(exc)
    print(text, end="")
    print(f"wrote {out} and {out_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
