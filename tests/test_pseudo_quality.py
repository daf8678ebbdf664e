"""Tests of pseudo-label quality on hand-built frames whose answers are counted by hand."""

from __future__ import annotations

import numpy as np
import pytest

from leod.labels.boxes import empty_boxes
from leod.plumbing.errors import ConfigError, DataFormatError, LeodError
from leod.pseudo.quality import IOU_THRESHOLDS, pr_curve, pseudo_label_quality

CLASSES = ["car", "pedestrian"]
T1, T2, T3 = 1_000_000, 1_050_000, 1_100_000


def boxes(*rows: tuple) -> np.ndarray:
    """Time-sorted boxes from ``(t, x, y, w, h, class_id, score[, ignore])`` rows; the
    score goes into class_confidence with objectness 1."""
    out = empty_boxes(len(rows))
    for i, row in enumerate(sorted(rows, key=lambda r: r[0])):
        t, x, y, w, h, cls, score, *ignore = row
        out[i] = (t, x, y, w, h, cls, score, 0, 1.0, bool(ignore and ignore[0]))
    return out


def quality(pseudo: np.ndarray, gt: np.ndarray, withheld: list[int]) -> dict[str, float]:
    return pseudo_label_quality({"s": pseudo}, {"s": gt}, {"s": np.array(withheld, np.int64)}, CLASSES)


def track(track_id: int, cls: int, w: float, h: float, x0: float, px_per_frame: float) -> np.ndarray:
    """One object at T1, T2, T3 (50 ms apart), moving ``px_per_frame`` to the right per frame."""
    out = boxes(*[(t, x0 + i * px_per_frame, 20, w, h, cls, 1.0) for i, t in enumerate((T1, T2, T3))])
    out["track_id"] = track_id
    return out


def test_recall_by_speed_and_size_counts_the_objects_the_teacher_misses():
    still = track(1, 0, 10, 10, 10, 0.0)  # a stopped car: 0 px/s, size 10 (medium)
    fast = track(2, 0, 10, 10, 60, 5.0)  # 100 px/s, medium
    slow = track(3, 1, 4, 9, 120, 0.5)  # a pedestrian at 10 px/s, size 6 (small)
    gt = np.sort(np.concatenate([still, fast, slow]), order="t", kind="stable")
    pseudo = np.sort(np.concatenate([fast, slow]), order="t", kind="stable")
    m = quality(pseudo, gt, [T1, T2, T3])
    assert (m["recall@0.5/speed:still"], m["recall@0.5/speed:slow"], m["recall@0.5/speed:fast"]) == (0, 1, 1)
    assert m["gt_share/speed:still"] == m["gt_share/speed:slow"] == m["gt_share/speed:fast"] == 1 / 3
    assert (m["recall@0.5/size:small"], m["recall@0.5/size:medium"]) == (1.0, 0.5)
    assert (m["recall@0.5/size:large"], m["gt_share/size:large"]) == (0.0, 0.0)  # no large object
    assert m["gt_share/size:medium"] == 2 / 3
    lone = boxes((T2, 90, 60, 10, 10, 0, 1.0))  # a track at one label frame: no speed
    lone["track_id"] = 4
    m = quality(pseudo, np.sort(np.concatenate([gt, lone]), order="t", kind="stable"), [T1, T2, T3])
    assert sum(m[f"gt_share/speed:{b}"] for b in ("still", "slow", "fast")) == pytest.approx(9 / 10)
    assert m["gt_share/size:medium"] == pytest.approx(7 / 10)  # it has a size


CAR = (T1, 10, 10, 10, 10, 0, 1.0)
PED = (T1, 100, 50, 20, 40, 1, 1.0)


def test_perfect_pseudo_labels():
    gt = boxes(CAR, PED, (T2, 30, 30, 40, 20, 0, 1.0))
    m = quality(gt.copy(), gt, [T1, T2])
    for iou in IOU_THRESHOLDS:
        assert m[f"precision@{iou}"] == 1.0
        assert m[f"recall@{iou}"] == 1.0
        for name in CLASSES:
            assert m[f"precision@{iou}/{name}"] == 1.0
            assert m[f"recall@{iou}/{name}"] == 1.0
    assert m["AP"] == pytest.approx(1.0)
    assert m["AP50"] == pytest.approx(1.0)
    assert m["boxes_per_frame"] == m["gt_per_frame"] == 1.5
    assert m["frames_labelled"] == 1.0
    assert m["frames_evaluated"] == 2.0
    assert m["ignore_per_frame"] == 0.0


def test_key_set():
    gt = boxes(CAR)
    expected = {"AP", "AP50", "boxes_per_frame", "ignore_per_frame", "gt_per_frame"}
    expected |= {"frames_labelled", "frames_evaluated"}
    for iou in ("0.25", "0.5", "0.75"):
        expected |= {f"precision@{iou}", f"recall@{iou}"}
        expected |= {f"{m}@{iou}/{c}" for m in ("precision", "recall") for c in CLASSES}
    for bin_ in ("speed:still", "speed:slow", "speed:fast", "size:small", "size:medium", "size:large"):
        expected |= {f"recall@0.5/{bin_}", f"gt_share/{bin_}"}
    m = quality(gt, gt, [T1])
    assert set(m) == expected
    assert all(isinstance(v, float) for v in m.values())


def test_one_correct_one_false():
    gt = boxes(CAR)
    pseudo = boxes(CAR, (T1, 300, 200, 10, 10, 0, 0.5))
    m = quality(pseudo, gt, [T1])
    assert m["precision@0.5"] == 0.5
    assert m["recall@0.5"] == 1.0
    assert m["precision@0.5/car"] == 0.5
    assert m["boxes_per_frame"] == 2.0
    # The false box scores lower, so COCO finds all GT before it: AP stays 1.
    assert m["AP50"] == pytest.approx(1.0)


def test_iou_06_counts_at_025_and_05_only():
    # GT 10x10 at (10,10); pseudo 10x6 inside it: IoU = 60 / 100 = 0.6.
    gt = boxes(CAR)
    pseudo = boxes((T1, 10, 10, 10, 6, 0, 0.9))
    m = quality(pseudo, gt, [T1])
    assert (m["precision@0.25"], m["recall@0.25"]) == (1.0, 1.0)
    assert (m["precision@0.5"], m["recall@0.5"]) == (1.0, 1.0)
    assert (m["precision@0.75"], m["recall@0.75"]) == (0.0, 0.0)
    assert m["AP50"] == pytest.approx(1.0)


def test_class_mismatch_is_no_match():
    gt = boxes(CAR)
    pseudo = boxes((T1, 10, 10, 10, 10, 1, 0.9))  # right place, says pedestrian
    m = quality(pseudo, gt, [T1])
    assert m["precision@0.25"] == 0.0
    assert m["recall@0.25"] == 0.0
    assert m["precision@0.5/pedestrian"] == 0.0
    assert m["recall@0.5/car"] == 0.0
    assert m["AP50"] == 0.0


def test_per_class_split():
    # Car found; pedestrian missed, and a false pedestrian elsewhere.
    gt = boxes(CAR, PED)
    pseudo = boxes(CAR, (T1, 400, 10, 20, 40, 1, 0.8))
    m = quality(pseudo, gt, [T1])
    assert (m["precision@0.5/car"], m["recall@0.5/car"]) == (1.0, 1.0)
    assert (m["precision@0.5/pedestrian"], m["recall@0.5/pedestrian"]) == (0.0, 0.0)
    assert (m["precision@0.5"], m["recall@0.5"]) == (0.5, 0.5)


def test_ignore_boxes_excluded_but_counted():
    gt = boxes(CAR)
    pseudo = boxes(CAR, (T1, 300, 200, 10, 10, 0, 0.0, True), (T1, 10, 10, 10, 10, 0, 0.0, True))
    m = quality(pseudo, gt, [T1])
    assert m["precision@0.5"] == 1.0
    assert m["boxes_per_frame"] == 1.0
    assert m["ignore_per_frame"] == 2.0


def test_frame_with_only_ignore_boxes_is_not_labelled():
    gt = boxes(CAR, (T2, 30, 30, 40, 20, 0, 1.0))
    pseudo = boxes(CAR, (T2, 30, 30, 40, 20, 0, 0.0, True))
    m = quality(pseudo, gt, [T1, T2])
    assert m["frames_labelled"] == 0.5
    assert m["recall@0.5"] == 0.5
    assert m["ignore_per_frame"] == 0.5


def test_ignore_ground_truth_excluded():
    gt = boxes(CAR, (T1, 200, 200, 30, 30, 0, 1.0, True))
    pseudo = boxes(CAR)
    m = quality(pseudo, gt, [T1])
    assert m["gt_per_frame"] == 1.0
    assert m["recall@0.5"] == 1.0


def test_kept_frames_excluded():
    # T1 is kept (pseudo = GT there, and deliberately wrong here to prove it is skipped);
    # T2 is withheld and half right.
    gt = boxes(CAR, (T2, 30, 30, 40, 20, 0, 1.0), (T2, 200, 30, 40, 20, 0, 1.0))
    pseudo = boxes((T1, 300, 300, 10, 10, 1, 1.0), (T2, 30, 30, 40, 20, 0, 1.0))
    m = quality(pseudo, gt, [T2])
    assert m["frames_evaluated"] == 1.0
    assert m["precision@0.5"] == 1.0
    assert m["recall@0.5"] == 0.5
    assert m["gt_per_frame"] == 2.0
    assert m["boxes_per_frame"] == 1.0


def test_pseudo_boxes_off_frame_times_are_ignored():
    gt = boxes(CAR)
    pseudo = boxes(CAR, (T1 + 1, 300, 300, 10, 10, 0, 1.0))
    assert quality(pseudo, gt, [T1])["precision@0.5"] == 1.0


def test_duplicates_match_once():
    gt = boxes(CAR)
    pseudo = boxes(CAR, (T1, 11, 10, 10, 10, 0, 0.7))  # IoU 90/110 with the GT
    m = quality(pseudo, gt, [T1])
    assert m["precision@0.5"] == 0.5
    assert m["recall@0.5"] == 1.0


def test_higher_score_claims_first():
    # Two GT cars side by side; a high-score box overlaps both, best with the left one.
    # The low-score box fits the left car perfectly but it is taken: it falls back to nothing.
    gt = boxes((T1, 0, 0, 10, 10, 0, 1.0), (T1, 8, 0, 10, 10, 0, 1.0))
    pseudo = boxes((T1, 2, 0, 10, 10, 0, 0.9), (T1, 0, 0, 10, 10, 0, 0.5))
    # IoU(high, left) = 80/120 = 0.667, IoU(high, right) = 40/160 = 0.25,
    # IoU(low, left) = 1, IoU(low, right) = 20/180 = 0.11.
    m = quality(pseudo, gt, [T1])
    assert m["recall@0.5"] == 0.5
    assert m["precision@0.5"] == 0.5
    # At 0.25, the high box takes the left car and the low box finds nothing it reaches.
    assert m["recall@0.25"] == 0.5


def test_score_is_confidence_times_objectness():
    gt = boxes((T1, 0, 0, 10, 10, 0, 1.0), (T1, 8, 0, 10, 10, 0, 1.0))
    pseudo = boxes((T1, 2, 0, 10, 10, 0, 0.9), (T1, 0, 0, 10, 10, 0, 0.5))
    pseudo["objectness"][pseudo["class_confidence"] == np.float32(0.9)] = 0.1  # 0.09 < 0.5
    # Now the perfect box goes first and takes the left car; the other reaches the right one
    # only at IoU 0.25 (40/160).
    m = quality(pseudo, gt, [T1])
    assert m["recall@0.5"] == 0.5
    assert m["recall@0.25"] == 1.0


def test_several_sequences_and_many_frames():
    rng = np.random.default_rng(0)
    n = 2000
    times = 50_000 * np.arange(1, n + 1, dtype=np.int64)
    gt_a = empty_boxes(n)
    gt_a["t"] = times
    gt_a["x"] = rng.uniform(0, 200, n)
    gt_a["y"] = gt_a["w"] = gt_a["h"] = 20.0
    pseudo_a = gt_a.copy()
    pseudo_a["x"][1::2] += 15  # every other frame: IoU 5*20 / (2*400 - 100) = 1/7
    gt_b = boxes(CAR)
    m = pseudo_label_quality(
        {"a": pseudo_a, "b": boxes()},
        {"a": gt_a, "b": gt_b},
        {"a": times, "b": np.array([T1, T1])},  # duplicates count once
        CLASSES,
    )
    assert m["frames_evaluated"] == n + 1
    assert m["precision@0.5"] == pytest.approx(0.5)
    assert m["recall@0.5"] == pytest.approx((n // 2) / (n + 1))
    assert m["frames_labelled"] == pytest.approx(n / (n + 1))


def test_empty_pseudo_gives_zeros():
    gt = boxes(CAR, PED)
    m = quality(boxes(), gt, [T1])
    for iou in IOU_THRESHOLDS:
        assert m[f"precision@{iou}"] == 0.0
        assert m[f"recall@{iou}"] == 0.0
    assert m["AP"] == 0.0
    assert m["boxes_per_frame"] == 0.0
    assert m["frames_labelled"] == 0.0
    assert m["gt_per_frame"] == 2.0


def test_no_withheld_frames_raises():
    gt = boxes(CAR)
    with pytest.raises(LeodError, match="no withheld label frame"):
        quality(gt, gt, [])


def test_withheld_time_without_ground_truth_raises():
    gt = boxes(CAR)
    with pytest.raises(DataFormatError, match="sequence 's'.*t=1000"):
        quality(gt, gt, [T1 // 1000])  # ms instead of us


def test_missing_sequence_raises():
    gt = boxes(CAR)
    with pytest.raises(LeodError, match="'other' has withheld times but no pseudo labels"):
        pseudo_label_quality({"s": gt}, {"s": gt, "other": gt}, {"other": np.array([T1])}, CLASSES)


def test_bad_class_id_raises():
    gt = boxes(CAR)
    with pytest.raises(DataFormatError, match="pseudo labels of sequence 's': class_id 5"):
        quality(boxes((T1, 0, 0, 5, 5, 5, 1.0)), gt, [T1])


def test_pr_curve_recall_falls_as_threshold_rises():
    gt = boxes(CAR, PED, (T2, 30, 30, 40, 20, 0, 1.0), (T2, 200, 30, 40, 20, 0, 1.0))
    pseudo = boxes(
        (T1, 10, 10, 10, 10, 0, 0.9),  # hit
        (T1, 100, 50, 20, 40, 1, 0.3),  # hit
        (T1, 400, 400, 10, 10, 0, 0.8),  # false
        (T2, 30, 30, 40, 20, 0, 0.6),  # hit
        (T2, 200, 30, 40, 20, 0, 0.1),  # hit
    )
    withheld = {"s": np.array([T1, T2])}
    rows = pr_curve({"s": pseudo}, {"s": gt}, withheld, CLASSES, thresholds=[0.0, 0.2, 0.5, 0.85, 0.95])
    assert [r["threshold"] for r in rows] == [0.0, 0.2, 0.5, 0.85, 0.95]
    recall = [r["recall"] for r in rows]
    assert recall == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert recall == sorted(recall, reverse=True)
    assert [r["precision"] for r in rows] == [0.8, 0.75, pytest.approx(2 / 3), 1.0, 0.0]
    # The top row agrees with the full metric.
    m = pseudo_label_quality({"s": pseudo}, {"s": gt}, withheld, CLASSES)
    assert (rows[0]["precision"], rows[0]["recall"]) == (m["precision@0.5"], m["recall@0.5"])


def test_pr_curve_default_thresholds_and_bad_iou():
    gt = boxes(CAR)
    rows = pr_curve({"s": gt}, {"s": gt}, {"s": np.array([T1])}, CLASSES)
    assert len(rows) == 21
    assert rows[-1]["threshold"] == 1.0 and rows[-1]["recall"] == 1.0  # score 1 * 1 reaches 1
    with pytest.raises(ConfigError, match="IoU threshold"):
        pr_curve({"s": gt}, {"s": gt}, {"s": np.array([T1])}, CLASSES, iou=0.0)
