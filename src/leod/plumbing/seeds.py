"""Self-training over several seeds: one DVC experiment per seed, aggregated per run.

One CPU training run's AP moves by several hundredths between machines, so a headline
figure is the mean, sample standard deviation, min and max over N seeds of the whole chain
(benchmarks/selftrain_seeds.py queues and collects the experiments). A value missing in a
seed (a gated round, a control not run) is counted and named, never silently dropped.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from leod.plumbing.errors import ConfigError
from leod.report.rows import PRECISION_KEY, RECALL_KEY, RunRow
from leod.report.tables import markdown_table

#: (key in seeds.json, column title, value of a row); the first applies to every run, the rest to rounds
METRICS: tuple[tuple[str, str, Callable[[RunRow], float | None]], ...] = (
    ("AP", "test AP", lambda r: r.ap("AP")),
    ("control_AP", "control AP", lambda r: r.control_ap),
    ("gain", "gain", lambda r: r.gain),
    ("gap_closed", "gap closed", lambda r: r.gap_closed),
    ("pseudo_precision50", "pseudo P@0.5", lambda r: r.pseudo_value(PRECISION_KEY)),
    ("pseudo_recall50", "pseudo R@0.5", lambda r: r.pseudo_value(RECALL_KEY)),
)
#: the parameters each seed's experiment sets: the training seed and the synthetic data's seed
SEED_KEYS = ("seed", "synthetic.seed")
#: Hydra's override grammar as `dvc exp run -S` takes it: key=value, +key=value adds a key
#: params.yaml lacks (e.g. a round's own steps), ++key=value adds or sets, ~key removes
_OVERRIDE = re.compile(r"^(\+{0,2}[A-Za-z_][A-Za-z0-9_.\-\[\]]*=.*|~[A-Za-z_][A-Za-z0-9_.\-]*)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
#: `dvc queue status` words, in the order one name's several tasks (retries) decide its state
QUEUE_STATES = ("Running", "Queued", "Success", "Failed")


@dataclass(frozen=True)
class SeedRun:
    """One seed's experiment: its DVC name and the parameters it sets (``-S key=value``)."""

    seed: int
    name: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Stat:
    """One metric of one run over the seeds: ``values[i]`` is seed i's, None where missing."""

    values: tuple[float | None, ...]

    @property
    def present(self) -> list[float]:
        return [v for v in self.values if v is not None]

    @property
    def n(self) -> int:
        return len(self.present)

    @property
    def missing(self) -> int:
        return len(self.values) - self.n

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.present) if self.present else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation (n - 1 in the denominator); None below two values."""
        return statistics.stdev(self.present) if self.n >= 2 else None

    @property
    def min(self) -> float | None:
        return min(self.present) if self.present else None

    @property
    def max(self) -> float | None:
        return max(self.present) if self.present else None

    def as_dict(self) -> dict[str, object]:
        return {
            "values": list(self.values),
            "n": self.n,
            "missing": self.missing,
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
        }


@dataclass(frozen=True)
class RunSummary:
    """One run (r0, a round, full) over every seed."""

    run: str
    kind: str
    metrics: Mapping[str, Stat]  # keys of METRICS: AP for every run, all of them for rounds
    absent: tuple[str, ...]  # experiments whose metrics hold no such run
    gated: tuple[str, ...]  # experiments where this round's training was gated

    @property
    def gain_positive_everywhere(self) -> bool | None:
        """Gain > 0 in every seed: False once one seed's gain is <= 0, None when a gain is missing
        (and all the others are positive), None outside rounds."""
        gain = self.metrics.get("gain")
        if gain is None:
            return None
        if any(v <= 0 for v in gain.present):
            return False
        return True if gain.missing == 0 else None


@dataclass(frozen=True)
class SeedsSummary:
    """The benchmark's result: the experiments (in seed order) and every run's statistics."""

    experiments: tuple[SeedRun, ...]
    runs: tuple[RunSummary, ...]
    per_seed: Mapping[str, Sequence[RunRow]]  # experiment name -> its rows


def seed_runs(seeds: Sequence[int], prefix: str, extra: Sequence[str]) -> list[SeedRun]:
    """The experiment of each seed, ``<prefix>-<seed>``, setting both seeds and ``extra``."""
    if not seeds:
        raise ConfigError("--seeds: give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: each seed once, got {list(seeds)}")
    if any(s < 0 for s in seeds):
        raise ConfigError(f"--seeds: seeds are non-negative integers, got {list(seeds)}")
    if not _NAME.match(prefix):
        raise ConfigError(f"--prefix '{prefix}': letters, digits, '.', '_' and '-' only")
    for item in extra:
        if not _OVERRIDE.match(item):
            raise ConfigError(
                f"--set '{item}': expected key=value (e.g. subsample.ratio=0.02), +key=value or ~key"
            )
        if item.split("=", 1)[0].lstrip("+~") in SEED_KEYS:
            raise ConfigError(f"--set '{item}': {' and '.join(SEED_KEYS)} are set per seed by --seeds")
    return [SeedRun(s, f"{prefix}-{s}", (*(f"{k}={s}" for k in SEED_KEYS), *extra)) for s in seeds]


def queue_command(run: SeedRun) -> list[str]:
    """The ``dvc exp run --queue`` command line of one seed's experiment."""
    sets = [arg for item in run.overrides for arg in ("-S", item)]
    return ["dvc", "exp", "run", "--queue", "-n", run.name, *sets]


def queue_states(status: str, names: Sequence[str], finished: set[str]) -> dict[str, str]:
    """The state of each experiment: ``Success`` when its experiment exists (``finished``), else
    the first of :data:`QUEUE_STATES` among its lines of ``dvc queue status`` (an earlier failed
    try of the same name no longer counts once it is queued again), else ``Unknown``."""
    listed: dict[str, set[str]] = {n: set() for n in names}
    for row in _task_rows(status):
        if row[1] in listed:
            listed[row[1]].add(row[-1])
    states = {}
    for name in names:
        found = [s for s in QUEUE_STATES if s in listed[name]]
        states[name] = "Success" if name in finished else (found[0] if found else "Unknown")
    return states


def queue_workers(status: str) -> int | None:
    """The workers, active or idle, that ``dvc queue status`` reports (``Worker status: 1 active,
    0 idle``); None when the line is missing."""
    match = re.search(r"^Worker status: (\d+) active, (\d+) idle", status, re.MULTILINE)
    return int(match.group(1)) + int(match.group(2)) if match else None


def _task_rows(status: str) -> list[list[str]]:
    """The task lines of ``dvc queue status``, split (task id first, state last)."""
    rows = map(str.split, status.splitlines())
    return [cells for cells in rows if len(cells) >= 3 and cells[-1] in QUEUE_STATES]


def workers_idle(status: str) -> bool:
    """Whether ``dvc queue status`` shows workers but no experiment running or queued: idle
    workers, about to exit on the empty queue."""
    busy = any(row[-1] in ("Running", "Queued") for row in _task_rows(status))
    return bool(queue_workers(status)) and not busy


def workers_missing(states: Mapping[str, str], workers: int | None, jobs: int) -> int:
    """Queue workers to start so that ``jobs`` experiments run side by side while some wait
    (seen: a worker ends after its experiment, leaving the others queued with fewer workers);
    0 when nothing is queued, the worker count is unknown (``workers`` None) or no experiment
    has ended yet (the first workers take a few seconds to register)."""
    queued = sum(s == "Queued" for s in states.values())
    running = sum(s == "Running" for s in states.values())
    ended = any(s in ("Success", "Failed") for s in states.values())
    if not queued or workers is None or not ended:
        return 0
    return max(0, min(jobs, running + queued) - workers)


def lost_experiments(status: str, workers: int | None, run_dirs: Sequence[str]) -> list[str]:
    """Experiments that ``dvc queue status`` lists ``Running`` while the queue has no worker left
    and that never started (no folder of their task in ``.dvc/tmp/exps/run``, ``run_dirs``): a
    worker shutting down on an empty queue took them and ended (seen when experiments were
    queued right after the previous ones ended); they would never end."""
    if workers != 0:
        return []
    return [
        row[1]
        for row in _task_rows(status)
        if row[-1] == "Running" and not any(d.startswith(row[0]) for d in run_dirs)
    ]


def progress_line(states: Mapping[str, str], elapsed_s: float) -> str:
    """``done 1/3, running 2, queued 0, failed 0, 12:30 elapsed, ETA ~25 min`` (the ETA assumes the
    remaining experiments take as long as the finished ones did, with the same parallelism)."""
    total = len(states)
    count = {s: sum(v == s for v in states.values()) for s in ("Success", "Running", "Queued", "Failed")}
    done = count["Success"] + count["Failed"]
    minutes, seconds = divmod(int(elapsed_s), 60)
    if count["Success"] and done < total:
        eta = f"ETA ~{math.ceil(elapsed_s / done * (total - done) / 60)} min"
    else:
        eta = "ETA after the first experiment" if done < total else "finished"
    unknown = total - sum(count.values())
    return (
        f"done {count['Success']}/{total}, running {count['Running']}, queued {count['Queued']}, "
        f"failed {count['Failed']}"
        + (f", not listed {unknown}" if unknown else "")
        + f", {minutes}:{seconds:02d} elapsed, {eta}"
    )


def _runs_in_order(per_seed: Mapping[str, Sequence[RunRow]]) -> list[tuple[str, str]]:
    """(name, kind) of every run of any seed: the first seed's order, then any others' (before full)."""
    order: list[tuple[str, str]] = []
    for rows in per_seed.values():
        for row in rows:
            if (row.name, row.kind) not in order:
                order.append((row.name, row.kind))
    return sorted(order, key=lambda nk: nk[1] == "full")  # stable: full last


def aggregate(experiments: Sequence[SeedRun], per_seed: Mapping[str, Sequence[RunRow]]) -> SeedsSummary:
    """Every run's statistics over the experiments (``per_seed[name]``: one experiment's rows)."""
    names = [e.name for e in experiments]
    by_name = {n: {r.name: r for r in per_seed[n]} for n in names}
    runs = []
    for run, kind in _runs_in_order({n: per_seed[n] for n in names}):
        rows = [by_name[n].get(run) for n in names]
        metrics = METRICS if kind == "round" else METRICS[:1]
        runs.append(
            RunSummary(
                run=run,
                kind=kind,
                metrics={key: Stat(tuple(get(r) if r else None for r in rows)) for key, _, get in metrics},
                absent=tuple(n for n, r in zip(names, rows, strict=True) if r is None),
                gated=tuple(n for n, r in zip(names, rows, strict=True) if r is not None and r.gated),
            )
        )
    return SeedsSummary(tuple(experiments), tuple(runs), {n: per_seed[n] for n in names})


def _fmt(value: float | None) -> str:
    return "missing" if value is None else f"{value:.3f}"


def stat_cell(stat: Stat) -> str:
    """``0.312 ± 0.012 (min 0.300, max 0.325)``, plus ``n 2/3`` when a seed lacks the value."""
    if stat.n == 0:
        return f"missing in {stat.missing}/{len(stat.values)}"
    spread = f" ± {_fmt(stat.std)}" if stat.std is not None else ""
    cell = f"{_fmt(stat.mean)}{spread} (min {_fmt(stat.min)}, max {_fmt(stat.max)})"
    return cell + (f", n {stat.n}/{len(stat.values)}" if stat.missing else "")


def _flag(value: bool | None, kind: str) -> str:
    if kind != "round":
        return "-"
    return {True: "yes", False: "no", None: "unknown (a gain is missing)"}[value]


def markdown(summary: SeedsSummary) -> str:
    """The summary table (mean ± sample std, min, max over seeds), its notes and the per-seed values."""
    n = len(summary.experiments)
    seeds = ", ".join(f"{e.name} (seed {e.seed})" for e in summary.experiments)
    overrides = sorted({o for e in summary.experiments for o in e.overrides[len(SEED_KEYS) :]})
    out = [
        f"# Self-training over {n} seed{'s' * (n != 1)}",
        "",
        f"Experiments: {seeds}." + (f" Also set: {', '.join(overrides)}." if overrides else ""),
        "Each cell: mean ± sample standard deviation (min, max) over the seeds; `n k/N` when only k "
        "of the N seeds have the value.",
        "",
    ]
    header = ["run", *(title for _, title, _ in METRICS), "gain > 0 in every seed"]
    lines = [
        [
            r.run,
            *(stat_cell(r.metrics[key]) if key in r.metrics else "-" for key, _, _ in METRICS),
            _flag(r.gain_positive_everywhere, r.kind),
        ]
        for r in summary.runs
    ]
    out += [markdown_table(header, lines)]
    notes = [f"- {r.run}: no metrics in {', '.join(r.absent)}" for r in summary.runs if r.absent]
    notes += [f"- {r.run}: gated (not trained) in {', '.join(r.gated)}" for r in summary.runs if r.gated]
    notes += [  # a round with a test AP but no gap closed: say why (rows.gap_closed's reason)
        f"- {row.name}: no gap closed in {name}: {row.gap_note}"
        for name, rows in summary.per_seed.items()
        for row in rows
        if row.is_round and row.gap_closed is None and row.ap("AP") is not None
    ]
    out += ["", *notes, ""] if notes else [""]
    out += ["## Per seed", ""]
    per_seed = [
        [
            e.name,
            str(e.seed),
            r.run,
            *(_fmt(r.metrics[k].values[i]) if k in r.metrics else "-" for k, _, _ in METRICS),
        ]
        for i, e in enumerate(summary.experiments)
        for r in summary.runs
    ]
    out += [markdown_table(["experiment", "seed", "run", *(title for _, title, _ in METRICS)], per_seed)]
    return "\n".join(out) + "\n"


def as_json(summary: SeedsSummary) -> dict[str, object]:
    """seeds.json: the experiments and, per run, every metric's values and statistics."""
    return {
        "experiments": [
            {"name": e.name, "seed": e.seed, "set": list(e.overrides)} for e in summary.experiments
        ],
        "runs": [  # a list: write_json sorts keys, and the runs keep the chain's order
            {
                "run": r.run,
                "kind": r.kind,
                "absent_in": list(r.absent),
                "gated_in": list(r.gated),
                "gain_positive_in_every_seed": r.gain_positive_everywhere,
                "metrics": {key: stat.as_dict() for key, stat in r.metrics.items()},
            }
            for r in summary.runs
        ],
    }
