"""Class-aware (batched) non-maximum suppression.

torchvision's compiled ``batched_nms`` is used when ``torchvision.ops`` imports (GPU
installs); the CPU wheel of torchvision does not load with this project's torch, so a
pure-torch version with the same semantics is the fallback: suppress a box whose IoU with a
kept, higher-scoring box is strictly greater than the threshold, sorted by decreasing score.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

from leod.model.box_ops import iou_one_to_many_xyxy


@functools.cache
def _torchvision_batched_nms() -> Callable[[Tensor, Tensor, Tensor, float], Tensor] | None:
    """torchvision's kernel if it loads, else None (import errors vary: missing, ABI, ops)."""
    try:
        from torchvision.ops import batched_nms  # type: ignore[import-not-found]
    except Exception:
        return None
    return batched_nms


def _offset_by_class(boxes: Tensor, classes: Tensor) -> Tensor:
    # Shift every class by class * (coordinate span + 1), so boxes of different classes never
    # overlap and one greedy pass handles them all; the span covers unclipped negative values.
    if boxes.numel() == 0:
        return boxes
    span = boxes.max() - boxes.min() + 1
    return boxes + (classes.to(boxes.dtype) * span)[:, None]


def nms_torch(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS of corner boxes ``(K, 4)``; kept indices by decreasing score.

    Each round keeps the best remaining box and drops the remaining boxes that overlap it,
    so the Python loop runs once per *kept* box with one vectorised IoU row per round.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes = boxes[order]
    remaining = torch.arange(order.numel(), device=boxes.device)
    kept: list[Tensor] = []
    while remaining.numel():
        best = remaining[0]
        kept.append(best)
        rest = remaining[1:]
        remaining = rest[iou_one_to_many_xyxy(boxes[best], boxes[rest]) <= iou_threshold]
    if not kept:
        return order[:0]
    return order[torch.stack(kept)]


def batched_nms_torch(boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float) -> Tensor:
    """Pure-torch per-class NMS (torchvision's semantics, see module doc)."""
    return nms_torch(_offset_by_class(boxes, classes), scores, iou_threshold)


def batched_nms(boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float) -> Tensor:
    """Per-class NMS: torchvision's kernel when available, else :func:`batched_nms_torch`."""
    kernel = _torchvision_batched_nms()
    if kernel is not None:
        return kernel(boxes, scores, classes, iou_threshold)
    return batched_nms_torch(boxes, scores, classes, iou_threshold)
