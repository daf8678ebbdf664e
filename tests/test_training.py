"""The training loop end to end on a tiny synthetic dataset: it learns, it resumes exactly."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from leod.config import params_from_dict
from leod.data.layout import load_manifest
from leod.preprocess.dataset import convert_dataset
from leod.subsample import make_split
from leod.synthetic.generate import generate_dataset
from leod.training.loop import train
from leod.training.model_files import build_model
from tiny import tiny_dict


def tiny_params(params_dict: dict, **train) -> object:
    d = tiny_dict(params_dict)
    d["train"].update(
        steps=6,
        eval_every=6,
        checkpoint_every=3,
        log_every=1,
        pct_start=0.4,
        eval_batch_size=2,
        device="cpu",
    )
    d["train"].update(train)
    return params_from_dict(d)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory, request) -> tuple[Path, dict]:
    import yaml

    repo = Path(__file__).resolve().parents[1]
    params_dict = yaml.safe_load((repo / "params.yaml").read_text())
    params = tiny_params(params_dict)
    root = tmp_path_factory.mktemp("tiny")
    preset = params.datasets["synthetic"]
    generate_dataset(
        params.synthetic, root / "raw", preset.height, preset.width, preset.classes, progress=False
    )
    convert_dataset(params, root / "raw", root / "pre", log=lambda _: None, progress=False)
    split = make_split(
        load_manifest(root / "pre"), root / "pre", params.subsample, params.loader.sequence_length
    )
    return root, {"params": params_dict, "kept": split.sequences}


class Killed(Exception):
    """Stands in for the process being killed between two steps."""


def kill_at(step: int):
    def hook(row: dict) -> None:
        if row["step"] == step:
            raise Killed

    return hook


pytestmark = pytest.mark.slow


def test_resumed_run_ends_with_identical_weights(tiny_data):
    root, info = tiny_data
    params = tiny_params(info["params"])
    full = train(params, root / "pre", info["kept"], root / "m_full", root / "ck_full", progress=False)
    assert full.steps == 6 and not (root / "ck_full" / "last.pt").exists()

    with pytest.raises(Killed):
        train(
            params,
            root / "pre",
            info["kept"],
            root / "m_res",
            root / "ck_res",
            progress=False,
            log_row=kill_at(4),
        )
    assert (root / "ck_res" / "last.pt").is_file()  # checkpoint of step 3 survived the kill
    resumed = train(params, root / "pre", info["kept"], root / "m_res", root / "ck_res", progress=False)
    assert resumed.steps == 6
    for key, value in full.final_weights.items():
        assert torch.equal(value, resumed.final_weights[key]), key
    assert [r["step"] for r in resumed.history] == [r["step"] for r in full.history]


def test_stale_checkpoint_from_other_params_is_ignored(tiny_data):
    root, info = tiny_data
    params = tiny_params(info["params"], steps=3, checkpoint_every=1, eval_every=3)
    with pytest.raises(Killed):
        train(
            params,
            root / "pre",
            info["kept"],
            root / "m_a",
            root / "ck_a",
            progress=False,
            log_row=kill_at(2),
        )
    other = tiny_params(info["params"], steps=3, checkpoint_every=1, eval_every=3, lr=0.0005)
    result = train(other, root / "pre", info["kept"], root / "m_a", root / "ck_a", progress=False)
    assert [r["step"] for r in result.history] == [1, 2, 3]  # started over, not resumed


def test_saved_model_rebuilds_and_rejects_other_presets(tiny_data):
    root, info = tiny_data
    params = tiny_params(info["params"])
    if not (root / "m_full" / "model.pt").exists():
        train(params, root / "pre", info["kept"], root / "m_full", root / "ck_full", progress=False)
    model = build_model(root / "m_full", params)
    assert sum(p.numel() for p in model.parameters()) > 0
    d = copy.deepcopy(info["params"])
    d["model"]["preset"] = "tiny"
    from leod.errors import DataFormatError

    other = tiny_params(d)
    with pytest.raises(DataFormatError, match="model.preset='nano' but params say 'tiny'"):
        build_model(root / "m_full", other)


def test_non_finite_loss_stops_with_a_clear_error(tiny_data):
    from leod.errors import LeodError
    from leod.model.detector import RecurrentDetector
    from leod.training.model_files import save_model

    root, info = tiny_data
    params = tiny_params(info["params"], steps=6, checkpoint_every=1)
    poisoned = RecurrentDetector(params.model_config)
    with torch.no_grad():
        for p in poisoned.head.parameters():
            p.fill_(float("nan"))
    save_model(root / "m_nan", poisoned, params, {"step": 0})
    with pytest.raises(LeodError, match="non-finite for 3 consecutive steps"):
        train(
            params,
            root / "pre",
            info["kept"],
            root / "m_out",
            root / "ck_nan",
            progress=False,
            init_weights=root / "m_nan",
        )
    assert not (root / "m_out" / "model.pt").exists()  # nothing half-written
