"""The batched SimOTA assignment and the loss built on it equal the image-by-image originals.

``_reference_assign`` and ``_reference_loss`` are the per-image implementations the project
used before the assignment was batched (YOLOX's loop over images); they live here only as
the reference. Random batches cover many images with 0 to 14 boxes, ignored and padding
rows, duplicate boxes (contested anchors with equal costs), boxes near and outside the
frame, and 1, 2, 3 and 8 classes. Equality is exact: same positives, same boxes, bitwise
the same IoUs, loss terms and gradients.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from leod.model.box_ops import aligned_iou, pairwise_iou
from leod.model.head import AnchorPoints, RawPredictions, make_anchor_points
from leod.model.losses import yolox_loss
from leod.model.simota import (
    _LOG_FLOOR,
    CANDIDATE_TOPK,
    IOU_COST_WEIGHT,
    OUTSIDE_PENALTY,
    centre_prior,
    simota_assign,
)
from leod.model.targets import BoxTargets

# ---------------------------------------------------------------- the per-image reference


@torch.no_grad()
def _reference_assign(
    pred_boxes: Tensor, obj: Tensor, cls: Tensor, gt_boxes: Tensor, gt_labels: Tensor, anchors: AnchorPoints
) -> tuple[Tensor, Tensor, Tensor]:
    """One image: fg mask (A,), matched box index into ``gt_boxes`` and IoU per positive."""
    num_anchors = pred_boxes.shape[0]
    in_centre = centre_prior(gt_boxes, anchors)
    candidates = in_centre.any(dim=0).nonzero().squeeze(1)
    if gt_boxes.shape[0] == 0 or candidates.numel() == 0:
        return torch.zeros(num_anchors, dtype=torch.bool), torch.zeros(0, dtype=torch.int64), torch.zeros(0)
    ious = pairwise_iou(gt_boxes.float(), pred_boxes[candidates].float())
    joint = (cls[candidates].float().sigmoid() * obj[candidates, None].float().sigmoid()).sqrt()
    log_p = joint.log().clamp(min=_LOG_FLOOR)
    log_not_p = torch.log1p(-joint).clamp(min=_LOG_FLOOR)
    cls_cost = -log_not_p.sum(dim=1)[None, :] + (log_not_p[:, gt_labels] - log_p[:, gt_labels]).T
    cost = cls_cost - IOU_COST_WEIGHT * torch.log(ious + 1e-8) + OUTSIDE_PENALTY * (~in_centre[:, candidates])
    top_ious = ious.topk(min(CANDIDATE_TOPK, candidates.numel()), dim=1).values
    dynamic_k = top_ious.sum(dim=1).int().clamp(min=1)
    cheapest = cost.topk(int(dynamic_k.max()), dim=1, largest=False).indices
    within_k = torch.arange(cheapest.shape[1])[None, :] < dynamic_k[:, None]
    matching = torch.zeros_like(cost, dtype=torch.bool).scatter_(1, cheapest, within_k)
    contested = matching.sum(dim=0) > 1
    if contested.any():
        best = cost[:, contested].argmin(dim=0)
        matching[:, contested] = False
        matching[best, contested.nonzero().squeeze(1)] = True
    positive = matching.any(dim=0)
    matched_gt = matching[:, positive].int().argmax(dim=0)
    positive_idx = positive.nonzero().squeeze(1)
    fg_mask = torch.zeros(num_anchors, dtype=torch.bool)
    fg_mask[candidates[positive_idx]] = True
    return fg_mask, matched_gt, ious[matched_gt, positive_idx]


def _reference_loss(preds: RawPredictions, targets: BoxTargets) -> tuple[Tensor, Tensor, Tensor, int]:
    """The YOLOX loss (weights 5, 1, 1) with an image-by-image assignment: iou, obj, cls, num_fg."""
    num_classes = preds.cls_logits.shape[2]
    cls_logits, obj_logits = preds.cls_logits.float(), preds.obj_logits.float()
    fg_masks, obj_weights, reg_targets, cls_targets = [], [], [], []
    for b in range(len(targets)):
        supervised = targets.valid[b] & ~targets.ignore[b]
        gt_boxes, gt_labels = targets.boxes[b][supervised], targets.labels[b][supervised]
        fg, matched, iou = _reference_assign(
            preds.boxes[b], obj_logits[b], cls_logits[b], gt_boxes, gt_labels, preds.anchors
        )
        ignored_boxes = targets.boxes[b][targets.valid[b] & targets.ignore[b]]
        region = centre_prior(ignored_boxes, preds.anchors).any(dim=0)
        region &= ~centre_prior(gt_boxes, preds.anchors).any(dim=0)
        fg_masks.append(fg)
        obj_weights.append((~region).float())
        reg_targets.append(gt_boxes[matched])
        cls_targets.append(F.one_hot(gt_labels[matched], num_classes).float() * iou[:, None])
    fg = torch.stack(fg_masks)
    num_fg = int(fg.sum())
    norm = float(max(num_fg, 1))
    iou = aligned_iou(preds.boxes[fg], torch.cat(reg_targets))
    loss_iou = 5.0 * ((1.0 - iou.square()).sum() / norm)
    loss_obj = (
        F.binary_cross_entropy_with_logits(
            obj_logits, fg.float(), weight=torch.stack(obj_weights), reduction="sum"
        )
        / norm
    )
    loss_cls = (
        F.binary_cross_entropy_with_logits(cls_logits[fg], torch.cat(cls_targets), reduction="sum") / norm
    )
    return loss_iou, loss_obj, loss_cls, num_fg


# ---------------------------------------------------------------- random batches

HEIGHT, WIDTH = 96, 128
STRIDES = (8, 16, 32)


def _anchors() -> AnchorPoints:
    sizes = [(HEIGHT // s, WIDTH // s) for s in STRIDES]
    return make_anchor_points(sizes, STRIDES, torch.device("cpu"))


def _random_batch(seed: int, batch: int, num_classes: int) -> tuple[RawPredictions, BoxTargets]:
    gen = torch.Generator().manual_seed(seed)
    anchors = _anchors()
    n = anchors.strides.numel()
    centres = anchors.centres + torch.randn(batch, n, 2, generator=gen) * anchors.strides[:, None]
    sizes = anchors.strides[:, None] * torch.exp(torch.randn(batch, n, 2, generator=gen) * 0.7)
    preds = RawPredictions(
        boxes=torch.cat([centres, sizes], dim=2).requires_grad_(),
        obj_logits=(torch.randn(batch, n, generator=gen) * 2).requires_grad_(),
        cls_logits=(torch.randn(batch, n, num_classes, generator=gen) * 2).requires_grad_(),
        anchors=anchors,
    )
    boxes, labels, ignore = [], [], []
    for _ in range(batch):
        count = int(torch.randint(0, 15, (1,), generator=gen))
        xy = torch.rand(count, 2, generator=gen) * torch.tensor([WIDTH + 40.0, HEIGHT + 40.0]) - 20
        wh = 3 + torch.rand(count, 2, generator=gen) * 45
        box = torch.cat([xy, wh], dim=1)
        if count >= 2 and float(torch.rand(1, generator=gen)) < 0.3:
            box[1] = box[0]  # duplicate box: its anchors are contested with equal costs
        boxes.append(box)
        ign = torch.rand(count, generator=gen) < 0.2
        lab = torch.randint(0, num_classes, (count,), generator=gen)
        labels.append(torch.where(ign, 1024, lab))  # ignored boxes may carry any class id
        ignore.append(ign)
    targets = BoxTargets.from_list(boxes, labels, ignore)
    # padding rows hold garbage that must be ignored
    pad = ~targets.valid
    targets.boxes[pad] = torch.rand(int(pad.sum()), 4, generator=gen) * 50
    targets.labels[pad] = 7777
    return preds, targets


@pytest.mark.parametrize("num_classes", [1, 2, 3, 8])
def test_batched_assignment_equals_the_per_image_one(num_classes: int) -> None:
    images = positives = 0
    for seed in range(3):
        preds, targets = _random_batch(seed * 10 + num_classes, batch=32, num_classes=num_classes)
        assigned = targets.valid & ~targets.ignore
        obj, cls = preds.obj_logits.detach(), preds.cls_logits.detach()
        got = simota_assign(
            preds.boxes.detach(), obj, cls, targets.boxes, targets.labels, assigned, preds.anchors
        )
        image_of = got.fg_mask.nonzero()[:, 0]
        for b in range(len(targets)):
            rows = assigned[b].nonzero().squeeze(1)  # reference box i is padded row rows[i]
            fg, matched, iou = _reference_assign(
                preds.boxes[b].detach(),
                obj[b],
                cls[b],
                targets.boxes[b][rows],
                targets.labels[b][rows],
                preds.anchors,
            )
            mine = image_of == b
            assert torch.equal(got.fg_mask[b], fg), f"image {b}"
            assert torch.equal(got.matched_gt[mine], rows[matched]), f"image {b}"
            assert torch.equal(got.matched_iou[mine], iou), f"image {b}"
            images += 1
            positives += int(fg.sum())
    assert images == 3 * 32 and positives > 300  # the comparison covered real work


def test_batch_without_assigned_boxes_has_no_positives() -> None:
    preds, targets = _random_batch(0, batch=4, num_classes=2)
    none = torch.zeros_like(targets.valid)
    got = simota_assign(
        preds.boxes.detach(),
        preds.obj_logits,
        preds.cls_logits,
        targets.boxes,
        targets.labels,
        none,
        preds.anchors,
    )
    assert got.num_fg == 0 and got.fg_mask.shape == (4, preds.anchors.strides.numel())
    empty = BoxTargets.from_list([torch.zeros(0, 4)] * 4, [torch.zeros(0, dtype=torch.int64)] * 4)
    terms = yolox_loss(preds, empty)
    assert terms.num_fg == 0 and float(terms.iou.detach()) == 0.0 and float(terms.obj.detach()) > 0


@pytest.mark.parametrize("num_classes", [2, 3])
def test_loss_and_gradients_equal_the_per_image_loss(num_classes: int) -> None:
    for seed in range(2):
        preds, targets = _random_batch(100 + seed, batch=32, num_classes=num_classes)
        got = yolox_loss(preds, targets)
        ref_iou, ref_obj, ref_cls, ref_fg = _reference_loss(preds, targets)
        assert got.num_fg == ref_fg > 0
        for mine, ref in ((got.iou, ref_iou), (got.obj, ref_obj), (got.cls, ref_cls)):
            assert torch.equal(mine, ref)
        inputs = (preds.boxes, preds.obj_logits, preds.cls_logits)
        grads = torch.autograd.grad(got.total, inputs)
        ref_grads = torch.autograd.grad(ref_iou + ref_obj + ref_cls, inputs)
        for mine, ref in zip(grads, ref_grads, strict=True):
            assert torch.equal(mine, ref)
