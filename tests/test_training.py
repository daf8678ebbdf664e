"""The training loop end to end on a tiny synthetic dataset: it learns, it resumes exactly,
it survives a non-finite step, and a killed stage resumes only a run of the same inputs."""

from __future__ import annotations

import copy
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from leod.config import params_from_dict
from leod.data.layout import load_manifest
from leod.preprocess.dataset import convert_dataset
from leod.subsample import make_split
from leod.synthetic.generate import generate_dataset
from leod.training import loop
from leod.training.loop import clear_scratch, train
from leod.training.model_files import build_model, save_model
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
    full = train(params, root / "pre", info["kept"], root / "ck_full", progress=False)
    # the scratch checkpoint (holding the best weights) stays until the caller has published them
    assert full.steps == 6 and (root / "ck_full" / "last.pt").is_file()
    clear_scratch(root / "ck_full")
    assert not (root / "ck_full" / "last.pt").exists()

    with pytest.raises(Killed):
        train(
            params,
            root / "pre",
            info["kept"],
            root / "ck_res",
            progress=False,
            log_row=kill_at(4),
        )
    assert (root / "ck_res" / "last.pt").is_file()  # checkpoint of step 3 survived the kill
    resumed = train(params, root / "pre", info["kept"], root / "ck_res", progress=False)
    assert resumed.steps == 6
    for key, value in full.final_weights.items():
        assert torch.equal(value, resumed.final_weights[key]), key
        assert torch.equal(full.best_weights[key], resumed.best_weights[key]), key
    assert [r["step"] for r in resumed.history] == [r["step"] for r in full.history]


def test_stale_checkpoint_from_other_params_is_ignored(tiny_data):
    root, info = tiny_data
    params = tiny_params(info["params"], steps=3, checkpoint_every=1, eval_every=3)
    with pytest.raises(Killed):
        train(
            params,
            root / "pre",
            info["kept"],
            root / "ck_a",
            progress=False,
            log_row=kill_at(2),
        )
    other = tiny_params(info["params"], steps=3, checkpoint_every=1, eval_every=3, lr=0.0005)
    result = train(other, root / "pre", info["kept"], root / "ck_a", progress=False)
    assert [r["step"] for r in result.history] == [1, 2, 3]  # started over, not resumed


def test_corrupt_checkpoint_is_ignored_with_a_warning(tiny_data, caplog):
    root, info = tiny_data
    params = tiny_params(info["params"], steps=3, checkpoint_every=1, eval_every=3)
    (root / "ck_bad").mkdir()
    (root / "ck_bad" / "last.pt").write_bytes(b"PK\x03\x04 truncated by a full disk")
    with caplog.at_level(logging.WARNING, logger="leod.train"):
        result = train(params, root / "pre", info["kept"], root / "ck_bad", progress=False)
    assert [r["step"] for r in result.history] == [1, 2, 3]  # started over
    assert any("ignoring" in r.message and "corrupt checkpoint" in r.message for r in caplog.records)


def test_saved_model_rebuilds_and_rejects_other_presets(tiny_data):
    root, info = tiny_data
    params = tiny_params(info["params"])
    from leod.model.detector import RecurrentDetector

    save_model(root / "m_full", RecurrentDetector(params.model_config).state_dict(), params, {"step": 0})
    model = build_model(root / "m_full", params)
    assert sum(p.numel() for p in model.parameters()) > 0
    d = copy.deepcopy(info["params"])
    d["model"]["preset"] = "tiny"
    from leod.plumbing.errors import DataFormatError

    other = tiny_params(d)
    with pytest.raises(DataFormatError, match="model.preset='nano' but params say 'tiny'"):
        build_model(root / "m_full", other)


def test_non_finite_loss_stops_with_a_clear_error(tiny_data):
    from leod.model.detector import RecurrentDetector
    from leod.plumbing.errors import LeodError

    root, info = tiny_data
    params = tiny_params(info["params"], steps=6, checkpoint_every=1)
    poisoned = RecurrentDetector(params.model_config)
    with torch.no_grad():
        for p in poisoned.head.parameters():
            p.fill_(float("nan"))
    save_model(root / "m_nan", poisoned.state_dict(), params, {"step": 0})
    with pytest.raises(LeodError, match="non-finite for 3 consecutive steps"):
        train(
            params,
            root / "pre",
            info["kept"],
            root / "ck_nan",
            progress=False,
            init_weights=root / "m_nan",
        )


def nan_injector(monkeypatch: pytest.MonkeyPatch, keys: list) -> None:
    """Fault injection: one batch's frames become NaN (a corrupt frame, an overflowing layer).

    The poisoned batch is picked by its content (sequences and frame indices), so that a
    resumed run, which replays the sampler in a fresh generator, poisons the same batch:
    with ``keys`` empty, the first supervised batch from the third on is chosen and recorded.
    """
    real = loop.iterate_batches

    def poisoned(*args, **kwargs):
        for i, batch in enumerate(real(*args, **kwargs)):
            key = (batch.sequences, batch.repr_index.tolist())
            if not keys and i >= 2 and bool(batch.supervised.any()):
                keys.append(key)
            if keys and key == keys[0]:
                batch.frames = torch.full_like(batch.frames, float("nan"))
            yield batch

    monkeypatch.setattr(loop, "iterate_batches", poisoned)


def test_nan_frame_is_skipped_and_resume_around_it_is_exact(tiny_data, monkeypatch, caplog):
    root, info = tiny_data
    params = tiny_params(info["params"], steps=8, checkpoint_every=2, eval_every=8)
    keys: list = []
    nan_injector(monkeypatch, keys)
    with caplog.at_level(logging.WARNING, logger="leod.train"):
        full = train(params, root / "pre", info["kept"], root / "ck_nan_full", progress=False)
    skipped = [r.message for r in caplog.records if "non-finite loss" in r.message]
    assert keys and len(skipped) == 1, skipped  # one poisoned step; the memory did not stay NaN
    nan_step = int(skipped[0].split("step ")[1].split(" ")[0])
    assert full.steps == 8 and all(torch.isfinite(v).all() for v in full.final_weights.values())
    assert nan_step + 2 <= 8

    with pytest.raises(Killed):  # killed after the NaN step, before the next checkpoint is used
        train(
            params,
            root / "pre",
            info["kept"],
            root / "ck_nan_res",
            progress=False,
            log_row=kill_at(nan_step + 2),
        )
    resumed = train(params, root / "pre", info["kept"], root / "ck_nan_res", progress=False)
    for key, value in full.final_weights.items():
        assert torch.equal(value, resumed.final_weights[key]), key


def test_nan_memory_is_cleared_where_a_sequence_starts():
    from leod.model.convlstm import reset_states

    h = torch.full((2, 3, 4, 5), float("nan"))
    states = reset_states([(h, h.clone())], torch.tensor([True, False]))
    assert torch.equal(states[0][0][0], torch.zeros(3, 4, 5)) and states[0][1][1].isnan().all()


def stage_inputs(root: Path, info: dict, tmp: Path) -> dict:
    """A round's inputs for stages/train.py: params file, teacher model, two pseudo-label sets.

    Set ``a`` is the ground truth as pseudo labels; set ``b`` differs only in its cars'
    objectness (under selftrain.soft_thresh, so they become ignore boxes).
    """
    import yaml

    from leod.data.sequence import open_sequences
    from leod.model.detector import RecurrentDetector
    from leod.pseudo.store import LABELS_FILE, SequenceLabels, save_pseudo_labels

    d = tiny_dict(info["params"])
    d["train"].update(steps=8, eval_every=2, checkpoint_every=2, log_every=1, pct_start=0.4, device="cpu")
    d["train"]["eval_batch_size"] = 2
    d["rounds"] = {"r1": {"prev": "r0"}}
    (tmp / "params.yaml").write_text(yaml.safe_dump(d))
    params = params_from_dict(d)
    torch.manual_seed(0)
    save_model(tmp / "prev", RecurrentDetector(params.model_config).state_dict(), params, {"step": 0})
    seqs = open_sequences(root / "pre", load_manifest(root / "pre"), "train")
    for name, car_objectness in (("a", 1.0), ("b", 0.5)):
        labels = {}
        for seq in seqs:
            frames = []
            for r in seq.label_repr:
                boxes = seq.boxes(int(r)).copy()
                boxes["class_confidence"] = 1.0
                boxes["objectness"] = np.where(boxes["class_id"] == 0, car_objectness, 1.0)
                frames.append(boxes)
            labels[seq.name] = SequenceLabels.from_frames(seq.label_repr, frames)
        (tmp / name).mkdir()
        save_pseudo_labels(tmp / name / LABELS_FILE, labels)
    return {
        "params": tmp / "params.yaml",
        "data": root / "pre",
        "prev": tmp / "prev",
        "imported": tmp / "imported",
        "a": tmp / "a",
        "b": tmp / "b",
    }


def stage_args(inputs: dict, pseudo: str, out: Path) -> list[str]:
    return [
        "--params", inputs["params"], "--name", "r1", "--round", "r1", "--data", inputs["data"],
        "--pseudo", inputs[pseudo], "--prev", inputs["prev"], "--imported", inputs["imported"],
        "--model", out / "models" / "r1",
        "--ckpt", out / "ck", "--metrics", out / "train_r1.json", "--curves", out / "curves", "--no-progress",
    ]  # fmt: skip


def test_killed_round_rerun_on_other_pseudo_labels_equals_a_clean_run(tiny_data, tmp_path):
    """kill -9 of train@r1 on pseudo labels a; rerun on b ends as a clean run on b, and the
    model folder of before the kill is untouched until the rerun publishes its own."""
    import subprocess
    import sys
    import time

    root, info = tiny_data
    inputs = stage_inputs(root, info, tmp_path)
    script = Path(__file__).resolve().parents[1] / "stages" / "train.py"
    out, clean = tmp_path / "out", tmp_path / "clean"
    old = out / "models" / "r1"
    shutil.copytree(inputs["prev"], old)  # the model of an earlier run of this stage
    before = {f.name: f.read_bytes() for f in old.iterdir()}

    args = [sys.executable, str(script), *map(str, stage_args(inputs, "a", out))]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while not (out / "ck" / "last.pt").exists() and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    _, err = proc.communicate()
    assert proc.returncode == -9, f"the run ended before it could be killed:\n{err[-2000:]}"
    assert (out / "ck" / "last.pt").is_file()
    assert {f.name: f.read_bytes() for f in old.iterdir()} == before  # previous model intact

    for dest in (out, clean):
        done = subprocess.run(
            [sys.executable, str(script), *map(str, stage_args(inputs, "b", dest))],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        if dest == out:  # the checkpoint of run a was recognised as stale
            assert "ignoring" in done.stderr and "last.pt" in done.stderr
    resumed = torch.load(out / "models" / "r1" / "model.pt", weights_only=True)
    fresh = torch.load(clean / "models" / "r1" / "model.pt", weights_only=True)
    for key, value in fresh.items():
        assert torch.equal(value, resumed[key]), key
    assert (out / "train_r1.json").read_text() == (clean / "train_r1.json").read_text()
    assert not (out / "ck" / "last.pt").exists()  # the scratch is cleared once published


def test_a_control_with_r0s_recipe_publishes_r0(tiny_data, tmp_path, run_stage):
    """A from-scratch round's control of train.steps steps repeats r0's recipe: r0 is published
    (no training); a control that starts from the previous round (another recipe) trains, and
    under init: r0 every round's control starts from r0."""
    import json

    import yaml

    from leod.training.chain import LOSS_COLUMNS

    root, info = tiny_data
    inputs = stage_inputs(root, info, tmp_path)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"mode": "test", "sequences": {k: list(v) for k, v in info["kept"].items()}}))
    common = ["--data", inputs["data"], "--split", split, "--imported", inputs["imported"], "--no-progress"]

    def train_run(name: str, init: str, *extra: object) -> tuple[Path, dict]:
        d = yaml.safe_load(inputs["params"].read_text())
        d["selftrain"]["init"] = init
        d["train"].update(steps=4, eval_every=4)
        params = tmp_path / f"params_{name}.yaml"
        params.write_text(yaml.safe_dump(d))
        out = tmp_path / name
        proc = run_stage(
            "train", "--params", params, "--name", name, *common, *extra, "--model", out / "model",
            "--ckpt", out / "ck", "--metrics", out / "metrics.json", "--curves", out / "curves",
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        return out, json.loads((out / "metrics.json").read_text())

    r0, r0_metrics = train_run("r0", "scratch", "--baseline")
    recipe = json.loads((r0 / "model" / "model.json").read_text())["recipe"]
    assert len(recipe) == 64 and "same_as" not in r0_metrics
    control = ("--round", "r1", "--prev", r0 / "model", "--same-as", r0 / "model")
    same, same_metrics = train_run("control_scratch", "scratch", *control)
    for f in (r0 / "model").iterdir():
        assert (same / "model" / f.name).read_bytes() == f.read_bytes(), f.name
    assert same_metrics == {**r0_metrics, "same_as": "model"}
    assert (same / "curves" / "train.csv").read_text().strip() == ",".join(LOSS_COLUMNS)  # no steps
    warm, warm_metrics = train_run("control_warm", "previous", *control)
    assert "same_as" not in warm_metrics and warm_metrics["steps"] == r0_metrics["steps"]
    assert json.loads((warm / "model" / "model.json").read_text())["recipe"] != recipe
    # under init: r0 a later round starts from r0, not from its previous round: the very
    # run of the warm control above (same start, steps and labels), so the same weights
    later = ("--round", "r1", "--prev", warm / "model", "--r0-model", r0 / "model")
    base, _ = train_run("control_from_r0", "r0", *later)
    for f in (warm / "model").iterdir():
        assert (base / "model" / f.name).read_bytes() == f.read_bytes(), f.name


def test_published_weights_follow_train_select() -> None:
    """train.select: 'last' publishes the final step's weights with the last validation's AP,
    'best_val' the weights of the best validation."""
    best, final = {"w": torch.zeros(1)}, {"w": torch.ones(1)}
    history = [{"step": 10, "val/AP": 0.4}, {"step": 15, "loss": 1.0}, {"step": 20, "val/AP": 0.3}]
    result = loop.TrainResult(0.4, 10, 20, history, best, final, recipe="0" * 64)
    assert result.published("last") == (final, 20, 0.3)
    assert result.published("best_val") == (best, 10, 0.4)
