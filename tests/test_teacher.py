"""An imported model in the chain: ``selftrain.teacher`` replaces train_r0 and labels round 1;
``train.init_from`` sets the weights a run starts from; a model that does not fit the
params is one error line naming the folder and the key, exit 2, nothing written."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

from leod.config import params_from_dict
from leod.model.detector import RecurrentDetector
from leod.plumbing.errors import ConfigError
from leod.training.chain import start_weights
from leod.training.loop import train
from leod.training.model_files import save_model
from test_training import stage_inputs, tiny_data  # noqa: F401  (tiny_data: a fixture)
from tiny import dvc_env, make_repo_copy, sh, tiny_chain, tiny_dict

REPO = Path(__file__).resolve().parents[1]


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))
    }


def save_random_model(folder: Path, params_data: dict, seed: int, **model: object) -> Path:
    """A model folder of random weights (seed ``seed``) for ``params_data`` with ``model`` overrides."""
    data = json.loads(json.dumps(params_data))
    data["model"].update(model)
    params = params_from_dict(data)
    torch.manual_seed(seed)
    save_model(folder, RecurrentDetector(params.model_config).state_dict(), params, {"step": 0})
    return folder


def test_start_weights_replace_random_weights_only(tmp_path: Path) -> None:
    (tmp_path / "imported" / "pre").mkdir(parents=True)
    imported, prev = tmp_path / "imported", tmp_path / "r1"
    r0 = tmp_path / "r0"
    assert start_weights(prev, r0, "previous", "pre", imported) == prev  # a warm-started round
    assert start_weights(prev, r0, "r0", "pre", imported) == r0  # every round from r0
    assert start_weights(prev, r0, "scratch", "pre", imported) == imported / "pre"
    assert start_weights(None, None, "previous", "pre", imported) == imported / "pre"  # r0, full
    assert start_weights(None, None, "r0", None, imported) is None
    with pytest.raises(ConfigError, match="'train.init_from' = '../pre'"):
        start_weights(None, None, "previous", "../pre", imported)
    with pytest.raises(ConfigError, match="'selftrain.init' = 'r0'"):
        start_weights(prev, None, "r0", None, imported)


@pytest.mark.slow
def test_init_from_weights_are_those_of_the_first_step(tiny_data, tmp_path, monkeypatch):  # noqa: F811
    root, info = tiny_data
    d = tiny_dict(info["params"])
    d["train"].update(steps=2, eval_every=2, checkpoint_every=2, log_every=1, pct_start=0.6, device="cpu")
    d["train"]["init_from"] = "pre"
    params = params_from_dict(d)
    folder = save_random_model(tmp_path / "imported" / "pre", d, seed=7)
    init = start_weights(None, None, params.selftrain.init, params.train.init_from, tmp_path / "imported")
    first: list[list[torch.Tensor]] = []
    step = torch.optim.AdamW.step

    def record_first(self, *args, **kwargs):  # the real step, after noting what it starts from
        if not first:
            first.append([p.detach().clone() for group in self.param_groups for p in group["params"]])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", record_first)
    train(params, root / "pre", info["kept"], tmp_path / "ck", init_weights=init, progress=False)
    saved = torch.load(folder / "model.pt", weights_only=True)
    names = [n for n, _ in RecurrentDetector(params.model_config).named_parameters()]
    assert first and len(first[0]) == len(names)
    for name, value in zip(names, first[0], strict=True):
        assert torch.equal(value, saved[name]), name


@pytest.fixture(scope="module")
def inputs(tiny_data, tmp_path_factory) -> dict:  # noqa: F811
    root, info = tiny_data
    tmp = tmp_path_factory.mktemp("inputs")
    found = stage_inputs(root, info, tmp)
    (tmp / "split.json").write_text(json.dumps({"mode": "wsod", "sequences": dict(info["kept"])}))
    return {**found, "split": tmp / "split.json"}


def _params_file(inputs: dict, tmp: Path, section: str, key: str, value: str) -> Path:
    data = yaml.safe_load(inputs["params"].read_text())
    data[section][key] = value
    (tmp / "params.yaml").write_text(yaml.safe_dump(data))
    return tmp / "params.yaml"


def _r0_args(inputs: dict, params: Path, imported: Path, out: Path) -> list[object]:
    return [
        "--params", params, "--name", "r0", "--data", inputs["data"], "--split", inputs["split"],
        "--baseline", "--imported", imported, "--model", out / "r0", "--ckpt", out / "ck",
        "--metrics", out / "train_r0.json", "--curves", out / "curves", "--no-progress",
    ]  # fmt: skip


@pytest.mark.slow
def test_teacher_is_published_as_r0_and_labels_round_one(inputs, tmp_path, run_stage):
    params_data = yaml.safe_load(inputs["params"].read_text())
    teacher = save_random_model(tmp_path / "imported" / "rvt", params_data, seed=3)
    params = _params_file(inputs, tmp_path, "selftrain", "teacher", "rvt")
    out = tmp_path / "out"
    proc = run_stage("train", *_r0_args(inputs, params, tmp_path / "imported", out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _tree(out / "r0") == _tree(teacher)  # the imported folder, byte for byte
    assert json.loads((out / "train_r0.json").read_text()) == {"best_step": -1, "steps": 0, "teacher": "rvt"}
    assert (out / "curves" / "val.csv").read_text() == "step,val/AP\n" and not (out / "ck").exists()

    labels = {}
    for name, model in (("chain", out / "r0"), ("direct", teacher)):
        args = ["--params", params, "--round", "r1", "--data", inputs["data"], "--split", inputs["split"]]
        proc = run_stage("pseudolabel", *args, "--model", model, "--out", tmp_path / name, "--no-progress")
        assert proc.returncode == 0, proc.stderr[-3000:]
        labels[name] = _tree(tmp_path / name)
    assert labels["chain"]["labels.npz"] == labels["direct"]["labels.npz"]  # round 1 uses the teacher


def _tiny_preset(folder: Path, params_data: dict) -> None:
    save_random_model(folder, params_data, seed=0, preset="tiny")


def _swapped_classes(folder: Path, params_data: dict) -> None:
    save_random_model(folder, params_data, seed=0)
    info = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**info, "classes": info["classes"][::-1]}))


def _other_weights(folder: Path, params_data: dict) -> None:
    """The weights of another preset under a model.json that says nano."""
    save_random_model(folder, params_data, seed=0)
    shutil.copy(save_random_model(folder.parent / "t", params_data, 0, preset="tiny") / "model.pt", folder)


BAD: dict[str, tuple[str, object, list[str]]] = {  # fmt: skip
    "teacher of another preset": ("teacher", _tiny_preset, ["imported/m:", "model.preset='tiny'", "'nano'"]),
    "teacher of other classes": ("teacher", _swapped_classes, ["imported/m:", "classes", "teacher"]),
    "teacher weights that do not fit": ("teacher", _other_weights, ["imported/m/model.pt", "do not match"]),
    "teacher not imported": ("teacher", None, ["imported/m:", "no imported model", "selftrain.teacher"]),
    "init_from of another preset": ("init_from", _tiny_preset, ["imported/m:", "model.preset='tiny'"]),
    "init_from weights that do not fit": ("init_from", _other_weights, ["m/model.pt", "do not match"]),
    "init_from not imported": ("init_from", None, ["imported/m:", "no imported model", "train.init_from"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD))
def test_a_model_that_does_not_fit_is_one_error_and_writes_nothing(case, inputs, tmp_path, run_stage):
    key, make, wanted = BAD[case]
    params_data = yaml.safe_load(inputs["params"].read_text())
    (tmp_path / "imported").mkdir()
    if make is not None:
        make(tmp_path / "imported" / "m", params_data)
    section = "selftrain" if key == "teacher" else "train"
    params = _params_file(inputs, tmp_path, section, key, "m")
    args = _r0_args(inputs, params, tmp_path / "imported", tmp_path / "out")
    before = _tree(tmp_path)
    proc = run_stage("train", *args)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and last.startswith("error: "), proc.stderr[-3000:]
    assert all(w in last for w in wanted), last
    assert _tree(tmp_path) == before  # no output, no temporary


@pytest.mark.slow
def test_dvc_chain_from_an_imported_teacher(tmp_path: Path) -> None:
    """docs/teacher.md's commands on the tiny chain: the teacher becomes models/r0 and
    pseudolabel@r1 labels with it."""
    work = make_repo_copy(tmp_path / "repo", tiny_chain)
    params_data = yaml.safe_load((work / "params.yaml").read_text())
    teacher = save_random_model(work / "models" / "imported" / "mine", params_data, seed=5)
    env = dvc_env(PYTHONPATH=str(work / "src"))
    cmd = [sys.executable, "-m", "dvc", "exp", "run", "pseudolabel@r1", "-S", "selftrain.teacher=mine"]
    sh(cmd, work, env)
    assert _tree(work / "models" / "r0") == _tree(teacher)
    assert json.loads((work / "metrics" / "train_r0.json").read_text())["teacher"] == "mine"
    summary = json.loads((work / "pseudo" / "r1" / "summary.json").read_text())
    assert summary["teacher"] == "models/r0" and summary["frames"] > 0
    assert not (work / "models" / "full").exists()  # only what pseudolabel@r1 needs ran
