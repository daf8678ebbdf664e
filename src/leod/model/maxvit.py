"""MaxViT attention blocks of the RVT backbone, channels-last ``(B, H, W, C)``.

Each block is pre-norm attention + pre-norm MLP with LayerScale residuals. The window
variant attends inside non-overlapping ``P0 x P1`` tiles (local), the grid variant inside
``P0 x P1`` sets of tokens spaced ``H/P0`` and ``W/P1`` apart (sparse global); RVT applies
one of each per stage. The partition size is passed at call time because RVT derives it
from the padded input size, and nothing here has parameters that depend on it (no
relative position bias).

The qkv projection is per token, so it runs before the partition: one einops rearrange
moves the fused qkv tensor straight into ``(3, windows, heads, tokens, dim_head)`` and one
moves the attention output back, which saves the separate partition/reverse copies.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

PartitionKind = Literal["window", "grid"]

# Token axis split (rows, cols) into (count, size) factors. Window: a tile is a block of
# adjacent tokens, so the within-tile index is the fast one. Grid: the tile index is fast.
_LAYOUTS: dict[str, str] = {
    "window": "b (nh ph) (nw pw)",
    "grid": "b (ph nh) (pw nw)",
}


class LayerScale(nn.Module):
    """Per-channel learnable residual scale, initialised small so blocks start near identity."""

    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class PartitionAttention(nn.Module):
    """One window- or grid-partitioned self-attention block with its MLP."""

    def __init__(
        self,
        dim: int,
        dim_head: int,
        kind: PartitionKind,
        mlp_ratio: int,
        layer_scale_init: float,
        skip_first_norm: bool = False,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.heads = dim // dim_head
        # The stage's downsampling already ends in a LayerNorm, so RVT skips this one there.
        self.norm1: nn.Module = nn.Identity() if skip_first_norm else nn.LayerNorm(dim, eps=1e-5)
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)
        self.ls1 = LayerScale(dim, layer_scale_init)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim)
        )
        self.ls2 = LayerScale(dim, layer_scale_init)

    def _attend(self, x: Tensor, partition: tuple[int, int]) -> Tensor:
        height, width = x.shape[1:3]
        ph, pw = partition
        if height % ph or width % pw:
            raise ValueError(f"feature map {height}x{width} is not divisible by partition {ph}x{pw}")
        dims = {"ph": ph, "pw": pw, "nh": height // ph, "nw": width // pw}
        layout = _LAYOUTS[self.kind]
        q, k, v = rearrange(
            self.qkv(x),
            f"{layout} (three heads d) -> three (b nh nw) heads (ph pw) d",
            three=3,
            heads=self.heads,
            **dims,
        )
        out = F.scaled_dot_product_attention(q, k, v)
        out = rearrange(out, f"(b nh nw) heads (ph pw) d -> {layout} (heads d)", **dims)
        return self.proj(out)

    def forward(self, x: Tensor, partition: tuple[int, int]) -> Tensor:
        x = x + self.ls1(self._attend(self.norm1(x), partition))
        return x + self.ls2(self.mlp(self.norm2(x)))


class MaxViTBlock(nn.Module):
    """Window attention (local) followed by grid attention (global), as in RVT."""

    def __init__(
        self, dim: int, dim_head: int, mlp_ratio: int, layer_scale_init: float, skip_first_norm: bool
    ) -> None:
        super().__init__()
        self.window = PartitionAttention(
            dim, dim_head, "window", mlp_ratio, layer_scale_init, skip_first_norm=skip_first_norm
        )
        self.grid = PartitionAttention(dim, dim_head, "grid", mlp_ratio, layer_scale_init)

    def forward(self, x: Tensor, partition: tuple[int, int]) -> Tensor:
        return self.grid(self.window(x, partition), partition)
