"""The MLflow store every stage logs to: where it is, and opening it safely.

Opening the store checks it before any work starts (a sqlite store must be writable, an
``http(s)://`` server must accept connections), serialises store and experiment creation
between processes, and creates the experiment tagged for MLflow 3's runs view.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import sqlite3
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from leod.plumbing.errors import LeodError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

_log = logging.getLogger(__name__)

T = TypeVar("T")

# Waits between attempts when sqlite reports "database is locked" (another process writes).
_LOCKED_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 4.0)
_HINT = "set MLFLOW_TRACKING_URI to a writable sqlite:////abs/path/mlflow.db or an http:// server"
# An http(s) store: seconds allowed to open a connection when probing it, and the MLflow
# HTTP settings used unless the user set them (MLflow's defaults retry for ~4 minutes).
_PROBE_TIMEOUT_S = 5.0
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
# MLflow 3's experiment-kind tag for the classic (runs) view. The 3.17 UI has a code path
# that reads it, but its release build switches that path off: the view follows the page's
# `workflowType` parameter, else the browser's localStorage `mlflow.workflowType_v1`, else
# "genai"; hence runs_url(). The tag stays for UIs that take the tag path.
_EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
# A saved runs-table layout ("shared view" in MLflow's UI): the experiment tag
# `mlflow.sharedViewState.<key>` holds JSON that the page named by `viewStateShareKey=<key>`
# applies. Columns are `metrics.`name`` / `tags.`name``, as the UI writes them.
VIEW_KEY = "leod-runs"
VIEW_COLUMNS = (
    "metrics.`test/AP`",
    "metrics.`test/AP50`",
    "metrics.`best_val_AP`",
    "metrics.`pseudo/precision_at_0.5`",
    "metrics.`pseudo/recall_at_0.5`",
    "tags.`dvc.exp_name`",
)
# shown in this order (test AP first), before the Duration column
_VIEW = {"selectedColumns": list(VIEW_COLUMNS), "columnOrder": list(VIEW_COLUMNS)}
_VIEW_TAG = (f"mlflow.sharedViewState.{VIEW_KEY}", json.dumps(_VIEW))


def find_root(start: Path | None = None) -> Path:
    """The repository root that holds the MLflow store: ``DVC_ROOT`` when DVC runs the stage
    (a queued experiment runs in a temporary copy that is deleted afterwards), else the nearest
    folder up holding ``dvc.yaml`` or ``.git``, else the working directory."""
    dvc_root = os.environ.get("DVC_ROOT")
    if dvc_root:
        return Path(dvc_root).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").exists() or (folder / ".git").exists():
            return folder
    return here


def tracking_uri(root: Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the absolute sqlite URI ``<root>/mlflow.db`` (a
    relative one would write into a queued experiment's temporary copy and lose the runs)."""
    env_uri = os.environ.get("MLFLOW_TRACKING_URI")
    if env_uri:
        return env_uri
    db = (Path(root).resolve() if root is not None else find_root()) / "mlflow.db"
    return f"sqlite:///{db.as_posix()}"


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


def runs_url(experiment_id: str, server: str = "http://127.0.0.1:5000") -> str:
    """The UI page of an experiment's runs table with the project's columns.

    ``workflowType=machine_learning`` opens the runs (MLflow 3.17 opens its GenAI traces
    view otherwise) and ``viewStateShareKey`` applies the layout stored by open_store.
    """
    query = f"workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


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


def _check_reachable(uri: str) -> None:
    """Fail within seconds if an ``http(s)://`` store's host does not accept connections,
    and bound MLflow's own retries for the requests that follow."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    for key, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "localhost", port), timeout=_PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise LeodError(f"MLflow server {uri} cannot be reached ({reason}); {_HINT}") from exc


def retry_locked(op: Callable[[], T]) -> T:
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
            return client.create_experiment(
                name, artifact_location=_artifact_location(uri), tags=dict([_EXPERIMENT_KIND, _VIEW_TAG])
            )
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
    for key, value in (_EXPERIMENT_KIND, _VIEW_TAG):
        if existing.tags.get(key) != value:
            client.set_experiment_tag(existing.experiment_id, key, value)
    return existing.experiment_id


# Tables and columns where MLflow's sqlite store keeps absolute artefact paths.
_ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
)


def follow_move(uri: str) -> list[str]:
    """Point a moved or copied repository's store at its own ``mlruns`` folder.

    MLflow stores artefact paths as absolute paths (a relative one is resolved against
    the working directory when the experiment is created, and every run copies it), so a
    store moved or copied with its repository still names the old folder. This project
    keeps a sqlite store's artefacts in ``mlruns`` beside the database, so every prefix
    ``/<old>/mlruns`` of this store becomes ``<store folder>/mlruns``. Returns the prefixes
    rewritten (none for other stores).
    """
    db = _sqlite_path(uri)
    new = _artifact_location(uri)
    if db is None or new is None or not db.is_file():
        return []
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con, con:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "experiments" not in tables:
            return []
        stale = [
            old
            for (old,) in con.execute("SELECT DISTINCT artifact_location FROM experiments")
            if old and old != new and old.endswith("/mlruns") and old.startswith("/")
        ]
        for old in stale:
            for table, column in _ARTIFACT_COLUMNS:
                if table in tables:
                    con.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                        f"WHERE {column} = ? OR {column} LIKE ? ESCAPE '\\'",
                        (new, len(old) + 1, old, _like_prefix(old) + "/%"),
                    )
    for old in stale:
        _log.warning("MLflow store %s: artefacts moved from %s to %s", uri, old, new)
    return stale


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def open_store(experiment_name: str, root: Path | None) -> tuple[MlflowClient, str, str]:
    if not experiment_name:
        raise LeodError("MLflow experiment name must not be empty")
    uri = tracking_uri(root)
    _check_writable(uri)
    _check_reachable(uri)
    with _quiet_mlflow():
        from mlflow.tracking import MlflowClient

        def attempt() -> tuple[MlflowClient, str]:
            client = MlflowClient(tracking_uri=uri)
            return client, _get_or_create_experiment(client, uri, experiment_name)

        try:
            with _creation_lock(uri):
                follow_move(uri)
                client, experiment_id = retry_locked(attempt)
        except LeodError:
            raise
        except Exception as exc:
            raise _unwritable(uri, f"{type(exc).__name__}: {exc}") from exc
    return client, uri, experiment_id


def ensure_store(experiment_name: str, root: Path | None = None) -> tuple[str, str]:
    """Create the store and experiment if needed; return ``(tracking_uri, experiment_id)``.

    Idempotent and safe when several processes call it at once. Raises
    :class:`~leod.plumbing.errors.LeodError` when the store cannot be written, so a stage fails
    before training rather than after it.
    """
    _, uri, experiment_id = open_store(experiment_name, root)
    return uri, experiment_id
