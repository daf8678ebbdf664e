"""Tests of the recurrent detector: sizes, shapes, attention partitions, recurrence, SimOTA,
ignore-aware loss, NMS, postprocess and a short overfit run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from leod.model.backbone import pad_to_multiple
from leod.model.box_ops import cxcywh_to_xyxy, pairwise_iou
from leod.model.config import ModelConfig
from leod.model.detector import RecurrentDetector
from leod.model.head import AnchorPoints, RawPredictions, make_anchor_points
from leod.model.losses import yolox_loss
from leod.model.maxvit import PartitionAttention, reorder
from leod.model.nms import batched_nms, batched_nms_torch
from leod.model.postprocess import postprocess
from leod.model.simota import Assignment, simota_assign
from leod.model.targets import BoxTargets
from leod.plumbing.errors import ConfigError, DataFormatError
from leod.schema import from_dict, to_dict


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


@pytest.fixture(scope="module")
def nano() -> RecurrentDetector:
    torch.manual_seed(0)
    return RecurrentDetector(ModelConfig(preset="nano", num_classes=2)).eval()


# ---------------------------------------------------------------- config and sizes


def test_parameter_counts_match_rvt() -> None:
    # RVT's published sizes (2 classes); tiny matches the original code to the parameter.
    expected = {"tiny": 4.41e6, "small": 9.87e6, "base": 18.54e6}
    counts = {name: _count(RecurrentDetector(ModelConfig(preset=name))) for name in expected}
    for name, target in expected.items():
        assert abs(counts[name] - target) / target < 0.02, (name, counts[name])
    assert counts["tiny"] == 4_405_141
    assert 0.5e6 < _count(RecurrentDetector(ModelConfig(preset="nano"))) < 1.2e6


def _model(over: dict) -> dict:
    """A complete ``model`` section (params.yaml must give every key) with ``over`` applied."""
    return {**to_dict(ModelConfig()), **over}


def test_config_validation() -> None:
    cfg = from_dict(ModelConfig, _model({"preset": "small", "num_classes": 3, "partition_split": 2}), "model")
    assert cfg.stage_dims == (48, 96, 192, 384) and cfg.head_hidden == 96 and cfg.pad_multiple == 64
    assert from_dict(ModelConfig, _model({"preset": "base"})).bottlenecks_per_csp == 2
    assert from_dict(ModelConfig, _model({"preset": "tiny", "embed_dim": 64})).stage_dims[-1] == 512
    with pytest.raises(ConfigError, match="model.dim_head"):
        from_dict(ModelConfig, _model({"preset": "tiny", "dim_head": 24}), "model")
    with pytest.raises(ConfigError, match="num_blocks"):
        from_dict(ModelConfig, _model({"num_blocks": [1, 1, 1]}), "model")
    with pytest.raises(ConfigError, match="preset"):
        from_dict(ModelConfig, _model({"preset": "huge"}), "model")
    with pytest.raises(ConfigError, match="model.partition_split"):
        from_dict(ModelConfig, _model({"partition_split": 3}), "model")


# ---------------------------------------------------------------- shapes and padding


@pytest.mark.parametrize(
    ("hw", "anchors", "stage1"), [((96, 128), 252, (24, 32)), ((240, 304), 1680, (64, 80))]
)
def test_output_shapes(
    nano: RecurrentDetector, hw: tuple[int, int], anchors: int, stage1: tuple[int, int]
) -> None:
    x = torch.rand(2, 20, *hw)
    with torch.no_grad():
        preds, states = nano.forward_step(x, None)
    assert preds.boxes.shape == (2, anchors, 4) and preds.boxes.dtype == torch.float32
    assert preds.obj_logits.shape == (2, anchors) and preds.cls_logits.shape == (2, anchors, 2)
    assert [tuple(h.shape) for h, _ in states] == [
        (2, stage1[0] // s, stage1[1] // s, 16 * s) for s in (1, 2, 4, 8)
    ]
    assert preds.anchors.strides.unique().tolist() == [8.0, 16.0, 32.0]


def test_padding_and_partition_sizes() -> None:
    gen1 = RecurrentDetector(ModelConfig(preset="nano"))
    assert gen1.backbone.partition_size(256, 320) == (8, 10)
    gen4 = RecurrentDetector(ModelConfig(preset="nano", partition_split=2))
    assert gen4.backbone.partition_size(384, 640) == (6, 10)
    assert pad_to_multiple(torch.ones(1, 2, 360, 640), 64).shape[-2:] == (384, 640)
    padded = pad_to_multiple(torch.ones(1, 2, 240, 304), 32)
    assert padded.shape[-2:] == (256, 320) and padded[..., 240:, :].abs().sum() == 0
    assert padded[..., :240, :304].min() == 1


def test_wrong_input_channels_is_a_clear_error(nano: RecurrentDetector) -> None:
    with pytest.raises(DataFormatError, match="in_channels"):
        nano.forward_step(torch.rand(1, 10, 96, 128), None)


# ---------------------------------------------------------------- attention partitions


def test_window_and_grid_token_orders() -> None:
    spatial = torch.arange(64.0).view(1, 64, 1)  # an 8x8 map, token value = row * 8 + col
    window = reorder(spatial, (8, 8), (2, 2), "spatial", "window").flatten().tolist()
    grid = reorder(spatial, (8, 8), (2, 2), "spatial", "grid").flatten().tolist()
    assert window[:8] == [0, 1, 8, 9, 2, 3, 10, 11]  # 2x2 tiles of neighbours
    assert grid[:8] == [0, 4, 32, 36, 1, 5, 33, 37]  # 2x2 sets spaced 4 apart
    back = reorder(reorder(spatial, (8, 8), (2, 2), "spatial", "grid"), (8, 8), (2, 2), "grid", "window")
    assert torch.equal(reorder(back, (8, 8), (2, 2), "window", "spatial"), spatial)


def test_a_token_order_first_used_in_inference_mode_still_trains() -> None:
    hw, partition = (10, 14), (5, 7)  # a shape no other test reorders: the cache starts empty for it
    with torch.inference_mode():
        reorder(torch.zeros(1, 140, 2), hw, partition, "spatial", "grid")
    tokens = torch.randn(1, 140, 2, requires_grad=True)
    reorder(tokens, hw, partition, "spatial", "grid").square().sum().backward()
    assert tokens.grad is not None and tokens.grad.abs().sum() > 0


@pytest.mark.parametrize(("kind", "partners"), [("window", {0, 1, 8, 9}), ("grid", {0, 4, 32, 36})])
def test_attention_mixes_only_within_a_partition(kind: str, partners: set[int]) -> None:
    torch.manual_seed(0)
    block = PartitionAttention(dim=8, dim_head=4, mlp_ratio=2, layer_scale_init=1.0).eval()
    x = torch.randn(1, 64, 8)
    x2 = x.clone()
    x2[0, 0] += torch.randn(8)  # perturb spatial token (0, 0)

    def run(tokens: torch.Tensor) -> torch.Tensor:
        part = reorder(tokens, (8, 8), (2, 2), "spatial", kind)
        out = block(part.view(16, 4, 8)).view(1, 64, 8)
        return reorder(out, (8, 8), (2, 2), kind, "spatial")

    with torch.no_grad():
        changed = (run(x) - run(x2)).abs().amax(dim=-1)[0] > 1e-6
    assert set(changed.nonzero().flatten().tolist()) == partners


# ---------------------------------------------------------------- recurrence


def test_reset_zeroes_only_new_sequences(nano: RecurrentDetector) -> None:
    x = torch.rand(3, 20, 96, 128)
    with torch.no_grad():
        _, states = nano.forward_step(x, None)
        _, states = nano.forward_step(x, states)
    reset = RecurrentDetector.reset(states, torch.tensor([True, False, True]))
    assert RecurrentDetector.reset(None, torch.tensor([True])) is None
    for (h, c), (h0, c0) in zip(reset, states, strict=True):
        assert h[[0, 2]].abs().sum() == 0 and c[[0, 2]].abs().sum() == 0
        assert torch.equal(h[1], h0[1]) and torch.equal(c[1], c0[1])
        assert h0[0].abs().sum() > 0
    with torch.no_grad():  # a reset sample continues exactly like a fresh stream
        fresh, _ = nano.forward_step(x[:1], None)
        resumed, _ = nano.forward_step(x, reset)
    assert torch.allclose(fresh.boxes[0], resumed.boxes[0], atol=1e-5)
    with pytest.raises(ValueError, match="is_first"):
        RecurrentDetector.reset(states, torch.tensor([True]))


def test_detach_cuts_the_gradient_path() -> None:
    torch.manual_seed(0)
    model = RecurrentDetector(ModelConfig(preset="nano")).train()
    x = torch.rand(1, 20, 64, 64)
    _, states = model.forward_step(x, None)
    detached = RecurrentDetector.detach(states)
    assert all(not h.requires_grad and not c.requires_grad for h, c in detached)
    first_h = states[0][0]
    attached_out, _ = model.forward_step(x, states)
    grad = torch.autograd.grad(attached_out.obj_logits.sum(), first_h, allow_unused=True)[0]
    assert grad is not None and grad.abs().sum() > 0
    detached_out, _ = model.forward_step(x, detached)
    assert torch.autograd.grad(detached_out.obj_logits.sum(), first_h, allow_unused=True)[0] is None


def test_forward_sequence_predicts_supervised_pairs_in_order(nano: RecurrentDetector) -> None:
    frames = torch.rand(3, 2, 20, 64, 96)
    supervised = torch.tensor([[False, True], [False, False], [True, True]])
    with torch.no_grad():
        seq_preds, seq_states = nano.forward_sequence(frames, None, supervised)
        states, steps = None, []
        for t in range(3):
            preds, states = nano.forward_step(frames[t], states)
            steps.append(preds)
        none_preds, _ = nano.forward_sequence(frames, None, torch.zeros(3, 2, dtype=torch.bool))
    expected = torch.stack([steps[0].boxes[1], steps[2].boxes[0], steps[2].boxes[1]])
    assert torch.allclose(seq_preds.boxes, expected, atol=1e-4)
    assert torch.allclose(seq_states[-1][0], states[-1][0], atol=1e-6)
    assert none_preds is None


# ---------------------------------------------------------------- SimOTA


def _single_level(h: int, w: int, stride: int = 8) -> AnchorPoints:
    return make_anchor_points([(h, w)], (stride,), torch.device("cpu"))


def _tiny_boxes_at_anchors(anchors: AnchorPoints) -> torch.Tensor:
    centres = anchors.centres
    return torch.cat([centres, torch.ones_like(centres)], dim=1)


def _assign_one(
    boxes: torch.Tensor,
    obj: torch.Tensor,
    cls: torch.Tensor,
    gt: torch.Tensor,
    labels: torch.Tensor,
    anchors: AnchorPoints,
) -> Assignment:
    """SimOTA on a batch of one image whose boxes are all assigned."""
    mask = torch.ones(1, len(gt), dtype=torch.bool)
    return simota_assign(boxes[None], obj[None], cls[None], gt[None], labels[None], mask, anchors)


def test_simota_dynamic_k_on_a_toy_case() -> None:
    anchors = _single_level(8, 8)  # anchor (row r, col c) has centre ((c + .5) * 8, (r + .5) * 8)
    preds = _tiny_boxes_at_anchors(anchors)
    gt = torch.tensor([[36.0, 36.0, 16.0, 16.0]])  # centre region: rows/cols 3..5 (centres 28, 36, 44)
    # Candidates predict boxes on the GT centre; IoU = (size / 16)^2.
    sizes = {(4, 4): 16.0, (3, 4): 14.4, (4, 3): 12.0, (4, 5): 8.0}
    for r in range(3, 6):
        for c in range(3, 6):
            s = sizes.get((r, c), 4.0)
            preds[r * 8 + c] = torch.tensor([36.0, 36.0, s, s])
    preds[0] = gt[0]  # a perfect box outside the centre region is no candidate
    zeros = torch.zeros(64)
    result = _assign_one(preds, zeros, zeros[:, None].repeat(1, 2), gt, torch.tensor([1]), anchors)
    # top IoUs sum to 1 + .81 + .5625 + .25 + 5 * .0625 = 2.94 -> k = 2: the two best anchors
    assert result.fg_mask[0].nonzero().flatten().tolist() == [3 * 8 + 4, 4 * 8 + 4]
    assert result.matched_gt.tolist() == [0, 0]
    assert torch.allclose(result.matched_iou, torch.tensor([0.81, 1.0]), atol=1e-4)


def test_simota_contested_anchor_goes_to_the_cheaper_box() -> None:
    anchors = _single_level(8, 8)
    preds = _tiny_boxes_at_anchors(anchors)
    preds[4 * 8 + 4] = torch.tensor([37.0, 36.0, 16.0, 16.0])  # IoU .88 with box 0, .68 with box 1
    gt = torch.tensor([[36.0, 36.0, 16.0, 16.0], [40.0, 36.0, 16.0, 16.0]])
    zeros = torch.zeros(64)
    result = _assign_one(preds, zeros, torch.zeros(64, 2), gt, torch.tensor([0, 1]), anchors)
    assert result.fg_mask[0].nonzero().flatten().tolist() == [36]
    assert result.matched_gt.tolist() == [0]
    assert result.num_fg == 1


def test_simota_without_candidates_assigns_nothing() -> None:
    anchors = _single_level(4, 4)
    preds = _tiny_boxes_at_anchors(anchors)
    outside = torch.tensor([[500.0, 500.0, 10.0, 10.0]])
    result = _assign_one(preds, torch.zeros(16), torch.zeros(16, 2), outside, torch.tensor([0]), anchors)
    assert result.num_fg == 0 and not result.fg_mask.any()


# ---------------------------------------------------------------- loss and ignore flags


def _random_preds(anchors: AnchorPoints, seed: int = 0) -> RawPredictions:
    gen = torch.Generator().manual_seed(seed)
    n = anchors.strides.numel()
    centres = anchors.centres + torch.randn(n, 2, generator=gen) * 2
    sizes = 16 + torch.rand(n, 2, generator=gen) * 12
    return RawPredictions(
        boxes=torch.cat([centres, sizes], 1)[None].clone(),
        obj_logits=torch.randn(1, n, generator=gen).requires_grad_(),
        cls_logits=torch.randn(1, n, 2, generator=gen),
        anchors=anchors,
    )


def _ignore_region_anchors() -> list[int]:
    # ignored box centre (100, 70), stride 8: cols 11..13 (centres 92..108), rows 7..9 (60..76)
    return [r * 16 + c for r in range(7, 10) for c in range(11, 14)]


def test_ignored_box_gets_no_positives_and_no_objectness_loss() -> None:
    anchors = _single_level(12, 16)
    preds = _random_preds(anchors)
    valid_box = torch.tensor([[30.0, 30.0, 20.0, 20.0]])
    ignored_box = torch.tensor([[100.0, 70.0, 20.0, 20.0]])
    both = torch.cat([valid_box, ignored_box])
    with_ignore = BoxTargets.from_list([both], [torch.tensor([0, 1])], [torch.tensor([False, True])])
    only_valid = BoxTargets.from_list([valid_box], [torch.tensor([0])])
    as_valid = BoxTargets.from_list([both], [torch.tensor([0, 1])])

    loss_ign = yolox_loss(preds, with_ignore)
    loss_valid = yolox_loss(preds, only_valid)
    loss_hard = yolox_loss(preds, as_valid)
    region = _ignore_region_anchors()
    # the valid box is unaffected: same positives, same IoU and class terms
    assert loss_ign.num_fg == loss_valid.num_fg > 0
    assert torch.allclose(loss_ign.iou, loss_valid.iou) and torch.allclose(loss_ign.cls, loss_valid.cls)
    # objectness differs by exactly the background BCE of the 9 anchors in the ignored region
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    region_bce = bce(preds.obj_logits[0, region], torch.zeros(9), reduction="sum") / loss_valid.num_fg
    assert torch.allclose(loss_valid.obj - loss_ign.obj, region_bce, atol=1e-5)
    # no gradient at all reaches the objectness of ignored anchors
    grad = torch.autograd.grad(loss_ign.total, preds.obj_logits)[0][0]
    assert grad[region].abs().sum() == 0 and grad.abs().sum() > 0
    # the same box, not ignored, is learned (hard GT as in RVT)
    assert loss_hard.num_fg > loss_valid.num_fg


def test_only_ignored_boxes_leave_background_elsewhere() -> None:
    anchors = _single_level(12, 16)
    preds = _random_preds(anchors, seed=1)
    ignored = BoxTargets.from_list(
        [torch.tensor([[100.0, 70.0, 20.0, 20.0]])], [torch.tensor([1024])], [torch.tensor([True])]
    )
    loss = yolox_loss(preds, ignored)
    keep = torch.ones(192, dtype=torch.bool)
    keep[_ignore_region_anchors()] = False
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        preds.obj_logits[0, keep], torch.zeros(int(keep.sum())), reduction="sum"
    )
    assert loss.num_fg == 0 and loss.iou == 0 and loss.cls == 0
    assert torch.allclose(loss.obj, expected)


def test_ignore_region_excludes_valid_centre_regions() -> None:
    anchors = _single_level(12, 16)
    preds = _random_preds(anchors, seed=2)
    # the ignored box's centre region overlaps the valid one's: shared anchors stay supervised
    boxes = torch.tensor([[36.0, 36.0, 20.0, 20.0], [44.0, 36.0, 20.0, 20.0]])
    targets = BoxTargets.from_list([boxes], [torch.tensor([0, 0])], [torch.tensor([False, True])])
    grad = torch.autograd.grad(yolox_loss(preds, targets).total, preds.obj_logits)[0][0]
    # valid region: cols 3..5, rows 3..5; ignored region: cols 4..6, rows 3..5 -> only col 6 is ignored
    assert [i for i in range(192) if grad[i] == 0] == [r * 16 + 6 for r in range(3, 6)]


def test_perfect_boxes_have_zero_iou_loss() -> None:
    anchors = _single_level(12, 16)
    gt = torch.tensor([[36.0, 36.0, 16.0, 16.0]])
    boxes = _tiny_boxes_at_anchors(anchors)
    boxes[4 * 16 + 4] = gt[0]
    preds = RawPredictions(boxes[None], torch.zeros(1, 192), torch.zeros(1, 192, 2), anchors)
    loss = yolox_loss(preds, BoxTargets.from_list([gt], [torch.tensor([1])]))
    assert loss.num_fg == 1 and float(loss.iou) < 1e-6
    # class term: BCE(0 logit, one-hot * IoU=1) over 2 classes = 2 * log 2
    assert math.isclose(float(loss.cls), 2 * math.log(2), rel_tol=1e-5)


def test_targets_from_list_and_checks() -> None:
    boxes = [torch.tensor([[12.5, 20.0, 15.0, 20.0], [2.0, 2.0, 4.0, 4.0]]), torch.zeros(0, 4)]
    labels = [torch.tensor([1, 1024]), torch.zeros(0, dtype=torch.int64)]
    targets = BoxTargets.from_list(
        boxes, labels, [torch.tensor([False, True]), torch.zeros(0, dtype=torch.bool)]
    )
    assert targets.boxes.shape == (2, 2, 4)
    assert targets.boxes[0, 0].tolist() == [12.5, 20.0, 15.0, 20.0]
    assert targets.ignore[0].tolist() == [False, True] and targets.valid.tolist() == [
        [True, True],
        [False, False],
    ]
    targets.check(num_classes=2)  # class 1024 is fine on an ignored box
    bad = BoxTargets.from_list([torch.ones(1, 4)], [torch.tensor([5])])
    with pytest.raises(DataFormatError, match="class id 5"):
        bad.check(num_classes=2)


# ---------------------------------------------------------------- NMS and postprocess


def _reference_nms(
    boxes: list[list[float]], scores: list[float], classes: list[int], thr: float
) -> list[int]:
    def iou(a: list[float], b: list[float]) -> float:
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union

    kept: list[int] = []
    for i in sorted(range(len(scores)), key=lambda k: -scores[k]):
        if all(classes[j] != classes[i] or iou(boxes[i], boxes[j]) <= thr for j in kept):
            kept.append(i)
    return kept


def test_nms_matches_brute_force_reference() -> None:
    gen = torch.Generator().manual_seed(3)
    centres = torch.rand(300, 2, generator=gen) * 60
    sizes = 5 + torch.rand(300, 2, generator=gen) * 25
    boxes = cxcywh_to_xyxy(torch.cat([centres, sizes], 1))
    scores = torch.rand(300, generator=gen)
    classes = torch.randint(0, 3, (300,), generator=gen)
    expected = _reference_nms(boxes.tolist(), scores.tolist(), classes.tolist(), 0.45)
    assert 20 < len(expected) < 250
    assert batched_nms_torch(boxes, scores, classes, 0.45).tolist() == expected
    assert batched_nms(boxes, scores, classes, 0.45).tolist() == expected
    assert batched_nms_torch(boxes[:0], scores[:0], classes[:0], 0.45).numel() == 0


def test_nms_keeps_classes_apart_with_negative_coordinates() -> None:
    # shifting class 1 by only (max + 1) = 11 would land this box exactly on the class-0 box
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [-11.0, -11.0, -1.0, -1.0]])
    kept = batched_nms_torch(boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.45)
    assert kept.tolist() == [0, 1]


def test_postprocess_thresholds_and_class_aware_nms() -> None:
    anchors = _single_level(2, 2)
    boxes = torch.tensor([[50, 50, 20, 20], [52, 50, 20, 20], [52, 50, 20, 20], [10, 10, 8, 8.0]])
    obj = torch.tensor([0.9, 0.9, 0.9, 0.2])
    cls = torch.tensor([[0.8, 0.1], [0.7, 0.1], [0.1, 0.6], [0.3, 0.2]])
    preds = RawPredictions(boxes[None], torch.logit(obj)[None], torch.logit(cls)[None], anchors)
    (dets,) = postprocess(preds, conf_threshold=0.1, nms_iou=0.45)
    # anchor 1 overlaps anchor 0 (IoU .82, same class) -> suppressed; anchor 2 is class 1 -> kept;
    # anchor 3 scores .2 * .3 = .06 < .1 -> dropped
    assert dets.labels.tolist() == [0, 1]
    assert torch.allclose(dets.scores, torch.tensor([0.72, 0.54]))
    assert torch.allclose(dets.class_confidence, torch.tensor([0.8, 0.6]))
    assert torch.allclose(dets.objectness, torch.tensor([0.9, 0.9]))
    assert torch.allclose(dets.boxes[0], torch.tensor([40.0, 40.0, 60.0, 60.0]))
    (low,) = postprocess(preds, conf_threshold=0.05, nms_iou=0.45)
    assert low.labels.tolist() == [0, 1, 0]
    (strict,) = postprocess(preds, conf_threshold=0.6, nms_iou=0.45)
    assert len(strict) == 1
    rows = dets.to_box_array(t_us=123)
    assert rows["t"].tolist() == [123, 123] and rows["x"][0] == 40.0 and rows["w"][0] == 20.0
    assert np.allclose(rows["objectness"], 0.9) and rows["class_id"].tolist() == [0, 1]


# ---------------------------------------------------------------- precision and training


def test_bf16_autocast_forward_and_loss(nano: RecurrentDetector) -> None:
    targets = BoxTargets.from_list([torch.tensor([[40.0, 40.0, 20.0, 20.0]])], [torch.tensor([0])])
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        _, states = nano.forward_step(torch.rand(1, 20, 64, 64), None)
        preds, states = nano.forward_step(torch.rand(1, 20, 64, 64), states)
        loss = nano.loss(preds, targets)
    assert preds.boxes.dtype == torch.float32 and loss.total.dtype == torch.float32
    # the LSTM memory stays float32 (LayerNorm outputs float32 under autocast)
    assert torch.isfinite(loss.total) and all(c.dtype == torch.float32 for _, c in states)


def _overfit_data() -> tuple[torch.Tensor, torch.Tensor, BoxTargets]:
    gen = torch.Generator().manual_seed(0)
    frames = torch.rand(2, 1, 20, 96, 128, generator=gen) * 0.3
    boxes = torch.tensor([[40.0, 50.0, 32.0, 28.0], [96.0, 32.0, 24.0, 40.0]])
    for cx, cy, w, h in boxes.tolist():
        frames[..., int(cy - h / 2) : int(cy + h / 2), int(cx - w / 2) : int(cx + w / 2)] += 1.0
    supervised = torch.tensor([[False], [True]])
    return frames, supervised, BoxTargets.from_list([boxes], [torch.tensor([0, 1])])


@pytest.mark.slow
def test_nano_overfits_one_sequence() -> None:
    torch.manual_seed(0)
    model = RecurrentDetector(ModelConfig(preset="nano"))
    frames, supervised, targets = _overfit_data()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(150):
        preds, _ = model.forward_sequence(frames, None, supervised)
        loss = model.loss(preds, targets)
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
        losses.append(float(loss.total.detach()))
    assert np.mean(losses[-5:]) < losses[0] / 5
    # Predict with batch statistics, as during the fit: on one 96x128 frame the stride-32 BatchNorm
    # sees 12 values per channel, so its running (unbiased) variance is not the batch one.
    with torch.no_grad():
        preds, _ = model.forward_sequence(frames, None, supervised)
    (dets,) = model.predict(preds, conf_threshold=0.3)
    centre_boxes = torch.cat(
        [(dets.boxes[:, :2] + dets.boxes[:, 2:]) / 2, dets.boxes[:, 2:] - dets.boxes[:, :2]], 1
    )
    best = pairwise_iou(targets.boxes[0], centre_boxes).max(dim=1)
    assert (best.values > 0.5).all(), best.values
    assert dets.labels[best.indices].tolist() == [0, 1]
