"""Published RVT / LEOD checkpoints as model folders that :func:`load_model` reads.

RVT and LEOD save the detector under ``state_dict`` with the prefix ``mdl.`` and no config
(facts: ``../shared/fixtures/rvt-parity/README.md``), so the architecture comes from the
command line (size preset, dataset) and the weights are mapped onto
:class:`~leod.model.RecurrentDetector`: renamed, attention ``qkv`` rows permuted, ConvLSTM
1x1 convs flattened. Everything else (head channel order, padding, partitions) matches RVT.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from leod.interop.unpickle import load_checkpoint
from leod.model.config import ModelConfig, PresetName
from leod.model.detector import RecurrentDetector
from leod.model.maxvit import PartitionAttention
from leod.plumbing.atomic import atomic_path, write_json
from leod.plumbing.errors import DataFormatError
from leod.schema import to_dict
from leod.training.model_files import BEST_WEIGHTS, MODEL_INFO
from leod.training.recipe import file_sha256

PREFIX = "mdl."

#: RVT module path pieces -> ours, applied in order to the name without ``mdl.`` (YOLOX
#: ``conv``/``bn`` are the ``0``/``1`` entries of our conv blocks)
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"\.downsample_cf2cl\.", ".downsample."),
    (r"\.att_blocks\.", ".blocks."),
    (r"\.att_window\.", ".window."),
    (r"\.att_grid\.", ".grid."),
    (r"\.self_attn\.", "."),
    (r"\.mlp\.net\.0\.0\.", ".mlp.0."),
    (r"\.mlp\.net\.2\.", ".mlp.2."),
    (r"\.lstm\.conv1x1\.", ".lstm.mix."),
    (r"^yolox_head\.", "head."),
    (r"\.C3_(p3|p4|n3|n4)\.", r".c3_\1."),
    (r"^((?:fpn|head)\..*)\.conv\.weight$", r"\1.0.weight"),
    (r"^((?:fpn|head)\..*)\.bn\.", r"\1.1."),
)


@dataclass(frozen=True)
class RvtDataset:
    """What an RVT checkpoint for one dataset expects: classes, input, attention split."""

    classes: tuple[str, ...]
    in_channels: int
    partition_split: int
    input_size: tuple[int, int]  # (H, W) of the histograms the model was trained on


#: RVT's two published datasets (Gen1: 2 classes at 240x304; 1Mpx: 3 classes at half
#: resolution 360x640, padded to 384x640 with ``partition_split_32 = 2``); the class names
#: are those of params.yaml's ``datasets.gen1/gen4``
RVT_DATASETS: dict[str, RvtDataset] = {
    "gen1": RvtDataset(("car", "pedestrian"), 20, 1, (240, 304)),
    "gen4": RvtDataset(("pedestrian", "two-wheeler", "car"), 20, 2, (360, 640)),
}


def model_config(preset: PresetName, dataset: str) -> ModelConfig:
    """The RVT-T/S/B architecture for ``dataset`` in our config terms."""
    ds = RVT_DATASETS[dataset]
    cfg = ModelConfig(
        preset=preset,
        num_classes=len(ds.classes),
        in_channels=ds.in_channels,
        partition_split=ds.partition_split,  # type: ignore[arg-type]
    )
    cfg.check("model")
    return cfg


def our_key(rvt_key: str) -> str:
    """Our state-dict name of an RVT name (without the ``mdl.`` prefix)."""
    for pattern, repl in _RENAMES:
        rvt_key = re.sub(pattern, repl, rvt_key)
    return rvt_key


def _qkv_rows(dim: int, heads: int) -> Tensor:
    """RVT's row of each of our qkv rows: ours ``j*C + h*dh + d``, RVT ``h*3*dh + j*dh + d``
    (RVT lays the 3C outputs out per head as ``[q_h | k_h | v_h]``, we as ``[q | k | v]``)."""
    return torch.arange(3 * dim).view(heads, 3, dim // heads).transpose(0, 1).reshape(-1)


def convert_state_dict(rvt: dict[str, Tensor], model: RecurrentDetector, source: Path) -> dict[str, Tensor]:
    """RVT's ``mdl.*`` tensors as a state dict of ``model``; names the first key that does not fit."""
    target = model.state_dict()
    out: dict[str, Tensor] = {}
    for name, value in rvt.items():
        if not name.startswith(PREFIX):
            continue
        if not isinstance(value, Tensor):
            raise DataFormatError(f"{source}: state_dict entry '{name}' is not a tensor")
        key = our_key(name[len(PREFIX) :])
        if key not in target:
            raise DataFormatError(
                f"{source}: key '{name}' has no counterpart in RVT-{model.cfg.preset} "
                "(a checkpoint of another architecture or size?)"
            )
        want = target[key].shape
        # RVT's ConvLSTM 1x1 conv (4C, 2C, 1, 1) is our Linear (4C, 2C); gate and input orders agree
        rvt_shape = (*want, 1, 1) if key.endswith("lstm.mix.weight") else want
        if tuple(value.shape) != tuple(rvt_shape):
            raise DataFormatError(
                f"{source}: key '{name}' has shape {list(value.shape)} but RVT-{model.cfg.preset} "
                f"with {model.cfg.num_classes} classes expects {list(rvt_shape)} "
                "(a checkpoint of another size or dataset?)"
            )
        value = value.detach().to(target[key].dtype).reshape(want)
        if ".qkv." in key:
            attention = model.get_submodule(key.rsplit(".", 2)[0])
            assert isinstance(attention, PartitionAttention)
            value = value[_qkv_rows(want[0] // 3, attention.heads)]
        out[key] = value.contiguous()
    missing = [k for k in target if k not in out]
    if missing:
        raise DataFormatError(
            f"{source}: no weights for '{missing[0]}' ({len(missing)} missing; a checkpoint of another "
            "architecture or size?)"
        )
    return out


def read_rvt_state_dict(path: Path) -> tuple[dict[str, Tensor], dict]:
    """The ``state_dict`` of an RVT/LEOD Lightning checkpoint and a few facts about the file."""
    ckpt = load_checkpoint(path)
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise DataFormatError(f"{path}: no 'state_dict' mapping (not a Lightning checkpoint)")
    if not any(isinstance(k, str) and k.startswith(PREFIX) for k in state):
        raise DataFormatError(
            f"{path}: no '{PREFIX}' keys in state_dict (not an RVT/LEOD detector checkpoint)"
        )
    facts = {k: ckpt.get(k) for k in ("epoch", "global_step", "pytorch-lightning_version")}
    return state, {k: v for k, v in facts.items() if isinstance(v, int | str)}


def import_rvt(checkpoint: Path, out_dir: Path, preset: PresetName, dataset: str) -> RecurrentDetector:
    """Write ``out_dir`` (``model.pt`` + ``model.json``) from an RVT/LEOD checkpoint."""
    checkpoint = Path(checkpoint)
    cfg = model_config(preset, dataset)
    model = RecurrentDetector(cfg)
    state, facts = read_rvt_state_dict(checkpoint)
    model.load_state_dict(convert_state_dict(state, model, checkpoint))
    info = {
        "model": to_dict(cfg),
        "classes": list(RVT_DATASETS[dataset].classes),
        "input_size": list(RVT_DATASETS[dataset].input_size),
        "imported": {
            "from": checkpoint.name,
            "sha256": file_sha256(checkpoint),
            "format": "rvt-lightning",
            "dataset": dataset,
            **facts,
        },
    }
    with atomic_path(Path(out_dir), is_dir=True) as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp / BEST_WEIGHTS)
        write_json(tmp / MODEL_INFO, info)
    return model.eval()
