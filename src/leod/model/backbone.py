"""The RVT recurrent backbone: 4 x (strided conv + LayerNorm, MaxViT blocks, ConvLSTM).

Stage 1 is an overlapping 7x7 stride-4 patch embedding; stages 2-4 downsample by 2 with a
3x3 conv. Each stage's LSTM output ``h`` is both its feature map and the next stage's
input, so temporal memory is available at every scale. Inside a stage the attention works
on token sequences (see :mod:`leod.model.maxvit`); the LSTM and its states are spatial,
channels-last ``(B, H, W, C)``. Over T frames the backbone goes stage by stage, each on all
T*B frames at once (only the LSTM memory steps in time); NCHW outputs are channels-last views.
"""

from __future__ import annotations

from torch import Tensor, nn

from leod.model.config import FPN_STAGES, STAGE_STRIDES, ModelConfig
from leod.model.convlstm import ConvLSTMCell, LstmState, LstmStates
from leod.model.maxvit import MaxViTBlock, reorder


class ConvDownsample(nn.Module):
    """Overlapping strided conv (kernel 2*factor - 1, no bias) then LayerNorm, NCHW -> NHWC."""

    def __init__(self, dim_in: int, dim_out: int, factor: int) -> None:
        super().__init__()
        kernel = 2 * (factor - 1) + 1
        self.conv = nn.Conv2d(dim_in, dim_out, kernel, stride=factor, padding=kernel // 2, bias=False)
        self.norm = nn.LayerNorm(dim_out, eps=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x).permute(0, 2, 3, 1))


class RecurrentStage(nn.Module):
    """Downsample, ``num_blocks`` MaxViT pairs, then the stage's ConvLSTM."""

    def __init__(
        self,
        dim_in: int,
        dim: int,
        factor: int,
        num_blocks: int,
        dim_head: int,
        mlp_ratio: int,
        layer_scale_init: float,
        dws_conv: bool,
    ) -> None:
        super().__init__()
        self.downsample = ConvDownsample(dim_in, dim, factor)
        self.blocks = nn.ModuleList(
            MaxViTBlock(dim, dim_head, mlp_ratio, layer_scale_init, skip_first_norm=i == 0)
            for i in range(num_blocks)
        )
        self.lstm = ConvLSTMCell(dim, dws_conv=dws_conv)

    def forward(
        self, x: Tensor, state: LstmState | None, partition: tuple[int, int]
    ) -> tuple[Tensor, LstmState]:
        """``x (T, B, C_in, H, W)`` -> features ``(T, B, C, H/f, W/f)`` (channels_last views) and
        the state after step T. All but the LSTM's memory path runs on the T*B frames at once."""
        steps, batch = x.shape[:2]
        y = self.downsample(x.flatten(0, 1))
        frames, height, width, dim = y.shape
        tokens, order = y.reshape(frames, height * width, dim), "spatial"
        for block in self.blocks:
            tokens, order = block(tokens, order, (height, width), partition)
        y = reorder(tokens, (height, width), partition, order, "spatial")
        h, state = self.lstm(y.view(steps, batch, height, width, dim), state)
        return h.permute(0, 1, 4, 2, 3), state


class RecurrentBackbone(nn.Module):
    """Four recurrent stages; returns the stride 8/16/32 features and the new LSTM states."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.partition_split = cfg.partition_split
        dims_in = (cfg.in_channels, *cfg.stage_dims[:-1])
        factors = (STAGE_STRIDES[0],) + tuple(
            b // a for a, b in zip(STAGE_STRIDES[:-1], STAGE_STRIDES[1:], strict=True)
        )
        self.stages = nn.ModuleList(
            RecurrentStage(
                dim_in,
                dim,
                factor,
                blocks,
                cfg.head_dim_resolved,
                cfg.mlp_ratio,
                cfg.layer_scale_init,
                cfg.dws_conv,
            )
            for dim_in, dim, factor, blocks in zip(
                dims_in, cfg.stage_dims, factors, cfg.num_blocks, strict=True
            )
        )

    def partition_size(self, height: int, width: int) -> tuple[int, int]:
        """RVT's window = grid size: padded input size / (32 * partition_split)."""
        unit = STAGE_STRIDES[-1] * self.partition_split
        if height % unit or width % unit:
            raise ValueError(f"padded input {height}x{width} is not a multiple of {unit}")
        return height // unit, width // unit

    def forward(self, x: Tensor, states: LstmStates | None) -> tuple[list[Tensor], LstmStates]:
        """``x (T, B, C, H, W)`` time-major frames, or one step ``(B, C, H, W)``, already padded
        to a multiple of 32 * partition_split -> the FPN features (with the same leading dims)
        and the states after the last step.

        The stages run one after the other over all T steps: stage s at step t needs only
        stage s-1 at step t and its own memory, so each stage's downsampling and attention
        process the T*B frames in one batch and only its LSTM memory is stepped in time.
        """
        if x.ndim == 4:
            features, new_states = self(x.unsqueeze(0), states)
            return [f.squeeze(0) for f in features], new_states
        if states is not None and len(states) != len(self.stages):
            raise ValueError(f"expected {len(self.stages)} LSTM states, got {len(states)}")
        partition = self.partition_size(x.shape[-2], x.shape[-1])
        features: list[Tensor] = []
        new_states: LstmStates = []
        for i, stage in enumerate(self.stages):
            x, state = stage(x, None if states is None else states[i], partition)
            new_states.append(state)
            if i in FPN_STAGES:
                features.append(x)
        return features, new_states


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Zero-pad the bottom/right of ``(..., C, H, W)`` to multiples of ``multiple`` (as RVT).

    Bottom/right padding leaves pixel coordinates unchanged, so boxes need no shift. The
    result is in channels_last memory format, which the stem convolution runs faster on:
    ``x`` itself when it needs no padding and already is, else a copy (the padding copy does
    the layout change for free; only the padding itself is zero-filled).
    """
    *lead, channels, height, width = x.shape
    padded_h, padded_w = -(-height // multiple) * multiple, -(-width // multiple) * multiple
    if (padded_h, padded_w) == (height, width) and x.movedim(-3, -1).is_contiguous():
        return x
    padded = x.new_empty(*lead, padded_h, padded_w, channels)
    padded[..., :height, :width, :] = x.movedim(-3, -1)
    padded[..., height:, :, :] = 0
    padded[..., :height, width:, :] = 0
    return padded.movedim(-1, -3)
