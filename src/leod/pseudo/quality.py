"""How good are the pseudo labels? Measured against the ground truth the split withheld.

LEOD's ``val_dst.py`` answers this after every round; this replaces it. Only withheld label
frames count (at kept frames the pseudo labels *are* the ground truth), ``ignore`` boxes
are left out of every ratio, and matching is one-to-one (COCO's greedy rule), where LEOD's
``teacher_AP`` / ``teacher_AR`` credit every box that overlaps any box: duplicates become
false positives and an object gets at most one hit, which is what a student receives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from leod.data.sequence import SequenceData
from leod.evaluation.config import EvalFilter
from leod.evaluation.confusion import box_corners, greedy_match
from leod.evaluation.ground_truth import ground_truth
from leod.evaluation.prophesee import UNDEFINED, evaluate_detection
from leod.labels.boxes import BOX_DTYPE, to_representation_pixels, validate_boxes
from leod.plumbing.errors import ConfigError, DataFormatError, LeodError
from leod.pseudo.soft import soften
from leod.pseudo.store import SequenceLabels

#: IoU thresholds of the precision / recall keys (LEOD's ``val_dst.py`` uses the same three).
IOU_THRESHOLDS = (0.25, 0.5, 0.75)

#: Default score thresholds of :func:`pr_curve`: 0, 0.05, ..., 1.
PR_THRESHOLDS: tuple[float, ...] = tuple(float(v) for v in np.linspace(0.0, 1.0, 21))

#: ``recall@0.5/speed:<bin>`` and ``/size:<bin>`` split the withheld GT objects by the speed of
#: their box centre (representation px/s, to the same track's next label frame, or its previous
#: one at the track's end) and their size sqrt(w*h) (px): upper edges, each bin from the one
#: before. Under 2 px/s an object is still (a stopped one fires no events); under 20 px/s it
#: moves less than a pixel per 50-ms window. A track seen at one label frame has no speed and
#: is in no speed bin (the speed shares then add up to less than 1).
BREAKDOWN_IOU = 0.5
SPEED_BINS: tuple[tuple[str, float], ...] = (("still", 2.0), ("slow", 20.0), ("fast", math.inf))
SIZE_BINS: tuple[tuple[str, float], ...] = (("small", 8.0), ("medium", 16.0), ("large", math.inf))

#: Every withheld frame is evaluated: no time skip, no size filter.
_NO_FILTER = EvalFilter(skip_first_us=0, min_diag=0.0, min_side=0.0)


@dataclass(frozen=True)
class _Withheld:
    """The non-ignore boxes at withheld frames of all sequences.

    Frames are numbered ``0..num_frames-1`` over the sequences in sorted name order;
    ``*_frame`` gives each box its frame number.
    """

    gt: np.ndarray
    gt_frame: np.ndarray
    gt_speed: np.ndarray  # px/s of each GT box (NaN: a track seen at one label frame only)
    dt: np.ndarray
    dt_frame: np.ndarray
    num_ignore: int
    num_frames: int


def _check_boxes(boxes: np.ndarray, source: str, num_classes: int) -> None:
    """Reject arrays that the frame selection or the class bincounts would misread."""
    if not isinstance(boxes, np.ndarray) or boxes.dtype != BOX_DTYPE:
        raise DataFormatError(
            f"{source}: boxes must be a BOX_DTYPE array (see leod.labels.boxes.to_internal)"
        )
    validate_boxes(boxes, source)
    classes = boxes["class_id"][~boxes["ignore"]]
    if len(classes) and int(classes.max()) >= num_classes:
        raise DataFormatError(
            f"{source}: class_id {int(classes.max())} out of range for {num_classes} class(es)"
        )


def _withheld_frame_times(times: np.ndarray, name: str) -> np.ndarray:
    """The sorted distinct withheld times of sequence ``name`` as int64."""
    times = np.asarray(times)
    if times.ndim != 1 or (times.size and times.dtype.kind not in "iu"):
        raise DataFormatError(
            f"withheld_times['{name}']: expected a 1-D integer array of times in us, "
            f"got shape {times.shape} dtype {times.dtype}"
        )
    return np.unique(times.astype(np.int64))


def _select_withheld(
    pseudo: Mapping[str, np.ndarray],
    gt: Mapping[str, np.ndarray],
    withheld_times: Mapping[str, np.ndarray],
    num_classes: int,
) -> _Withheld:
    """Keep the boxes at withheld frames and number those frames over all sequences.

    Frames match by equal ``t`` (pseudo labels are stamped at label-frame times); a withheld
    time without any GT box means the inputs disagree on time units or sequence, an error
    rather than a silent "nothing found". Pseudo boxes flagged ``ignore`` (LEOD's short-track
    and inpainted regions) are only counted; ignore GT boxes are left out, as the evaluator
    does, so a pseudo box on one is a false positive in the ratios and the AP alike.
    """
    gts, gt_frames, gt_speeds, dts, dt_frames = [], [], [], [], []
    num_ignore = 0
    offset = 0
    for name in sorted(withheld_times):
        for inputs, what in ((pseudo, "pseudo labels"), (gt, "ground truth")):
            if name not in inputs:
                raise LeodError(f"pseudo-label quality: sequence '{name}' has withheld times but no {what}")
        seq_gt, seq_dt = gt[name], pseudo[name]
        _check_boxes(seq_gt, f"ground truth of sequence '{name}'", num_classes)
        _check_boxes(seq_dt, f"pseudo labels of sequence '{name}'", num_classes)
        times = _withheld_frame_times(withheld_times[name], name)
        unlabelled = ~np.isin(times, seq_gt["t"])
        if unlabelled.any():
            raise DataFormatError(
                f"sequence '{name}': {int(unlabelled.sum())} withheld time(s) without any ground-truth box "
                f"(first t={int(times[unlabelled][0])} us); withheld_times and gt must use the same "
                "label-frame times"
            )
        at_gt = ~seq_gt["ignore"] & np.isin(seq_gt["t"], times)
        gt_speeds.append(_track_speed(seq_gt)[at_gt])
        seq_gt = seq_gt[at_gt]
        at_withheld = seq_dt[np.isin(seq_dt["t"], times)]
        num_ignore += int(at_withheld["ignore"].sum())
        seq_dt = at_withheld[~at_withheld["ignore"]]
        gts.append(seq_gt)
        dts.append(seq_dt)
        gt_frames.append(offset + np.searchsorted(times, seq_gt["t"]).astype(np.int64))
        dt_frames.append(offset + np.searchsorted(times, seq_dt["t"]).astype(np.int64))
        offset += len(times)
    if offset == 0:
        raise LeodError(
            f"pseudo-label quality: no withheld label frame in {len(withheld_times)} sequence(s); "
            "pseudo labels can only be judged where the split withheld ground truth (a 'full' split "
            "withholds none)"
        )
    return _Withheld(
        gt=np.concatenate(gts),
        gt_frame=np.concatenate(gt_frames),
        gt_speed=np.concatenate(gt_speeds),
        dt=np.concatenate(dts),
        dt_frame=np.concatenate(dt_frames),
        num_ignore=num_ignore,
        num_frames=offset,
    )


def _track_speed(boxes: np.ndarray) -> np.ndarray:
    """Speed (px/s) of each box's centre to its track's next label frame (at the track's last
    frame: from its previous one); NaN for a track with a single frame."""
    order = np.lexsort((boxes["t"], boxes["track_id"]))
    b = boxes[order]
    centre_x, centre_y = b["x"] + b["w"] / 2, b["y"] + b["h"] / 2
    dt = np.diff(b["t"]).astype(np.float64)
    same = (b["track_id"][1:] == b["track_id"][:-1]) & (dt > 0)
    step = np.full(len(dt), np.nan)
    step[same] = np.hypot(np.diff(centre_x), np.diff(centre_y))[same] / dt[same] * 1e6
    to_next, from_prev = np.append(step, np.nan), np.insert(step, 0, np.nan)
    speed = np.empty(len(b))
    speed[order] = np.where(np.isnan(to_next), from_prev, to_next)
    return speed


def _binned(values: np.ndarray, bins: Sequence[tuple[str, float]]) -> dict[str, np.ndarray]:
    """A mask per named bin (upper edges, each bin from the previous edge); NaN in none."""
    masks, low = {}, -math.inf
    for name, high in bins:
        masks[name] = (values >= low) & (values < high)
        low = high
    return masks


def _scores(boxes: np.ndarray) -> np.ndarray:
    """The pseudo-label score LEOD thresholds on: class confidence times objectness."""
    return boxes["class_confidence"].astype(np.float64) * boxes["objectness"]


def _match(w: _Withheld, num_classes: int, iou: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one greedy matching per (frame, class): (matched flag of each pseudo box,
    matched flag of each GT box), both in the order of ``w.dt`` / ``w.gt``.

    Each (frame, class) pair becomes one group, so the class-agnostic per-image kernel of
    the confusion matrix matches within a class; pseudo boxes are sorted by group, then
    descending score, which is the order that kernel visits them in.
    """
    dt_key = w.dt_frame * num_classes + w.dt["class_id"].astype(np.int64)
    gt_key = w.gt_frame * num_classes + w.gt["class_id"].astype(np.int64)
    dt_order = np.lexsort((-_scores(w.dt), dt_key))
    gt_order = np.argsort(gt_key, kind="stable")
    groups = np.union1d(dt_key, gt_key)
    dt_start = np.append(np.searchsorted(dt_key[dt_order], groups), len(dt_key)).astype(np.int64)
    gt_start = np.append(np.searchsorted(gt_key[gt_order], groups), len(gt_key)).astype(np.int64)
    claimed = greedy_match(
        box_corners(w.gt[gt_order]), gt_start, box_corners(w.dt[dt_order]), dt_start, float(iou)
    )
    dt_matched = np.zeros(len(w.dt), dtype=bool)
    dt_matched[dt_order] = claimed >= 0
    gt_matched = np.zeros(len(w.gt), dtype=bool)
    gt_matched[gt_order[claimed[claimed >= 0]]] = True
    return dt_matched, gt_matched


def _ratio(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    """``num / den`` with 0 where ``den`` is 0: NaN is not valid JSON, and the per-frame counts
    beside a ratio tell "nothing found" from "nothing to find"."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def _check_classes(classes: Sequence[str]) -> list[str]:
    names = list(classes)
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"pseudo-label quality: class names must be non-empty and unique, got {names}")
    return names


def _check_iou(iou: float) -> float:
    if not 0.0 < iou <= 1.0:
        raise ConfigError(f"pseudo-label quality: IoU threshold must be in (0, 1], got {iou}")
    return float(iou)


def _coco_ap(w: _Withheld, classes: list[str]) -> dict[str, float]:
    """``AP`` and ``AP50`` of the pseudo labels over the withheld frames: the Prophesee
    evaluator with ``score = class_confidence``, no size filter, no time skip, zero tolerance.

    Boxes are re-stamped with their frame number + 1 before evaluation: the Prophesee
    filter keeps only ``t > skip_first_us``, so a label frame at ``t = 0`` would otherwise
    vanish from the AP while it counts in the ratios. With frames as one time-sorted
    sequence and zero tolerance, each withheld frame is exactly one COCO image.
    """
    if len(w.gt) == 0:  # all GT at the withheld frames is ignore: AP is undefined
        return {"AP": UNDEFINED, "AP50": UNDEFINED}
    gt, dt = w.gt.copy(), w.dt.copy()
    gt["t"] = w.gt_frame + 1
    dt["t"] = w.dt_frame + 1
    # The image size only fills COCO image records, which bbox evaluation never reads.
    result = evaluate_detection([gt], [dt], classes, 1, 1, _NO_FILTER, time_tol_us=0)
    return {"AP": result.metrics["AP"], "AP50": result.metrics["AP50"]}


def pseudo_label_quality(
    pseudo: Mapping[str, np.ndarray],
    gt: Mapping[str, np.ndarray],
    withheld_times: Mapping[str, np.ndarray],
    classes: Sequence[str],
) -> dict[str, float]:
    """Precision, recall, COCO AP and box counts of pseudo labels on the withheld frames.

    ``pseudo`` and ``gt`` map each sequence to its time-sorted BOX_DTYPE boxes (all label
    frames), ``withheld_times`` to the label-frame times whose GT the split withheld;
    sequences absent from ``withheld_times`` are not evaluated. Keys:
    ``precision@<iou>`` / ``recall@<iou>`` overall and ``.../<class>`` per class for each
    of :data:`IOU_THRESHOLDS`, ``recall@0.5/speed:<bin>`` and ``recall@0.5/size:<bin>`` with
    the share of GT objects in each bin (``gt_share/...``, :data:`SPEED_BINS`,
    :data:`SIZE_BINS`), ``AP``, ``AP50`` (-1 when every withheld GT box is
    ``ignore``), ``boxes_per_frame``, ``ignore_per_frame``, ``gt_per_frame``,
    ``frames_labelled`` (fraction of withheld frames with a non-ignore pseudo box) and
    ``frames_evaluated``. Raises :class:`LeodError` when nothing was withheld.
    """
    names = _check_classes(classes)
    k = len(names)
    w = _select_withheld(pseudo, gt, withheld_times, k)
    dt_class = w.dt["class_id"].astype(np.int64)
    gt_class = w.gt["class_id"].astype(np.int64)
    dt_count = np.bincount(dt_class, minlength=k)
    gt_count = np.bincount(gt_class, minlength=k)
    out: dict[str, float] = {}
    for iou in IOU_THRESHOLDS:
        dt_matched, gt_matched = _match(w, k, iou)
        out[f"precision@{iou}"] = float(_ratio(dt_matched.sum(), len(w.dt)))
        out[f"recall@{iou}"] = float(_ratio(gt_matched.sum(), len(w.gt)))
        precision = _ratio(np.bincount(dt_class, weights=dt_matched, minlength=k), dt_count)
        recall = _ratio(np.bincount(gt_class, weights=gt_matched, minlength=k), gt_count)
        for c, name in enumerate(names):
            out[f"precision@{iou}/{name}"] = float(precision[c])
            out[f"recall@{iou}/{name}"] = float(recall[c])
        if iou == BREAKDOWN_IOU:  # what the teacher misses, by object speed and size
            size = np.sqrt(w.gt["w"].astype(np.float64) * w.gt["h"])
            for kind, masks in (
                ("speed", _binned(w.gt_speed, SPEED_BINS)),
                ("size", _binned(size, SIZE_BINS)),
            ):
                for name, mask in masks.items():
                    out[f"recall@{iou}/{kind}:{name}"] = float(_ratio(gt_matched[mask].sum(), mask.sum()))
                    out[f"gt_share/{kind}:{name}"] = float(_ratio(mask.sum(), len(w.gt)))
    out.update(_coco_ap(w, names))
    out["boxes_per_frame"] = len(w.dt) / w.num_frames
    out["ignore_per_frame"] = w.num_ignore / w.num_frames
    out["gt_per_frame"] = len(w.gt) / w.num_frames
    out["frames_labelled"] = len(np.unique(w.dt_frame)) / w.num_frames
    out["frames_evaluated"] = float(w.num_frames)
    return out


def pr_curve(
    pseudo: Mapping[str, np.ndarray],
    gt: Mapping[str, np.ndarray],
    withheld_times: Mapping[str, np.ndarray],
    classes: Sequence[str],
    iou: float = 0.5,
    thresholds: Sequence[float] | np.ndarray = PR_THRESHOLDS,
) -> list[dict[str, float]]:
    """Overall precision and recall of the pseudo boxes whose score reaches each threshold.

    One row ``{"threshold", "precision", "recall"}`` per threshold, for a per-round plot
    of where a stricter pseudo-label cut would land. The matching runs once on all boxes:
    greedy matching visits boxes in descending score, so the boxes at or above any
    threshold are a prefix of that order and their matches are exactly what matching only
    them would give. Recall therefore never rises with the threshold.
    """
    names = _check_classes(classes)
    iou = _check_iou(iou)
    cuts = np.asarray(thresholds, dtype=np.float64)
    if cuts.ndim != 1 or not np.isfinite(cuts).all():
        raise ConfigError(
            f"pseudo-label quality: score thresholds must be a 1-D finite list, got {thresholds}"
        )
    w = _select_withheld(pseudo, gt, withheld_times, len(names))
    dt_matched, _ = _match(w, len(names), iou)
    scores = _scores(w.dt)
    rows = []
    for cut in cuts.tolist():
        kept = scores >= cut
        hits = int(dt_matched[kept].sum())
        rows.append(
            {
                "threshold": cut,
                "precision": float(_ratio(hits, int(kept.sum()))),
                "recall": float(_ratio(hits, len(w.gt))),
            }
        )
    return rows


@dataclass(frozen=True)
class QualityInputs:
    """What :func:`pseudo_label_quality` compares, per sequence name."""

    pseudo: dict[str, np.ndarray]  # pseudo labels in representation pixels
    gt: dict[str, np.ndarray]  # every GT box, stamped at its frame's time like the pseudo labels
    withheld: dict[str, np.ndarray]  # frame times whose GT the split withheld and that were labelled


def quality_inputs(
    seqs: Sequence[SequenceData],
    pseudo: Mapping[str, SequenceLabels],
    kept: Mapping[str, Sequence[int]],
    downsample: bool,
    soft_thresh: Sequence[float],
) -> QualityInputs:
    """Pair a round's pseudo labels (sensor pixels) with the ground truth of the same frames.

    The labels are judged as the student receives them: a box under ``soft_thresh`` (see
    :func:`leod.pseudo.soft.soften`) is an ignore region, not an object.
    """
    labelled_seqs = [s for s in seqs if s.name in pseudo]
    gt = ground_truth(labelled_seqs, at_frame_time=True)
    boxes, withheld = {}, {}
    for seq in labelled_seqs:
        # back to the representation pixels the GT is in
        boxes[seq.name] = to_representation_pixels(soften(pseudo[seq.name].labels, soft_thresh), downsample)
        labelled = set(pseudo[seq.name].repr_idx.tolist())
        kept_repr = set(seq.label_repr[np.asarray(kept.get(seq.name, []), np.int64)].tolist())
        times = [seq.timestamps_us[r] for r in seq.label_repr if r in labelled and r not in kept_repr]
        withheld[seq.name] = np.array(sorted(times), np.int64)
    return QualityInputs(boxes, gt, withheld)
