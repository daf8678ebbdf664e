"""The Prophesee / RVT detection protocol: box filtering, time pairing and COCO mAP.

Published Gen1 / 1Mpx numbers (RVT, LEOD) all come from the Prophesee toolbox evaluator,
so this module follows it step by step rather than plain COCO: filter small and early
boxes (:func:`filter_boxes`), make each ground-truth timestamp one COCO image
(:func:`build_eval_frames`), run COCO ``bbox`` evaluation (:func:`evaluate_detection`).
Two additions over the toolbox: ``ignore`` ground-truth boxes are removed first, and
LEOD's per-class AP is reported beside ``stats[0:6]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from faster_coco_eval import COCO, COCOeval_faster

from leod.evaluation.config import EvalFilter
from leod.labels.boxes import BOX_DTYPE, validate_boxes
from leod.plumbing.errors import ConfigError, DataFormatError, LeodError

#: Names of ``COCOeval.stats[0:6]`` in the metrics dict, in that order.
METRIC_NAMES = ("AP", "AP50", "AP75", "AP_S", "AP_M", "AP_L")

#: Value pycocotools reports for a metric without any ground truth (kept as is so the
#: metrics dict stays valid JSON, which NaN is not).
UNDEFINED = -1.0


def scaled_filter(filt: EvalFilter, downsample: bool) -> EvalFilter:
    """Return the filter for evaluation at half resolution when ``downsample`` is set.

    RVT evaluates 1Mpx at 640x360 and halves both size thresholds (60/20 -> 30/10); the
    time skip does not depend on resolution.
    """
    if not downsample:
        return filt
    return replace(filt, min_diag=filt.min_diag / 2, min_side=filt.min_side / 2)


def filter_boxes(boxes: np.ndarray, filt: EvalFilter) -> np.ndarray:
    """Keep boxes with ``t > skip``, ``w^2 + h^2 >= diag^2`` and both sides ``>= side``.

    Applied to the ground truth **and** the predictions, as the toolbox does: a small false
    positive is therefore free, and a small object is never required.
    """
    w = boxes["w"].astype(np.float64)
    h = boxes["h"].astype(np.float64)
    keep = (
        (boxes["t"] > filt.skip_first_us)
        & (w * w + h * h >= float(filt.min_diag) ** 2)
        & (w >= filt.min_side)
        & (h >= filt.min_side)
    )
    return boxes[keep]


@dataclass(frozen=True)
class EvalFrames:
    """Ground truth and detections regrouped into evaluation images.

    Images are numbered ``0..num_images-1`` over all sequences in order. Both box arrays
    are grouped by image (``*_image`` is non-decreasing). A prediction that lies within
    the tolerance of two label times appears once per image, as in the toolbox.
    """

    gt: np.ndarray
    gt_image: np.ndarray
    dt: np.ndarray
    dt_image: np.ndarray
    num_images: int


def _check_sequence(boxes: np.ndarray, source: str, num_classes: int) -> None:
    """Reject arrays that would silently corrupt the pairing or the COCO categories."""
    if boxes.dtype != BOX_DTYPE:
        raise DataFormatError(f"{source}: boxes must have BOX_DTYPE (see leod.labels.boxes.to_internal)")
    validate_boxes(boxes, source)
    if len(boxes) and int(boxes["class_id"].max()) >= num_classes:
        raise DataFormatError(
            f"{source}: class_id {int(boxes['class_id'].max())} out of range for {num_classes} class(es)"
        )


def _expand_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten the index ranges ``[lo[i], hi[i])``: return (indices, range number of each)."""
    counts = hi - lo
    owner = np.repeat(np.arange(len(lo), dtype=np.int64), counts)
    first_of_owner = np.repeat(np.cumsum(counts) - counts, counts)
    indices = np.repeat(lo, counts) + (np.arange(int(counts.sum()), dtype=np.int64) - first_of_owner)
    return indices, owner


def build_eval_frames(
    gt_list: Sequence[np.ndarray],
    dt_list: Sequence[np.ndarray],
    num_classes: int,
    filt: EvalFilter,
    time_tol_us: int = 50_000,
) -> EvalFrames:
    """Filter boxes and pair detections with ground-truth timestamps.

    Every distinct ground-truth timestamp becomes one COCO "image": its ground truth is the
    boxes stamped exactly then, its detections all predictions within ``[ts - time_tol,
    ts + time_tol]`` (inclusive); times without ground truth are not evaluated, so false
    positives there cost nothing. Ground-truth boxes with ``ignore=True`` (regions that are
    neither objects nor background) are dropped first. The detection window of a
    timestamp is found with two binary searches on the time-sorted predictions, so the
    cost is O((N + M) log M) however long the sequences are. With labels closer together
    than ``time_tol_us`` a prediction enters several images (toolbox behaviour); pass a
    tolerance below the label period to avoid that.
    """
    if len(gt_list) != len(dt_list):
        raise LeodError(
            f"evaluation: {len(gt_list)} ground-truth sequence(s) but {len(dt_list)} prediction sequence(s)"
        )
    if time_tol_us < 0:
        raise ConfigError(f"evaluation: time_tol_us must be >= 0, got {time_tol_us}")
    gts, gt_images, dts, dt_images = [], [], [], []
    offset = 0
    for seq, (gt, dt) in enumerate(zip(gt_list, dt_list, strict=True)):
        _check_sequence(gt, f"ground truth of sequence {seq}", num_classes)
        _check_sequence(dt, f"predictions of sequence {seq}", num_classes)
        gt = filter_boxes(gt[~gt["ignore"]], filt)
        dt = filter_boxes(dt, filt)
        stamps, gt_local = np.unique(gt["t"], return_inverse=True)
        lo = np.searchsorted(dt["t"], stamps - time_tol_us, side="left")
        hi = np.searchsorted(dt["t"], stamps + time_tol_us, side="right")
        dt_index, dt_local = _expand_ranges(lo.astype(np.int64), hi.astype(np.int64))
        gts.append(gt)
        gt_images.append(gt_local.astype(np.int64) + offset)
        dts.append(dt[dt_index])
        dt_images.append(dt_local + offset)
        offset += len(stamps)
    return EvalFrames(
        gt=np.concatenate(gts) if gts else np.zeros(0, BOX_DTYPE),
        gt_image=np.concatenate(gt_images) if gt_images else np.zeros(0, np.int64),
        dt=np.concatenate(dts) if dts else np.zeros(0, BOX_DTYPE),
        dt_image=np.concatenate(dt_images) if dt_images else np.zeros(0, np.int64),
        num_images=offset,
    )


@dataclass(frozen=True)
class EvalResult:
    """COCO metrics as plain floats, and the COCO summary table as text.

    ``metrics`` holds :data:`METRIC_NAMES` and ``AP_<class name>`` per class; a metric
    without ground truth (no small boxes, a class absent after filtering) is
    :data:`UNDEFINED` (-1), as pycocotools reports it.
    """

    metrics: dict[str, float]
    summary: str
    num_images: int


def _coco_annotations(boxes: np.ndarray, image: np.ndarray) -> list[dict[str, Any]]:
    """COCO annotation dicts (1-based image and category ids) without ids or extras."""
    bbox = np.stack([boxes["x"], boxes["y"], boxes["w"], boxes["h"]], axis=1).astype(np.float64)
    images = (image + 1).tolist()
    categories = (boxes["class_id"].astype(np.int64) + 1).tolist()
    return [
        {"image_id": i, "category_id": c, "bbox": b}
        for i, c, b in zip(images, categories, bbox.tolist(), strict=True)
    ]


def _quiet(*_args: Any, **_kwargs: Any) -> None:
    """faster-coco-eval's print hook for progress messages: drop them."""


def _in_memory_coco(dataset: dict[str, Any]) -> COCO:
    coco = COCO(print_function=_quiet)
    coco.dataset = dataset
    coco.createIndex()
    return coco


def _per_class_ap(evaluator: COCOeval_faster, k: int) -> float:
    """Mean precision of class ``k`` over IoU 0.5:0.95 and all recall points (area all,
    100 detections), skipping the -1 entries COCO leaves where there is no GT."""
    precision = evaluator.eval["precision"][:, :, k, 0, -1]
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else UNDEFINED


def evaluate_detection(
    gt_list: Sequence[np.ndarray],
    dt_list: Sequence[np.ndarray],
    classes: Sequence[str],
    height: int,
    width: int,
    filt: EvalFilter,
    time_tol_us: int = 50_000,
) -> EvalResult:
    """COCO mAP of predictions against ground truth under the Prophesee protocol.

    ``category_id = class_id + 1`` and ``score = class_confidence``: RVT uses the class
    confidence alone as the COCO score (objectness x class confidence only gates NMS
    upstream). faster-coco-eval's C++ ``COCOeval_faster`` is 3-7x faster than pycocotools
    (the toolbox's evaluator) with the same numbers up to float64 rounding
    (tests/test_evaluation.py pins them within 1e-12).

    ``gt_list[i]`` and ``dt_list[i]`` are the time-sorted boxes of sequence ``i``;
    ``filt`` must already be scaled to the evaluation resolution (see
    :func:`scaled_filter`). ``height`` and ``width`` only fill the COCO image records.

    Raises :class:`LeodError` when no ground truth survives filtering, since mAP is then
    undefined (usually a ``skip_first_us`` longer than the clips). With ground truth but
    no detections every defined AP is 0.
    """
    keys = [*METRIC_NAMES, *(f"AP_{name}" for name in classes)]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"evaluation: class names {list(classes)} give duplicate metric names")
    frames = build_eval_frames(gt_list, dt_list, len(classes), filt, time_tol_us)
    if frames.num_images == 0:
        raise LeodError(
            f"evaluation: no ground-truth box left after filtering {len(gt_list)} sequence(s) with "
            f"skip_first_us={filt.skip_first_us}, min_diag={filt.min_diag}, min_side={filt.min_side}; "
            "mAP is undefined"
        )
    images = [{"id": i + 1, "height": int(height), "width": int(width)} for i in range(frames.num_images)]
    categories = [{"id": k + 1, "name": name, "supercategory": "none"} for k, name in enumerate(classes)]
    gt_anns = _coco_annotations(frames.gt, frames.gt_image)
    areas = (frames.gt["w"].astype(np.float64) * frames.gt["h"]).tolist()
    for ann_id, (ann, area) in enumerate(zip(gt_anns, areas, strict=True), start=1):
        ann.update(id=ann_id, area=area, iscrowd=0)
    dt_anns = _coco_annotations(frames.dt, frames.dt_image)
    for ann, score in zip(dt_anns, frames.dt["class_confidence"].tolist(), strict=True):
        ann["score"] = score

    # progress messages are dropped; the summary table is returned, never printed
    coco_gt = _in_memory_coco({"images": images, "annotations": gt_anns, "categories": categories})
    if dt_anns:
        coco_dt = coco_gt.loadRes(dt_anns)
    else:  # an empty detection set, built like the ground truth
        coco_dt = _in_memory_coco({"images": images, "annotations": [], "categories": categories})
    evaluator = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=_quiet)
    evaluator.evaluate()
    evaluator.accumulate()
    lines: list[str] = []
    evaluator.print_function = lines.append
    evaluator.summarize()

    metrics = {name: float(value) for name, value in zip(METRIC_NAMES, evaluator.stats[:6], strict=True)}
    for k, name in enumerate(classes):
        metrics[f"AP_{name}"] = _per_class_ap(evaluator, k)
    return EvalResult(metrics=metrics, summary="\n".join(lines), num_images=frames.num_images)
