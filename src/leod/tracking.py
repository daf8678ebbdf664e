"""MLflow tracking shared by every stage: one store per repository, one run per stage.

DVC owns the pipeline, data and metrics files; MLflow adds per-step curves and a UI. The
two are linked by tags on each run (git commit, DVC experiment name, DVC stage).

Where runs go
    ``MLFLOW_TRACKING_URI`` when set; otherwise an absolute ``sqlite:////<root>/mlflow.db``.
    The root is ``DVC_ROOT`` when DVC runs the stage (queued experiments run in a temp copy
    ``.dvc/tmp/exps/tmp<random>`` that is deleted afterwards, while ``DVC_ROOT`` names the main
    repository), else the nearest parent folder holding ``dvc.yaml`` or ``.git``, else the
    working directory. A relative URI would write into the temp copy and lose the runs.
    For a sqlite store, artefacts go to the absolute folder ``mlruns`` beside the database,
    fixed when the experiment is created, so they never point into a deleted temp folder.
    Other stores (e.g. an ``http://`` server) keep their own artefact location.

Run tags
    ``mlflow.source.git.commit`` (HEAD of the code being run, ``unknown`` outside git),
    ``git.dirty`` (``true``/``false``/``unknown``), ``dvc.exp_name``,
    ``dvc.exp_baseline_rev``, ``dvc.stage`` (from ``DVC_EXP_NAME``, ``DVC_EXP_BASELINE_REV``,
    ``DVC_STAGE`` when set), ``stage``, ``round`` (when given), plus any extra tags.

Disabling
    ``LEOD_TRACKING=0`` (or ``false``/``no``/``off``) makes :func:`stage_run` yield a
    :class:`NullTracker` with the same methods and touch no store: unit tests of other
    modules and quick local runs need no MLflow database.

mlflow is imported lazily (it takes seconds), so ``import leod.tracking`` stays cheap.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import shlex
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from leod.errors import LeodError, MissingInputError
from leod.schema import flatten

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

_log = logging.getLogger(__name__)

T = TypeVar("T")

# Waits between attempts when sqlite reports "database is locked" (another process writes).
_LOCKED_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 4.0)
# MLflow 3.x stores at most this many characters per param value (mlflow.utils.validation).
_MAX_PARAM_CHARS = 6000
_TRUNCATION_MARK = "...[truncated]"
_DISABLED_VALUES = {"0", "false", "no", "off"}
_HINT = "set MLFLOW_TRACKING_URI to a writable sqlite:////abs/path/mlflow.db or an http:// server"


def tracking_enabled() -> bool:
    """False when ``LEOD_TRACKING`` is set to 0/false/no/off (tracking becomes a no-op)."""
    return os.environ.get("LEOD_TRACKING", "1").strip().lower() not in _DISABLED_VALUES


def find_root(start: Path | None = None) -> Path:
    """The repository root that holds the MLflow store (see the module docstring)."""
    dvc_root = os.environ.get("DVC_ROOT")
    if dvc_root:
        return Path(dvc_root).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").exists() or (folder / ".git").exists():
            return folder
    return here


def tracking_uri(root: Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the absolute sqlite URI ``<root>/mlflow.db``."""
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if env_uri:
        return env_uri
    db = (Path(root).resolve() if root is not None else find_root()) / "mlflow.db"
    return f"sqlite:///{db.as_posix()}"


def print_ui_hint(uri: str) -> str:
    """The shell command that opens the MLflow UI on ``uri`` (stages print it when done).

    The URI is always passed explicitly: ``mlflow ui`` alone would open ./mlflow.db of
    whatever folder it is started in.
    """
    return f"mlflow ui --backend-store-uri {shlex.quote(uri)}"


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores and in-memory DBs)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    path = uri[len(prefix) :].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path).absolute()


def _artifact_location(uri: str) -> str | None:
    db = _sqlite_path(uri)
    return None if db is None else (db.parent / "mlruns").as_posix()


def _unwritable(uri: str, why: str) -> LeodError:
    return LeodError(f"MLflow store {uri} cannot be written: {why}; {_HINT}")


def _check_writable(uri: str) -> None:
    """Fail before any work starts if a sqlite store or its artefact folder cannot be written.

    sqlite also needs to create journal files beside the database, so the folder itself
    must be writable, not only the file.
    """
    db = _sqlite_path(uri)
    if db is None:
        return
    folder = db.parent
    if not folder.is_dir():
        raise _unwritable(uri, f"folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _unwritable(uri, f"folder {folder} is not writable")
    if db.exists() and not os.access(db, os.R_OK | os.W_OK):
        raise _unwritable(uri, f"file {db} is not writable")
    artifacts = folder / "mlruns"
    try:
        artifacts.mkdir(exist_ok=True)
    except OSError as exc:
        raise _unwritable(uri, f"artefact folder {artifacts} cannot be created ({exc})") from exc
    if not os.access(artifacts, os.W_OK | os.X_OK):
        raise _unwritable(uri, f"artefact folder {artifacts} is not writable")


def _retry_locked(op: Callable[[], T]) -> T:
    """Run ``op``, retrying with backoff while sqlite reports "database is locked"."""
    for delay in _LOCKED_BACKOFF_S:
        try:
            return op()
        except Exception as exc:
            if "database is locked" not in str(exc):
                raise
            _log.debug("MLflow store is locked; retrying in %.1f s", delay)
            time.sleep(delay)
    return op()


@contextlib.contextmanager
def _creation_lock(uri: str) -> Iterator[None]:
    """Serialise store and experiment creation between processes on this machine.

    Two processes opening a fresh sqlite store at once (two queued DVC experiments) race
    through MLflow's schema migrations and can fail with "table already exists" or
    "duplicate column", leaving a half-migrated database. Like MLflow's own server, lock
    on a file in the temp folder keyed by the database path (no clutter in the repository).
    """
    db = _sqlite_path(uri)
    if db is None:
        yield
        return
    key = hashlib.sha1(str(db).encode(), usedforsecurity=False).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"leod-mlflow-{key}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """Hide MLflow's INFO chatter (schema creation) and library warnings for one block."""
    import mlflow  # noqa: F401  (importing configures mlflow's loggers; adjust them afterwards)

    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"mlflow(\.|$)")
            warnings.filterwarnings("ignore", module=r"alembic(\.|$)")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _get_or_create_experiment(client: MlflowClient, uri: str, name: str) -> str:
    from mlflow.exceptions import MlflowException

    existing = client.get_experiment_by_name(name)
    if existing is None:
        try:
            return client.create_experiment(name, artifact_location=_artifact_location(uri))
        except MlflowException as exc:
            # Another process (one not sharing our lock, e.g. on another host) won the race.
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            existing = client.get_experiment_by_name(name)
            if existing is None:
                raise
    if existing.lifecycle_stage != "active":
        raise LeodError(
            f"MLflow experiment '{name}' in {uri} is deleted; restore it with "
            f"`mlflow experiments restore --experiment-id {existing.experiment_id}` "
            "or choose another experiment name"
        )
    return existing.experiment_id


def _open_store(experiment_name: str, root: Path | None) -> tuple[MlflowClient, str, str]:
    if not experiment_name:
        raise LeodError("MLflow experiment name must not be empty")
    uri = tracking_uri(root)
    _check_writable(uri)
    with _quiet_mlflow():
        from mlflow.tracking import MlflowClient

        def attempt() -> tuple[MlflowClient, str]:
            client = MlflowClient(tracking_uri=uri)
            return client, _get_or_create_experiment(client, uri, experiment_name)

        try:
            with _creation_lock(uri):
                client, experiment_id = _retry_locked(attempt)
        except LeodError:
            raise
        except Exception as exc:
            raise _unwritable(uri, f"{type(exc).__name__}: {exc}") from exc
    return client, uri, experiment_id


def ensure_store(experiment_name: str, root: Path | None = None) -> tuple[str, str]:
    """Create the store and experiment if needed; return ``(tracking_uri, experiment_id)``.

    Idempotent and safe when several processes call it at once. Raises
    :class:`~leod.errors.LeodError` when the store cannot be written, so a stage fails
    before training rather than after it.
    """
    _, uri, experiment_id = _open_store(experiment_name, root)
    return uri, experiment_id


def _param_value(value: Any) -> str:
    """One MLflow param string: lists as compact JSON, truncated to MLflow's length limit."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list | tuple | dict):
        text = json.dumps(value, separators=(",", ":"), default=str)
    else:
        text = str(value)
    if len(text) > _MAX_PARAM_CHARS:
        text = text[: _MAX_PARAM_CHARS - len(_TRUNCATION_MARK)] + _TRUNCATION_MARK
    return text


def _git(*args: str) -> str | None:
    """Output of a git command in the working directory, or None if git fails."""
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_tags() -> dict[str, str]:
    """Commit and dirty flag of the code being run (the working directory's repository).

    The working directory is used rather than ``DVC_ROOT``: a queued experiment runs in
    its own checkout whose HEAD is the baseline with the experiment's changes uncommitted
    (so ``git.dirty`` is ``true``), while the main repository's HEAD may have moved on.
    """
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "mlflow.source.git.commit": _git("rev-parse", "HEAD") or "unknown",
        "git.dirty": "unknown" if status is None else str(bool(status)).lower(),
    }


def _run_tags(stage: str, round_name: str | None, extra_tags: Mapping[str, Any] | None) -> dict[str, str]:
    tags = git_tags()
    for env, key in (
        ("DVC_EXP_NAME", "dvc.exp_name"),
        ("DVC_EXP_BASELINE_REV", "dvc.exp_baseline_rev"),
        ("DVC_STAGE", "dvc.stage"),
    ):
        if os.environ.get(env):
            tags[key] = os.environ[env]
    tags["stage"] = stage
    if round_name is not None:
        tags["round"] = round_name
    tags.update({k: str(v) for k, v in (extra_tags or {}).items()})
    return tags


class RunLogger(Protocol):
    """What a stage may log; implemented by :class:`Tracker` and :class:`NullTracker`."""

    @property
    def run_id(self) -> str | None: ...

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None: ...
    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None: ...
    def log_dict(self, obj: Any, name: str) -> None: ...
    def set_tags(self, tags: Mapping[str, Any]) -> None: ...


class Tracker:
    """Logs to one MLflow run through an explicit client (no global "active run" state)."""

    def __init__(self, client: MlflowClient, run_id: str, uri: str, experiment_id: str) -> None:
        self._client = client
        self.run_id = run_id
        self.uri = uri
        self.experiment_id = experiment_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log nested params under dotted keys (``train.lr``); long values are truncated."""
        from mlflow.entities import Param

        flat = [Param(key, _param_value(value)) for key, value in flatten(dict(params)).items()]
        if flat:
            _retry_locked(lambda: self._client.log_batch(self.run_id, params=flat))

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log scalar metrics at ``step``; NaN/inf values are skipped with a warning.

        A diverging loss should show up in the logs, not crash the training loop.
        """
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        batch = []
        for key, value in metrics.items():
            number = float(value)
            if not math.isfinite(number):
                _log.warning("metric %s=%s at step %s is not finite; not logged to MLflow", key, number, step)
                continue
            batch.append(Metric(key, number, now_ms, 0 if step is None else int(step)))
        if batch:
            _retry_locked(lambda: self._client.log_batch(self.run_id, metrics=batch))

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Copy a file or folder into the run's artefacts (optionally under ``artifact_path``)."""
        source = Path(path)
        if not source.exists():
            raise MissingInputError(f"artefact {source} does not exist")
        self._client.log_artifact(self.run_id, str(source), artifact_path)

    def log_dict(self, obj: Any, name: str) -> None:
        """Store ``obj`` as a JSON or YAML artefact (format chosen by the extension of ``name``)."""
        self._client.log_dict(self.run_id, obj, name)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(key, str(value)) for key, value in tags.items()]
        if batch:
            _retry_locked(lambda: self._client.log_batch(self.run_id, tags=batch))


class NullTracker:
    """Stand-in used when tracking is disabled (``LEOD_TRACKING=0``): every call is a no-op."""

    run_id: str | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        pass

    def log_dict(self, obj: Any, name: str) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass


def _end_run(client: MlflowClient, run_id: str, status: str) -> None:
    """Close the run; a failure here is only logged so it never hides the stage's own error."""
    try:
        _retry_locked(lambda: client.set_terminated(run_id, status))
    except Exception as exc:
        _log.warning("could not mark MLflow run %s as %s: %s", run_id, status, exc)


@contextlib.contextmanager
def stage_run(
    stage: str,
    params: Mapping[str, Any],
    experiment_name: str,
    round_name: str | None = None,
    extra_tags: Mapping[str, Any] | None = None,
    *,
    root: Path | None = None,
) -> Iterator[RunLogger]:
    """One MLflow run around a stage's work; yields the logger to use inside.

    The run is named after the DVC stage (``DVC_STAGE``, e.g. ``train_round@r1``, or
    ``stage`` outside DVC), carries the tags listed in the module docstring and the
    flattened ``params``. It ends FINISHED, KILLED on Ctrl-C, or FAILED when an exception
    escapes (the exception is re-raised). The store is opened first, so an unwritable
    store fails the stage before any training starts.
    """
    if not tracking_enabled():
        yield NullTracker()
        return
    client, uri, experiment_id = _open_store(experiment_name, root)
    run_name = os.environ.get("DVC_STAGE") or stage
    tags = _run_tags(stage, round_name, extra_tags)
    run = _retry_locked(lambda: client.create_run(experiment_id, tags=tags, run_name=run_name))
    tracker = Tracker(client, run.info.run_id, uri, experiment_id)
    status = "FAILED"
    try:
        tracker.log_params(params)
        yield tracker
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        _end_run(client, run.info.run_id, status)
