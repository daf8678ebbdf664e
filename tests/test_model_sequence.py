"""The fast training-step paths are pinned to the computation they replaced.

* the ConvLSTM over T steps (input share of the gates batched in time, ``x`` and ``h``
  columns of the 1x1 mix applied apart) against RVT's per-step ``concat(x, h) -> 1x1 conv``;
* the backbone run stage by stage over a sequence against one time step after another;
* channels-last frames: padding, collate, and the fused AdamW step against the default one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from leod.data.batch import Sample, collate
from leod.labels.boxes import empty_boxes
from leod.model.backbone import pad_to_multiple
from leod.model.config import ModelConfig
from leod.model.convlstm import ConvLSTMCell, LstmState
from leod.model.detector import RecurrentDetector
from leod.training.loop import make_optimizer


def _reference_lstm_step(cell: ConvLSTMCell, x: Tensor, state: LstmState | None) -> LstmState:
    """RVT's DWSConvLSTM2d step, written out: 1x1 conv of ``concat(x, h)``, zeros for no memory."""
    h_prev, c_prev = (torch.zeros_like(x), torch.zeros_like(x)) if state is None else state
    if cell.dws is not None:
        h_prev = cell.dws(h_prev.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    mix = F.linear(torch.cat([x, h_prev], dim=-1), cell.mix.weight, cell.mix.bias)
    forget, inp, out = torch.sigmoid(mix[..., : 3 * cell.dim]).chunk(3, dim=-1)
    c = forget * c_prev + inp * torch.tanh(mix[..., 3 * cell.dim :])
    return out * torch.tanh(c), c


def _grads(module: torch.nn.Module, *tensors: Tensor) -> list[Tensor]:
    return [t.grad.clone() for t in tensors] + [p.grad.clone() for p in module.parameters()]


@pytest.mark.parametrize("dws_conv", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_lstm_over_steps_matches_the_per_step_rvt_cell(dws_conv: bool, with_state: bool) -> None:
    torch.manual_seed(0)
    cell = ConvLSTMCell(8, dws_conv=dws_conv)
    x = torch.randn(4, 2, 3, 5, 8, requires_grad=True)
    h0 = torch.randn(2, 3, 5, 8, requires_grad=True)
    c0 = torch.randn(2, 3, 5, 8, requires_grad=True)
    state = (h0, c0) if with_state else None

    hs, (h, c) = cell(x, state)
    (hs.square().sum() + c.sum()).backward()
    fast = _grads(cell, x, h0, c0) if with_state else _grads(cell, x)
    for t in [x, h0, c0, *cell.parameters()]:
        t.grad = None

    ref_state, ref_hs = state, []
    for t in range(x.shape[0]):
        ref_state = _reference_lstm_step(cell, x[t], ref_state)
        ref_hs.append(ref_state[0])
    (torch.stack(ref_hs).square().sum() + ref_state[1].sum()).backward()
    ref = _grads(cell, x, h0, c0) if with_state else _grads(cell, x)

    torch.testing.assert_close(hs, torch.stack(ref_hs), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c, ref_state[1], rtol=1e-5, atol=1e-6)
    for got, want in zip(fast, ref, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_backbone_stage_by_stage_matches_step_by_step() -> None:
    """Features, states and parameter gradients of the sequence run equal those of T single
    steps (the backbone has no batch statistics, so batching the T*B frames changes nothing)."""
    torch.manual_seed(0)
    model = RecurrentDetector(ModelConfig(preset="nano", num_classes=2)).train()
    backbone = model.backbone
    frames = pad_to_multiple(torch.rand(3, 2, 20, 64, 96) * 4, model.cfg.pad_multiple)
    states = [(torch.randn_like(h), torch.randn_like(c)) for h, c in backbone(frames[0], None)[1]]

    feats, new_states = backbone(frames, states)
    loss = sum(f.square().mean() for f in feats) + sum(c.mean() for _, c in new_states)
    loss.backward()
    fast = [p.grad.clone() for p in backbone.parameters()]
    backbone.zero_grad(set_to_none=True)

    step_states, step_feats = states, []
    for t in range(frames.shape[0]):
        f, step_states = backbone(frames[t], step_states)
        step_feats.append(f)
    ref_feats = [torch.stack([f[i] for f in step_feats]) for i in range(len(feats))]
    ref_loss = sum(f.square().mean() for f in ref_feats) + sum(c.mean() for _, c in step_states)
    ref_loss.backward()

    for got, want in zip(feats, ref_feats, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    for (h, c), (rh, rc) in zip(new_states, step_states, strict=True):
        torch.testing.assert_close(h, rh, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(c, rc, rtol=1e-4, atol=1e-5)
    for p, got in zip(backbone.parameters(), fast, strict=True):
        torch.testing.assert_close(got, p.grad, rtol=1e-3, atol=1e-5)


def test_padding_is_channels_last_and_skipped_when_aligned() -> None:
    x = torch.rand(2, 3, 4, 50, 70)
    padded = pad_to_multiple(x, 32)
    assert padded.shape == (2, 3, 4, 64, 96)
    assert padded.movedim(-3, -1).is_contiguous()
    assert torch.equal(padded[..., :50, :70], x)
    assert not padded[..., 50:, :].any() and not padded[..., :, 70:].any()
    assert pad_to_multiple(padded, 32) is padded  # aligned and channels-last: no copy
    aligned = torch.rand(2, 4, 64, 96)  # aligned but NCHW: one layout copy
    out = pad_to_multiple(aligned, 32)
    assert out is not aligned and torch.equal(out, aligned) and out.movedim(-3, -1).is_contiguous()


def test_collate_frames_are_channels_last_event_counts() -> None:
    rng = np.random.default_rng(0)
    length = 3
    samples = []
    for offset, n in ((0, 3), (1, 2)):
        frames = rng.integers(0, 9, (n, 4, 6, 8), dtype=np.uint8)
        minus = np.full(length, -1, np.int64)
        boxes = [empty_boxes() for _ in range(length)]
        samples.append(Sample(frames, offset, boxes, np.zeros(length, bool), minus, minus, minus, True, "s"))
    batch = collate(samples, n_stream=0)
    assert batch.frames.shape == (3, 2, 4, 6, 8) and batch.frames.dtype == torch.float32
    assert batch.frames.movedim(2, -1).is_contiguous()
    assert torch.equal(batch.frames[:, 0], torch.from_numpy(samples[0].frames).float())
    assert not batch.frames[0, 1].any()
    assert torch.equal(batch.frames[1:, 1], torch.from_numpy(samples[1].frames).float())


def test_fused_adamw_matches_the_default_update() -> None:
    torch.manual_seed(0)
    fused_model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5), torch.nn.Linear(5, 3))
    plain_model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5), torch.nn.Linear(5, 3))
    plain_model.load_state_dict(fused_model.state_dict())
    fused = make_optimizer(fused_model, lr=1e-2, weight_decay=0.05)
    plain = torch.optim.AdamW(plain_model.parameters(), lr=1e-2, weight_decay=0.05)
    assert fused.defaults["fused"]
    x = torch.randn(16, 6)
    for _ in range(5):
        for model, opt in ((fused_model, fused), (plain_model, plain)):
            opt.zero_grad(set_to_none=True)
            model(x).square().mean().backward()
            opt.step()
    for a, b in zip(fused_model.parameters(), plain_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # the checkpointed state has the default optimiser's layout
    assert fused.state_dict()["state"].keys() == plain.state_dict()["state"].keys()
    plain.load_state_dict(fused.state_dict())


@pytest.mark.parametrize("all_supervised", [False, True])
def test_forward_sequence_matches_forward_steps(all_supervised: bool) -> None:
    """Eval mode (no batch statistics): the sequence run's predictions are the per-step ones,
    time-major, whether every frame is supervised (no selection) or only some."""
    torch.manual_seed(0)
    model = RecurrentDetector(ModelConfig(preset="nano", num_classes=2)).eval()
    frames = torch.rand(3, 2, 20, 64, 96) * 4
    supervised = torch.ones(3, 2, dtype=torch.bool)
    if not all_supervised:
        supervised[0, 0] = supervised[2, 1] = False
    with torch.no_grad():
        preds, _ = model.forward_sequence(frames, None, supervised)
        states, steps = None, []
        for t in range(3):
            step, states = model.forward_step(frames[t], states)
            steps.append(step)
    rows = supervised.nonzero().tolist()
    for field in ("boxes", "obj_logits", "cls_logits"):
        want = torch.stack([getattr(steps[t], field)[b] for t, b in rows])
        torch.testing.assert_close(getattr(preds, field), want, rtol=1e-4, atol=1e-4)
