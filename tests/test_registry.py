"""MLflow model registry round trip against a real sqlite store: register, check, alias, load back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from leod.config import params_from_dict
from leod.model.detector import RecurrentDetector
from leod.plumbing.errors import ConfigError, LeodError, MissingInputError
from leod.plumbing.registry import check_sequence, load_registered, register_model
from leod.plumbing.serving import COLUMNS, DetectorModel, detect_frames
from leod.training.model_files import load_model, save_model
from test_training import tiny_data  # noqa: F401  (a module fixture: the tiny preprocessed dataset)
from tiny import tiny_dict


@pytest.fixture
def model_dir(tmp_path: Path, params_dict: dict) -> Path:
    params = params_from_dict(tiny_dict(params_dict))
    torch.manual_seed(0)
    model = RecurrentDetector(params.model_config)
    # a detector fresh from init predicts nothing above threshold; bias objectness up so
    # the comparison below covers real boxes
    with torch.no_grad():
        for conv in (*model.head.obj_preds, *model.head.cls_preds):
            conv.bias.fill_(3.0)
    out = tmp_path / "model"
    save_model(out, model.state_dict(), params, {"step": 0, "val_AP": 0.5})
    return out


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("LEOD_TRACKING", "1")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture
def check_seq(tiny_data):  # noqa: F811
    root, _ = tiny_data
    return check_sequence(root / "pre")


def _alias_version(store: str, name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store, registry_uri=store)
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def test_register_alias_and_load_back_gives_the_same_predictions(model_dir, store, check_seq) -> None:
    from mlflow.tracking import MlflowClient

    first = register_model(model_dir, "leod-test", "champion", "leod-test-exp", check_seq, 6)
    second = register_model(model_dir, "leod-test", "champion", "leod-test-exp", check_seq, 6)
    assert (first.version, second.version) == ("1", "2")
    client = MlflowClient(tracking_uri=store, registry_uri=store)
    version = client.get_model_version_by_alias("leod-test", "champion")
    assert str(version.version) == "2"  # the alias moved to the newest registration
    assert version.tags["source.model_dir"] == str(model_dir)
    assert len(version.tags["source.weights_sha256"]) == 64
    assert int(version.tags["check.boxes"]) > 0  # the check compared real boxes

    loaded = load_registered(second.uri, store)
    frames = np.random.default_rng(0).integers(0, 4, size=(4, 20, 48, 64)).astype(np.float32)
    expected = detect_frames(load_model(model_dir)[0], frames)
    got = loaded.predict(frames)
    assert list(got.columns) == COLUMNS
    assert len(got) > 0 and got.equals(expected)
    own, _ = load_model(model_dir)
    registered = loaded.unwrap_python_model().detector
    for (k, a), (_, b) in zip(own.state_dict().items(), registered.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_failed_check_leaves_the_alias_where_it_was(model_dir, store, check_seq, monkeypatch) -> None:
    register_model(model_dir, "leod-test", "champion", "leod-test-exp", check_seq, 6)
    served = DetectorModel.predict

    def drops_a_box(self, context, model_input, params=None):  # fault injection: a serving bug
        return served(self, context, model_input, params).iloc[1:].reset_index(drop=True)

    monkeypatch.setattr(DetectorModel, "predict", drops_a_box)
    with pytest.raises(LeodError, match="does not predict what the pipeline predicts.*alias was not moved"):
        register_model(model_dir, "leod-test", "champion", "leod-test-exp", check_seq, 6)
    assert _alias_version(store, "leod-test", "champion") == "1"


def test_bad_check_data_fails_before_the_registry_is_touched(model_dir, store, tmp_path, params_dict) -> None:
    from leod.plumbing.cli import main

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_dict(params_dict)))
    status = main(
        ["register", "--params", str(tmp_path / "params.yaml"), "--model", str(model_dir)]
        + ["--name", "leod-test", "--data", str(tmp_path / "nowhere")]
    )
    assert status == 2
    assert _alias_version(store, "leod-test", "champion") is None


def test_bad_inputs_fail_clearly(model_dir: Path, store: str, tmp_path: Path, check_seq) -> None:
    with pytest.raises(ConfigError, match="alias"):
        register_model(model_dir, "leod-test", "latest", "leod-test-exp", check_seq)
    with pytest.raises(MissingInputError, match="no trained model"):
        register_model(tmp_path / "nowhere", "leod-test", "champion", "leod-test-exp", check_seq)
    with pytest.raises(LeodError, match="cannot load"):
        load_registered("models:/never-registered@champion", store)
