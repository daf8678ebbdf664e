"""The round table of the workspace, of git commits or of DVC experiments, from metrics/ only.

``python -m leod compare`` answers "what did each round bring?" without running anything:
it reads the committed metrics JSON files and prints test AP, the control AP and the
self-training gain, pseudo-label precision/recall and the gap closed per run, for one or
several sources side by side. A source is ``workspace``, a git revision or a DVC experiment
name (experiments are git commits under ``refs/exps/`` holding their uncached metrics files,
so reading them needs git only).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from leod.plumbing.errors import ConfigError, MissingInputError
from leod.plumbing.git import git
from leod.plumbing.mlflow_store import _sqlite_path, runs_url, tracking_uri
from leod.plumbing.tracking import print_ui_hint, tracking_enabled
from leod.report.rows import CONTROL_PREFIX, RunRow, collect_rows
from leod.report.tables import compact_table

WORKSPACE = "workspace"
PARAMS = "params.yaml"
BASELINE, FULL = "r0", "full"
_RUN_FILE = re.compile(r"^(test|train|pseudo)_(?P<name>[^/]+)\.json$")
# refs/exps/<2 hex>/<38 hex>/<name>: DVC's experiment refs (queue and exec refs live elsewhere)
_EXP_REF = re.compile(r"^refs/exps/[0-9a-f]{2}/[0-9a-f]{38}/(?P<name>[^/]+)$")


@dataclass(frozen=True)
class Source:
    """One place to read metrics from: its label in the table and its revision (None: disk)."""

    label: str
    rev: str | None


def experiment_commits(repo: Path, name: str) -> list[str]:
    """The commits of every DVC experiment called ``name`` (none, one, or several if ambiguous)."""
    refs = git("for-each-ref", "--format=%(refname) %(objectname)", "refs/exps/", cwd=repo, required=True)
    matches = []
    for line in filter(None, refs.split("\n")):
        ref, sha = line.split(" ")
        m = _EXP_REF.match(ref)
        if m and m["name"] == name:
            matches.append(sha)
    return matches


def resolve(repo: Path, name: str) -> Source:
    """``workspace``, a DVC experiment name or any git revision, as a :class:`Source`."""
    if name == WORKSPACE:
        return Source(name, None)
    matches = experiment_commits(repo, name)
    if len(matches) > 1:
        raise ConfigError(f"experiment name '{name}' is ambiguous ({len(matches)} experiments); use a commit")
    if matches:
        return Source(name, matches[0])
    commit = git("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}", cwd=repo)
    if commit is None:
        raise ConfigError(f"'{name}' is neither '{WORKSPACE}', a DVC experiment nor a git revision")
    return Source(name, commit.strip())


@contextmanager
def metrics_folder(repo: Path, source: Source, metrics: str = "metrics") -> Iterator[Path]:
    """The metrics folder of ``source``: the one on disk, or a temporary copy read from git."""
    if source.rev is None:
        folder = repo / metrics
        if not folder.is_dir():
            raise MissingInputError(f"{folder}: no metrics folder; run the pipeline first (dvc repro)")
        yield folder
        return
    listing = git("ls-tree", "-r", "--name-only", source.rev, "--", f"{metrics}/", cwd=repo, required=True)
    names = [Path(p).name for p in listing.split("\n") if p.endswith(".json")]
    if not names:
        raise MissingInputError(f"{source.label}: no {metrics}/*.json committed at {source.rev[:10]}")
    with tempfile.TemporaryDirectory(prefix="leod-compare-") as tmp:
        for name in names:
            (Path(tmp) / name).write_text(
                git("show", f"{source.rev}:{metrics}/{name}", cwd=repo, required=True)
            )
        yield Path(tmp)


def _natural_key(name: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def discover_runs(folder: Path) -> tuple[list[str], str | None]:
    """``([r0, rounds...], full or None)`` from the metrics files present in ``folder``: the
    rounds are every other name with a ``pseudo_`` or ``train_`` file but the controls, in
    natural order (r2 before r10; the chain's ``prev`` links live in params.yaml, not in metrics/)."""
    names = {m["name"] for p in folder.iterdir() if (m := _RUN_FILE.match(p.name))}
    names = {n for n in names if not n.startswith(CONTROL_PREFIX)}  # a round's row holds its control
    rounds = sorted(names - {BASELINE, FULL}, key=_natural_key)
    return [BASELINE, *rounds], FULL if FULL in names else None


def declared_rounds(repo: Path, source: Source) -> set[str] | None:
    """The round names in ``rounds`` of the source's params.yaml (None: no such file or key).

    Metrics files outlive their stages: an experiment run with ``-S '~rounds.r2'`` still
    carries its parent commit's ``metrics/*_r2.json``, which describe no run of its own.
    """
    if source.rev is None:
        path = repo / PARAMS
        text = path.read_text() if path.is_file() else None
    else:
        text = git("show", f"{source.rev}:{PARAMS}", cwd=repo)
    if text is None:
        return None
    try:
        params = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source.label}: {PARAMS} is not valid YAML: {exc}") from exc
    rounds = params.get("rounds") if isinstance(params, dict) else None
    return set(rounds) if isinstance(rounds, dict) else None


def source_rows(repo: Path, source: Source, metrics: str = "metrics") -> list[RunRow]:
    """The report rows of one source: the runs its metrics hold, less rounds its params.yaml
    no longer declares (pseudo-label PR curves are not read: no table shows them)."""
    declared = declared_rounds(repo, source)
    with metrics_folder(repo, source, metrics) as folder:
        runs, full = discover_runs(folder)
        if declared is not None:
            runs = [r for r in runs if r == BASELINE or r in declared]
        return collect_rows(folder, None, runs, full)


def compare(repo: Path, names: Sequence[str], metrics: str = "metrics") -> str:
    """The markdown table of every named source (default: the workspace)."""
    if not repo.is_dir():
        raise MissingInputError(f"{repo}: no such repository folder")
    sources = [resolve(repo, n) for n in (names or [WORKSPACE])]
    return compact_table({s.label: source_rows(repo, s, metrics) for s in sources})


#: where the report stage writes its document (dvc.yaml: ``report --out reports``)
REPORT = "reports/report.md"


def _experiment_id(uri: str, name: str) -> str | None:
    """The id of experiment ``name`` in a local sqlite store that exists (None otherwise:
    nothing is created, and a remote server is not contacted)."""
    db = _sqlite_path(uri)
    if db is None or not db.is_file():
        return None
    from mlflow.tracking import MlflowClient

    experiment = MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
    return None if experiment is None else experiment.experiment_id


def next_steps(repo: Path, experiment: str) -> str:
    """Where to look after ``dvc repro``: the report, and MLflow's UI command and runs URL."""
    report = repo / REPORT
    lines = [f"report: {report}" if report.is_file() else f"report: {report} (not written yet)"]
    if not tracking_enabled():
        return "\n".join([*lines, "MLflow: tracking is off (LEOD_TRACKING=0)"])
    uri = tracking_uri(repo)
    lines.append(f"MLflow: python -m leod ui   (or: {print_ui_hint(uri)})")
    experiment_id = _experiment_id(uri, experiment)
    if experiment_id is not None:
        lines.append(f"        then open {runs_url(experiment_id)}")
    return "\n".join(lines)
