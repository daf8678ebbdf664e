"""SimOTA label assignment (YOLOX, as used by RVT and LEOD) for one image.

Candidates are anchors whose cell centre lies strictly within ``1.5 * stride`` of some
box centre. For each box the cost of every candidate is the BCE of the joint score
``sqrt(sigmoid(cls) * sigmoid(obj))`` against the box's one-hot class, plus
``3 * -log(IoU)``, plus a huge penalty outside that box's own centre region. Each box
takes its ``k`` cheapest candidates, ``k = max(1, int(sum of its top-10 IoUs))``; an
anchor claimed by several boxes keeps the cheapest one. The whole step is vectorised
over boxes (the per-box top-k becomes one top-k with a rank mask).
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
    """Positive anchors of one image and the box each one learns."""

    fg_mask: Tensor  # (A,) bool
    matched_gt: Tensor  # (num_fg,) int64 index into the boxes given to simota_assign
    matched_iou: Tensor  # (num_fg,) float32 IoU of the anchor's prediction with that box

    @property
    def num_fg(self) -> int:
        return int(self.matched_gt.numel())


def centre_prior(gt_boxes: Tensor, anchors: AnchorPoints) -> Tensor:
    """``(G, A)`` bool: anchor centre strictly inside the box's ``1.5 * stride`` centre square."""
    radius = CENTRE_RADIUS * anchors.strides[None, :]
    delta = (anchors.centres[None, :, :] - gt_boxes[:, None, :2]).abs()
    return (delta[..., 0] < radius) & (delta[..., 1] < radius)


def _empty(num_anchors: int, device: torch.device) -> Assignment:
    return Assignment(
        fg_mask=torch.zeros(num_anchors, dtype=torch.bool, device=device),
        matched_gt=torch.zeros(0, dtype=torch.int64, device=device),
        matched_iou=torch.zeros(0, device=device),
    )


@torch.no_grad()
def simota_assign(
    pred_boxes: Tensor,
    obj_logits: Tensor,
    cls_logits: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    anchors: AnchorPoints,
) -> Assignment:
    """Assign anchors of one image: ``pred_boxes (A, 4)``, logits ``(A,)``/``(A, C)``, boxes ``(G, 4)``."""
    num_anchors = pred_boxes.shape[0]
    in_centre = centre_prior(gt_boxes, anchors)  # (G, A)
    candidates = in_centre.any(dim=0).nonzero().squeeze(1)
    if gt_boxes.shape[0] == 0 or candidates.numel() == 0:
        return _empty(num_anchors, pred_boxes.device)

    ious = pairwise_iou(gt_boxes.float(), pred_boxes[candidates].float())  # (G, P)
    joint = (cls_logits[candidates].float().sigmoid() * obj_logits[candidates, None].float().sigmoid()).sqrt()
    log_p = joint.log().clamp(min=_LOG_FLOOR)
    log_not_p = torch.log1p(-joint).clamp(min=_LOG_FLOOR)
    # BCE against a one-hot target: every class contributes -log(1-p), the target class
    # swaps its term for -log(p).
    cls_cost = -log_not_p.sum(dim=1)[None, :] + (log_not_p[:, gt_labels] - log_p[:, gt_labels]).T
    cost = cls_cost - IOU_COST_WEIGHT * torch.log(ious + 1e-8) + OUTSIDE_PENALTY * (~in_centre[:, candidates])

    top_ious = ious.topk(min(CANDIDATE_TOPK, candidates.numel()), dim=1).values
    dynamic_k = top_ious.sum(dim=1).int().clamp(min=1)  # (G,) at most P
    cheapest = cost.topk(int(dynamic_k.max()), dim=1, largest=False).indices  # (G, k_max)
    within_k = torch.arange(cheapest.shape[1], device=cost.device)[None, :] < dynamic_k[:, None]
    matching = torch.zeros_like(cost, dtype=torch.bool).scatter_(1, cheapest, within_k)

    contested = matching.sum(dim=0) > 1
    if contested.any():
        best = cost[:, contested].argmin(dim=0)
        matching[:, contested] = False
        matching[best, contested.nonzero().squeeze(1)] = True

    positive = matching.any(dim=0)  # (P,)
    matched_gt = matching[:, positive].int().argmax(dim=0)
    positive_idx = positive.nonzero().squeeze(1)
    fg_mask = torch.zeros(num_anchors, dtype=torch.bool, device=pred_boxes.device)
    fg_mask[candidates[positive_idx]] = True
    return Assignment(fg_mask=fg_mask, matched_gt=matched_gt, matched_iou=ious[matched_gt, positive_idx])
