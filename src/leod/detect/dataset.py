"""Run a trained detector over whole sequences and evaluate it the Prophesee way.

Sequences are streamed frame by frame with their recurrent state carried over, several
sequences side by side in a batch. Predictions are kept at the label frames (evaluation)
or at every frame (pseudo labelling) and stamped with the frame's time, as RVT does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from leod.config import Params
from leod.data.batch import Batch
from leod.data.layout import Manifest
from leod.data.loader import inference_batches
from leod.data.sequence import SequenceData
from leod.distributed.group import Ranks
from leod.distributed.shard import gather_arrays, in_order, share
from leod.evaluation.config import EvalFilter
from leod.evaluation.ground_truth import ground_truth
from leod.evaluation.prophesee import EvalResult, evaluate_detection, scaled_filter
from leod.labels.boxes import BOX_DTYPE
from leod.model.detector import RecurrentDetector
from leod.training.device import autocast

#: one test-time pass: (hflip, tflip). hflip mirrors the input (boxes are mirrored back);
#: tflip runs time backwards (reversed frames, bins and polarities)
Pass = tuple[bool, bool]


@dataclass(frozen=True)
class InferenceOptions:
    batch_size: int
    chunk_length: int
    conf_threshold: float
    nms_iou: float
    amp: bool = True
    every_frame: bool = False  # False: label frames only
    #: passes run side by side, one forward pass of len(passes) x batch_size frames per step
    passes: tuple[Pass, ...] = ((False, False),)


def time_reversed(frames: torch.Tensor, nbins: int) -> torch.Tensor:
    """The histograms of ``(..., 2*nbins, H, W)`` frames as seen with time running backwards.

    Reversed time plays each window's bins in the opposite order and turns every ON event
    into an OFF event, so both the bin axis and the polarity axis flip.
    """
    shape = frames.shape
    split = frames.reshape(*shape[:-3], 2, nbins, *shape[-2:])
    return split.flip(-4, -3).reshape(shape)


def mirrored(boxes: np.ndarray, width: int) -> np.ndarray:
    """Boxes found on a horizontally mirrored frame, mapped back onto the original frame."""
    out = boxes.copy()
    out["x"] = width - boxes["x"] - boxes["w"]
    return out


@dataclass(frozen=True)
class FrameDetections:
    """The detections of one representation frame, boxes in representation pixels."""

    sequence: str
    repr_index: int
    frame_time_us: int
    label_time_us: int  # -1 when the frame is no label frame
    boxes: np.ndarray  # BOX_DTYPE, t = label time if any else frame time
    tta_pass: int = 0  # index into InferenceOptions.passes


@torch.inference_mode()
def iter_frame_detections(
    model: RecurrentDetector, seqs: Sequence[SequenceData], device: torch.device, opts: InferenceOptions
) -> Iterator[FrameDetections]:
    """Stream every sequence through ``model`` (states carried over) and yield detections per
    frame and pass. Forward and time-reversed streams advance in step: a sequence has as many
    chunks either way, so both put the same sequences in the same slots."""
    model.eval()
    nbins = model.cfg.in_channels // 2
    width = seqs[0].frame_shape[2] if seqs else 0
    directions = sorted({tflip for _, tflip in opts.passes})
    streams = [inference_batches(seqs, opts.batch_size, opts.chunk_length, reverse=d) for d in directions]
    states = None
    for group in zip(*streams, strict=True):
        by_dir = {d: b.to(device) for d, b in zip(directions, group, strict=True)}
        assert all(b.sequences == group[0].sequences for b in group), "streams out of step"
        is_first = [by_dir[tflip].is_first for _, tflip in opts.passes]
        states = model.reset(states, is_first[0] if len(is_first) == 1 else torch.cat(is_first))
        length, size = group[0].shape
        for t in range(length):
            inputs = []
            for hflip, tflip in opts.passes:
                frames = by_dir[tflip].frames[t]
                if tflip:
                    frames = time_reversed(frames, nbins)
                if hflip:
                    frames = frames.flip(-1)
                inputs.append(frames)
            frames = inputs[0] if len(inputs) == 1 else torch.cat(inputs)
            with autocast(device, opts.amp):
                preds, states = model.forward_step(frames, states)
            meta = {d: _step_meta(b, t, opts.every_frame) for d, b in by_dir.items()}
            if not any(meta[d][3] for d in directions):
                continue
            dets = model.predict(preds, opts.conf_threshold, opts.nms_iou)
            for p, (hflip, tflip) in enumerate(opts.passes):
                label_time, frame_time, repr_index, wanted = meta[tflip]
                for b in wanted:
                    stamp = label_time[b] if label_time[b] >= 0 else frame_time[b]
                    boxes = dets[p * size + b].to_box_array(stamp)
                    if hflip:
                        boxes = mirrored(boxes, width)
                    yield FrameDetections(
                        by_dir[tflip].sequences[b], repr_index[b], frame_time[b], label_time[b], boxes, p
                    )


def _step_meta(batch: Batch, t: int, every_frame: bool) -> tuple[list[int], list[int], list[int], list[int]]:
    """Label times, frame times, representation indices and the wanted slots of step ``t``."""
    label_time = batch.label_time_us[t].tolist()
    padded = batch.padded[t].tolist()
    wanted = [b for b in range(len(padded)) if not padded[b] and (every_frame or label_time[b] >= 0)]
    return label_time, batch.timestamps_us[t].tolist(), batch.repr_index[t].tolist(), wanted


def predict_sequences(
    model: RecurrentDetector, seqs: Sequence[SequenceData], device: torch.device, opts: InferenceOptions
) -> dict[str, np.ndarray]:
    """Per sequence, a time-sorted BOX_DTYPE array of predictions in representation pixels."""
    found: dict[str, list[np.ndarray]] = {s.name: [] for s in seqs}
    for det in iter_frame_detections(model, seqs, device, opts):
        found[det.sequence].append(det.boxes)
    out = {}
    for name, parts in found.items():
        boxes = np.concatenate(parts) if parts else np.zeros(0, dtype=BOX_DTYPE)
        out[name] = boxes[np.argsort(boxes["t"], kind="stable")]
    return out


@dataclass(frozen=True)
class Evaluation:
    """A model's COCO result on a split, with what produced it (for confusion matrices, reports)."""

    result: EvalResult
    names: list[str]
    gt: list[np.ndarray]
    predictions: list[np.ndarray]
    filt: EvalFilter
    time_tol_us: int


def evaluation_options(params: Params, batch_size: int) -> InferenceOptions:
    """How evaluation runs the model: label frames only, RVT's low score threshold, no TTA."""
    return InferenceOptions(
        batch_size=batch_size,
        chunk_length=params.loader.sequence_length,
        conf_threshold=params.train.eval_conf_threshold,
        nms_iou=params.model.nms_iou,
        amp=params.train.amp,
    )


def score_predictions(
    preds: Mapping[str, np.ndarray], seqs: Sequence[SequenceData], manifest: Manifest, params: Params
) -> Evaluation:
    """COCO metrics of per-sequence predictions (:func:`predict_sequences`) under the preset's
    Prophesee filter."""
    gt = ground_truth(seqs)
    names = [s.name for s in seqs]
    filt = scaled_filter(params.preset.evaluation, manifest.downsample)
    # predictions are stamped exactly at the label times: a tolerance under half a step
    # keeps dense (50 ms) labels from sharing predictions
    tol = int(manifest.step_ms * 1000) // 2 - 1
    gts, dts = [gt[n] for n in names], [preds[n] for n in names]
    result = evaluate_detection(
        gts, dts, manifest.classes, manifest.height, manifest.width, filt, time_tol_us=tol
    )
    return Evaluation(result, names, gts, dts, filt, tol)


def evaluate_model(
    model: RecurrentDetector,
    seqs: Sequence[SequenceData],
    manifest: Manifest,
    params: Params,
    device: torch.device,
    batch_size: int,
    ranks: Ranks | None = None,
) -> Evaluation | None:
    """COCO metrics of ``model`` on ``seqs`` under the preset's Prophesee filter. Over several
    ranks each predicts its share and rank 0 scores them all (None on the other ranks)."""
    ranks = ranks or Ranks()
    preds = predict_sequences(model, share(seqs, ranks), device, evaluation_options(params, batch_size))
    parts = gather_arrays(preds, ranks)
    if parts is None:
        return None
    return score_predictions(in_order(parts, [s.name for s in seqs]), seqs, manifest, params)
