"""Pseudo-label making: TTA flip-back and time re-alignment, merging, thresholds, soft labels."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from leod.detect.dataset import mirrored, time_reversed
from leod.labels.boxes import empty_boxes
from leod.pseudo.config import PseudoConfig, TTAConfig
from leod.pseudo.label import confident, merge_frame, target_frame, tta_passes
from leod.pseudo.soft import soften
from leod.pseudo.tracker import track_filter


def boxes(rows):
    b = empty_boxes(len(rows))
    for i, (x, y, w, h, c, obj, cls) in enumerate(rows):
        b[i]["x"], b[i]["y"], b[i]["w"], b[i]["h"], b[i]["class_id"] = x, y, w, h, c
        b[i]["objectness"], b[i]["class_confidence"] = obj, cls
    return b


CFG = PseudoConfig(obj_thresh=[0.6, 0.3], cls_thresh=[0.6, 0.3], min_side=2.0)


def test_mirrored_boxes_map_back_and_round_trip():
    b = boxes([(10, 5, 20, 8, 0, 1, 1), (0, 0, 4, 4, 1, 1, 1)])
    m = mirrored(b, 128)
    assert m["x"].tolist() == [98, 124]  # 128 - 10 - 20, 128 - 0 - 4
    assert np.array_equal(mirrored(m, 128), b)


def test_mirrored_frame_and_box_agree():
    frame = torch.zeros(1, 1, 8, 16)
    frame[..., 2:4, 3:7] = 1  # a box at x=3, w=4
    flipped = frame.flip(-1)
    cols = torch.nonzero(flipped[0, 0].sum(0)).flatten()
    b = mirrored(boxes([(int(cols.min()), 2, int(cols.max() - cols.min() + 1), 2, 0, 1, 1)]), 16)
    assert b["x"][0] == 3 and b["w"][0] == 4


def test_time_reversal_reverses_bins_and_swaps_polarity():
    nbins = 3
    frames = torch.arange(2 * nbins, dtype=torch.float32).view(1, 2 * nbins, 1, 1).expand(2, -1, 2, 2)
    rev = time_reversed(frames, nbins)
    # channels [on0 on1 on2 | off0 off1 off2] = [0..5] -> [off2 off1 off0 | on2 on1 on0]
    assert rev[0, :, 0, 0].tolist() == [5, 4, 3, 2, 1, 0]
    assert torch.equal(time_reversed(rev, nbins), frames)


def test_time_reversed_predictions_realign_to_the_previous_frame():
    assert target_frame(10, tflip=True, offset=-1, num_frames=20) == 9
    assert target_frame(10, tflip=False, offset=-1, num_frames=20) == 10
    assert target_frame(0, tflip=True, offset=-1, num_frames=20) is None
    assert target_frame(19, tflip=False, offset=-1, num_frames=20) == 19


def test_tta_passes():
    assert tta_passes(CFG) == [(False, False), (True, False), (False, True), (True, True)]
    cfg = PseudoConfig(obj_thresh=[0.5], cls_thresh=[0.5], tta=TTAConfig(hflip=False, tflip=True))
    assert tta_passes(cfg) == [(False, False), (False, True)]


def test_merge_is_classwise_nms_over_passes():
    a = boxes([(10, 10, 20, 10, 0, 0.9, 0.9), (50, 10, 8, 16, 1, 0.8, 0.8)])
    b = boxes([(11, 10, 20, 10, 0, 0.7, 0.9), (10, 10, 20, 10, 1, 0.5, 0.5)])  # a duplicate, another class
    merged = merge_frame([a, b], CFG)
    pairs = zip(merged["class_id"].tolist(), merged["x"].tolist(), strict=True)
    assert sorted(pairs) == [(0, 10), (1, 10), (1, 50)]


def test_confident_thresholds_are_per_class_and_strict():
    b = boxes(
        [
            (0, 0, 10, 10, 0, 0.61, 0.9),  # car above 0.6: kept
            (0, 0, 10, 10, 0, 0.60, 0.9),  # car at 0.6: strict, dropped
            (0, 0, 10, 10, 1, 0.31, 0.31),  # pedestrian above 0.3: kept
            (0, 0, 1, 10, 1, 0.9, 0.9),  # too thin
            (0, 0, 120, 10, 0, 0.9, 0.9),  # wider than 0.9 * 128
        ]
    )
    kept = confident(b, CFG, 96, 128)
    assert kept["objectness"].tolist() == [np.float32(0.61), np.float32(0.31)]


def test_weak_boxes_become_ignore_regions_that_no_track_takes():
    cfg = dataclasses.replace(CFG, weak_thresh=[0.3, 0.2])
    b = boxes(
        [
            (0, 0, 10, 10, 0, 0.61, 0.9),  # car above 0.6: an object
            (20, 0, 10, 10, 0, 0.5, 0.9),  # car between 0.3 and 0.6: ignore
            (40, 0, 10, 10, 0, 0.9, 0.3),  # class confidence at 0.3: strict, dropped
            (60, 0, 10, 10, 1, 0.25, 0.25),  # pedestrian between 0.2 and 0.3: ignore
            (80, 0, 1, 10, 0, 0.5, 0.5),  # too thin, weak or not
        ]
    )
    kept = confident(b, cfg, 96, 128)
    assert kept["x"].tolist() == [0, 20, 60] and kept["ignore"].tolist() == [False, True, True]
    assert confident(b, CFG, 96, 128)["x"].tolist() == [0]  # off by default
    # the same weak box on 12 frames never becomes (or breaks) a track: it comes back as it went in
    frames = [kept.copy() for _ in range(12)]
    tracked, stats = track_filter(frames, np.zeros(12, bool), cfg.tracker, frame_hw=(96, 128))
    for before, after in zip(frames, tracked, strict=True):
        assert after[:3]["ignore"].tolist() == [False, True, True]
        assert np.array_equal(after[1:3][["x", "y", "w", "h"]], before[1:3][["x", "y", "w", "h"]])
    assert stats.boxes_in == 12 and stats.boxes_ignored == 0  # only the car took part


def test_soft_threshold_turns_weak_boxes_into_ignore():
    b = boxes([(0, 0, 5, 5, 0, 0.65, 0.9), (0, 0, 5, 5, 0, 0.9, 0.9), (0, 0, 5, 5, 1, 0.4, 0.36)])
    soft = soften(b, [0.7, 0.35])
    assert soft["ignore"].tolist() == [True, False, False]
    assert not b["ignore"].any()  # input untouched


def test_quality_gate():
    from leod.pseudo.gate import gate_reason

    assert gate_reason(0.0, {"precision@0.5": 0.1}) is None  # disabled
    assert gate_reason(0.8, {"precision@0.5": 0.85}) is None
    reason = gate_reason(0.8, {"precision@0.5": 0.65})
    assert reason is not None and "0.650 < selftrain.min_precision 0.800" in reason
