"""Publish a trained model to the MLflow model registry under an alias, and load it back.

Promoting a model is a decision, not a pipeline step: ``python -m leod register`` is run
by hand on the model a user chose (by default the chain's last round), after comparing
rounds and experiments. It

1. opens a ``register`` run in the project's MLflow store (same store and tags as the
   stages, see :mod:`leod.tracking`),
2. logs the model folder as a ``pyfunc`` model from code (:mod:`leod.serving`; no pickle),
3. registers it as a new version of ``name`` and points ``alias`` (e.g. ``champion``) at it,
4. tags the version with where it came from (model folder, weights SHA-256, commit, DVC
   experiment).

Anyone with the store then loads ``models:/<name>@<alias>`` with
:func:`load_registered` (or ``mlflow.pyfunc.load_model``) and gets the same predictions.
The registry needs a database store (the default sqlite store is one).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from leod.errors import ConfigError, LeodError
from leod.tracking import Tracker, stage_run, tracking_uri
from leod.training.model_files import BEST_WEIGHTS, read_model_info

#: the script MLflow stores with the model and runs on load ("models from code")
ENTRY_SCRIPT = Path(__file__).with_name("pyfunc_entry.py")
#: what a serving environment must install besides this project
PIP_REQUIREMENTS = ["torch>=2.4", "einops>=0.7", "numpy>=1.26", "pandas", "mlflow>=3.7,<4"]
# MLflow aliases: letters, digits, '_' and '-'; "latest" and "v<number>" are reserved
_ALIAS = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    alias: str
    run_id: str
    tracking_uri: str

    @property
    def uri(self) -> str:
        """The ``models:/`` URI that follows the alias."""
        return f"models:/{self.name}@{self.alias}"


def check_alias(alias: str) -> None:
    if not _ALIAS.match(alias) or _RESERVED_ALIAS.match(alias):
        raise ConfigError(
            f"alias {alias!r} is not usable: letters, digits, '_' and '-' only; 'latest' and "
            "'v<number>' are reserved by MLflow"
        )


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def register_model(
    model_dir: Path, name: str, alias: str, experiment: str, tags: Mapping[str, str] | None = None
) -> RegisteredModel:
    """Log ``model_dir`` as a new version of registered model ``name`` and set ``alias`` on it."""
    if not name.strip():
        raise ConfigError("registered model name must not be empty")
    check_alias(alias)
    info = read_model_info(model_dir)  # a missing or broken folder fails before MLflow is touched
    weights_sha = sha256(Path(model_dir) / BEST_WEIGHTS)
    log_params = {"model_dir": str(model_dir), "name": name, "alias": alias, "val_AP": info.get("val_AP")}
    with stage_run("register", log_params, experiment, extra_tags={"registry.name": name}) as tracker:
        if not isinstance(tracker, Tracker):
            raise LeodError("registering a model needs MLflow tracking: unset LEOD_TRACKING")
        import mlflow
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(tracker.uri)
        with mlflow.start_run(run_id=tracker.run_id):
            logged = mlflow.pyfunc.log_model(
                name="detector",
                python_model=str(ENTRY_SCRIPT),
                artifacts={"model": str(model_dir)},
                pip_requirements=PIP_REQUIREMENTS,
                registered_model_name=name,
            )
        version = str(logged.registered_model_version)
        client = MlflowClient(tracking_uri=tracker.uri)
        client.set_registered_model_alias(name, alias, version)
        run_tags = client.get_run(tracker.run_id).data.tags
        version_tags = {
            "source.model_dir": str(model_dir),
            "source.weights_sha256": weights_sha,
            "source.git_commit": run_tags.get("mlflow.source.git.commit", "unknown"),
            **{k: run_tags[k] for k in ("dvc.exp_name",) if k in run_tags},
            **(tags or {}),
        }
        for key, value in version_tags.items():
            client.set_model_version_tag(name, version, key, str(value))
    return RegisteredModel(name, version, alias, tracker.run_id, tracker.uri)


def load_registered(uri: str, store: str | None = None):  # -> mlflow.pyfunc.PyFuncModel
    """Load a ``models:/name@alias`` (or ``models:/name/version``) URI as a pyfunc model.

    ``store`` is the tracking URI (default: the project's store, as for the stages). The
    detector itself is ``load_registered(uri).unwrap_python_model().detector``.
    """
    import mlflow

    store = store or tracking_uri()
    mlflow.set_tracking_uri(store)
    mlflow.set_registry_uri(store)
    try:
        return mlflow.pyfunc.load_model(uri)
    except mlflow.exceptions.MlflowException as exc:
        raise LeodError(f"cannot load {uri} from {store}: {exc.message}") from exc
