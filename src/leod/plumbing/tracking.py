"""MLflow tracking shared by every stage: one store per repository, one run per stage.

DVC owns the pipeline, data and metrics files; MLflow adds per-step curves and a UI. The
two are linked by tags on each run (git commit, DVC experiment name, DVC stage). Where the
store is: :mod:`leod.plumbing.mlflow_store`. ``LEOD_TRACKING=0`` turns tracking into a no-op
(:class:`NullTracker`), for unit tests and quick local runs. mlflow is imported lazily (it
takes seconds), so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shlex
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from leod.plumbing.errors import MissingInputError
from leod.plumbing.git import git
from leod.plumbing.mlflow_store import ensure_store, find_root, open_store, retry_locked, tracking_uri
from leod.schema import flatten

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

__all__ = [
    "NullTracker",
    "RunLogger",
    "Tracker",
    "close_stale_runs",
    "ensure_store",
    "find_root",
    "git_tags",
    "print_ui_hint",
    "stage_run",
    "tracking_enabled",
    "tracking_uri",
]

_log = logging.getLogger(__name__)

_MAX_PARAM_CHARS = 6000
_TRUNCATION_MARK = "...[truncated]"
_DISABLED_VALUES = {"0", "false", "no", "off"}
HOST_TAG, PID_TAG = "leod.host", "leod.pid"
# What decides whether the code of a run is what its commit says (git pathspecs from the top).
_CODE_PATHS = (":(top)src", ":(top)stages", ":(top)params.yaml")


def tracking_enabled() -> bool:
    """False when ``LEOD_TRACKING`` is set to 0/false/no/off (tracking becomes a no-op)."""
    return os.environ.get("LEOD_TRACKING", "1").strip().lower() not in _DISABLED_VALUES


def print_ui_hint(uri: str) -> str:
    """The shell command that opens the MLflow UI on ``uri`` (stages print it when done).

    The URI is always passed explicitly: ``mlflow ui`` alone would open ./mlflow.db of
    whatever folder it is started in.
    """
    return f"mlflow ui --backend-store-uri {shlex.quote(uri)}"


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


def git_tags() -> dict[str, str]:
    """Commit and dirty flag of the code being run (the working directory's repository):
    ``mlflow.source.git.commit`` (``unknown`` outside git) and ``git.dirty`` (``true``,
    ``false`` or ``unknown``: whether src/, stages/ or params.yaml differ from the commit).

    The working directory is used rather than ``DVC_ROOT``: a queued experiment runs in
    its own checkout whose HEAD is the baseline with the experiment's changes uncommitted
    (so ``git.dirty`` is ``true``), while the main repository's HEAD may have moved on.
    """
    status = git("status", "--porcelain", "--", *_CODE_PATHS)
    commit = git("rev-parse", "HEAD")
    return {
        "mlflow.source.git.commit": commit.strip() if commit else "unknown",
        "git.dirty": "unknown" if status is None else str(bool(status.strip())).lower(),
    }


def _run_tags(stage: str, round_name: str | None, extra_tags: Mapping[str, Any] | None) -> dict[str, str]:
    """Commit and dirty flag (:func:`git_tags`), ``dvc.exp_name``, ``dvc.exp_baseline_rev``,
    ``dvc.stage`` (from DVC's environment when set), ``stage``, ``round``, the host and pid of
    the process (to find runs it left RUNNING when killed) and the extra tags."""
    tags = git_tags()
    for env, key in (
        ("DVC_EXP_NAME", "dvc.exp_name"),
        ("DVC_EXP_BASELINE_REV", "dvc.exp_baseline_rev"),
        ("DVC_STAGE", "dvc.stage"),
    ):
        if os.environ.get(env):
            tags[key] = os.environ[env]
    tags["stage"] = stage
    tags[HOST_TAG] = socket.gethostname()
    tags[PID_TAG] = str(os.getpid())
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
            retry_locked(lambda: self._client.log_batch(self.run_id, params=flat))

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
            retry_locked(lambda: self._client.log_batch(self.run_id, metrics=batch))

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
            retry_locked(lambda: self._client.log_batch(self.run_id, tags=batch))


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
        retry_locked(lambda: client.set_terminated(run_id, status))
    except Exception as exc:
        _log.warning("could not mark MLflow run %s as %s: %s", run_id, status, exc)


def _process_gone(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (ValueError, PermissionError):  # not a pid we wrote / another user's live process
        return False
    return False


def close_stale_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING runs of this machine whose process is gone; returns their ids.
    A stage killed by SIGKILL cannot close its run, so each stage does this when it starts."""
    host = socket.gethostname().replace("'", "")
    query = f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'"
    runs = retry_locked(lambda: client.search_runs([experiment_id], filter_string=query, max_results=1000))
    stale = [r.info.run_id for r in runs if _process_gone(r.data.tags.get(PID_TAG, ""))]
    for run_id in stale:
        _log.warning("MLflow run %s was left RUNNING by a killed process; marking it KILLED", run_id)
        _end_run(client, run_id, "KILLED")
    return stale


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
    # a torch.distributed job's ranks other than 0 (torchrun's RANK) log nothing: rank 0 records the stage
    if not tracking_enabled() or os.environ.get("RANK", "0") != "0":
        yield NullTracker()
        return
    client, uri, experiment_id = open_store(experiment_name, root)
    close_stale_runs(client, experiment_id)
    run_name = os.environ.get("DVC_STAGE") or stage
    tags = _run_tags(stage, round_name, extra_tags)
    run = retry_locked(lambda: client.create_run(experiment_id, tags=tags, run_name=run_name))
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
