"""A trained model on disk: ``model.pt`` (weights) and ``model.json`` (how to rebuild it).

Every consumer of a model folder goes through here: the next round's initialisation, the
pseudo labeller, evaluation and the MLflow registry. Weights are read with
``torch.load(weights_only=True)`` (plain tensors, never arbitrary pickled objects), and the
architecture comes from ``model.json``, so a folder is self-describing.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from leod.atomic import atomic_path, write_json
from leod.config import Params
from leod.errors import ConfigError, DataFormatError, MissingInputError
from leod.model.config import ModelConfig
from leod.model.detector import RecurrentDetector
from leod.schema import from_dict, to_dict

BEST_WEIGHTS = "model.pt"
MODEL_INFO = "model.json"
#: architecture keys that must agree between a saved model and the params that load it
_ARCHITECTURE_KEYS = ("preset", "num_classes", "in_channels", "embed_dim", "dim_head")


def save_model(model_dir: Path, model: RecurrentDetector, params: Params, info: dict) -> None:
    """Best weights plus what is needed to rebuild the model (config, classes)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(model_dir / BEST_WEIGHTS) as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    write_json(
        model_dir / MODEL_INFO,
        {"model": to_dict(params.model_config), "classes": params.preset.classes, **info},
    )


def read_model_info(model_dir: Path) -> dict:
    """``model.json`` of a model folder; a missing or damaged folder names what is wrong."""
    info_path, weights = Path(model_dir) / MODEL_INFO, Path(model_dir) / BEST_WEIGHTS
    if not info_path.is_file() or not weights.is_file():
        raise MissingInputError(
            f"{model_dir}: no trained model here (expected {BEST_WEIGHTS} and {MODEL_INFO})"
        )
    try:
        info = json.loads(info_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{info_path}: not valid JSON ({exc})") from exc
    if not isinstance(info, dict) or not isinstance(info.get("model"), dict):
        raise DataFormatError(f"{info_path}: expected an object with a 'model' section")
    return info


def _read_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    weights = Path(model_dir) / BEST_WEIGHTS
    try:
        return torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged zip/pickle fails in many ways
        raise DataFormatError(f"corrupt model weights {weights}: {exc}") from exc


def load_weights(model_dir: Path, params: Params) -> dict[str, torch.Tensor]:
    """Weights saved by :func:`save_model`, checked against the current model params."""
    info = read_model_info(model_dir)
    want = to_dict(params.model_config)
    for key in _ARCHITECTURE_KEYS:
        if info["model"].get(key) != want.get(key):
            raise DataFormatError(
                f"{model_dir}: model was trained with model.{key}={info['model'].get(key)!r} "
                f"but params say {want.get(key)!r}"
            )
    return _read_weights(model_dir)


def build_model(model_dir: Path, params: Params) -> RecurrentDetector:
    """The model of ``model_dir``, checked against ``params`` (the pipeline's stages)."""
    model = RecurrentDetector(params.model_config)
    model.load_state_dict(load_weights(model_dir, params))
    return model


def load_model(model_dir: Path) -> tuple[RecurrentDetector, dict]:
    """The model of ``model_dir`` and its ``model.json``, with no params file (registry, serving)."""
    info = read_model_info(model_dir)
    try:
        cfg = from_dict(ModelConfig, info["model"], "model")
    except ConfigError as exc:
        raise DataFormatError(f"{Path(model_dir) / MODEL_INFO}: {exc}") from exc
    model = RecurrentDetector(cfg)
    model.load_state_dict(_read_weights(model_dir))
    return model.eval(), info
