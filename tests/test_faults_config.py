"""Bad params and bad arguments, run as a user runs them: each stage script or command in a
fresh process, with a broken copy of params.yaml in a temporary folder. Every case must end
with exit status 2, one ``error:`` line as the LAST line naming the file or key, no
traceback, and no output left behind.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from leod.plumbing.errors import LeodError, one_line
from leod.plumbing.progress import progress_bar
from leod.plumbing.stage import parser, run

REPO = Path(__file__).resolve().parents[1]
PARAMS_TEXT = (REPO / "params.yaml").read_text()


def _set(dotted: str, value: object) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        *parents, leaf = dotted.split(".")
        for key in parents:
            data = data[key]
        data[leaf] = value

    return edit


def _delete(dotted: str) -> Callable[[dict], None]:
    def edit(data: dict) -> None:
        *parents, leaf = dotted.split(".")
        for key in parents:
            data = data[key]
        del data[leaf]

    return edit


def _stage_args(stage: str, tmp: Path, round_name: str = "r1") -> list[str]:
    """Arguments that would be valid for ``stage`` but point at nothing (params fail first)."""
    missing, out = tmp / "missing", tmp / "out"
    return {
        "synthesize": ["--out", out],
        "preprocess": ["--raw", missing, "--out", out],
        "subsample": ["--data", missing, "--out", out, "--metrics", tmp / "m.json"],
        "train": [
            *("--name", "r0", "--data", missing, "--split", missing, "--model", out),
            *("--ckpt", tmp / "ckpt", "--metrics", tmp / "m.json", "--curves", tmp / "curves"),
        ],
        "train_round": [
            *("--name", round_name, "--round", round_name, "--data", missing, "--pseudo", missing),
            *("--quality", missing, "--prev", missing, "--model", out, "--ckpt", tmp / "ckpt"),
            *("--metrics", tmp / "m.json", "--curves", tmp / "curves"),
        ],
        "pseudolabel": [
            *("--round", round_name, "--data", missing, "--split", missing),
            *("--model", missing, "--out", out),
        ],
        "eval_pseudo": [
            *("--round", round_name, "--data", missing, "--split", missing),
            *("--pseudo", missing, "--out", out, "--pr", tmp / "pr.csv"),
        ],
        "evaluate": [
            *("--name", "r0", "--data", missing, "--model", missing, "--out", out),
            *("--confusion", tmp / "c.csv", "--predictions", tmp / "p.npz"),
        ],
        "report": ["--metrics", missing, "--reports", missing, "--out", out],
    }[stage]


# (id, stage, how params.yaml is broken, what the error line must contain)
YAML_TEXT_CASES = [
    (
        "duplicate-key",
        "subsample",
        lambda t: t.replace("  lr: 0.002\n", "  lr: 0.002\n  lr: 0.1\n"),
        "'lr' is given twice",
    ),
    (
        "not-utf8",
        "preprocess",
        lambda t: t.replace("dataset: synthetic", "dataset: synth\udcffetic"),
        "not UTF-8",
    ),
    ("yaml-syntax", "synthesize", lambda t: t.replace("nbins: 10", "nbins: [10"), "not valid YAML"),
    ("tab-indent", "report", lambda t: t.replace("  nbins: 10", "\tnbins: 10"), "not valid YAML"),
    (
        "python-tag",
        "evaluate",
        lambda t: t + "evil: !!python/object/apply:os.system [echo hi]\n",
        "not valid YAML",
    ),
    ("empty-file", "subsample", lambda t: "", "must be a mapping"),
    ("list-at-top", "synthesize", lambda t: "- 1\n- 2\n", "must be a mapping"),
]
DATA_CASES = [
    ("seed-negative", "train", _set("seed", -1), "'seed' = -1"),
    ("seed-huge", "evaluate", _set("seed", 2**70), "'seed' = 1180591620717411303424"),
    ("step-ms-tiny", "preprocess", _set("representation.step_ms", 0.0001), "'representation.step_ms'"),
    (
        "window-ms-fraction-us",
        "preprocess",
        _set("representation.window_ms", 50.0004),
        "representation.window_ms",
    ),
    ("tflip-offset", "pseudolabel", _set("pseudo.tflip_offset", 50), "'pseudo.tflip_offset' = 50"),
    ("missing-train-lr", "train", _delete("train.lr"), "missing params key 'train.lr'"),
    ("missing-seq-len", "subsample", _delete("loader.sequence_length"), "'loader.sequence_length'"),
    ("missing-min-track-len", "pseudolabel", _delete("pseudo.min_track_len"), "'pseudo.min_track_len'"),
    ("missing-selftrain-init", "train_round", _delete("selftrain.init"), "'selftrain.init'"),
    ("missing-tracking", "report", _delete("tracking"), "'tracking'"),
    ("unknown-key", "eval_pseudo", _set("pseudo.min_track_length", 4), "'pseudo.min_track_length'"),
    ("synthetic-seed", "synthesize", _set("synthetic.seed", -5), "'synthetic.seed' = -5"),
    ("derived-model-key", "evaluate", _set("model.num_classes", 3), "'model.num_classes'"),
]
ROUND_STAGES = ["pseudolabel", "eval_pseudo", "train_round"]


# The first case of each stage runs the script in a fresh process, as DVC does (exit status,
# no traceback); the others call the same script's main() in this process, which is
# seconds faster per case (a stage process spends them importing torch).
_FIRST_PER_STAGE = {
    c[0]
    for c in YAML_TEXT_CASES + DATA_CASES
    if c is next(d for d in YAML_TEXT_CASES + DATA_CASES if d[1] == c[1])
}


@dataclass
class Outcome:
    returncode: int
    stderr: str


@functools.cache
def _stage_main(script: str) -> Callable[[list[str]], int]:
    spec = importlib.util.spec_from_file_location(f"stage_{script}", REPO / "stages" / f"{script}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _run(stage: str, params: Path, tmp: Path, round_name: str = "r1", capfd=None) -> Outcome:
    """Run ``stage`` on ``params``: in a fresh process, or in this one when ``capfd`` is given."""
    script = "train" if stage == "train_round" else stage
    argv = ["--params", str(params), *map(str, _stage_args(stage, tmp, round_name))]
    if capfd is not None:
        capfd.readouterr()
        code = _stage_main(script)(argv)
        return Outcome(code, capfd.readouterr().err)
    args = [sys.executable, str(REPO / "stages" / f"{script}.py"), *argv]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=tmp, check=False)
    return Outcome(proc.returncode, proc.stderr)


def _assert_one_error(proc: Outcome | subprocess.CompletedProcess, *names: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert lines and lines[-1].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    for name in names:
        assert name in lines[-1], lines[-1]
    return lines[-1]


def _assert_nothing_written(tmp: Path) -> None:
    left = sorted(p.name for p in tmp.iterdir() if p.name != "params.yaml")
    assert not left, left


@pytest.mark.parametrize(
    ("case", "stage", "edit", "expect"), YAML_TEXT_CASES, ids=[c[0] for c in YAML_TEXT_CASES]
)
def test_broken_params_file(
    tmp_path: Path,
    capfd: pytest.CaptureFixture,
    case: str,
    stage: str,
    edit: Callable[[str], str],
    expect: str,
) -> None:
    params = tmp_path / "params.yaml"
    params.write_bytes(edit(PARAMS_TEXT).encode("utf-8", "surrogateescape"))
    proc = _run(stage, params, tmp_path, capfd=None if case in _FIRST_PER_STAGE else capfd)
    line = _assert_one_error(proc, expect)
    assert "params.yaml" in line
    _assert_nothing_written(tmp_path)


@pytest.mark.parametrize(("case", "stage", "edit", "expect"), DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_params_value(
    tmp_path: Path,
    capfd: pytest.CaptureFixture,
    case: str,
    stage: str,
    edit: Callable[[dict], None],
    expect: str,
) -> None:
    data = copy.deepcopy(yaml.safe_load(PARAMS_TEXT))
    edit(data)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(data))
    proc = _run(stage, params, tmp_path, capfd=None if case in _FIRST_PER_STAGE else capfd)
    _assert_one_error(proc, expect)
    _assert_nothing_written(tmp_path)


@pytest.mark.parametrize("stage", ROUND_STAGES)
def test_round_not_in_params(tmp_path: Path, capfd: pytest.CaptureFixture, stage: str) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS_TEXT)
    proc = _run(stage, params, tmp_path, round_name="r9", capfd=capfd)
    line = _assert_one_error(proc, "'r9'", "known: r1, r2")
    assert "rounds" in line
    _assert_nothing_written(tmp_path)


def test_missing_params_file(tmp_path: Path) -> None:
    _assert_one_error(_run("subsample", tmp_path / "nope.yaml", tmp_path), "nope.yaml")


def test_output_under_a_file_is_one_error_line(tmp_path: Path) -> None:
    """An OS refusal (here: the output's parent is a file) is one line naming the path."""
    data = yaml.safe_load(PARAMS_TEXT)
    data["synthetic"]["sequences"] = {"train": 1, "val": 0, "test": 0}
    data["synthetic"]["duration_s"] = 0.2
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(data))
    (tmp_path / "blocker").write_text("a file, not a folder\n")
    args = [sys.executable, str(REPO / "stages" / "synthesize.py"), "--params", str(params)]
    proc = subprocess.run(
        [*args, "--out", str(tmp_path / "blocker" / "raw"), "--no-progress"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    _assert_one_error(proc, "blocker")


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["compare", "--repo", "{tmp}/no-such-repo"], "no-such-repo"),
        (["register", "--name", "a/b"], "--name 'a/b'"),
        (["register", "--name", "ok", "--alias", "v3"], "--alias 'v3'"),
        (["register", "--params", "{tmp}/nope.yaml"], "nope.yaml"),
    ],
)
def test_cli_bad_arguments(tmp_path: Path, args: list[str], expect: str) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "leod", *argv], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    _assert_one_error(proc, expect)


# ---------------------------------------------------------------- the message machinery itself


class NotPlain:
    """An object torch.load(weights_only=True) must refuse to rebuild."""


def test_error_closes_progress_bars_and_is_one_last_line(
    tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS_TEXT)

    def body(args: object, p: object) -> None:
        bar = progress_bar(100, "work", "it")
        bar.update(10)
        raise LeodError("first line\n  second line\tand a tab")

    assert run(body, parser("test"), ["--params", str(params)]) == 2
    err = capfd.readouterr().err
    assert err.splitlines()[-1] == "error: first line second line and a tab"
    assert err.endswith("\n") and "work" in err  # the bar was closed (drawn for good) before


def test_os_error_is_one_line(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS_TEXT)

    def body(args: object, p: object) -> None:
        (tmp_path / "absent" / "x.json").read_text()

    assert run(body, parser("test"), ["--params", str(params)]) == 2
    last = capfd.readouterr().err.splitlines()[-1]
    assert last == f"error: {tmp_path / 'absent' / 'x.json'}: No such file or directory"


def test_refused_pickle_never_advises_weights_only_false(tmp_path: Path) -> None:
    import torch

    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(1), "x": NotPlain()}, path)
    with pytest.raises(Exception) as err:
        torch.load(path, weights_only=True)
    assert "weights_only" in str(err.value)  # torch's own message carries the advice
    line = one_line(RuntimeError(f"corrupt model weights {path}: {err.value}"))
    assert "weights_only" not in line and "\n" not in line
    assert line.startswith(f"corrupt model weights {path}: refused to unpickle ")
    assert line.split("refused to unpickle ")[1].split(":")[0].endswith("NotPlain")


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (None, "no pseudo-label metrics; run this round's eval_pseudo stage first"),
        (b'{"precision@0.5": 0.', "is not valid JSON (line 1:"),
    ],
    ids=["missing", "truncated"],
)
def test_bad_quality_json(
    tmp_path: Path, capfd: pytest.CaptureFixture, content: bytes | None, expect: str
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS_TEXT)
    if content is not None:
        (tmp_path / "missing").write_bytes(content)  # the path _stage_args passes as --quality
    proc = _run("train_round", params, tmp_path, capfd=capfd)
    _assert_one_error(proc, str(tmp_path / "missing"), expect)
    assert not (tmp_path / "out").exists()
