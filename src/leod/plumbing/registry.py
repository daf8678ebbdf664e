"""Publish a trained model to the MLflow model registry under an alias, and load it back.

Promoting a model is a decision, not a pipeline step: ``python -m leod register`` is run by
hand on the model a user chose. The alias moves only once the registered version, loaded
back through MLflow, predicts exactly what the pipeline's own inference path predicts;
anyone with the store then loads ``models:/<name>@<alias>`` (:func:`load_registered`) and
gets the same predictions. The registry needs a database store (the default sqlite is one).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from leod.data.sequence import SequenceData
from leod.plumbing.errors import ConfigError, LeodError
from leod.plumbing.tracking import Tracker, stage_run, tracking_uri
from leod.training.model_files import BEST_WEIGHTS, load_model, read_model_info
from leod.training.recipe import file_sha256

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


def check_sequence(root: Path) -> SequenceData:
    """The first test sequence of a preprocessed dataset: what the loaded-back model is checked on."""
    from leod.data.layout import load_manifest
    from leod.data.sequence import open_sequences

    seqs = open_sequences(root, load_manifest(root), "test")
    if not seqs:
        raise LeodError(f"{root}: no test sequences to check the registered model on")
    return seqs[0]


def pipeline_detections(model_dir: Path, seq: SequenceData, count: int, device: torch.device) -> pd.DataFrame:
    """The detections of the first ``count`` frames of ``seq`` by the pipeline's inference path
    (:func:`leod.detect.dataset.iter_frame_detections`), laid out as :mod:`leod.plumbing.serving`'s."""
    from leod.detect.dataset import InferenceOptions, iter_frame_detections
    from leod.plumbing.serving import detection_table

    model, _ = load_model(model_dir)
    opts = InferenceOptions(
        batch_size=1,
        chunk_length=count,
        conf_threshold=model.cfg.confidence_threshold,
        nms_iou=model.cfg.nms_iou,
        amp=False,  # the served model runs in fp32
        every_frame=True,
    )
    found = iter_frame_detections(model.to(device), [seq], device, opts)
    return detection_table([(det.repr_index, det.boxes) for det, _ in zip(found, range(count), strict=False)])


def check_registered(uri: str, store: str, model_dir: Path, seq: SequenceData, count: int) -> int:
    """Load ``uri`` back and require the predictions of :func:`pipeline_detections`; returns
    the number of boxes compared."""
    if count < 1:
        raise ConfigError(f"--check-frames {count}: at least one frame must be compared")
    loaded = load_registered(uri, store)
    count = min(count, seq.num_frames)
    got = loaded.predict(seq.read_frames(0, count))
    device = next(loaded.unwrap_python_model().detector.parameters()).device
    expected = pipeline_detections(model_dir, seq, count, device)
    if not got.equals(expected):
        raise LeodError(
            f"{uri} does not predict what the pipeline predicts with {model_dir} on the first {count} "
            f"frames of {seq.name} ({len(got)} vs {len(expected)} boxes); the alias was not moved"
        )
    return len(got)


def register_model(
    model_dir: Path,
    name: str,
    alias: str,
    experiment: str,
    check_seq: SequenceData,
    check_frames: int = 20,
    tags: Mapping[str, str] | None = None,
) -> RegisteredModel:
    """Log ``model_dir`` as a new version of registered model ``name``, check it loads back
    with the pipeline's predictions on ``check_seq``, then set ``alias`` on it.

    The version is logged from code as a ``pyfunc`` model (:mod:`leod.plumbing.serving`, no
    pickle) in a ``register`` run of the stages' store, tagged with its model folder, weights
    SHA-256, commit and DVC experiment. A failed check leaves the alias where it was.
    """
    if not name.strip():
        raise ConfigError("registered model name must not be empty")
    check_alias(alias)
    info = read_model_info(model_dir)  # a missing or broken folder fails before MLflow is touched
    weights_sha = file_sha256(Path(model_dir) / BEST_WEIGHTS)
    log_params = {"model_dir": str(model_dir), "name": name, "alias": alias, "val_AP": info.get("val_AP")}
    with stage_run("register", log_params, experiment, extra_tags={"registry.name": name}) as tracker:
        if not isinstance(tracker, Tracker):
            raise LeodError("registering a model needs MLflow tracking: unset LEOD_TRACKING")
        import mlflow
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(tracker.uri)
        mlflow.set_registry_uri(tracker.uri)  # not a registry another call in this process set
        with mlflow.start_run(run_id=tracker.run_id):
            logged = mlflow.pyfunc.log_model(
                name="detector",
                python_model=str(ENTRY_SCRIPT),
                artifacts={"model": str(model_dir)},
                pip_requirements=PIP_REQUIREMENTS,
                registered_model_name=name,
            )
        version = str(logged.registered_model_version)
        client = MlflowClient(tracking_uri=tracker.uri, registry_uri=tracker.uri)
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
        try:
            boxes = check_registered(
                f"models:/{name}/{version}", tracker.uri, model_dir, check_seq, check_frames
            )
        except LeodError:
            client.set_model_version_tag(name, version, "check", "failed")
            raise
        client.set_model_version_tag(name, version, "check.boxes", str(boxes))
        client.set_registered_model_alias(name, alias, version)
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
