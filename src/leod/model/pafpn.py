"""YOLOX PAFPN neck on the backbone's stride 8/16/32 features (RVT variant).

Unlike Megvii's YOLOX, RVT takes the widths straight from the backbone (no width
multiplier): a top-down pass (1x1 reduce, 2x upsample, concat, CSP) followed by a
bottom-up pass (3x3 stride-2 conv, concat, CSP). Outputs keep the input widths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leod.model.blocks import ConvBNAct, CSPLayer


def _upsample2x(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest-exact")


class PAFPN(nn.Module):
    """Path-aggregation FPN; ``in_dims`` are the widths at strides 8, 16, 32."""

    def __init__(self, in_dims: tuple[int, int, int], bottlenecks: int) -> None:
        super().__init__()
        c8, c16, c32 = in_dims
        self.lateral_conv0 = ConvBNAct(c32, c16, 1)
        self.c3_p4 = CSPLayer(2 * c16, c16, bottlenecks, shortcut=False)
        self.reduce_conv1 = ConvBNAct(c16, c8, 1)
        self.c3_p3 = CSPLayer(2 * c8, c8, bottlenecks, shortcut=False)
        self.bu_conv2 = ConvBNAct(c8, c8, 3, stride=2)
        self.c3_n3 = CSPLayer(2 * c8, c16, bottlenecks, shortcut=False)
        self.bu_conv1 = ConvBNAct(c16, c16, 3, stride=2)
        self.c3_n4 = CSPLayer(2 * c16, c32, bottlenecks, shortcut=False)

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        x8, x16, x32 = features
        lat32 = self.lateral_conv0(x32)
        top16 = self.c3_p4(torch.cat([_upsample2x(lat32), x16], dim=1))
        lat16 = self.reduce_conv1(top16)
        out8 = self.c3_p3(torch.cat([_upsample2x(lat16), x8], dim=1))
        out16 = self.c3_n3(torch.cat([self.bu_conv2(out8), lat16], dim=1))
        out32 = self.c3_n4(torch.cat([self.bu_conv1(out16), lat32], dim=1))
        return [out8, out16, out32]
