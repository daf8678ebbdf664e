"""Class confusion matrix at one IoU, with a background row and column.

mAP says how good the ranking is, not what goes wrong. This matrix counts, over the same
evaluation images and filtered boxes as :func:`leod.evaluation.prophesee.evaluate_detection`,
matched pairs (actual, predicted class: matching ignores the class, so off-diagonal cells
are confusions), missed objects (actual, background) and detections on nothing
(background, predicted); it is written in the long CSV that ``dvc plots`` reads.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence

import numba
import numpy as np

from leod.evaluation.config import EvalFilter
from leod.evaluation.prophesee import build_eval_frames
from leod.plumbing.atomic import atomic_path
from leod.plumbing.errors import ConfigError

BACKGROUND = "background"


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) float64 ``x1, y1, x2, y2``."""
    x = boxes["x"].astype(np.float64)
    y = boxes["y"].astype(np.float64)
    return np.stack([x, y, x + boxes["w"], y + boxes["h"]], axis=1)


@numba.njit(cache=True)
def greedy_match(
    gt: np.ndarray, gt_start: np.ndarray, dt: np.ndarray, dt_start: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """For each detection (ordered by image, then descending score) the index of the
    ground-truth box it claims, or -1. A detection takes the still-free box of its image
    with the highest IoU, provided that IoU reaches the threshold (COCO's greedy rule)."""
    matched = np.full(dt.shape[0], -1, dtype=np.int64)
    taken = np.zeros(gt.shape[0], dtype=np.bool_)
    for image in range(gt_start.shape[0] - 1):
        for d in range(dt_start[image], dt_start[image + 1]):
            area_d = (dt[d, 2] - dt[d, 0]) * (dt[d, 3] - dt[d, 1])
            best, best_iou = -1, iou_threshold
            for g in range(gt_start[image], gt_start[image + 1]):
                if taken[g]:
                    continue
                iw = min(dt[d, 2], gt[g, 2]) - max(dt[d, 0], gt[g, 0])
                ih = min(dt[d, 3], gt[g, 3]) - max(dt[d, 1], gt[g, 1])
                if iw <= 0.0 or ih <= 0.0:
                    continue
                inter = iw * ih
                iou = inter / (area_d + (gt[g, 2] - gt[g, 0]) * (gt[g, 3] - gt[g, 1]) - inter)
                if iou >= best_iou and (best < 0 or iou > best_iou):
                    best, best_iou = g, iou
            if best >= 0:
                taken[best] = True
                matched[d] = best
    return matched


def confusion_matrix(
    gt_list: Sequence[np.ndarray],
    dt_list: Sequence[np.ndarray],
    classes: Sequence[str],
    filt: EvalFilter,
    score_threshold: float = 0.3,
    iou_threshold: float = 0.5,
    time_tol_us: int = 50_000,
) -> np.ndarray:
    """Count matches, misses and false detections into a (K+1, K+1) int64 matrix.

    Rows are actual classes, columns predicted ones, index ``K`` is background (the
    background/background cell stays 0). Unlike mAP a count depends on the operating point,
    so detections take part only when their class confidence reaches ``score_threshold``.

    Inputs and filtering are those of ``evaluate_detection`` (same pairing of predictions
    with label timestamps, ignored ground truth removed).
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ConfigError(f"confusion matrix: iou_threshold must be in (0, 1], got {iou_threshold}")
    k = len(classes)
    frames = build_eval_frames(gt_list, dt_list, k, filt, time_tol_us)
    keep = frames.dt["class_confidence"] >= score_threshold
    dt, dt_image = frames.dt[keep], frames.dt_image[keep]
    order = np.lexsort((-dt["class_confidence"], dt_image))
    dt, dt_image = dt[order], dt_image[order]
    bounds = np.arange(frames.num_images + 1)
    matched = greedy_match(
        box_corners(frames.gt),
        np.searchsorted(frames.gt_image, bounds).astype(np.int64),
        box_corners(dt),
        np.searchsorted(dt_image, bounds).astype(np.int64),
        float(iou_threshold),
    )
    gt_class = frames.gt["class_id"].astype(np.int64)
    dt_class = dt["class_id"].astype(np.int64)
    actual = np.where(matched >= 0, gt_class[np.maximum(matched, 0)], k)
    missed = np.ones(len(gt_class), dtype=bool)
    missed[matched[matched >= 0]] = False
    matrix = np.zeros((k + 1, k + 1), dtype=np.int64)
    np.add.at(matrix, (actual, dt_class), 1)
    np.add.at(matrix, (gt_class[missed], k), 1)
    return matrix


def write_confusion_csv(path: str | os.PathLike[str], matrix: np.ndarray, classes: Sequence[str]) -> None:
    """Write ``actual,predicted`` with one row per counted instance (atomically).

    DVC's ``confusion`` template counts rows per (actual, predicted) pair, so the matrix
    is expanded rather than written as cells; ``background`` names the extra index.
    """
    labels = [*classes, BACKGROUND]
    if BACKGROUND in classes or len(set(labels)) != len(labels):
        raise ConfigError(
            f"confusion matrix: class names {list(classes)} must be unique and not '{BACKGROUND}'"
        )
    if matrix.shape != (len(labels), len(labels)):
        raise ConfigError(f"confusion matrix: shape {matrix.shape} does not fit {len(classes)} class(es)")
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["actual", "predicted"])
        for i, actual in enumerate(labels):
            for j, predicted in enumerate(labels):
                writer.writerows([(actual, predicted)] * int(matrix[i, j]))
