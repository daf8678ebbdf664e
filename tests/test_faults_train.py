"""Bad input to the training stage: one ``error:`` line naming the file or key, exit 2,
nothing left behind (no output, no temporary), previous outputs untouched."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from leod.plumbing.errors import LeodError
from leod.pseudo.store import LABELS_FILE, load_pseudo_labels, save_pseudo_labels
from leod.training.chain import TrainMetrics, TrainOutputs, publish
from test_training import stage_args, stage_inputs, tiny_data  # noqa: F401  (tiny_data: a fixture)

REPO = Path(__file__).resolve().parents[1]


class _Payload:
    """A pickled Python object, as a malicious model file would carry."""


def _tree(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def inputs(tiny_data, tmp_path_factory) -> dict:  # noqa: F811
    root, info = tiny_data
    return stage_inputs(root, info, tmp_path_factory.mktemp("inputs"))


def _set(args: list, option: str, value: object) -> list:
    args = list(args)
    args[args.index(option) + 1] = value
    return args


def _drop(args: list, option: str) -> list:
    i = args.index(option)
    return args[:i] + args[i + 2 :]


def _prev_weights(writer: Callable[[Path], None]) -> Callable[[list, Path], list]:
    """A case whose teacher (``--prev``) model.pt is written by ``writer``."""

    def edit(args: list, tmp: Path) -> list:
        prev = tmp / "bad_prev"
        shutil.copytree(args[args.index("--prev") + 1], prev)
        writer(prev / "model.pt")
        return _set(args, "--prev", prev)

    return edit


def _file(name: str, content: str | bytes, option: str) -> Callable[[list, Path], list]:
    def edit(args: list, tmp: Path) -> list:
        path = tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return [*args, option, path] if option not in args else _set(args, option, path)

    return edit


def _other_preset_weights(path: Path) -> None:
    """The weights of another preset under a model.json that says nano."""
    from leod.model.config import ModelConfig
    from leod.model.detector import RecurrentDetector
    from leod.schema import from_dict

    cfg = dict(json.loads((path.parent / "model.json").read_text())["model"], preset="tiny")
    torch.save(RecurrentDetector(from_dict(ModelConfig, cfg, "model")).state_dict(), path)


def _class_beyond(args: list, tmp: Path) -> list:
    src = Path(args[args.index("--pseudo") + 1]) / LABELS_FILE
    seqs = load_pseudo_labels(src)
    name = sorted(seqs)[0]
    seqs[name].labels["class_id"][0] = 7
    (tmp / "pseudo").mkdir()
    save_pseudo_labels(tmp / "pseudo" / LABELS_FILE, seqs)
    return _set(args, "--pseudo", tmp / "pseudo")


def _parent_is_file(option: str, leaf: str) -> Callable[[list, Path], list]:
    def edit(args: list, tmp: Path) -> list:
        (tmp / "a_file").write_text("not a folder")
        return _set(args, option, tmp / "a_file" / leaf)

    return edit


def _nan_teacher(args: list, tmp: Path) -> list:
    """A teacher whose head is NaN: every step is non-finite and training stops."""
    prev = tmp / "nan_prev"
    shutil.copytree(args[args.index("--prev") + 1], prev)
    state = torch.load(prev / "model.pt", weights_only=True)
    for key in state:
        if key.startswith("head.") and state[key].is_floating_point():
            state[key].fill_(float("nan"))
    torch.save(state, prev / "model.pt")
    return _set(args, "--prev", prev)


CASES: dict[str, tuple[Callable[[list, Path], list], list[str]]] = {
    "round not in params": (lambda a, t: _set(a, "--round", "r9"), ["round 'r9'", "rounds"]),
    "quality missing": (lambda a, t: [*a, "--quality", t / "nope.json"], ["nope.json"]),
    "quality not JSON": (
        _file("quality.json", "{precision", "--quality"),
        ["quality.json", "not valid JSON"],
    ),
    "quality without the gate key": (
        _file("quality.json", '{"recall@0.5": 0.5}', "--quality"),
        ["quality.json", "precision@0.5"],
    ),
    "quality not finite": (
        _file("quality.json", '{"precision@0.5": NaN}', "--quality"),
        ["quality.json", "precision@0.5"],
    ),
    "pseudo class id beyond the classes": (_class_beyond, [LABELS_FILE, "class id 7", "2 classes"]),
    "pseudo labels missing": (lambda a, t: _set(a, "--pseudo", t / "none"), [LABELS_FILE, "pseudolabel"]),
    "teacher weights not a state dict": (
        _prev_weights(lambda p: torch.save([1, 2, 3], p)),
        ["model.pt", "not a state dict"],
    ),
    "teacher weights of another architecture": (
        _prev_weights(_other_preset_weights),
        ["model.pt", "do not match the model of model.json"],
    ),
    "teacher weights a pickled object": (
        _prev_weights(lambda p: torch.save({"x": _Payload()}, p)),
        ["refused model weights", "model.pt", "_Payload"],
    ),
    "teacher weights garbage": (
        _prev_weights(lambda p: p.write_bytes(b"garbage")),
        ["corrupt model weights", "model.pt"],
    ),
    "model output under a file": (_parent_is_file("--model", "r1"), ["cannot write", "a_file"]),
    "metrics output under a file": (_parent_is_file("--metrics", "m.json"), ["cannot write", "a_file"]),
    "checkpoint folder under a file": (_parent_is_file("--ckpt", "ck"), ["cannot write", "a_file"]),
    "split not JSON": (
        lambda a, t: [*_drop(a, "--pseudo"), "--split", _write(t / "split.json", "{")],
        ["split.json", "not valid JSON"],
    ),
    "non-finite loss": (_nan_teacher, ["non-finite for 3 consecutive steps"]),
}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line_and_leaves_nothing(case, inputs, tmp_path, run_stage):
    edit, wanted = CASES[case]
    out = tmp_path / "out"
    previous = out / "models" / "r1"
    shutil.copytree(inputs["prev"], previous)  # an earlier run's model: must stay as it was
    args = edit(stage_args(inputs, "a", out), tmp_path)
    before = _tree(tmp_path)
    proc = run_stage("train", *args)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert last.startswith("error: "), proc.stderr[-3000:]
    assert all(w in last for w in wanted), last
    assert "weights_only" not in proc.stderr and "Traceback" not in proc.stderr
    assert _tree(tmp_path) == before  # no output, no temporary, the previous model untouched


@pytest.mark.parametrize(
    ("edit", "wanted"),
    [
        (lambda a: [*a, "--split", "full"], "not allowed with argument"),
        (lambda a: _drop(a, "--pseudo"), "one of the arguments --split --pseudo is required"),
    ],
)
def test_split_and_pseudo_are_one_choice(edit, wanted, inputs, tmp_path, run_stage):
    proc = run_stage("train", *edit(stage_args(inputs, "a", tmp_path / "out")))
    assert proc.returncode == 2 and "error:" in proc.stderr.strip().splitlines()[-1]
    assert wanted in proc.stderr and not (tmp_path / "out").exists()


def test_failed_publish_leaves_every_previous_output(tmp_path):
    """A write failing at the end (disk full; here: a metrics path under a file) publishes
    nothing: the model folder, curves and metrics of before stay, no temporary is left."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.pt").write_bytes(b"old weights")
    (tmp_path / "curves").mkdir()
    (tmp_path / "curves" / "train.csv").write_text("old curve\n")
    (tmp_path / "a_file").write_text("")
    out = TrainOutputs(tmp_path / "model", tmp_path / "curves", tmp_path / "a_file" / "m.json")
    before = _tree(tmp_path)
    with pytest.raises(LeodError, match=r"a_file.*cannot write output"):
        publish(out, lambda model: (model / "model.pt").write_bytes(b"new"), [], TrainMetrics(1.0, 3, 3))
    assert _tree(tmp_path) == before
    assert os.listdir(tmp_path / "curves") == ["train.csv"]
