"""Data-parallel training with torch.distributed: batch slots, reductions, DDP, synced BatchNorm.

``loader.batch_size`` is the global batch: every rank trains its share of each batch's
slots, keeps the LSTM states of its own streaming slots, and the loss is normalised by the
global number of positives, so the all-reduced gradient is the one a single process computes
on the whole batch (docs/scaling-training.md). With one process nothing here changes what
training computes: every helper is the identity.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from leod.distributed.group import Ranks
from leod.distributed.launch import LaunchSpec, relaunch
from leod.plumbing.errors import ConfigError
from leod.training.config import TrainConfig


def world_size() -> int:
    return Ranks.from_env().world_size


def rank() -> int:
    return Ranks.from_env().rank


def is_main() -> bool:
    """Rank 0: the only process that writes models, checkpoints, metrics and MLflow runs."""
    return Ranks.from_env().is_root


def launch_spec(tcfg: TrainConfig) -> LaunchSpec:
    """The processes and rendezvous the params ask for."""
    return LaunchSpec(tcfg.nproc_per_node, tcfg.nnodes, tcfg.rdzv_endpoint, tcfg.rdzv_id)


def check_batch_split(batch_size: int, world: int) -> None:
    """The global batch must split evenly over the ``world`` processes."""
    if batch_size % world:
        raise ConfigError(
            f"params key 'loader.batch_size' = {batch_size} does not split over "
            f"train.nproc_per_node * train.nnodes = {world} processes; make it a multiple of {world}"
        )


def relaunch_under_torchrun(tcfg: TrainConfig, batch_size: int, argv: Sequence[str] | None = None) -> bool:
    """The training stage under torchrun when the params ask for more than one process
    (:func:`leod.distributed.launch.relaunch`); True when its ranks trained."""
    spec = launch_spec(tcfg)
    check_batch_split(batch_size, spec.world)
    return relaunch(spec, argv, "training processes")


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
    """``module`` in DistributedDataParallel (its BatchNorm already synced by
    :func:`convert_sync_batchnorm`); itself alone.

    Every parameter takes part in every step that updates (a rank without supervised frames
    still runs the head on an empty batch), so no unused-parameter search is needed. The
    BatchNorm buffers are equal on every rank (computed from the same global statistics),
    so DDP need not broadcast them.
    """
    if world_size() == 1:
        return module
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
