"""The YOLOX detection loss of RVT, with LEOD's ignore-aware objectness.

Per batch: ``reg_weight * sum(1 - IoU^2)`` over positive anchors, BCE objectness over
every anchor that is not ignored, and BCE class scores of positive anchors against
``one_hot * IoU`` (IoU of the anchor's own prediction with its box, so the class score
also learns localisation quality). Each term is divided by the number of positives in
the batch (at least 1). There is no L1 term (RVT never enables it).

Ignored boxes (see :mod:`leod.model.targets`) are left out of SimOTA; anchors in the
centre region of an ignored box and of no valid box get no objectness loss, so an
uncertain pseudo label is neither taught as an object nor as background. Without ignored
boxes this is exactly RVT's loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from leod.model.box_ops import aligned_iou
from leod.model.head import RawPredictions
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


def ignore_region(valid_boxes: Tensor, ignored_boxes: Tensor, preds: RawPredictions) -> Tensor:
    """``(A,)`` bool: anchors in an ignored box's centre region and in no valid box's."""
    if ignored_boxes.shape[0] == 0:
        return torch.zeros(preds.anchors.strides.shape[0], dtype=torch.bool, device=preds.boxes.device)
    region = centre_prior(ignored_boxes, preds.anchors).any(dim=0)
    if valid_boxes.shape[0]:
        region &= ~centre_prior(valid_boxes, preds.anchors).any(dim=0)
    return region


def yolox_loss(
    preds: RawPredictions,
    targets: BoxTargets,
    reg_weight: float = 5.0,
    obj_weight: float = 1.0,
    cls_weight: float = 1.0,
) -> LossTerms:
    """The loss of ``B`` predicted frames against their ``B`` targets."""
    batch, _, num_classes = preds.cls_logits.shape
    if len(targets) != batch:
        raise ValueError(f"{len(targets)} target samples for {batch} predicted frames")
    targets.check(num_classes)
    targets = targets.to(preds.boxes.device)
    cls_logits = preds.cls_logits.float()
    obj_logits = preds.obj_logits.float()

    fg_masks, obj_weights, reg_targets, cls_targets = [], [], [], []
    for b in range(batch):
        supervised = targets.valid[b] & ~targets.ignore[b]
        gt_boxes = targets.boxes[b][supervised]
        gt_labels = targets.labels[b][supervised]
        assignment: Assignment = simota_assign(
            preds.boxes[b], obj_logits[b], cls_logits[b], gt_boxes, gt_labels, preds.anchors
        )
        ignored = ignore_region(gt_boxes, targets.boxes[b][targets.valid[b] & targets.ignore[b]], preds)
        fg_masks.append(assignment.fg_mask)
        obj_weights.append((~ignored).float())
        reg_targets.append(gt_boxes[assignment.matched_gt])
        cls_targets.append(
            F.one_hot(gt_labels[assignment.matched_gt], num_classes).float() * assignment.matched_iou[:, None]
        )

    fg = torch.stack(fg_masks)  # (B, A)
    num_fg = int(fg.sum())
    norm = float(max(num_fg, 1))
    iou = aligned_iou(preds.boxes[fg], torch.cat(reg_targets))
    loss_iou = (1.0 - iou.square()).sum() / norm
    loss_obj = (
        F.binary_cross_entropy_with_logits(
            obj_logits, fg.float(), weight=torch.stack(obj_weights), reduction="sum"
        )
        / norm
    )
    loss_cls = (
        F.binary_cross_entropy_with_logits(cls_logits[fg], torch.cat(cls_targets), reduction="sum") / norm
    )
    loss_iou, loss_obj, loss_cls = reg_weight * loss_iou, obj_weight * loss_obj, cls_weight * loss_cls
    return LossTerms(
        total=loss_iou + loss_obj + loss_cls, iou=loss_iou, obj=loss_obj, cls=loss_cls, num_fg=num_fg
    )
