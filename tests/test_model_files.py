"""A model folder is rebuilt from its own model.json, and loading it with params whose model
section differs in any key is refused, even where the weights would fit (partition_split
changes the padding and attention windows, not a single weight shape)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from leod.config import Params, params_from_dict
from leod.model.detector import RecurrentDetector
from leod.plumbing.errors import DataFormatError
from leod.training.model_files import build_model, load_model, save_model
from tiny import tiny_dict


def _params(params_dict: dict, **model) -> Params:
    d = tiny_dict(params_dict)
    d["model"].update(model)
    return params_from_dict(d)


@pytest.fixture
def saved(params_dict: dict, tmp_path: Path) -> tuple[Path, dict]:
    """A model folder trained (here: initialised) with partition_split 1."""
    torch.manual_seed(0)
    params = _params(params_dict, partition_split=1)
    save_model(tmp_path / "m", RecurrentDetector(params.model_config).state_dict(), params, {"step": 0})
    return tmp_path / "m", params_dict


def test_changed_partition_split_is_refused_though_the_weights_fit(saved: tuple[Path, dict]) -> None:
    folder, params_dict = saved
    other = _params(params_dict, partition_split=2)
    same_shapes = {k: v.shape for k, v in RecurrentDetector(other.model_config).state_dict().items()}
    assert same_shapes == {k: v.shape for k, v in torch.load(folder / "model.pt", weights_only=True).items()}
    with pytest.raises(DataFormatError, match="model.partition_split=1 but params say 2"):
        build_model(folder, other)
    assert build_model(folder, _params(params_dict, partition_split=1)).cfg.partition_split == 1


def test_every_model_key_is_compared(saved: tuple[Path, dict]) -> None:
    folder, params_dict = saved
    base = _params(params_dict)
    for key, value in {"nms_iou": 0.5, "layer_scale_init": 1e-4}.items():
        assert getattr(base.model_config, key) != value
        with pytest.raises(DataFormatError, match=f"model.{key}="):
            build_model(folder, _params(params_dict, **{key: value}))


def test_a_folder_alone_rebuilds_its_own_model(saved: tuple[Path, dict]) -> None:
    """Without params (registry, serving) the architecture comes from model.json."""
    folder, params_dict = saved
    model, info = load_model(folder)
    assert model.cfg == _params(params_dict).model_config
    assert info["model"]["partition_split"] == 1
    reference = torch.load(folder / "model.pt", weights_only=True)
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())
