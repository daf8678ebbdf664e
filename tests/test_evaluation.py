"""Tests of the Prophesee evaluation protocol and the confusion matrix.

Expected APs are derived by hand from pycocotools' rules: 10 IoU thresholds
0.50:0.05:0.95, 101 recall points 0:0.01:1, precision made monotone from the right, and
the precision at a recall point is 0 once the point exceeds the highest recall reached.
So a threshold where every GT is found with no higher-scored false positive gives AP 1,
and one where half of the GT is found first gives 51/101 (recall points 0.00 .. 0.50).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest

# pycocotools, the Prophesee toolbox's evaluator, is the reference that pins the numbers
# of the faster evaluator the pipeline uses
from pycocotools.coco import COCO as RefCOCO
from pycocotools.cocoeval import COCOeval as RefCOCOeval

from leod.evaluation.config import EvalFilter
from leod.evaluation.confusion import confusion_matrix, write_confusion_csv
from leod.evaluation.prophesee import (
    UNDEFINED,
    build_eval_frames,
    evaluate_detection,
    filter_boxes,
    scaled_filter,
)
from leod.labels.boxes import empty_boxes
from leod.plumbing.errors import ConfigError, DataFormatError, LeodError

NO_FILTER = EvalFilter(skip_first_us=0, min_diag=0.0, min_side=0.0)
HALF = 51 / 101  # AP at one IoU threshold when the top-scored half of the GT is found


def boxes(*rows: tuple) -> np.ndarray:
    """Boxes from ``(t, x, y, w, h, class_id, score[, ignore])`` rows."""
    out = empty_boxes(len(rows))
    for i, row in enumerate(rows):
        t, x, y, w, h, cls, score, *ignore = row
        out[i] = (t, x, y, w, h, cls, score, 0, score, bool(ignore and ignore[0]))
    return out


def evaluate(gt: np.ndarray, dt: np.ndarray, classes=("car",), filt=NO_FILTER, **kw) -> dict[str, float]:
    return evaluate_detection([gt], [dt], list(classes), 480, 640, filt, **kw).metrics


# Two images of one 100x100 GT each (area 10000 > 96^2: "large").
TWO_GT = boxes((1_000_000, 10, 10, 100, 100, 0, 1.0), (2_000_000, 200, 100, 100, 100, 0, 1.0))


def test_known_ap_from_hand_derivation():
    # Image 1: perfect detection (score .9). Image 2: detection of IoU 72/100 = 0.72 (score .8).
    # IoU thresholds .50-.70 (5 of 10): both TP -> AP_t = 1.
    # Thresholds .75-.95 (5 of 10): TP then FP -> recall 0.5 at precision 1 -> AP_t = 51/101.
    dt = boxes((1_000_000, 10, 10, 100, 100, 0, 0.9), (2_000_000, 200, 100, 100, 72, 0, 0.8))
    result = evaluate_detection([TWO_GT], [dt], ["car"], 480, 640, NO_FILTER)
    m = result.metrics
    assert m["AP"] == pytest.approx((5 * 1.0 + 5 * HALF) / 10)  # 76/101
    assert m["AP50"] == pytest.approx(1.0)
    assert m["AP75"] == pytest.approx(HALF)
    assert m["AP_L"] == pytest.approx(m["AP"])
    assert m["AP_S"] == UNDEFINED and m["AP_M"] == UNDEFINED  # no small / medium GT
    assert m["AP_car"] == pytest.approx(m["AP"])
    assert all(type(v) is float for v in m.values())
    assert result.num_images == 2
    assert "Average Precision" in result.summary and "0.752" in result.summary


def test_half_the_gt_found_gives_51_over_101(capfd, caplog):
    dt = boxes((1_000_000, 10, 10, 100, 100, 0, 0.9))
    with caplog.at_level(logging.INFO):
        m = evaluate(TWO_GT, dt)
    assert m["AP"] == pytest.approx(HALF) and m["AP50"] == pytest.approx(HALF)
    out, err = capfd.readouterr()
    assert (
        out == err == "" and caplog.records == []
    )  # the COCO evaluator prints nothing, logs only debug lines


def random_sequences(
    seed: int, sequences: int, frames: int, boxes_per_frame: float, num_classes: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Random ground truth (about ``boxes_per_frame`` per 50 ms frame, a tenth ignored) and
    detections (jittered copies of most GT boxes, missed ones, and 1.5x as many false
    positives, random scores and classes), sizes from small to large."""
    rng = np.random.default_rng(seed)
    gts, dts = [], []
    for _ in range(sequences):
        counts = rng.poisson(boxes_per_frame, frames)
        n = int(counts.sum())
        gt = empty_boxes(n)
        gt["t"] = np.repeat(np.arange(1, frames + 1) * 50_000, counts)
        gt["x"], gt["y"] = rng.uniform(0, 560, n), rng.uniform(0, 400, n)
        gt["w"], gt["h"] = np.exp(rng.uniform(1.5, 5.0, (2, n)))
        gt["class_id"] = rng.integers(0, num_classes, n)
        gt["ignore"] = rng.random(n) < 0.1
        found = gt[rng.random(n) < 0.8].copy()
        for key in ("x", "y", "w", "h"):
            found[key] += rng.normal(0, 0.1, len(found)) * found["w"]
        found["class_id"] = np.where(
            rng.random(len(found)) < 0.9, found["class_id"], rng.integers(0, num_classes)
        )
        fp = empty_boxes(int(1.5 * n))
        fp["t"] = rng.choice(gt["t"], len(fp)) if n else 0
        fp["x"], fp["y"] = rng.uniform(0, 560, len(fp)), rng.uniform(0, 400, len(fp))
        fp["w"], fp["h"] = np.exp(rng.uniform(1.5, 5.0, (2, len(fp))))
        fp["class_id"] = rng.integers(0, num_classes, len(fp))
        dt = np.concatenate([found, fp])
        dt["class_confidence"] = rng.random(len(dt)).astype(np.float32)
        dt["w"], dt["h"] = np.maximum(dt["w"], 0.5), np.maximum(dt["h"], 0.5)
        dt["ignore"] = False
        gts.append(gt)
        dts.append(dt[np.argsort(dt["t"], kind="stable")])
    return gts, dts


def pycocotools_metrics(
    gt_list: Sequence[np.ndarray],
    dt_list: Sequence[np.ndarray],
    classes: Sequence[str],
    filt: EvalFilter,
    tol: int,
) -> dict[str, float]:
    """The metrics of :func:`evaluate_detection`, computed by pycocotools on the same images."""
    frames = build_eval_frames(gt_list, dt_list, len(classes), filt, tol)

    def anns(b: np.ndarray, image: np.ndarray) -> list[dict]:
        return [
            {
                "image_id": int(i) + 1,
                "category_id": int(r["class_id"]) + 1,
                "bbox": [float(r[k]) for k in "xywh"],
            }
            for r, i in zip(b, image, strict=True)
        ]

    gt_anns = anns(frames.gt, frames.gt_image)
    for ann_id, ann in enumerate(gt_anns, start=1):
        ann.update(id=ann_id, area=ann["bbox"][2] * ann["bbox"][3], iscrowd=0)
    dt_anns = anns(frames.dt, frames.dt_image)
    for ann, score in zip(dt_anns, frames.dt["class_confidence"].tolist(), strict=True):
        ann["score"] = score
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = RefCOCO()
        coco_gt.dataset = {
            "images": [{"id": i + 1, "height": 480, "width": 640} for i in range(frames.num_images)],
            "annotations": gt_anns,
            "categories": [{"id": k + 1, "name": c} for k, c in enumerate(classes)],
        }
        coco_gt.createIndex()
        ev = RefCOCOeval(coco_gt, coco_gt.loadRes(dt_anns), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    metrics = dict(zip(("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L"), map(float, ev.stats[:6]), strict=True))
    for k, name in enumerate(classes):
        precision = ev.eval["precision"][:, :, k, 0, -1]
        metrics[f"AP_{name}"] = (
            float(precision[precision > -1].mean()) if (precision > -1).any() else UNDEFINED
        )
    return metrics


@pytest.mark.parametrize(
    ("seed", "classes"), [(0, ["car", "pedestrian"]), (1, ["a", "b", "c"]), (2, ["car"])]
)
def test_metrics_equal_pycocotools_on_random_sets(seed: int, classes: list[str]) -> None:
    gts, dts = random_sequences(seed, sequences=3, frames=40, boxes_per_frame=4, num_classes=len(classes))
    filt = EvalFilter(skip_first_us=100_000, min_diag=8.0, min_side=3.0)
    got = evaluate_detection(gts, dts, classes, 480, 640, filt, time_tol_us=24_999).metrics
    # equal up to float64 rounding: faster-coco-eval's C++ precision table differs from
    # pycocotools' in the last bit (<= 2.2e-16) at some recall points
    assert got == pytest.approx(pycocotools_metrics(gts, dts, classes, filt, 24_999), rel=0, abs=1e-12)
    assert 0.01 < got["AP"] < 0.95 and got["AP_S"] != UNDEFINED  # a non-trivial comparison


def test_no_detections_gives_zero_ap():
    m = evaluate(TWO_GT, empty_boxes(0))
    assert m["AP"] == 0.0 and m["AP50"] == 0.0 and m["AP_car"] == 0.0


def test_no_ground_truth_is_an_error():
    with pytest.raises(LeodError, match="no ground-truth box left"):
        evaluate(TWO_GT, TWO_GT, filt=EvalFilter(skip_first_us=3_000_000, min_diag=0.0, min_side=0.0))


def test_time_tolerance_window_is_inclusive_50ms():
    gt = TWO_GT[:1]  # label at 1.0 s
    on_edge = boxes((1_050_000, 10, 10, 100, 100, 0, 0.9))
    too_late = boxes((1_060_000, 10, 10, 100, 100, 0, 0.9))
    too_early = boxes((940_000, 10, 10, 100, 100, 0, 0.9))
    assert evaluate(gt, on_edge)["AP"] == pytest.approx(1.0)
    assert evaluate(gt, too_late)["AP"] == 0.0
    assert evaluate(gt, too_early)["AP"] == 0.0
    assert evaluate(gt, too_late, time_tol_us=60_000)["AP"] == pytest.approx(1.0)


def test_prediction_near_two_labels_enters_both_images():
    gt = boxes((1_000_000, 10, 10, 100, 100, 0, 1.0), (1_050_000, 300, 10, 100, 100, 0, 1.0))
    dt = boxes((1_000_000, 10, 10, 100, 100, 0, 0.9), (1_050_000, 300, 10, 100, 100, 0, 0.8))
    frames = build_eval_frames([gt], [dt], 1, NO_FILTER)
    assert frames.num_images == 2
    assert frames.gt_image.tolist() == [0, 1]
    assert frames.dt_image.tolist() == [0, 0, 1, 1]
    assert frames.dt["t"].tolist() == [1_000_000, 1_050_000, 1_000_000, 1_050_000]


def test_images_number_across_sequences():
    frames = build_eval_frames([TWO_GT, TWO_GT[:1]], [empty_boxes(0), TWO_GT[:1]], 1, NO_FILTER)
    assert frames.num_images == 3
    assert frames.gt_image.tolist() == [0, 1, 2]
    assert frames.dt_image.tolist() == [2]


def test_class_ids_map_to_categories_with_per_class_ap():
    # car (class 0): perfect -> AP 1. pedestrian (class 1): IoU 0.72 -> AP 1 at 5 of 10
    # thresholds, 0 at the others (its only GT is never found) -> 0.5.
    gt = boxes((1_000_000, 10, 10, 100, 100, 0, 1.0), (1_000_000, 300, 100, 50, 100, 1, 1.0))
    dt = boxes((1_000_000, 10, 10, 100, 100, 0, 0.9), (1_000_000, 300, 100, 50, 72, 1, 0.8))
    m = evaluate(gt, dt, classes=("car", "pedestrian"))
    assert m["AP_car"] == pytest.approx(1.0)
    assert m["AP_pedestrian"] == pytest.approx(0.5)
    assert m["AP"] == pytest.approx(0.75)
    # A correct box with the wrong class is a miss for one class and a FP for the other.
    swapped = dt.copy()
    swapped["class_id"] = [1, 0]
    assert evaluate(gt, swapped, classes=("car", "pedestrian"))["AP"] == 0.0


def test_class_without_gt_is_undefined_and_excluded_from_map():
    dt = boxes((1_000_000, 10, 10, 100, 100, 0, 0.9), (1_000_000, 400, 10, 60, 60, 1, 0.95))
    m = evaluate(TWO_GT[:1], dt, classes=("car", "pedestrian"))
    assert m["AP_pedestrian"] == UNDEFINED
    assert m["AP"] == pytest.approx(1.0)


def test_ignored_gt_is_excluded():
    gt = boxes((1_000_000, 10, 10, 100, 100, 0, 1.0), (1_000_000, 300, 10, 100, 100, 0, 1.0, True))
    dt = boxes((1_000_000, 10, 10, 100, 100, 0, 0.9))
    assert evaluate(gt, dt)["AP"] == pytest.approx(1.0)
    gt_counted = gt.copy()
    gt_counted["ignore"] = False
    assert evaluate(gt_counted, dt)["AP"] == pytest.approx(HALF)
    # An image whose only GT is ignored is not evaluated: its false positive is free.
    only_ignored = boxes((2_000_000, 10, 10, 100, 100, 0, 1.0, True))
    fp = boxes((2_000_000, 300, 300, 100, 100, 0, 0.99))
    both_gt = np.concatenate([gt[:1], only_ignored])
    assert evaluate(both_gt, np.concatenate([dt, fp]))["AP"] == pytest.approx(1.0)


def test_filter_boxes_rule():
    filt = EvalFilter(skip_first_us=500_000, min_diag=30.0, min_side=10.0)
    b = boxes(
        (500_000, 0, 0, 50, 50, 0, 1.0),  # t == skip: dropped (strict >)
        (500_001, 0, 0, 50, 50, 0, 1.0),  # kept
        (600_000, 0, 0, 18, 24, 0, 1.0),  # diag exactly 30: kept
        (600_000, 0, 0, 18, 23.9, 0, 1.0),  # diag < 30: dropped
        (600_000, 0, 0, 10, 40, 0, 1.0),  # side exactly 10: kept
        (600_000, 0, 0, 40, 9.9, 0, 1.0),  # side < 10: dropped
    )
    kept = filter_boxes(b, filt)
    assert kept["t"].tolist() == [500_001, 600_000, 600_000]
    assert kept["h"].tolist() == pytest.approx([50, 24, 40])


def test_filter_applies_to_predictions_too():
    filt = EvalFilter(skip_first_us=0, min_diag=30.0, min_side=10.0)
    tiny_fp = boxes((1_000_000, 400, 300, 5, 5, 0, 0.99))  # would outrank the TP
    dt = np.concatenate([boxes((1_000_000, 10, 10, 100, 100, 0, 0.9)), tiny_fp])
    assert evaluate(TWO_GT[:1], dt, filt=filt)["AP"] == pytest.approx(1.0)
    assert evaluate(TWO_GT[:1], dt)["AP"] < 1.0


def test_scaled_filter_halves_sizes_only():
    f = EvalFilter(skip_first_us=500_000, min_diag=60.0, min_side=20.0)
    assert scaled_filter(f, downsample=True) == EvalFilter(500_000, 30.0, 10.0)
    assert scaled_filter(f, downsample=False) is f


def test_bad_inputs_raise_clear_errors():
    unsorted = TWO_GT[::-1].copy()
    with pytest.raises(DataFormatError, match="ground truth of sequence 0.*not sorted"):
        evaluate(unsorted, empty_boxes(0))
    bad_class = TWO_GT.copy()
    bad_class["class_id"] = 2
    with pytest.raises(DataFormatError, match="predictions of sequence 0: class_id 2 out of range"):
        evaluate(TWO_GT, bad_class, classes=("car", "pedestrian"))
    with pytest.raises(LeodError, match="2 ground-truth sequence"):
        evaluate_detection([TWO_GT, TWO_GT], [TWO_GT], ["car"], 480, 640, NO_FILTER)
    with pytest.raises(ConfigError, match="duplicate metric names"):
        evaluate(TWO_GT, TWO_GT, classes=("car", "car"))


CLASSES = ["car", "pedestrian"]
# One image: car A, pedestrian B, car C.
TOY_GT = boxes(
    (1_000_000, 0, 0, 100, 100, 0, 1.0),
    (1_000_000, 200, 0, 100, 100, 1, 1.0),
    (1_000_000, 400, 0, 100, 100, 0, 1.0),
)
TOY_DT = boxes(
    (1_000_000, 0, 0, 100, 100, 0, 0.9),  # car on A -> (car, car)
    (1_000_000, 205, 0, 100, 100, 0, 0.8),  # car on pedestrian B -> (pedestrian, car)
    (1_000_000, 600, 300, 50, 50, 1, 0.7),  # on nothing -> (background, pedestrian)
    (1_000_000, 5, 0, 100, 100, 0, 0.6),  # A already taken -> (background, car)
    (1_000_000, 400, 0, 100, 100, 0, 0.2),  # below the score threshold: C is missed
)
# rows: actual car, pedestrian, background; columns: predicted car, pedestrian, background
TOY_MATRIX = [[1, 0, 1], [1, 0, 0], [1, 1, 0]]


def test_confusion_matrix_counts():
    matrix = confusion_matrix([TOY_GT], [TOY_DT], CLASSES, NO_FILTER)
    assert matrix.dtype == np.int64
    assert matrix.tolist() == TOY_MATRIX
    # With the low-score detection allowed, C is found.
    low = confusion_matrix([TOY_GT], [TOY_DT], CLASSES, NO_FILTER, score_threshold=0.1)
    assert low.tolist() == [[2, 0, 0], [1, 0, 0], [1, 1, 0]]


def test_confusion_greedy_takes_best_iou_by_score_order():
    gt = boxes((1_000_000, 0, 0, 100, 100, 0, 1.0), (1_000_000, 40, 0, 100, 100, 1, 1.0))
    # The top-scored detection overlaps the pedestrian more than the car (IoU 0.82 vs 0.54)
    # and takes it; the second (IoU 0.67 with the car, 0.67 with the taken pedestrian) gets the car.
    dt = boxes((1_000_000, 30, 0, 100, 100, 0, 0.9), (1_000_000, 20, 0, 100, 100, 0, 0.8))
    assert confusion_matrix([gt], [dt], CLASSES, NO_FILTER).tolist() == [[1, 0, 0], [1, 0, 0], [0, 0, 0]]
    # Out of the time window the detections count for nothing (that time has no GT).
    late = dt.copy()
    late["t"] += 60_000
    assert confusion_matrix([gt], [late], CLASSES, NO_FILTER).tolist() == [[0, 0, 1], [0, 0, 1], [0, 0, 0]]


def test_confusion_csv_is_one_row_per_instance(tmp_path):
    matrix = np.array(TOY_MATRIX)
    path = tmp_path / "plots" / "confusion.csv"
    write_confusion_csv(path, matrix, CLASSES)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == matrix.sum() == 5
    labels = [*CLASSES, "background"]
    expected = Counter({(labels[i], labels[j]): int(n) for (i, j), n in np.ndenumerate(matrix) if n})
    assert Counter((r["actual"], r["predicted"]) for r in rows) == expected
    assert [p.name for p in path.parent.iterdir()] == ["confusion.csv"]  # no temporary left
    with pytest.raises(ConfigError, match="background"):
        write_confusion_csv(path, np.zeros((2, 2), int), ["background"])
    with pytest.raises(ConfigError, match="shape"):
        write_confusion_csv(path, np.zeros((2, 2), int), CLASSES)
