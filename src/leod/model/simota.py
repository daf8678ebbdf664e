"""SimOTA label assignment (YOLOX, as used by RVT and LEOD), for a whole batch at once.

Boxes come padded, ``(B, N)`` with a mask of the ones that take part (see
:mod:`leod.model.targets`), and every step is one tensor operation over ``(B, N, A)``
(non-candidates and masked boxes cost ``+inf``; memory a few MB for the default config).
Per box and anchor the arithmetic is that of YOLOX's image-by-image loop;
tests/test_simota.py checks that the assignments are exactly those of such a loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from leod.model.box_ops import pairwise_iou
from leod.model.head import AnchorPoints

CENTRE_RADIUS = 1.5
IOU_COST_WEIGHT = 3.0
CANDIDATE_TOPK = 10
#: cost added outside a box's centre region (YOLOX's 1e6): such pairs are a last resort
OUTSIDE_PENALTY = 1e6
#: BCE clamps log at -100, as torch.nn.functional.binary_cross_entropy does
_LOG_FLOOR = -100.0


@dataclass(frozen=True)
class Assignment:
    """Positive anchors of a batch and the box each one learns.

    ``matched_gt`` and ``matched_iou`` list the positives in ``fg_mask.nonzero()`` order
    (image by image, anchors ascending).
    """

    fg_mask: Tensor  # (B, A) bool
    matched_gt: Tensor  # (num_fg,) int64 row of the box among its image's N padded rows
    matched_iou: Tensor  # (num_fg,) float32 IoU of the anchor's prediction with that box

    @property
    def num_fg(self) -> int:
        return int(self.matched_gt.numel())


def centre_prior(gt_boxes: Tensor, anchors: AnchorPoints) -> Tensor:
    """``(..., N, A)`` bool: anchor centre strictly inside the box's ``1.5 * stride`` square.

    ``gt_boxes`` is ``(..., N, 4)`` centre boxes.
    """
    radius = CENTRE_RADIUS * anchors.strides
    delta = (anchors.centres - gt_boxes[..., None, :2]).abs()  # (..., N, A, 2)
    return (delta[..., 0] < radius) & (delta[..., 1] < radius)


@torch.no_grad()
def simota_assign(
    pred_boxes: Tensor,
    obj_logits: Tensor,
    cls_logits: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    gt_mask: Tensor,
    anchors: AnchorPoints,
) -> Assignment:
    """Assign anchors of ``B`` images.

    Candidates of an image are anchors whose cell centre lies strictly within ``1.5 * stride``
    of some box centre. A candidate's cost for a box is the BCE of ``sqrt(sigmoid(cls) *
    sigmoid(obj))`` against the box's one-hot class, plus ``3 * -log(IoU)``, plus a huge
    penalty outside that box's own centre region. Each box takes its ``k`` cheapest
    candidates, ``k = max(1, int(sum of its top-10 IoUs))``; an anchor claimed by several
    boxes keeps the cheapest one.

    ``pred_boxes (B, A, 4)``, ``obj_logits (B, A)``, ``cls_logits (B, A, C)``; boxes
    ``(B, N, 4)`` with labels ``(B, N)`` and ``gt_mask (B, N)``, True for the boxes that
    are assigned (padding and ignored rows are False; their labels are not read).
    """
    batch, num_anchors = obj_logits.shape
    device = pred_boxes.device
    in_centre = centre_prior(gt_boxes, anchors) & gt_mask[..., None]  # (B, N, A)
    candidate = in_centre.any(dim=1)  # (B, A)
    if gt_boxes.shape[1] == 0 or not bool(candidate.any()):
        return Assignment(
            fg_mask=torch.zeros(batch, num_anchors, dtype=torch.bool, device=device),
            matched_gt=torch.zeros(0, dtype=torch.int64, device=device),
            matched_iou=torch.zeros(0, device=device),
        )
    pair = candidate[:, None, :] & gt_mask[..., None]  # (B, N, A): box and candidate of one image

    ious = pairwise_iou(gt_boxes.float(), pred_boxes.float())  # (B, N, A)
    joint = (cls_logits.float().sigmoid() * obj_logits[..., None].float().sigmoid()).sqrt()  # (B, A, C)
    log_p = joint.log().clamp(min=_LOG_FLOOR)
    log_not_p = torch.log1p(-joint).clamp(min=_LOG_FLOOR)
    # BCE against a one-hot target: every class contributes -log(1-p), the target class
    # swaps its term for -log(p).
    labels = torch.where(gt_mask, gt_labels, 0)[:, None, :].expand(-1, num_anchors, -1)  # (B, A, N)
    own = (log_not_p.gather(2, labels) - log_p.gather(2, labels)).transpose(1, 2)  # (B, N, A)
    cls_cost = -log_not_p.sum(dim=2)[:, None, :] + own
    cost = cls_cost - IOU_COST_WEIGHT * torch.log(ious + 1e-8) + OUTSIDE_PENALTY * (~in_centre)
    cost = cost.masked_fill(~pair, torch.inf)

    top_ious = ious.masked_fill(~pair, 0.0).topk(min(CANDIDATE_TOPK, num_anchors), dim=2).values
    dynamic_k = top_ious.sum(dim=2).int().clamp(min=1)  # (B, N), at most the image's candidates
    dynamic_k = torch.where(gt_mask, dynamic_k, 0)
    cheapest = cost.topk(int(dynamic_k.max()), dim=2, largest=False).indices  # (B, N, k_max)
    within_k = torch.arange(cheapest.shape[2], device=device) < dynamic_k[..., None]
    matching = torch.zeros_like(pair).scatter_(2, cheapest, within_k)

    # an anchor claimed by several boxes keeps the cheapest (the first one on a tie)
    contested = matching.sum(dim=1) > 1  # (B, A)
    if bool(contested.any()):
        cheapest_box = torch.zeros_like(matching).scatter_(1, cost.argmin(dim=1, keepdim=True), True)
        matching = torch.where(contested[:, None, :], cheapest_box, matching)

    fg_mask = matching.any(dim=1)  # (B, A)
    matched_gt = matching.to(torch.uint8).argmax(dim=1)  # (B, A): the one claiming box
    matched_iou = ious.gather(1, matched_gt[:, None, :]).squeeze(1)
    return Assignment(fg_mask=fg_mask, matched_gt=matched_gt[fg_mask], matched_iou=matched_iou[fg_mask])
