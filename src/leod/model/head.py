"""The decoupled YOLOX head and the decoded prediction record shared by loss and postprocess.

Per FPN level: a 1x1 stem to the hidden width, two 3x3 convs for classification and two
for regression, then 1x1 predictors for the class logits, the 4 box offsets and the
objectness logit (objectness reads the regression branch). Boxes decode as in YOLOX:
centre ``(offset + cell) * stride``, size ``exp(log_size) * stride``. Decoding happens in
float32 even under autocast, since ``exp`` of a half-precision logit overflows easily.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn

from leod.model.blocks import ConvBNAct

#: Focal-loss prior: class and objectness start at p = 0.01, so the many background
#: anchors do not dominate the first updates.
PRIOR_PROB = 0.01


@dataclass(frozen=True)
class AnchorPoints:
    """One point per output cell of every level: its cell index and the level's stride."""

    grid: Tensor  # (A, 2) float32 cell column/row
    strides: Tensor  # (A,) float32

    @property
    def centres(self) -> Tensor:
        """``(A, 2)`` cell centres in input pixels (what the SimOTA centre prior tests)."""
        return (self.grid + 0.5) * self.strides[:, None]


@dataclass(frozen=True)
class RawPredictions:
    """Head output for a batch: decoded boxes and raw logits, anchors flattened over levels."""

    boxes: Tensor  # (B, A, 4) float32 cx, cy, w, h in input pixels
    obj_logits: Tensor  # (B, A)
    cls_logits: Tensor  # (B, A, num_classes)
    anchors: AnchorPoints

    def __len__(self) -> int:
        return self.boxes.shape[0]


def make_anchor_points(
    sizes: list[tuple[int, int]], strides: tuple[int, ...], device: torch.device
) -> AnchorPoints:
    """Anchor points for levels of ``(h, w)`` cells, in the head's row-major flattening order."""
    grids, level_strides = [], []
    for (h, w), stride in zip(sizes, strides, strict=True):
        ys, xs = torch.meshgrid(
            torch.arange(h, device=device, dtype=torch.float32),
            torch.arange(w, device=device, dtype=torch.float32),
            indexing="ij",
        )
        grids.append(torch.stack([xs, ys], dim=-1).reshape(-1, 2))
        level_strides.append(torch.full((h * w,), float(stride), device=device))
    return AnchorPoints(grid=torch.cat(grids), strides=torch.cat(level_strides))


class YOLOXHead(nn.Module):
    """Decoupled YOLOX head over the three FPN levels."""

    def __init__(
        self, num_classes: int, in_dims: tuple[int, ...], strides: tuple[int, ...], hidden: int
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.strides = strides
        self.stems = nn.ModuleList(ConvBNAct(dim, hidden, 1) for dim in in_dims)
        self.cls_convs = nn.ModuleList(self._tower(hidden) for _ in in_dims)
        self.reg_convs = nn.ModuleList(self._tower(hidden) for _ in in_dims)
        self.cls_preds = nn.ModuleList(nn.Conv2d(hidden, num_classes, 1) for _ in in_dims)
        self.reg_preds = nn.ModuleList(nn.Conv2d(hidden, 4, 1) for _ in in_dims)
        self.obj_preds = nn.ModuleList(nn.Conv2d(hidden, 1, 1) for _ in in_dims)
        prior_bias = -math.log((1 - PRIOR_PROB) / PRIOR_PROB)
        for conv in (*self.cls_preds, *self.obj_preds):
            nn.init.constant_(conv.bias, prior_bias)

    @staticmethod
    def _tower(hidden: int) -> nn.Sequential:
        return nn.Sequential(ConvBNAct(hidden, hidden, 3), ConvBNAct(hidden, hidden, 3))

    def raw(self, features: list[Tensor]) -> Tensor:
        """Undecoded outputs ``(B, A, 4 + 1 + num_classes)``: box offsets and log sizes, objectness
        logit, class logits (RVT's channel order), anchors level by level, row-major."""
        per_level = []
        for i, x in enumerate(features):
            x = self.stems[i](x)
            reg_feat = self.reg_convs[i](x)
            out = torch.cat(
                [
                    self.reg_preds[i](reg_feat),
                    self.obj_preds[i](reg_feat),
                    self.cls_preds[i](self.cls_convs[i](x)),
                ],
                dim=1,
            )
            per_level.append(rearrange(out, "b c h w -> b (h w) c"))
        return torch.cat(per_level, dim=1).float()

    def forward(self, features: list[Tensor]) -> RawPredictions:
        raw = self.raw(features)
        anchors = make_anchor_points([f.shape[-2:] for f in features], self.strides, raw.device)
        stride = anchors.strides[:, None]
        boxes = torch.cat([(raw[..., :2] + anchors.grid) * stride, torch.exp(raw[..., 2:4]) * stride], dim=-1)
        return RawPredictions(boxes=boxes, obj_logits=raw[..., 4], cls_logits=raw[..., 5:], anchors=anchors)
