"""The YOLOX detection loss of RVT, with LEOD's ignore-aware objectness.

Ignored boxes (see :mod:`leod.model.targets`) are left out of SimOTA, and anchors in the
centre region of an ignored box and of no valid box get no objectness loss, so an uncertain
pseudo label is taught neither as an object nor as background. Without ignored boxes this
is exactly RVT's loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from leod.model.box_ops import aligned_iou
from leod.model.head import AnchorPoints, RawPredictions
from leod.model.simota import Assignment, centre_prior, simota_assign
from leod.model.targets import BoxTargets


@dataclass(frozen=True)
class LossTerms:
    """Weighted loss terms (``total`` is what to backpropagate) and the positive count."""

    total: Tensor
    iou: Tensor
    obj: Tensor
    cls: Tensor
    num_fg: int

    def as_floats(self) -> dict[str, float]:
        """Plain numbers for logging."""
        return {
            "loss": float(self.total.detach()),
            "iou_loss": float(self.iou.detach()),
            "obj_loss": float(self.obj.detach()),
            "cls_loss": float(self.cls.detach()),
            "num_fg": float(self.num_fg),
        }


def ignore_region(boxes: Tensor, assigned: Tensor, ignored: Tensor, anchors: AnchorPoints) -> Tensor:
    """``(B, A)`` bool: anchors in an ignored box's centre region and in no assigned box's.

    ``boxes (B, N, 4)``; ``assigned`` and ``ignored`` are ``(B, N)`` masks of its rows.
    """
    prior = centre_prior(boxes, anchors)  # (B, N, A)
    return (prior & ignored[..., None]).any(dim=1) & ~(prior & assigned[..., None]).any(dim=1)


def yolox_loss(
    preds: RawPredictions,
    targets: BoxTargets,
    reg_weight: float = 5.0,
    obj_weight: float = 1.0,
    cls_weight: float = 1.0,
) -> LossTerms:
    """The loss of ``B`` predicted frames against their ``B`` targets.

    ``reg_weight * sum(1 - IoU^2)`` over positive anchors, BCE objectness over every anchor not
    ignored, and BCE class scores of positives against ``one_hot * IoU`` (the IoU of the
    anchor's own prediction, so the class score also learns localisation quality); each term
    divided by the number of positives (at least 1). No L1 term (RVT never enables it).
    """
    batch, _, num_classes = preds.cls_logits.shape
    if len(targets) != batch:
        raise ValueError(f"{len(targets)} target samples for {batch} predicted frames")
    targets.check(num_classes)
    targets = targets.to(preds.boxes.device)
    cls_logits = preds.cls_logits.float()
    obj_logits = preds.obj_logits.float()

    assigned = targets.valid & ~targets.ignore
    ignored = targets.valid & targets.ignore
    assignment: Assignment = simota_assign(
        preds.boxes, obj_logits, cls_logits, targets.boxes, targets.labels, assigned, preds.anchors
    )
    fg = assignment.fg_mask  # (B, A)
    image = fg.nonzero()[:, 0]
    gt_rows = assignment.matched_gt
    num_fg = assignment.num_fg
    norm = float(max(num_fg, 1))
    iou = aligned_iou(preds.boxes[fg], targets.boxes[image, gt_rows])
    loss_iou = (1.0 - iou.square()).sum() / norm
    obj_weight_map = (~ignore_region(targets.boxes, assigned, ignored, preds.anchors)).float()
    loss_obj = (
        F.binary_cross_entropy_with_logits(obj_logits, fg.float(), weight=obj_weight_map, reduction="sum")
        / norm
    )
    cls_targets = (
        F.one_hot(targets.labels[image, gt_rows], num_classes).float() * assignment.matched_iou[:, None]
    )
    loss_cls = F.binary_cross_entropy_with_logits(cls_logits[fg], cls_targets, reduction="sum") / norm
    loss_iou, loss_obj, loss_cls = reg_weight * loss_iou, obj_weight * loss_obj, cls_weight * loss_cls
    return LossTerms(
        total=loss_iou + loss_obj + loss_cls, iou=loss_iou, obj=loss_obj, cls=loss_cls, num_fg=num_fg
    )
