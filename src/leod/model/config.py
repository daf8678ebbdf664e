"""params.yaml section ``model``: the detector size preset plus the few knobs that change.

RVT's three sizes differ only in the embedding width, the attention head width and the
depth of the FPN; everything else (4 stages of widths C/2C/4C/8C, one MaxViT pair per
stage, head width 2C) follows from them. A preset names such a triple; the optional
override fields replace one element of it, so ablations need no new preset. ``nano`` is
our own CPU-sized preset for the synthetic default pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from leod.plumbing.errors import ConfigError
from leod.schema import optional, rng

#: Strides of the four backbone stages (patch-4 stem, then three 2x downsamplings).
STAGE_STRIDES: tuple[int, ...] = (4, 8, 16, 32)
#: Backbone stages (0-based) that feed the FPN, i.e. strides 8, 16, 32.
FPN_STAGES: tuple[int, ...] = (1, 2, 3)


@dataclass(frozen=True)
class Preset:
    """One named size: embedding width C, attention head width, FPN depth multiplier."""

    embed_dim: int
    dim_head: int
    fpn_depth: float


#: RVT-T/S/B (facts: 4.41M / 9.87M / 18.54M parameters with 2 classes) and our CPU preset.
PRESETS: dict[str, Preset] = {
    "nano": Preset(embed_dim=16, dim_head=16, fpn_depth=0.33),
    "tiny": Preset(embed_dim=32, dim_head=32, fpn_depth=0.33),
    "small": Preset(embed_dim=48, dim_head=24, fpn_depth=0.33),
    "base": Preset(embed_dim=64, dim_head=32, fpn_depth=0.67),
}

PresetName = Literal["nano", "tiny", "small", "base"]


@dataclass(frozen=True)
class ModelConfig:
    """The recurrent detector (RVT backbone + YOLOX PAFPN/head) and its loss/postprocess.

    params.yaml sets the preset and the knobs below it that a recipe changes; the
    ``optional`` fields are derived from the data (num_classes, in_channels) or RVT's fixed
    architecture and loss constants, which params.yaml may override but need not list.
    """

    preset: PresetName = "nano"
    num_classes: int = field(default=2, metadata=optional(ge=1, le=1023))
    #: input channels of the event representation: 2 polarities x nbins
    in_channels: int = field(default=20, metadata=optional(ge=1))
    #: RVT ``partition_split_32``: inputs are padded to a multiple of 32 * split and the
    #: attention window/grid is (padded size) / (32 * split) -- 1 for Gen1, 2 for 1Mpx
    partition_split: Literal[1, 2, 4] = 1
    #: overrides of the preset (None keeps the preset's value)
    embed_dim: int | None = field(default=None, metadata=optional(ge=1))
    dim_head: int | None = field(default=None, metadata=optional(ge=1))
    fpn_depth: float | None = field(default=None, metadata=optional(gt=0, le=4))
    #: MaxViT (window + grid) pairs per stage
    num_blocks: tuple[int, ...] = field(default=(1, 1, 1, 1), metadata=optional(ge=1))
    mlp_ratio: int = field(default=4, metadata=optional(ge=1))
    layer_scale_init: float = field(default=1e-5, metadata=optional(ge=0))
    #: depthwise 3x3 conv on the LSTM hidden state (RVT default off: a 1x1-conv LSTM)
    dws_conv: bool = field(default=False, metadata=optional())
    #: postprocess defaults (RVT: 0.1 during training, 0.001 for reported AP; LEOD
    #: pseudo labels 0.01); callers may pass their own per call
    confidence_threshold: float = field(default=0.1, metadata=rng(ge=0, le=1))
    nms_iou: float = field(default=0.45, metadata=rng(gt=0, le=1))
    #: YOLOX loss weights (IoU, objectness, class)
    reg_weight: float = field(default=5.0, metadata=optional(ge=0))
    obj_weight: float = field(default=1.0, metadata=optional(ge=0))
    cls_weight: float = field(default=1.0, metadata=optional(ge=0))

    def check(self, key: str) -> None:
        """Cross-field rules: 4 stages, and every stage width splits into whole heads."""
        prefix = f"{key}." if key else ""
        if len(self.num_blocks) != len(STAGE_STRIDES):
            raise ConfigError(
                f"params key '{prefix}num_blocks' must list {len(STAGE_STRIDES)} stages, "
                f"got {list(self.num_blocks)}"
            )
        for dim in self.stage_dims:
            if dim % self.head_dim_resolved:
                raise ConfigError(
                    f"params key '{prefix}dim_head' = {self.head_dim_resolved} must divide every "
                    f"stage width {list(self.stage_dims)} (embed_dim {self.embed_dim_resolved})"
                )

    @property
    def embed_dim_resolved(self) -> int:
        return self.embed_dim if self.embed_dim is not None else PRESETS[self.preset].embed_dim

    @property
    def head_dim_resolved(self) -> int:
        return self.dim_head if self.dim_head is not None else PRESETS[self.preset].dim_head

    @property
    def fpn_depth_resolved(self) -> float:
        return self.fpn_depth if self.fpn_depth is not None else PRESETS[self.preset].fpn_depth

    @property
    def stage_dims(self) -> tuple[int, ...]:
        """Widths C, 2C, 4C, 8C of the four backbone stages."""
        c = self.embed_dim_resolved
        return (c, 2 * c, 4 * c, 8 * c)

    @property
    def fpn_in_dims(self) -> tuple[int, ...]:
        return tuple(self.stage_dims[i] for i in FPN_STAGES)

    @property
    def fpn_strides(self) -> tuple[int, ...]:
        return tuple(STAGE_STRIDES[i] for i in FPN_STAGES)

    @property
    def bottlenecks_per_csp(self) -> int:
        """YOLOX ``round(3 * depth)``: 1 for depth 0.33, 2 for 0.67."""
        return max(1, round(3 * self.fpn_depth_resolved))

    @property
    def head_hidden(self) -> int:
        """RVT's ``int(256 * in[-1] / 1024)``, i.e. 2C."""
        return int(256 * self.fpn_in_dims[-1] / 1024)

    @property
    def pad_multiple(self) -> int:
        """Inputs are zero-padded (bottom/right) to a multiple of this."""
        return STAGE_STRIDES[-1] * self.partition_split
