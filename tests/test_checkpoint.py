"""Checkpoints: exact resume of model, AdamW, OneCycleLR and the global RNGs; clear errors."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from leod.plumbing.errors import DataFormatError, MissingInputError
from leod.training.checkpoint import (
    FORMAT_VERSION,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)

META = {"model.preset": "tiny", "num_classes": 3}


def _draws() -> tuple[torch.Tensor, np.ndarray, list[float]]:
    """Draws from every global RNG, including the cached-Gaussian paths of numpy and random."""
    return (
        torch.randn(5),
        np.concatenate([np.random.normal(size=3), np.random.random(2)]),  # noqa: NPY002
        [random.gauss(0.0, 1.0), random.random(), random.gauss(0.0, 1.0)],
    )


def _assert_same_draws(a: tuple, b: tuple) -> None:
    assert torch.equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]


def _training_setup(seed: int) -> tuple[nn.Linear, torch.optim.AdamW, torch.optim.lr_scheduler.OneCycleLR]:
    torch.manual_seed(seed)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=20)
    return model, optimizer, scheduler


def _train_step(model: nn.Linear, optimizer: torch.optim.Optimizer, scheduler) -> None:
    """One step whose batch comes from the global torch RNG, so RNG restore matters too."""
    x = torch.randn(8, 4)
    loss = (model(x) ** 2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()


def _save(path: Path, model, optimizer, scheduler, step: int, meta: dict = META) -> None:
    save_checkpoint(
        path,
        model_state=model.state_dict(),
        optimizer_state=optimizer.state_dict(),
        scheduler_state=scheduler.state_dict(),
        step=step,
        rng_state=capture_rng_state(),
        meta=meta,
    )


def test_rng_state_round_trips_exactly() -> None:
    np.random.seed(3)  # noqa: NPY002  (the global state is what is under test)
    np.random.normal()  # noqa: NPY002  numpy now holds a cached Gaussian (has_gauss=1)
    random.seed(4)
    random.gauss(0.0, 1.0)  # random now holds gauss_next
    state = capture_rng_state()
    first = _draws()
    restore_rng_state(state)
    _assert_same_draws(first, _draws())


def test_resume_continues_training_identically(tmp_path: Path) -> None:
    path = tmp_path / "ckpt" / "last.pt"
    model, optimizer, scheduler = _training_setup(seed=0)
    for _ in range(3):
        _train_step(model, optimizer, scheduler)
    _save(path, model, optimizer, scheduler, step=3)

    _train_step(model, optimizer, scheduler)  # the uninterrupted run
    expected_weight = model.weight.detach().clone()
    expected_lr = scheduler.get_last_lr()

    torch.manual_seed(99)  # disturb the RNG the resumed run must restore
    fresh_model, fresh_optimizer, fresh_scheduler = _training_setup(seed=1)
    assert not torch.equal(fresh_model.weight, expected_weight)
    ckpt = load_checkpoint(path, expected_meta=META)
    fresh_model.load_state_dict(ckpt["model_state"])
    fresh_optimizer.load_state_dict(ckpt["optimizer_state"])
    fresh_scheduler.load_state_dict(ckpt["scheduler_state"])
    restore_rng_state(ckpt["rng_state"])
    assert ckpt["step"] == 3
    _train_step(fresh_model, fresh_optimizer, fresh_scheduler)

    assert torch.equal(fresh_model.weight, expected_weight)
    assert fresh_scheduler.get_last_lr() == expected_lr
    assert fresh_optimizer.state_dict()["state"][0]["step"].item() == 4


def test_file_is_weights_only_loadable(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    model, optimizer, scheduler = _training_setup(seed=0)
    _train_step(model, optimizer, scheduler)
    _save(path, model, optimizer, scheduler, step=1)
    raw = torch.load(path, weights_only=True)
    assert raw["format_version"] == FORMAT_VERSION
    assert raw["meta"] == META
    assert torch.equal(raw["model_state"]["bias"], model.bias.detach())
    assert isinstance(raw["rng_state"]["numpy"]["keys"], torch.Tensor)
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic writer left no temporary behind


def test_unloadable_value_is_rejected_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    model, optimizer, scheduler = _training_setup(seed=0)
    with pytest.raises(TypeError, match=r"checkpoint\.meta\.lr holds a float64"):
        _save(path, model, optimizer, scheduler, step=0, meta={"lr": np.float64(0.1)})
    assert not path.exists()


def test_truncated_or_garbage_file_is_reported_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    model, optimizer, scheduler = _training_setup(seed=0)
    _save(path, model, optimizer, scheduler, step=0)
    data = path.read_bytes()
    for cut in (0, 7, len(data) // 2, len(data) - 5):
        path.write_bytes(data[:cut])
        with pytest.raises(DataFormatError, match=rf"corrupt checkpoint {path}"):
            load_checkpoint(path)
    path.write_bytes(b"not a checkpoint" * 50)
    with pytest.raises(DataFormatError, match="corrupt checkpoint"):
        load_checkpoint(path)


def test_foreign_torch_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(DataFormatError, match="not a leod checkpoint"):
        load_checkpoint(path)


def test_meta_mismatch_names_key_and_both_values(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    model, optimizer, scheduler = _training_setup(seed=0)
    _save(path, model, optimizer, scheduler, step=0)
    with pytest.raises(DataFormatError) as err:
        load_checkpoint(path, expected_meta={"model.preset": "nano"})
    assert str(err.value) == f"checkpoint {path} was trained with model.preset='tiny' but params say 'nano'"
    with pytest.raises(DataFormatError, match="has no meta key 'dataset'"):
        load_checkpoint(path, expected_meta={"dataset": "gen1"})
    assert load_checkpoint(path, expected_meta={"num_classes": 3})["step"] == 0


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match="nope.pt does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


class _Payload:
    """A pickled Python object: what a malicious checkpoint would carry."""


def test_pickled_object_is_refused_in_one_line_without_torchs_advice(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"x": _Payload()}, path)
    with pytest.raises(DataFormatError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"refused checkpoint {path}: it holds a pickled Python object")
    assert "_Payload" in message and "\n" not in message and "weights_only" not in message


def test_garbage_file_error_is_one_line_without_torchs_advice(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a torch file at all")
    with pytest.raises(DataFormatError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"corrupt checkpoint {path}: ")
    assert "\n" not in message and "weights_only" not in message
