"""Data-parallel training with torch.distributed: launch, process group, sharding, reductions.

``loader.batch_size`` is the global batch: every rank trains its share of each batch's
slots, keeps the LSTM states of its own streaming slots, and the loss is normalised by the
global number of positives, so the all-reduced gradient is the one a single process computes
on the whole batch (docs/scaling-training.md). With one process nothing here changes what
training computes: every helper is the identity.
"""

from __future__ import annotations

import codecs
import contextlib
import datetime
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import IO

import torch
import torch.distributed as dist
from torch import Tensor, nn

from leod.plumbing.errors import ConfigError, LeodError
from leod.training.config import TrainConfig

#: how long ranks wait for each other (rank 0 validates alone while the others wait)
TIMEOUT = datetime.timedelta(hours=3)


def world_size() -> int:
    """Processes taking part (torchrun's ``WORLD_SIZE``; 1 outside torchrun)."""
    return dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (0 outside torchrun)."""
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Rank 0: the only process that writes models, checkpoints, metrics and MLflow runs."""
    return rank() == 0


def launch_world(tcfg: TrainConfig) -> int:
    """The number of processes the params ask for."""
    return tcfg.nproc_per_node * tcfg.nnodes


def torchrun_command(tcfg: TrainConfig, argv: Sequence[str]) -> list[str]:
    """``python -m torch.distributed.run ... <argv>``: ``argv`` (script first) under torchrun."""
    if tcfg.rdzv_endpoint:
        rdzv = ["--rdzv-backend=c10d", f"--rdzv-endpoint={tcfg.rdzv_endpoint}", f"--rdzv-id={tcfg.rdzv_id}"]
    else:
        rdzv = ["--standalone"]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={tcfg.nproc_per_node}",
        f"--nnodes={tcfg.nnodes}",
        *rdzv,
        *argv,
    ]


def check_batch_split(batch_size: int, world: int) -> None:
    """The global batch must split evenly over the ``world`` processes."""
    if batch_size % world:
        raise ConfigError(
            f"params key 'loader.batch_size' = {batch_size} does not split over "
            f"train.nproc_per_node * train.nnodes = {world} processes; make it a multiple of {world}"
        )


def relaunch_under_torchrun(tcfg: TrainConfig, batch_size: int, argv: Sequence[str] | None = None) -> bool:
    """Run this process's command line (``argv``, default ``sys.argv``) under torchrun when the
    params ask for more than one process and this is not already a torchrun worker.

    So ``dvc.yaml`` reads the same for 1 and N processes; the workers see torchrun's
    ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and train (gloo on CPU, NCCL on CUDA, one GPU each).

    Returns True when the workers did the work (this process has nothing left to do), False
    when the caller should train itself. A failed run ends with one error line here: the
    first ``error:`` line of a worker (the workers' output passes through unchanged).
    """
    check_batch_split(batch_size, launch_world(tcfg))
    if launch_world(tcfg) == 1 or "WORLD_SIZE" in os.environ:
        return False
    cmd = torchrun_command(tcfg, list(sys.argv if argv is None else argv))
    print(f"launching {launch_world(tcfg)} training processes: {' '.join(cmd[1:])}", flush=True)
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    try:
        errors = _pass_through(proc.stderr)  # type: ignore[arg-type]
        status = proc.wait()
    except BaseException:  # Ctrl-C or SIGTERM: torchrun forwards the signal to its workers
        proc.terminate()
        proc.wait()
        raise
    if status != 0:
        why = errors[0] if errors else "see the ranks' output above"
        raise LeodError(f"{why} (torchrun exit status {status})")
    return True


def _pass_through(stream: IO[bytes]) -> list[str]:
    """Copy ``stream`` to stderr as it comes (progress bars too); its ``error:`` lines."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    errors: list[str] = []
    pending = ""
    for chunk in iter(lambda: os.read(stream.fileno(), 1 << 16), b""):
        text = decoder.decode(chunk)
        sys.stderr.write(text)
        sys.stderr.flush()
        *lines, pending = (pending + text).split("\n")
        errors += [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    return errors


def process_device(device: torch.device) -> torch.device:
    """A torchrun worker's own GPU (``cuda:LOCAL_RANK``); ``device`` unchanged otherwise."""
    if device.type != "cuda" or world_size() == 1:
        return device
    local = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(local)
    return local


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """The process group of a torchrun worker for the duration of training (nothing alone)."""
    if world_size() == 1 or dist.is_initialized():
        yield
        return
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shard_slots(x: Tensor) -> Tensor:
    """This rank's batch slots of a global-batch tensor (dim 0): slots ``rank, rank + W, ...``."""
    world = world_size()
    return x if world == 1 else x[rank() :: world]


def gather_slots(x: Tensor) -> Tensor:
    """The global-batch tensor from every rank's :func:`shard_slots` share (all ranks call it)."""
    world = world_size()
    if world == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x.contiguous())
    # global slot j * W + r is slot j of rank r
    return torch.stack(parts, dim=1).reshape(x.shape[0] * world, *x.shape[1:])


def all_sum(values: Sequence[float], device: torch.device) -> list[float]:
    """Element-wise sums over the ranks (float64); the values themselves alone."""
    if world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_true(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` holds on every rank."""
    if world_size() == 1:
        return flag
    t = torch.tensor([0 if flag else 1], dtype=torch.int32, device=device)
    dist.all_reduce(t)
    return int(t.item()) == 0


def wrap_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in DistributedDataParallel with synchronised BatchNorm; itself alone.

    Every parameter takes part in every step that updates (a rank without supervised frames
    still runs the head on an empty batch), so no unused-parameter search is needed. The
    BatchNorm buffers are equal on every rank (computed from the same global statistics),
    so DDP need not broadcast them.
    """
    if world_size() == 1:
        return module
    module = convert_sync_batchnorm(module)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)


class _SyncBatchNormFn(torch.autograd.Function):
    """Batch normalisation over every rank's batch: one all-reduce forward, one backward."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:  # type: ignore[override]
        dims = [0, *range(2, x.ndim)]
        shape = [1, -1] + [1] * (x.ndim - 2)
        xf = x.float()
        count = torch.tensor([xf.numel() // xf.shape[1]], dtype=torch.float64, device=x.device)
        stats = torch.cat(
            [count, xf.sum(dims, dtype=torch.float64), xf.square().sum(dims, dtype=torch.float64)]
        )
        dist.all_reduce(stats)
        n, channels = stats[0], x.shape[1]
        mean = stats[1 : 1 + channels] / n
        var = (stats[1 + channels :] / n - mean.square()).clamp_min(0)
        invstd = torch.rsqrt(var + eps).float()
        xhat = (xf - mean.float().view(shape)) * invstd.view(shape)
        ctx.save_for_backward(xhat, weight, invstd, n.float())
        unbiased = var * n / (n - 1).clamp_min(1)
        ctx.mark_non_differentiable(mean, unbiased)
        y = xhat * weight.view(shape) + bias.view(shape)
        return y.to(x.dtype), mean, unbiased

    @staticmethod
    def backward(ctx, gy: Tensor, _mean: Tensor, _var: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:  # type: ignore[override]
        xhat, weight, invstd, n = ctx.saved_tensors
        dims = [0, *range(2, xhat.ndim)]
        shape = [1, -1] + [1] * (xhat.ndim - 2)
        gyf = gy.float()
        # the affine parameters' gradients stay local: DDP's all-reduce combines them
        grad_bias, grad_weight = gyf.sum(dims), (gyf * xhat).sum(dims)
        sums = torch.cat([grad_bias, grad_weight])
        dist.all_reduce(sums)
        mean_gy, mean_gy_xhat = (sums / n).chunk(2)
        gx = (weight * invstd).view(shape) * (gyf - mean_gy.view(shape) - xhat * mean_gy_xhat.view(shape))
        return gx.to(gy.dtype), grad_weight.to(weight.dtype), grad_bias.to(weight.dtype), None


class SyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch (any backend).

    torch's own SyncBatchNorm only runs on GPUs; this one, built on two all-reduces, serves
    gloo (CPU) and NCCL alike.

    In eval mode, or alone, it is plain BatchNorm2d. A rank with an empty batch takes part
    with a count of 0.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or not dist.is_initialized() or dist.get_world_size() == 1:
            return super().forward(x)
        y, mean, var = _SyncBatchNormFn.apply(x, self.weight, self.bias, self.eps)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.lerp_(mean.to(self.running_mean.dtype), m)
            self.running_var.lerp_(var.to(self.running_var.dtype), m)
        return y


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm2d replaced by a :class:`SyncBatchNorm` holding its
    parameters and statistics (in place; returns the root)."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            sync = SyncBatchNorm(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            ).to(child.weight.device)
            sync.load_state_dict(child.state_dict())
            setattr(module, name, sync)
        else:
            convert_sync_batchnorm(child)
    return module
