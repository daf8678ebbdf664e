"""YOLOX convolution blocks used by the PAFPN neck and the detection head.

Conv (no bias) + BatchNorm + SiLU, the bottleneck and the CSP layer ("C3"), with YOLOX's
channel arithmetic kept exactly so the parameter counts match RVT's published sizes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ConvBNAct(nn.Sequential):
    """``k x k`` conv with 'same' padding, BatchNorm, SiLU (YOLOX ``BaseConv``)."""

    def __init__(self, dim_in: int, dim_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(dim_in, dim_out, kernel, stride=stride, padding=(kernel - 1) // 2, bias=False),
            nn.BatchNorm2d(dim_out),
            nn.SiLU(inplace=True),
        )


class Bottleneck(nn.Module):
    """1x1 then 3x3 conv, with a residual when ``shortcut`` and the widths agree."""

    def __init__(self, dim_in: int, dim_out: int, shortcut: bool) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(dim_in, dim_out, 1)
        self.conv2 = ConvBNAct(dim_out, dim_out, 3)
        self.residual = shortcut and dim_in == dim_out

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv2(self.conv1(x))
        return x + y if self.residual else y


class CSPLayer(nn.Module):
    """CSP bottleneck: two half-width 1x1 branches, ``n`` bottlenecks on one, then fuse."""

    def __init__(self, dim_in: int, dim_out: int, n: int, shortcut: bool) -> None:
        super().__init__()
        hidden = int(dim_out * 0.5)
        self.conv1 = ConvBNAct(dim_in, hidden, 1)
        self.conv2 = ConvBNAct(dim_in, hidden, 1)
        self.conv3 = ConvBNAct(2 * hidden, dim_out, 1)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut) for _ in range(n)))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(torch.cat([self.m(self.conv1(x)), self.conv2(x)], dim=1))
