"""A trained model on disk: ``model.pt`` (weights) and ``model.json`` (how to rebuild it).

Every consumer of a model folder goes through here: the next round's initialisation, the
pseudo labeller, evaluation and the MLflow registry. Weights are read with
``torch.load(weights_only=True)`` (plain tensors, never arbitrary pickled objects), and the
architecture comes from ``model.json``, so a folder is self-describing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from leod.config import Params
from leod.model.config import ModelConfig
from leod.model.detector import RecurrentDetector
from leod.plumbing.atomic import atomic_path, write_json
from leod.plumbing.errors import ConfigError, DataFormatError, MissingInputError, read_json
from leod.schema import from_dict, to_dict
from leod.training.checkpoint import load_plain

BEST_WEIGHTS = "model.pt"
MODEL_INFO = "model.json"


#: architecture keys that must agree between a saved model and the params that load it
def write_model(folder: Path, weights: Mapping[str, torch.Tensor], params: Params, info: dict) -> None:
    """Weights plus what is needed to rebuild the model (config, classes), into ``folder``."""
    torch.save({k: v.detach().cpu() for k, v in weights.items()}, folder / BEST_WEIGHTS)
    classes = params.preset.classes
    write_json(folder / MODEL_INFO, {"model": to_dict(params.model_config), "classes": classes, **info})


def save_model(model_dir: Path, weights: Mapping[str, torch.Tensor], params: Params, info: dict) -> None:
    """:func:`write_model` into a folder beside ``model_dir``, then renamed into place: a run
    killed or failing here (disk full) leaves the previous model folder as it was."""
    with atomic_path(model_dir, is_dir=True) as tmp:
        write_model(tmp, weights, params, info)


def read_model_info(model_dir: Path) -> dict:
    """``model.json`` of a model folder; a missing or damaged folder names what is wrong."""
    info_path, weights = Path(model_dir) / MODEL_INFO, Path(model_dir) / BEST_WEIGHTS
    if not info_path.is_file() or not weights.is_file():
        raise MissingInputError(
            f"{model_dir}: no trained model here (expected {BEST_WEIGHTS} and {MODEL_INFO})"
        )
    info = read_json(info_path, "model description")
    if not isinstance(info, dict) or not isinstance(info.get("model"), dict):
        raise DataFormatError(f"{info_path}: expected an object with a 'model' section")
    return info


def _read_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    weights = Path(model_dir) / BEST_WEIGHTS
    state = load_plain(weights, "model weights")
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise DataFormatError(f"{weights}: not a state dict (expected parameter names mapped to tensors)")
    return state


def load_into(model: RecurrentDetector, weights: Mapping[str, torch.Tensor], source: Path) -> None:
    """``model.load_state_dict(weights)``; weights that do not fit are one error line naming ``source``."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    wrong = [k for k in own if k in weights and weights[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = [
            f"{label} {len(keys)} (first: {keys[0]})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        ]
        raise DataFormatError(
            f"{source}: the weights do not match the model of {MODEL_INFO}: {'; '.join(parts)}"
        )
    model.load_state_dict(weights)


def load_weights(model_dir: Path, params: Params) -> dict[str, torch.Tensor]:
    """Weights saved by :func:`save_model`, checked against the current model params."""
    info = read_model_info(model_dir)
    have, want = info["model"], json.loads(json.dumps(to_dict(params.model_config)))  # as saved
    for key in sorted(set(have) | set(want)):  # the whole config: any difference changes the network
        if have.get(key) != want.get(key):
            raise DataFormatError(
                f"{model_dir}: model was trained with model.{key}={have.get(key)!r} "
                f"but params say {want.get(key)!r}"
            )
    return _read_weights(model_dir)


def build_model(model_dir: Path, params: Params) -> RecurrentDetector:
    """The model of ``model_dir``, checked against ``params`` (the pipeline's stages)."""
    model = RecurrentDetector(params.model_config)
    load_into(model, load_weights(model_dir, params), Path(model_dir) / BEST_WEIGHTS)
    return model


def load_model(model_dir: Path) -> tuple[RecurrentDetector, dict]:
    """The model of ``model_dir`` and its ``model.json``, with no params file (registry, serving)."""
    info = read_model_info(model_dir)
    try:
        cfg = from_dict(ModelConfig, info["model"], "model")
    except ConfigError as exc:
        raise DataFormatError(f"{Path(model_dir) / MODEL_INFO}: {exc}") from exc
    model = RecurrentDetector(cfg)
    load_into(model, _read_weights(model_dir), Path(model_dir) / BEST_WEIGHTS)
    return model.eval(), info
