"""A model's detections on the frames of a dataset clip, for ``python -m leod visualize``."""

from __future__ import annotations

from pathlib import Path

import torch

from leod.data.layout import load_manifest
from leod.data.sequence import SequenceData
from leod.detect.dataset import InferenceOptions, iter_frame_detections
from leod.training.model_files import load_model
from leod.visual.clip import ClipRange, Overlay, find_split
from leod.visual.draw import PRED_COLOR, BoxStyle


def model_overlay(
    model_dir: Path, data: Path, sequence: str, span: ClipRange, score: float, device: str
) -> Overlay:
    """The predictions panel: ``model_dir``'s detections with objectness x class confidence >=
    ``score`` on the clip's frames, the sequence streamed from its first frame (state carried)."""
    model, info = load_model(model_dir)
    model = model.to(torch.device(device))
    manifest = load_manifest(data)
    seq = SequenceData(manifest.sequence(data, find_split(manifest, data, sequence), sequence))
    stop = span.stop(seq)
    opts = InferenceOptions(
        batch_size=1,
        chunk_length=min(32, seq.num_frames),
        conf_threshold=score,
        nms_iou=model.cfg.nms_iou,
        amp=False,
        every_frame=True,
    )
    boxes = {}
    for det in iter_frame_detections(model, [seq], torch.device(device), opts):
        if det.repr_index >= stop:
            break
        if det.repr_index >= span.start:
            boxes[det.repr_index] = det.boxes
    classes = info.get("classes") or manifest.classes
    return Overlay(
        f"predictions {model_dir.name} (score >= {score:g})", BoxStyle(PRED_COLOR, tuple(classes)), boxes
    )
