"""Sharded pseudolabel and evaluate: the outputs of 2 real torch.distributed ranks (gloo) are
byte-identical to one process's, started by the stage itself and by torchrun; a rank's
bad input ends the output with its one error line."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from leod.config import params_from_dict
from leod.data.layout import load_manifest
from leod.data.sequence import load_split, open_sequences
from leod.distributed.shard import assign
from leod.model.detector import RecurrentDetector
from leod.plumbing.cpu import thread_env
from leod.pseudo.label import pseudo_label_sequences
from leod.pseudo.store import label_arrays
from leod.schema import to_dict
from test_data_loading import make_dataset
from test_faults_pseudo import write_model_folder
from tiny import REPO, tiny_dict


def test_assign_balances_by_length_and_covers_every_item_once() -> None:
    lengths = [30, 23, 37, 5, 5, 60]
    shares = assign(lengths, 2)
    assert sorted(i for s in shares for i in s) == list(range(6))
    assert shares == [[1, 5], [0, 2, 3, 4]]  # loads 83 and 77: longest first to the lighter rank
    assert all(s == sorted(s) for s in shares)
    assert assign(lengths, 1) == [list(range(6))]
    assert assign([4], 3) == [[0], [], []]  # more ranks than items: some get none


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny dataset (3 sequences of unequal length), a random model, and params whose
    thresholds keep many boxes, so the outputs have something to differ in."""
    root = tmp_path_factory.mktemp("shard")
    d = tiny_dict(yaml.safe_load((REPO / "params.yaml").read_text()))
    d["train"].update(device="cpu", eval_batch_size=2, eval_conf_threshold=0.0)
    d["representation"]["nbins"] = 2  # the tiny dataset's
    d["pseudo"].update(batch_size=2, conf_thresh=0.0, obj_thresh=[0.0, 0.0], cls_thresh=[0.0, 0.0])
    (root / "params.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    d["shard"]["nproc_per_node"] = 2
    (root / "params2.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    params = params_from_dict(d)
    make_dataset(root / "data")
    torch.manual_seed(0)
    model = RecurrentDetector(params.model_config)
    info = {"model": to_dict(params.model_config), "classes": params.preset.classes}
    write_model_folder(root / "model", model.state_dict(), info)
    return root


def stage_args(ws: Path, name: str, params: str, out: Path) -> list[str]:
    common = ["--params", ws / params, "--data", ws / "data", "--model", ws / "model", "--no-progress"]
    if name == "pseudolabel":
        args = ["--round", "r1", "--split", ws / "data" / "split.json", "--out", out / "pseudo"]
    else:
        args = ["--name", "r1", "--split", "train", "--out", out / "metrics.json"]
        args += ["--confusion", out / "confusion.csv", "--predictions", out / "predictions.npz"]
    return list(map(str, common + args))


def stage(ws: Path, name: str, params: str, out: Path, *launcher: str) -> subprocess.CompletedProcess:
    """The stage in fresh processes, as DVC (or torchrun: ``launcher``) starts it."""
    env = {**os.environ, **thread_env(1), "LEOD_TRACKING": "0"}
    env.pop("WORLD_SIZE", None)
    cmd = [
        *(launcher or (sys.executable,)),
        str(REPO / "stages" / f"{name}.py"),
        *stage_args(ws, name, params, out),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def in_process(ws: Path, name: str, out: Path) -> None:
    """The single-process reference, run here (torch is already imported: a faster test)."""
    spec = importlib.util.spec_from_file_location(f"stage_{name}", REPO / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank: bytes are equal at equal threads per process
    try:
        assert module.main(stage_args(ws, name, "params.yaml", out)) == 0
    finally:
        torch.set_num_threads(threads)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_two_ranks_write_the_bytes_of_one_process(ws: Path, tmp_path: Path) -> None:
    torchrun = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2")
    outputs = {}
    for name, launcher in (("pseudolabel", ()), ("evaluate", torchrun)):  # relaunched / by hand
        in_process(ws, name, tmp_path / name / "x1")
        proc = stage(ws, name, "params2.yaml", tmp_path / name / "x2", *launcher)
        assert proc.returncode == 0, f"{name}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        outputs[name] = files(tmp_path / name / "x1"), files(tmp_path / name / "x2")
    pseudo1, pseudo2 = outputs["pseudolabel"]
    assert sorted(pseudo1) == ["pseudo/labels.npz", "pseudo/summary.json"]
    assert pseudo2 == pseudo1
    eval1, eval2 = outputs["evaluate"]
    assert sorted(eval1) == ["confusion.csv", "metrics.json", "predictions.npz"]
    assert eval2 == eval1
    # not vacuous: every sequence has labels and predictions, with boxes
    with np.load(tmp_path / "pseudolabel" / "x1" / "pseudo" / "labels.npz") as npz:
        assert sum(len(npz[k]) for k in npz.files if k.endswith("/labels")) > 100
    with np.load(tmp_path / "evaluate" / "x1" / "predictions.npz") as npz:
        assert sorted(npz.files) == ["seq_a", "seq_b", "seq_c"]
        assert all(len(npz[k]) > 0 for k in npz.files)


@pytest.mark.slow
def test_a_rank_on_bad_input_ends_the_output_with_its_error(ws: Path, tmp_path: Path) -> None:
    (ws / "empty").mkdir(exist_ok=True)
    bad = ws / "bad"
    bad.mkdir(exist_ok=True)
    (bad / "params2.yaml").write_text((ws / "params2.yaml").read_text())
    for name in ("data", "model"):
        (bad / name).symlink_to(ws / "empty" if name == "model" else ws / name)
    proc = stage(bad, "pseudolabel", "params2.yaml", tmp_path)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert (
        lines[-1].startswith("error: ") and "model" in lines[-1] and "(torchrun exit status " in lines[-1]
    ), lines[-3:]
    assert sum(line.startswith("error: ") for line in lines) == 1
    assert not any(tmp_path.iterdir())


def test_batched_tta_gives_the_same_bytes(ws: Path) -> None:
    """On one thread, the four passes side by side in one batch (pseudo.batch_tta) label every
    frame with the same bytes as the passes one after the other: rows of a batch do not meet
    (checked here at 4 x 2 slots, and on the synthetic dataset at 4 x 8 in docs/scaling.md)."""
    import torch

    from leod.config import load_params
    from leod.training.model_files import build_model

    params = load_params(ws / "params.yaml").for_round("r1")
    seqs = open_sequences(ws / "data", load_manifest(ws / "data"), "train")
    kept = load_split(ws / "data" / "split.json").sequences
    model = build_model(ws / "model", params)
    cpu = torch.device("cpu")
    results = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on several threads the bigger batch is split differently
    try:
        for batched in (False, True):
            prm = dataclasses.replace(params, pseudo=dataclasses.replace(params.pseudo, batch_tta=batched))
            results[batched] = pseudo_label_sequences(model, seqs, kept, prm, cpu, progress=False)
    finally:
        torch.set_num_threads(threads)
    (one_by_one, stats1), (side_by_side, stats2) = results[False], results[True]
    assert stats1.boxes > 100 and stats2 == stats1
    assert label_arrays(one_by_one).keys() == label_arrays(side_by_side).keys()
    for key, a in label_arrays(one_by_one).items():
        assert a.tobytes() == label_arrays(side_by_side)[key].tobytes(), key
