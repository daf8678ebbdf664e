"""The per-stage recurrent memory of RVT ("DWSConvLSTM2d"), and the state container helpers.

States are a list with one ``(h, c)`` pair per backbone stage, each ``(B, H_s, W_s, C_s)``
channels-last; ``None`` means "no history" (zeros). Samples in a batch are independent
streams, so resetting or detaching works per sample along dim 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LstmState = tuple[Tensor, Tensor]
LstmStates = list[LstmState]


class ConvLSTMCell(nn.Module):
    """Convolutional LSTM cell on channels-last feature maps, stepped over a run of frames.

    RVT mixes ``concat(x, h)`` with a 1x1 conv into the forget/input/output gates and the cell
    input; on channels-last tensors that is an ``nn.Linear`` (same parameters). Its ``x``
    columns do not depend on the memory, so they are applied to every time step at once and
    only the ``h`` columns run step by step. The optional depthwise 3x3 conv on ``h``
    (``dws_conv``, off in RVT) adds spatial context.
    """

    def __init__(self, dim: int, dws_conv: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.dws: nn.Module | None = (
            nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim) if dws_conv else None
        )
        self.mix = nn.Linear(2 * dim, 4 * dim)

    def forward(self, x: Tensor, state: LstmState | None) -> tuple[Tensor, LstmState]:
        """``x (T, B, H, W, C)`` and the ``(h, c)`` before it (or None) -> ``h`` of every step
        ``(T, B, H, W, C)`` and the ``(h, c)`` after the last step."""
        h: Tensor | None = None
        c: Tensor | None = None
        if state is not None:
            h, c = state
            if h.shape != x.shape[1:]:
                raise ValueError(
                    f"LSTM state of shape {tuple(h.shape)} does not fit features {tuple(x.shape[1:])}; "
                    "reset the states when the input resolution changes"
                )
        elif self.dws is not None:
            h = x.new_zeros(x.shape[1:])  # the depthwise conv of an empty memory is its bias
        # weight rows: forget, input, output gates | cell input; columns: x | h
        dim = self.dim
        (wx_gates, wh_gates), (wx_cell, wh_cell) = (
            rows.split(dim, dim=1) for rows in self.mix.weight.split(3 * dim, dim=0)
        )
        b_gates, b_cell = self.mix.bias.split(3 * dim)
        # the input's share of the gates, all steps at once; kept apart from the cell input
        # so that no activation reads (and no gradient writes) a slice of a wider tensor
        x_gates = F.linear(x, wx_gates, b_gates).unbind(0)
        x_cell = F.linear(x, wx_cell, b_cell).unbind(0)
        outputs = []
        for gates, cell_input in zip(x_gates, x_cell, strict=True):
            if h is not None:  # no memory: its share is zero
                h_in = h if self.dws is None else self.dws(h.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
                gates = _add_product(gates, h_in, wh_gates)
                cell_input = _add_product(cell_input, h_in, wh_cell)
            forget, inp, out = torch.sigmoid(gates).chunk(3, dim=-1)
            cell_input = torch.tanh(cell_input)
            if c is None:  # an empty memory keeps the features' dtype (float32 under autocast)
                c = (inp * cell_input).to(torch.promote_types(cell_input.dtype, x.dtype))
            else:
                c = forget * c + inp * cell_input
            h = out * torch.tanh(c)
            outputs.append(h)
        assert h is not None and c is not None  # at least one step
        return torch.stack(outputs) if len(outputs) > 1 else h.unsqueeze(0), (h, c)


def _add_product(share: Tensor, h: Tensor, weight: Tensor) -> Tensor:
    """``share + h @ weight.T`` over the last dim, as one matrix product."""
    return torch.addmm(share.flatten(0, -2), h.flatten(0, -2), weight.t()).view(share.shape)


def reset_states(states: LstmStates | None, is_first: Tensor) -> LstmStates | None:
    """Zero the memory of samples that start a new sequence (``is_first`` bool ``(B,)``).

    ``torch.where`` (rather than writing in place) keeps the autograd graph of the other
    samples intact and works for states that are still part of that graph; unlike
    multiplying by a 0/1 mask it also clears a non-finite memory (NaN * 0 is NaN).
    """
    if states is None:
        return None
    batch = states[0][0].shape[0]
    if tuple(is_first.shape) != (batch,):
        raise ValueError(f"is_first has shape {tuple(is_first.shape)}, expected ({batch},) for these states")
    first = is_first.to(torch.bool).view(-1, 1, 1, 1)
    return [
        (
            torch.where(first.to(h.device), torch.zeros((), dtype=h.dtype, device=h.device), h),
            torch.where(first.to(c.device), torch.zeros((), dtype=c.dtype, device=c.device), c),
        )
        for h, c in states
    ]


def detach_states(states: LstmStates | None) -> LstmStates | None:
    """Cut the autograd history (truncated BPTT between training batches)."""
    if states is None:
        return None
    return [(h.detach(), c.detach()) for h, c in states]
