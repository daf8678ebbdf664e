"""Data-parallel training with real torch.distributed processes (gloo on CPU).

* the building blocks, in 2 spawned processes: slot sharding and gathering, metric sums,
  and the synchronised BatchNorm against plain BatchNorm on the whole batch;
* the training stage with ``train.nproc_per_node: 2`` (relaunched under torchrun) ends with
  the weights of one process on the same global batch, logs the global batch's losses,
  and writes every output once (one model, one MLflow run, nothing from rank 1).

Two processes do not reproduce one process bit for bit: DDP sums the ranks' gradients
(and the synchronised BatchNorm its statistics) in another order than one process adds
them up, so float32 rounding differs. Measured on the tiny recipe (4 AdamW steps): the
first step's gradients agree to 1.5e-5 of each tensor's largest gradient, the logged losses
to 5e-7 relative, and the weights to 4e-8 (median) and 3.5e-6 (99.9th percentile). A few
weights differ by up to 0.2 x lr: those whose gradient is at the rounding-noise level
(attention biases, whose gradient is ~0 since softmax ignores a shift, and the branches
behind RVT's layer scale of 1e-5, with gradients near Adam's eps), where AdamW's
normalisation ``m / sqrt(v)`` turns rounding noise into a step of up to lr.
"""

from __future__ import annotations

import copy
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml
from torch import nn

from leod.config import params_from_dict
from leod.distributed import group
from leod.distributed.launch import LaunchSpec, rank_env, torchrun_command
from leod.model.losses import LossTerms
from leod.plumbing.cpu import thread_env
from leod.preprocess.dataset import convert_dataset
from leod.synthetic.generate import generate_dataset
from leod.training import distributed
from leod.training.loop import TrainResult, backward_loss, global_floats, loss_share, train
from tiny import tiny_dict

REPO = Path(__file__).resolve().parents[1]
#: what the test demands (the module docstring gives what was measured)
LOSS_RTOL = 1e-5
LR = 0.002  # train.lr in params.yaml
WEIGHTS_Q999 = 1e-5  # 99.9% of the weights within this of one process's


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _blocks_worker(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    cpu = torch.device("cpu")
    with group.process_group("gloo"):
        x = torch.arange(24.0).reshape(6, 4)
        part = distributed.shard_slots(x)
        assert torch.equal(part, x[rank::2])
        assert torch.equal(distributed.gather_slots(part), x)
        assert distributed.all_sum([1.0, rank], cpu) == [2.0, 1.0]
        assert distributed.all_true(True, cpu) and not distributed.all_true(rank == 0, cpu)

        # each rank's loss rescaled to the global positives (3 + 0) and by the world size
        # (DDP averages): the ranks' losses add up to the global batch's loss, (18 + 2) / 3
        num_fg, value = (3, 6.0) if rank == 0 else (0, 2.0)  # per rank: sum / max(num_fg, 1)
        total = torch.tensor(value, requires_grad=True)
        terms = LossTerms(total, total, total, total, num_fg)
        share = loss_share(terms, cpu)
        loss, logged = backward_loss(terms, share), global_floats(terms, share, cpu)
        assert float(loss.detach()) == pytest.approx(value * max(num_fg, 1) / 3 * 2)
        assert logged["loss"] == pytest.approx((6.0 * 3 + 2.0) / 3) and logged["num_fg"] == 3

        # synchronised BatchNorm on each rank's share == BatchNorm on the whole batch,
        # also when one rank's share is empty (a rank without supervised frames)
        for empty_rank in (None, 1):
            torch.manual_seed(0)
            ref = nn.BatchNorm2d(3)
            nn.init.normal_(ref.weight)
            nn.init.normal_(ref.bias)
            sync = distributed.convert_sync_batchnorm(nn.Sequential(copy.deepcopy(ref)))
            x = torch.randn(6, 3, 5, 4) * 3 + 1
            w = torch.randn(6, 3, 5, 4)
            xr = x.clone().requires_grad_()
            (ref(xr) * w).sum().backward()

            pick = slice(0, 6) if empty_rank is not None else slice(rank, None, 2)
            if rank == empty_rank:
                pick = slice(0, 0)
            xs = x[pick].clone().requires_grad_()
            ys = sync(xs)
            (ys * w[pick]).sum().backward()
            torch.testing.assert_close(ys, _train_forward(ref, x)[pick])
            torch.testing.assert_close(xs.grad, xr.grad[pick], rtol=1e-5, atol=1e-5)
            bn = sync[0]
            for p_sync, p_ref in ((bn.weight, ref.weight), (bn.bias, ref.bias)):
                grad = p_sync.grad.clone()
                torch.distributed.all_reduce(grad)  # what DDP does (with its 1/world, undone here)
                torch.testing.assert_close(grad, p_ref.grad, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(bn.running_mean, ref.running_mean)
            torch.testing.assert_close(bn.running_var, ref.running_var)
            assert int(bn.num_batches_tracked) == int(ref.num_batches_tracked)


def _train_forward(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """Plain BatchNorm's training-mode output on ``x`` without touching its statistics."""
    with torch.no_grad():
        return nn.functional.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)


@pytest.mark.slow
def test_sharding_sums_and_synced_batchnorm_in_two_processes():
    mp.spawn(_blocks_worker, args=(free_port(),), nprocs=2)


def test_batch_must_split_over_the_processes(tmp_path, capsys):
    from leod.training.config import TrainConfig

    with pytest.raises(Exception, match=r"loader.batch_size' = 6 does not split over .* 4 processes"):
        distributed.relaunch_under_torchrun(TrainConfig(nproc_per_node=4), 6)
    assert not distributed.relaunch_under_torchrun(TrainConfig(), 6)  # one process: train here
    spec = distributed.launch_spec(TrainConfig(nproc_per_node=2, nnodes=3, rdzv_endpoint="head:29500"))
    cmd = torchrun_command(spec, ["stages/train.py", "--x"])
    assert cmd[1:] == [
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        "--nnodes=3",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=head:29500",
        "--rdzv-id=leod",
        "stages/train.py",
        "--x",
    ]


def test_ranks_share_the_cores_unless_threads_are_set():
    cores = len(os.sched_getaffinity(0))
    env = rank_env(LaunchSpec(nproc_per_node=2), {"PATH": "/bin"})
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == str(max(1, cores // 2))
    assert env["PATH"] == "/bin"
    assert rank_env(LaunchSpec(nproc_per_node=4 * cores), {})["OMP_NUM_THREADS"] == "1"
    assert rank_env(LaunchSpec(nproc_per_node=2), {"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"
    assert "MKL_NUM_THREADS" not in rank_env(LaunchSpec(nproc_per_node=2), {"OMP_NUM_THREADS": "3"})


def tiny_params_dict(nproc: int) -> dict:
    d = tiny_dict(yaml.safe_load((REPO / "params.yaml").read_text()))
    d["loader"]["batch_size"] = 4  # global: 2 slots (1 streaming, 1 random) per rank with 2 ranks
    d["train"].update(
        steps=4,
        eval_every=4,
        checkpoint_every=2,
        log_every=1,
        pct_start=0.5,
        eval_batch_size=2,
        device="cpu",
        nproc_per_node=nproc,
    )
    return d


@pytest.fixture(scope="module")
def alone(tmp_path_factory) -> tuple[Path, TrainResult]:
    """The tiny dataset and one process's uninterrupted run on it (the reference)."""
    root = tmp_path_factory.mktemp("ddp")
    one = params_from_dict(tiny_params_dict(1))
    preset = one.datasets["synthetic"]
    generate_dataset(one.synthetic, root / "raw", preset.height, preset.width, preset.classes, progress=False)
    convert_dataset(one, root / "raw", root / "pre", log=lambda _: None, progress=False)
    return root / "pre", train(one, root / "pre", None, root / "ck1", progress=False)


def run_stage(tmp_path: Path, data: Path, env: dict[str, str]) -> tuple[Path, subprocess.CompletedProcess]:
    """``stages/train.py`` with ``train.nproc_per_node: 2``; its output folder and process."""
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_params_dict(2)))
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "stages" / "train.py"), "--params", str(params_file), "--no-progress"]
    cmd += ["--name", "r0", "--data", str(data), "--split", "full", "--model", str(out / "model")]
    cmd += [
        "--ckpt",
        str(out / "ckpt"),
        "--metrics",
        str(out / "metrics.json"),
        "--curves",
        str(out / "curves"),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), **thread_env(1), **env}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert "launching 2 training processes" in proc.stdout
    return out, proc


def run_stage_ok(tmp_path: Path, data: Path, env: dict[str, str]) -> tuple[Path, subprocess.CompletedProcess]:
    out, proc = run_stage(tmp_path, data, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("r0: published the weights") == 1  # rank 0 alone reports
    return out, proc


def assert_weights_close(weights: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    """Equal within float32 rounding as AdamW carries it (module docstring)."""
    assert weights.keys() == reference.keys()
    diff = torch.cat(
        [
            (weights[k].double() - v.double()).abs().flatten()
            for k, v in reference.items()
            if v.is_floating_point()
        ]
    )
    q999, worst = float(diff.quantile(0.999)), float(diff.max())
    print(f"weights, 2 processes vs 1: median {float(diff.median()):.1e}, 99.9% {q999:.1e}, max {worst:.1e}")
    assert q999 < WEIGHTS_Q999
    assert worst < LR  # AdamW moves a weight by at most ~lr per step


def assert_like_one_process(out: Path, reference: TrainResult) -> None:
    """The published weights and logged losses are one process's, within float32 rounding."""
    assert_weights_close(torch.load(out / "model" / "model.pt", weights_only=True), reference.final_weights)
    # the logged losses are the global batch's (all-reduced), as one process logs them
    rows = (out / "curves" / "train.csv").read_text().splitlines()[1:]
    logged = [float(r.split(",")[2]) for r in rows]
    assert logged == pytest.approx([r["loss"] for r in reference.history if "loss" in r], rel=LOSS_RTOL)


@pytest.mark.slow
def test_two_gloo_processes_end_with_the_weights_of_one(alone, tmp_path):
    data, reference = alone
    mlflow_db = tmp_path / "mlflow.db"
    out, _ = run_stage_ok(
        tmp_path, data, {"MLFLOW_TRACKING_URI": f"sqlite:///{mlflow_db}", "LEOD_TRACKING": "1"}
    )
    assert_like_one_process(out, reference)
    # every output once: one MLflow run, the scratch checkpoint cleared, no stray files
    with sqlite3.connect(mlflow_db) as db:
        assert db.execute("select count(*) from runs").fetchone()[0] == 1
    assert sorted(p.name for p in out.iterdir()) == ["ckpt", "curves", "metrics.json", "model"]
    assert list((out / "ckpt").iterdir()) == []
    assert sorted(p.name for p in (out / "curves").iterdir()) == ["train.csv", "val.csv"]


class Killed(Exception):
    """Stands in for the process being killed between two steps."""


def kill_at_step_3(row: dict) -> None:
    if row["step"] == 3:
        raise Killed


@pytest.mark.slow
def test_two_processes_resume_the_checkpoint_of_one(alone, tmp_path):
    """A run killed after its step-2 checkpoint resumes on 2 ranks: each takes its slots'
    recurrent states from the global batch's, and the run ends as the uninterrupted one."""
    data, reference = alone
    with pytest.raises(Killed):
        train(
            params_from_dict(tiny_params_dict(1)),
            data,
            None,
            tmp_path / "out" / "ckpt",
            progress=False,
            log_row=kill_at_step_3,
        )
    out, proc = run_stage_ok(tmp_path, data, {})
    assert "resuming from" in proc.stderr and "at step 2" in proc.stderr
    assert_like_one_process(out, reference)


def _killed_run_worker(rank: int, port: int, data: Path, ckpt: Path) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2"
    )
    with pytest.raises(Killed):
        train(params_from_dict(tiny_params_dict(2)), data, None, ckpt, progress=False, log_row=kill_at_step_3)


@pytest.mark.slow
def test_one_process_resumes_the_checkpoint_of_two(alone, tmp_path):
    """A 2-rank run killed after its step-2 checkpoint (rank 0 wrote the gathered states of
    the global batch) resumes on 1 process and ends as the uninterrupted 1-process run."""
    data, reference = alone
    ckpt = tmp_path / "ckpt"
    mp.spawn(_killed_run_worker, args=(free_port(), data, ckpt), nprocs=2)
    assert sorted(p.name for p in ckpt.iterdir()) == ["last.pt"]  # rank 0's alone
    resumed = train(params_from_dict(tiny_params_dict(1)), data, None, ckpt, progress=False)
    assert [r["step"] for r in resumed.history] == [1, 2, 3, 4]
    for row, ref in zip(resumed.history[2:], reference.history[2:], strict=True):
        assert row["loss"] == pytest.approx(ref["loss"], rel=LOSS_RTOL)  # the LSTM states came back
    assert_weights_close(resumed.final_weights, reference.final_weights)


@pytest.mark.slow
def test_a_failing_worker_ends_the_stage_with_its_error_line(tmp_path):
    out, proc = run_stage(tmp_path, tmp_path / "nowhere", {})
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "nowhere/manifest.json: no preprocessed dataset here" in last
    assert "torchrun exit status" in last
    assert not out.exists()
