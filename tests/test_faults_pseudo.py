"""Bad input to the stages around pseudo labels (pseudolabel, eval_pseudo, evaluate), each run as
DVC runs it: exit status 2, the last line one ``error:`` naming the file or key, no output left.
Plus kill -9 of pseudolabel: the rerun writes the same bytes as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from leod.config import params_from_dict
from leod.data.layout import load_manifest
from leod.data.sequence import open_sequences
from leod.model.detector import RecurrentDetector
from leod.pseudo.store import LABELS_FILE, SequenceLabels, load_pseudo_labels, save_pseudo_labels
from leod.schema import to_dict
from test_data_loading import make_dataset
from tiny import REPO, tiny_dict


@dataclass(frozen=True)
class Workspace:
    root: Path
    params: Path
    data: Path
    split: Path
    model: Path
    pseudo: Path


def write_model_folder(folder: Path, state: object, model_json: dict) -> None:
    """A model folder as the train stage leaves it: ``model.pt`` and ``model.json``."""
    folder.mkdir(parents=True)
    torch.save(state, folder / "model.pt")
    (folder / "model.json").write_text(json.dumps(model_json))


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("faults")
    d = tiny_dict(yaml.safe_load((REPO / "params.yaml").read_text()))
    d["train"]["device"] = "cpu"
    (root / "params.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    params = params_from_dict(d)
    data = make_dataset(root / "data")
    model = RecurrentDetector(params.model_config)
    info = {"model": to_dict(params.model_config), "classes": params.preset.classes}
    write_model_folder(root / "model", model.state_dict(), info)
    # pseudo labels that are the ground truth itself, stamped as the pseudolabel stage stamps them
    labels = {}
    for seq in open_sequences(data, load_manifest(data), "train"):
        frames = []
        for r in range(seq.num_frames):
            boxes = seq.boxes(r).copy()
            boxes["t"] = seq.timestamps_us[r]
            boxes["class_confidence"] = boxes["objectness"] = 1.0
            frames.append(boxes)
        labels[seq.name] = SequenceLabels.from_frames(np.arange(seq.num_frames), frames)
    save_pseudo_labels(root / "pseudo" / LABELS_FILE, labels)
    # label frame 3 of each sequence has no box: keep it, so that every withheld frame has GT
    (root / "split.json").write_text(json.dumps({"mode": "wsod", "sequences": {n: [3] for n in labels}}))
    return Workspace(root, root / "params.yaml", data, root / "split.json", root / "model", root / "pseudo")


def last_line(proc: subprocess.CompletedProcess) -> str:
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    return lines[-1] if lines else ""


def leftovers(folder: Path, names: list[str]) -> list[str]:
    """Outputs, or temporaries of outputs, that a failed run left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if any(p.name.lstrip(".").startswith(n) for n in names))


# --- eval_pseudo: one pseudo-label file changed per case ------------------------------------


def _edit_npz(src: Path, dst: Path, edit: Callable[[dict[str, np.ndarray]], None]) -> None:
    with np.load(src) as npz:
        arrays = dict(npz)
    edit(arrays)
    dst.parent.mkdir(parents=True, exist_ok=True)
    np.savez(dst, **arrays)


def _first(arrays: dict[str, np.ndarray], suffix: str) -> str:
    return sorted(k for k in arrays if k.endswith(suffix))[0]


def frame_beyond_length(a: dict[str, np.ndarray]) -> None:
    key = _first(a, "/objframe_idx_2_repr_idx")
    a[key] = a[key] + 5  # the last frames now lie past the sequence's end


def class_beyond_classes(a: dict[str, np.ndarray]) -> None:
    labels = a[_first(a, "/labels")]
    labels["class_id"][0] = 7


def renamed_sequences(a: dict[str, np.ndarray]) -> None:
    for key in list(a):
        a[key.replace("seq_", "other_")] = a.pop(key)


def object_array(a: dict[str, np.ndarray]) -> None:
    a[_first(a, "/labels")] = np.array([object()] * 3, dtype=object)


def unsorted_offsets(a: dict[str, np.ndarray]) -> None:
    key = _first(a, "/objframe_idx_2_label_idx")
    a[key] = a[key][::-1].copy()


def wrong_box_time(a: dict[str, np.ndarray]) -> None:
    labels = a[_first(a, "/labels")]
    labels["t"] = labels["t"] * 1000  # ms read as us: the quality would silently see no match


def nan_box(a: dict[str, np.ndarray]) -> None:
    labels = a[_first(a, "/labels")]
    labels["w"][1] = np.nan


EDITS = {
    "frame-beyond-length": (
        frame_beyond_length,
        r"sequence 'seq_a' has pseudo labels at frame \d+ but only 30",
    ),
    "class-beyond-classes": (class_beyond_classes, "class_id 7 beyond the dataset's 2 classes"),
    "names-do-not-match": (
        renamed_sequences,
        "only in the file: \\['other_a'.*only in the dataset: \\['seq_a'",
    ),
    "object-array": (object_array, "corrupt pseudo-label file"),
    "unsorted-offsets": (unsorted_offsets, "sequence 'seq_a': label offsets"),
    "wrong-box-time": (wrong_box_time, "sequence 'seq_a': box 0 has t="),
    "nan-box": (nan_box, "sequence 'seq_a': 1 box\\(es\\) with non-finite 'w'"),
}


def _bad_pseudo(ws: Workspace, case: str) -> Path:
    """A pseudo-label folder holding the ``case`` variant of the good file."""
    folder = ws.root / f"pseudo-{case}"
    if folder.exists():
        return folder
    good = ws.pseudo / LABELS_FILE
    bad = folder / LABELS_FILE
    if case in EDITS:
        _edit_npz(good, bad, EDITS[case][0])
    elif case == "truncated":
        folder.mkdir()
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif case == "not-npz":
        folder.mkdir()
        np.save(folder / "x.npy", np.arange(4))
        (folder / "x.npy").rename(bad)
    elif case == "missing":
        folder.mkdir()
    return folder


EVAL_CASES = {
    **{case: pattern for case, (_, pattern) in EDITS.items()},
    "truncated": "corrupt or truncated pseudo-label file",
    "not-npz": "not an npz archive",
    "missing": "no pseudo labels; run the pseudolabel stage",
}


@pytest.mark.parametrize("case", sorted(EVAL_CASES))
def test_eval_pseudo_refuses_bad_pseudo_labels(ws: Workspace, run_stage, case: str, tmp_path: Path) -> None:
    import re

    pseudo = _bad_pseudo(ws, case)
    out, pr = tmp_path / "pseudo_r1.json", tmp_path / "pr.csv"
    args = ["--params", ws.params, "--round", "r1", "--data", ws.data, "--split", ws.split]
    proc = run_stage("eval_pseudo", *args, "--pseudo", pseudo, "--out", out, "--pr", pr)
    line = last_line(proc)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert line.startswith("error: ") and str(pseudo / LABELS_FILE) in line, line
    assert re.search(EVAL_CASES[case], line), line
    assert "allow_pickle" not in line and "Traceback" not in proc.stderr
    assert leftovers(tmp_path, ["pseudo_r1.json", "pr.csv"]) == []


def test_eval_pseudo_accepts_the_good_file(ws: Workspace, run_stage, tmp_path: Path) -> None:
    # the cases above differ from this file only in what they break
    out, pr = tmp_path / "pseudo_r1.json", tmp_path / "pr.csv"
    args = ["--params", ws.params, "--round", "r1", "--data", ws.data, "--split", ws.split]
    proc = run_stage("eval_pseudo", *args, "--pseudo", ws.pseudo, "--out", out, "--pr", pr)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads(out.read_text())
    assert metrics["precision@0.5"] == metrics["recall@0.5"] == 1.0


def test_eval_pseudo_judges_the_labels_after_the_soft_thresholds(
    ws: Workspace, run_stage, tmp_path: Path
) -> None:
    # cars at objectness 0.5 (soft threshold 0.7): the student ignores them, so no car is found
    params = yaml.safe_load(ws.params.read_text())
    assert params["selftrain"]["soft_thresh"][0] > 0.5 and params["selftrain"]["soft_thresh"][1] <= 1.0

    def weak_cars(a: dict[str, np.ndarray]) -> None:
        for key in [k for k in a if k.endswith("/labels")]:
            boxes = a[key].copy()
            boxes["objectness"][boxes["class_id"] == 0] = 0.5
            a[key] = boxes

    _edit_npz(ws.pseudo / LABELS_FILE, tmp_path / "pseudo" / LABELS_FILE, weak_cars)
    out, pr = tmp_path / "pseudo_r1.json", tmp_path / "pr.csv"
    args = ["--params", ws.params, "--round", "r1", "--data", ws.data, "--split", ws.split]
    proc = run_stage("eval_pseudo", *args, "--pseudo", tmp_path / "pseudo", "--out", out, "--pr", pr)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads(out.read_text())
    assert metrics["recall@0.5/car"] == 0.0 and metrics["recall@0.5/ped"] == 1.0
    assert metrics["precision@0.5"] == 1.0 and metrics["ignore_per_frame"] > 0


@pytest.mark.parametrize("stage", ["eval_pseudo", "pseudolabel"])
def test_a_split_of_other_sequences_is_refused(ws: Workspace, run_stage, stage: str, tmp_path: Path) -> None:
    # otherwise no frame counts as kept: eval_pseudo would judge GT copies as pseudo labels
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"mode": "wsod", "sequences": {"seq_a": [3], "elsewhere": [1]}}))
    args = ["--params", ws.params, "--round", "r1", "--data", ws.data, "--split", split]
    if stage == "eval_pseudo":
        outs = ["pseudo_r1.json", "pr.csv"]
        args += ["--pseudo", ws.pseudo, "--out", tmp_path / outs[0], "--pr", tmp_path / outs[1]]
    else:
        outs = ["r1"]
        args += ["--model", ws.model, "--out", tmp_path / "r1", "--no-progress"]
    proc = run_stage(stage, *args)
    line = last_line(proc)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert line.startswith(f"error: {split}: 1 of its 2 sequence(s) are not training sequences"), line
    assert "['elsewhere']" in line and "'seq_a'" in line
    assert leftovers(tmp_path, outs) == []


# --- evaluate and pseudolabel: a model folder that cannot be the model -----------------------


def _model_variant(ws: Workspace, case: str) -> Path:
    folder = ws.root / f"model-{case}"
    if folder.exists():
        return folder
    info = json.loads((ws.model / "model.json").read_text())
    state = torch.load(ws.model / "model.pt", weights_only=True)
    if case == "tensor-not-state-dict":
        write_model_folder(folder, torch.zeros(3), info)
    elif case == "foreign-state-dict":
        write_model_folder(folder, {"layer.weight": torch.zeros(2, 2)}, info)
    elif case == "json-mismatch":
        info["model"]["partition_split"] = [9, 9]  # not the params' model: must not load silently
        write_model_folder(folder, state, info)
    elif case == "json-corrupt":
        write_model_folder(folder, state, info)
        (folder / "model.json").write_text('{"model": ')
    elif case == "missing":
        folder.mkdir()
    return folder


MODEL_CASES = [
    pytest.param("tensor-not-state-dict", "model.pt", id="tensor-not-state-dict"),
    pytest.param("foreign-state-dict", "model.pt", id="foreign-state-dict"),
    pytest.param("json-mismatch", "partition_split", id="json-mismatch"),
    pytest.param("json-corrupt", "model.json", id="json-corrupt"),
    pytest.param("missing", "no trained model here", id="missing"),
]


@pytest.mark.parametrize(("case", "named"), MODEL_CASES)
@pytest.mark.parametrize("stage", ["evaluate", "pseudolabel"])
def test_stages_refuse_a_model_folder_that_is_not_the_model(
    ws: Workspace, run_stage, stage: str, case: str, named: str, tmp_path: Path
) -> None:
    model = _model_variant(ws, case)
    common = ["--params", ws.params, "--data", ws.data, "--model", model]
    if stage == "evaluate":
        outs = ["e.json", "c.csv", "p.npz"]
        args = ["--name", "x", "--split", "train", "--out", tmp_path / outs[0]]
        args += ["--confusion", tmp_path / outs[1], "--predictions", tmp_path / outs[2]]
    else:
        outs = ["r1"]
        args = ["--round", "r1", "--split", ws.split, "--out", tmp_path / "r1"]
    proc = run_stage(stage, *common, *args, "--no-progress")
    line = last_line(proc)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert line.startswith("error: ") and str(model) in line and named in line, line
    assert "weights_only=False" not in proc.stderr
    assert leftovers(tmp_path, outs) == []


# --- pseudolabel killed mid-run --------------------------------------------------------------


def _pseudolabel(
    ws: Workspace, data: Path, split: Path, model: Path, out: Path, progress: bool = False
) -> subprocess.Popen:
    cmd = [sys.executable, str(REPO / "stages" / "pseudolabel.py"), "--params", str(ws.params)]
    cmd += ["--round", "r1", "--data", str(data), "--split", str(split), "--model", str(model)]
    cmd += ["--out", str(out), *([] if progress else ["--no-progress"])]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_bar(proc: subprocess.Popen, timeout_s: float = 600) -> None:
    """Read ``proc``'s stderr until its progress bar shows (``%|``): the labelling has begun."""
    seen, deadline = b"", time.monotonic() + timeout_s
    while b"%|" not in seen:
        chunk = os.read(proc.stderr.fileno(), 4096)  # type: ignore[union-attr]
        assert chunk and time.monotonic() < deadline, f"no progress bar: {seen[-2000:]!r}"
        seen += chunk


@pytest.mark.slow
def test_pseudolabel_killed_mid_run_reruns_to_the_same_bytes(
    ws: Workspace, run_stage, tmp_path: Path
) -> None:
    # real events (synthesize + preprocess) and a detector whose boxes pass the thresholds
    for stage, args in (
        ("synthesize", ["--out", tmp_path / "raw"]),
        ("preprocess", ["--raw", tmp_path / "raw", "--out", tmp_path / "data"]),
        ("subsample", ["--data", tmp_path / "data", "--out", tmp_path / "split.json"]),
    ):
        extra = ["--metrics", tmp_path / "sub.json"] if stage == "subsample" else []
        proc = run_stage(stage, "--params", ws.params, *args, *extra, "--no-progress")
        assert proc.returncode == 0, proc.stderr[-2000:]
    params = params_from_dict(yaml.safe_load(ws.params.read_text()))
    torch.manual_seed(0)
    model = RecurrentDetector(params.model_config)
    with torch.no_grad():
        for conv in (*model.head.obj_preds, *model.head.cls_preds):
            conv.bias.fill_(3.0)
    info = {"model": to_dict(params.model_config), "classes": params.preset.classes}
    write_model_folder(tmp_path / "model", model.state_dict(), info)
    run = lambda out, progress=False: _pseudolabel(  # noqa: E731
        ws, tmp_path / "data", tmp_path / "split.json", tmp_path / "model", out, progress
    )

    clean = run(tmp_path / "clean")
    assert clean.wait() == 0, clean.stderr.read()[-2000:]

    out = tmp_path / "out"
    killed = run(out, progress=True)
    _wait_for_bar(killed)  # past start-up, inside the labelling (whatever the machine's load)
    assert killed.poll() is None, "finished before it could be killed"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    rerun = run(out)
    assert rerun.wait() == 0, rerun.stderr.read()[-2000:]
    for name in (LABELS_FILE, "summary.json"):
        assert (out / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    labels = load_pseudo_labels(out / LABELS_FILE)
    assert sum(len(s.labels) for s in labels.values()) > 0
    assert zipfile.is_zipfile(out / LABELS_FILE)
