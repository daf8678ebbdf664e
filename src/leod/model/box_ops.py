"""Box geometry shared by the assignment, the losses and NMS.

Boxes are ``(cx, cy, w, h)`` in input pixels unless a name says ``xyxy``; YOLOX computes
every IoU of the training path on centre boxes, so keeping that form avoids conversions.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: keeps IoU finite for degenerate (zero-area) boxes
_EPS = 1e-16


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` centre/size boxes to corner boxes."""
    centre, size = boxes[..., :2], boxes[..., 2:4]
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)


def _iou_xyxy(a: Tensor, b: Tensor) -> Tensor:
    """IoU of broadcastable corner boxes ``a`` and ``b`` (last dim 4)."""
    top_left = torch.maximum(a[..., :2], b[..., :2])
    bottom_right = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    area_a = (a[..., 2:] - a[..., :2]).prod(dim=-1)
    area_b = (b[..., 2:] - b[..., :2]).prod(dim=-1)
    return inter / (area_a + area_b - inter + _EPS)


def pairwise_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU matrices ``(..., N, M)`` between centre boxes ``a (..., N, 4)`` and ``b (..., M, 4)``."""
    return _iou_xyxy(cxcywh_to_xyxy(a)[..., :, None, :], cxcywh_to_xyxy(b)[..., None, :, :])


def aligned_iou(a: Tensor, b: Tensor) -> Tensor:
    """Element-wise IoU ``(N,)`` of centre boxes ``a (N, 4)`` and ``b (N, 4)``."""
    return _iou_xyxy(cxcywh_to_xyxy(a), cxcywh_to_xyxy(b))


def iou_one_to_many_xyxy(box: Tensor, boxes: Tensor) -> Tensor:
    """IoU ``(M,)`` of one corner box ``(4,)`` with corner boxes ``(M, 4)``."""
    return _iou_xyxy(box[None, :], boxes)
