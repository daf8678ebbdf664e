"""Pseudo labels for every training frame from the previous round's detector (LEOD).

Per training sequence: test-time passes (as is, mirrored, time-reversed, both) merged by
class-wise NMS and filtered by per-class thresholds; frames whose ground truth the split
kept use that ground truth; the linear tracker turns short tracks into ignore regions and
inpaints missed boxes of long tracks (boxes under the thresholds but above ``weak_thresh``
are ignore regions from the start and pass the tracker untouched). Boxes come out in sensor
pixels, like any label file.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass

import numpy as np
import torch

from leod.config import Params
from leod.data.sequence import SequenceData
from leod.detect.dataset import InferenceOptions, iter_frame_detections
from leod.distributed.shard import Ranks, gather_arrays, in_order, share
from leod.labels.boxes import BOX_DTYPE, clip_to_frame, to_sensor_pixels
from leod.model.detector import RecurrentDetector
from leod.model.nms import batched_nms
from leod.plumbing.progress import progress_bar
from leod.pseudo.config import PseudoConfig
from leod.pseudo.store import SequenceLabels, label_arrays, labels_from_arrays
from leod.pseudo.tracker import TrackStats, track_filter

log = logging.getLogger("leod.pseudo")

EMPTY = np.zeros(0, BOX_DTYPE)


@dataclass(frozen=True)
class PseudoStats:
    frames: int
    gt_frames: int
    boxes: int
    ignored: int
    tracker: TrackStats  # summed over the sequences


def tta_passes(cfg: PseudoConfig) -> list[tuple[bool, bool]]:
    """(hflip, tflip) of every test-time pass, the plain pass first."""
    passes = [(False, False)]
    if cfg.tta.hflip:
        passes.append((True, False))
    if cfg.tta.tflip:
        passes.append((False, True))
    if cfg.tta.hflip and cfg.tta.tflip:
        passes.append((True, True))
    return passes


def target_frame(repr_index: int, tflip: bool, offset: int, num_frames: int) -> int | None:
    """The frame a prediction belongs to. Run backwards in time, the model has seen window
    ``k`` as ending where window ``k-1`` ends, so its prediction moves by ``offset`` (-1)."""
    r = repr_index + (offset if tflip else 0)
    return r if 0 <= r < num_frames else None


def merge_frame(parts: Sequence[np.ndarray], cfg: PseudoConfig) -> np.ndarray:
    """Class-wise NMS over the passes' boxes of one frame (score = objectness x class confidence)."""
    boxes = np.concatenate(parts) if parts else np.zeros(0, BOX_DTYPE)
    score = boxes["objectness"] * boxes["class_confidence"]
    confident_enough = score >= cfg.conf_thresh
    boxes, score = boxes[confident_enough], score[confident_enough]
    if len(boxes) <= 1:
        return boxes
    xyxy = torch.from_numpy(
        np.stack([boxes["x"], boxes["y"], boxes["x"] + boxes["w"], boxes["y"] + boxes["h"]], axis=1)
    )
    keep = batched_nms(
        xyxy, torch.from_numpy(score), torch.from_numpy(boxes["class_id"].astype(np.int64)), cfg.nms_iou
    )
    return boxes[np.sort(keep.numpy())]


def _above(boxes: np.ndarray, obj_thresh: Sequence[float], cls_thresh: Sequence[float]) -> np.ndarray:
    """Per box: objectness and class confidence both above its class's thresholds (strict)."""
    cls = boxes["class_id"].astype(np.int64)
    return (boxes["objectness"] > np.asarray(obj_thresh, np.float32)[cls]) & (
        boxes["class_confidence"] > np.asarray(cls_thresh, np.float32)[cls]
    )


def confident(boxes: np.ndarray, cfg: PseudoConfig, height: int, width: int) -> np.ndarray:
    """LEOD's per-class thresholds (strict) and geometric filter, in the frame's pixels; with
    ``weak_thresh``, the boxes between it and the thresholds come along flagged ``ignore``."""
    strong = _above(boxes, cfg.obj_thresh, cfg.cls_thresh)
    keep = strong if cfg.weak_thresh is None else strong | _above(boxes, cfg.weak_thresh, cfg.weak_thresh)
    boxes = clip_to_frame(boxes[keep], height, width)
    boxes["ignore"] |= ~strong[keep]
    ok = (
        (boxes["w"] >= cfg.min_side)
        & (boxes["h"] >= cfg.min_side)
        & (boxes["w"] <= cfg.max_width_frac * width)
    )
    return boxes[ok]


def pseudo_label_sequences(
    model: RecurrentDetector,
    seqs: Sequence[SequenceData],
    kept: Mapping[str, list[int]],
    params: Params,
    device: torch.device,
    progress: bool = True,
) -> tuple[dict[str, SequenceLabels], PseudoStats]:
    """Label every frame of ``seqs`` (see module docstring); returns labels and counts."""
    cfg = params.pseudo
    passes = tta_passes(cfg)
    # the passes' boxes of each frame, merged in pass order however the passes were run
    per_frame: dict[tuple[str, int], list[np.ndarray]] = defaultdict(lambda: [EMPTY] * len(passes))
    total = sum(s.num_frames for s in seqs) * len(passes)
    bar = progress_bar(total, "pseudolabel", "frame", enabled=progress)
    frames_of = {s.name: s.num_frames for s in seqs}
    groups = [passes] if cfg.batch_tta else [[p] for p in passes]
    for group in groups:
        opts = InferenceOptions(
            batch_size=cfg.batch_size,
            chunk_length=params.loader.sequence_length,
            conf_threshold=cfg.conf_thresh,
            nms_iou=cfg.nms_iou,
            amp=params.train.amp,
            every_frame=True,
            passes=tuple(group),
        )
        for det in iter_frame_detections(model, seqs, device, opts):
            bar.update()
            p = passes.index(group[det.tta_pass])
            r = target_frame(det.repr_index, passes[p][1], cfg.tflip_offset, frames_of[det.sequence])
            if r is not None:
                per_frame[(det.sequence, r)][p] = det.boxes
    bar.close()

    out: dict[str, SequenceLabels] = {}
    n_frames = n_gt = n_boxes = n_ignored = 0
    tracked = TrackStats(0, 0, 0, 0, 0)
    for seq in seqs:
        height, width = seq.frame_shape[1:]
        gt_repr = set(seq.label_repr[np.asarray(kept.get(seq.name, []), np.int64)].tolist())
        reprs = list(range(min(cfg.skip_first_frames, seq.num_frames), seq.num_frames))
        frames, is_gt = [], np.zeros(len(reprs), bool)
        for i, r in enumerate(reprs):
            if r in gt_repr:
                boxes = seq.boxes(r).copy()
                is_gt[i] = True
            else:
                boxes = confident(merge_frame(per_frame.get((seq.name, r), []), cfg), cfg, height, width)
            boxes["t"] = seq.timestamps_us[r]  # every label sits at its frame's end time
            frames.append(boxes)
        frames, seq_tracked = track_filter(
            frames, is_gt, cfg.tracker, frame_hw=(height, width), frame_times=seq.timestamps_us[reprs]
        )
        tracked += seq_tracked
        frames = [to_sensor_pixels(boxes, seq.paths.downsample) for boxes in frames]
        out[seq.name] = SequenceLabels.from_frames(np.asarray(reprs, np.int64), frames)
        n_frames += len(reprs)
        n_gt += int(is_gt.sum())
        n_boxes += sum(len(b) for b in frames)
        n_ignored += sum(int(b["ignore"].sum()) for b in frames)
    return out, PseudoStats(n_frames, n_gt, n_boxes, n_ignored, tracked)


#: the key of a rank's counts among its label arrays (sequence keys all hold a "/")
_COUNTS = "pseudo_counts"


def pseudo_label_shared(
    model: RecurrentDetector,
    seqs: Sequence[SequenceData],
    kept: Mapping[str, list[int]],
    params: Params,
    device: torch.device,
    ranks: Ranks,
    progress: bool = True,
) -> tuple[dict[str, SequenceLabels], PseudoStats] | None:
    """:func:`pseudo_label_sequences` over all ranks; the whole result on rank 0, None elsewhere."""
    if ranks.world_size == 1:
        return pseudo_label_sequences(model, seqs, kept, params, device, progress)
    labels, stats = pseudo_label_sequences(model, share(seqs, ranks), kept, params, device, progress)
    counts = np.array([*astuple(stats)[:4], *astuple(stats.tracker)], np.int64)
    parts = gather_arrays({**label_arrays(labels), _COUNTS: counts}, ranks)
    if parts is None:
        return None
    total = sum(p.pop(_COUNTS) for p in parts)
    shares = [labels_from_arrays(p, f"rank {r}'s pseudo labels") for r, p in enumerate(parts)]
    united = in_order(shares, [s.name for s in seqs])
    return united, PseudoStats(*map(int, total[:4]), TrackStats(*map(int, total[4:])))
