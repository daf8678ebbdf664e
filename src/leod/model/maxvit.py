"""MaxViT attention blocks of the RVT backbone, on token sequences.

A block is pre-norm self-attention + pre-norm MLP, each with a LayerScale residual; the
window variant attends inside ``P0 x P1`` tiles (local), the grid variant inside ``P0 x P1``
sets of tokens spread over the frame (sparse global); RVT applies one of each per stage.
No relative position bias, so the partition size (from the padded input) is a call argument.
Tokens stay ``(B, H*W, C)`` in the order the next attention needs (:func:`reorder`).
"""

from __future__ import annotations

import functools
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

TokenOrder = Literal["spatial", "window", "grid"]

# How the rows/cols of an (H, W) map factor into (partition count, partition size). Window:
# a partition is a tile of adjacent tokens (in-tile index fast). Grid: the partition index
# is fast, so a partition's tokens are H/P0 rows and W/P1 columns apart.
_FACTORS: dict[str, str] = {
    "window": "(nh ph) (nw pw)",
    "grid": "(ph nh) (pw nw)",
}


@functools.lru_cache(maxsize=128)
def _spatial_index(
    height: int, width: int, partition: tuple[int, int], order: TokenOrder, device: torch.device
) -> Tensor:
    """Row-major spatial index of the token at each position of ``order``."""
    idx = torch.arange(height * width, device=device).view(height, width)
    if order == "spatial":
        return idx.flatten()
    ph, pw = partition
    return rearrange(idx, f"{_FACTORS[order]} -> (nh nw ph pw)", ph=ph, pw=pw).contiguous()


@functools.lru_cache(maxsize=128)
def _reorder_index(
    height: int,
    width: int,
    partition: tuple[int, int],
    src: TokenOrder,
    dst: TokenOrder,
    device: torch.device,
) -> Tensor:
    """Position in ``src`` order of the token at each position of ``dst`` order."""
    # cached across calls: built under inference mode it could never enter a later backward
    with torch.inference_mode(False):
        src_idx = _spatial_index(height, width, partition, src, device)
        position_in_src = torch.empty_like(src_idx)
        position_in_src[src_idx] = torch.arange(src_idx.numel(), device=device)
        return position_in_src[_spatial_index(height, width, partition, dst, device)]


def check_partition(height: int, width: int, partition: tuple[int, int]) -> None:
    if height % partition[0] or width % partition[1]:
        raise ValueError(
            f"feature map {height}x{width} is not divisible by partition {partition[0]}x{partition[1]}"
        )


def reorder(
    tokens: Tensor, hw: tuple[int, int], partition: tuple[int, int], src: TokenOrder, dst: TokenOrder
) -> Tensor:
    """Permute ``(B, H*W, C)`` tokens from ``src`` to ``dst`` order (one gather, or a no-op).

    Everything but attention is per token, so a stage moves between spatial (row-major),
    window and grid order only here; in window/grid order each partition's tokens are
    contiguous, so attention reads q/k/v as strided views of one fused projection and no
    partition or reverse-partition copies are made.
    """
    if src == dst:
        return tokens
    check_partition(hw[0], hw[1], partition)
    return tokens.index_select(1, _reorder_index(hw[0], hw[1], partition, src, dst, tokens.device))


class LayerScale(nn.Module):
    """Per-channel learnable residual scale, initialised small so blocks start near identity."""

    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma

    def residual(self, skip: Tensor, x: Tensor) -> Tensor:
        """``skip + self(x)`` in one pass."""
        return torch.addcmul(skip, x, self.gamma)


class PartitionAttention(nn.Module):
    """Self-attention within each partition plus MLP, on ``(partitions, tokens, C)``."""

    def __init__(
        self, dim: int, dim_head: int, mlp_ratio: int, layer_scale_init: float, skip_first_norm: bool = False
    ) -> None:
        super().__init__()
        self.heads = dim // dim_head
        # A stage's downsampling already ends in a LayerNorm, so RVT skips this one there.
        self.norm1: nn.Module = nn.Identity() if skip_first_norm else nn.LayerNorm(dim, eps=1e-5)
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)
        self.ls1 = LayerScale(dim, layer_scale_init)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))
        self.ls2 = LayerScale(dim, layer_scale_init)

    def _attend(self, x: Tensor) -> Tensor:
        groups, length, dim = x.shape
        q, k, v = self.qkv(x).view(groups, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # (groups, heads, length, dim_head)
        return self.proj(out.transpose(1, 2).reshape(groups, length, dim))

    def forward(self, x: Tensor) -> Tensor:
        x = self.ls1.residual(x, self._attend(self.norm1(x)))
        return self.ls2.residual(x, self.mlp(self.norm2(x)))


class MaxViTBlock(nn.Module):
    """Window attention (local) followed by grid attention (global), as in RVT."""

    def __init__(
        self, dim: int, dim_head: int, mlp_ratio: int, layer_scale_init: float, skip_first_norm: bool
    ) -> None:
        super().__init__()
        self.window = PartitionAttention(dim, dim_head, mlp_ratio, layer_scale_init, skip_first_norm)
        self.grid = PartitionAttention(dim, dim_head, mlp_ratio, layer_scale_init)

    def forward(
        self, tokens: Tensor, order: TokenOrder, hw: tuple[int, int], partition: tuple[int, int]
    ) -> tuple[Tensor, TokenOrder]:
        """``tokens (B, H*W, C)`` in ``order`` -> the block output, in grid order."""
        batch, n, dim = tokens.shape
        groups = n // (partition[0] * partition[1])
        steps: tuple[tuple[PartitionAttention, TokenOrder], ...] = (
            (self.window, "window"),
            (self.grid, "grid"),
        )
        for attention, kind in steps:
            tokens = reorder(tokens, hw, partition, order, kind)
            tokens = attention(tokens.view(batch * groups, -1, dim)).view(batch, n, dim)
            order = kind
        return tokens, order
