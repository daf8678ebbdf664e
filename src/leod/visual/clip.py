"""Video frames of detections: a recording's windows with the boxes ``detect`` found, and a
dataset sequence with its ground truth, a round's pseudo labels and a model's predictions
side by side (``python -m leod visualize`` and the report's clips)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from leod.data.layout import Manifest, load_manifest
from leod.data.sequence import SequenceData
from leod.plumbing.errors import ConfigError
from leod.pseudo.store import SequenceLabels, load_pseudo_labels
from leod.report.frames import pseudo_at
from leod.visual.draw import (
    GT_COLOR,
    PRED_COLOR,
    PSEUDO_COLOR,
    BoxStyle,
    draw_boxes,
    event_image,
    side_by_side,
    zoom_for,
)
from leod.visual.video import video_writer


class DetectionFrames:
    """A ``detect`` frame hook drawing each window with its boxes into ``writer``."""

    def __init__(self, writer: Any, classes: Sequence[str], title: str) -> None:
        self.writer, self.title = writer, title
        self.style = BoxStyle(PRED_COLOR, tuple(classes))
        self.zoom: int | None = None  # from the first frame's width

    def __call__(self, end_us: int, frame: np.ndarray, boxes: np.ndarray) -> None:
        if self.zoom is None:
            self.zoom = zoom_for(frame.shape[-1])
        image = draw_boxes(event_image(frame, self.zoom), boxes, self.style, self.zoom)
        title = f"{self.title}  {end_us / 1e6:.3f} s  {len(boxes)} box(es)"
        self.writer.add(side_by_side([image], [title]))


@dataclass(frozen=True)
class ClipRange:
    """Which frames of a sequence a clip shows: ``[start, start + frames)``, clipped to the end."""

    start: int = 0
    frames: int = 40

    def stop(self, seq: SequenceData) -> int:
        if not 0 <= self.start < seq.num_frames or self.frames < 1:
            raise ConfigError(
                f"{seq.name}: clip of {self.frames} frame(s) from frame {self.start} is outside its "
                f"{seq.num_frames} frames"
            )
        return min(self.start + self.frames, seq.num_frames)


@dataclass(frozen=True)
class Overlay:
    """One panel's boxes: by repr frame (predictions) or a round's pseudo labels."""

    title: str
    style: BoxStyle
    boxes: Mapping[int, np.ndarray] | None = None
    pseudo: SequenceLabels | None = None


def pseudo_overlay(path: Path, seq: SequenceData, classes: Sequence[str]) -> Overlay:
    """The panel of the pseudo labels in ``path`` (a round's labels.npz, titled by its folder)
    for ``seq``; an error when the round has none for it."""
    labels = load_pseudo_labels(path)
    if seq.name not in labels:
        raise ConfigError(f"{path}: no pseudo labels for {seq.name} (a round labels the train split only)")
    style = BoxStyle(PSEUDO_COLOR, tuple(classes))
    return Overlay(f"pseudo labels {path.parent.name}", style, pseudo=labels[seq.name])


def sequence_frames(
    seq: SequenceData,
    span: ClipRange,
    overlays: Sequence[Overlay],
    classes: Sequence[str],
    downsample: bool,
    read_block: int = 32,
) -> Iterator[np.ndarray]:
    """The clip's frames: ground truth, then each overlay, side by side (boxes in repr pixels);
    event frames are read ``read_block`` at a time."""
    stop = span.stop(seq)
    zoom = zoom_for(seq.frame_shape[2], target=256 if overlays else 384)
    gt_style = BoxStyle(GT_COLOR, tuple(classes), score_field=None)
    for first in range(span.start, stop, read_block):
        block = seq.read_frames(first, min(first + read_block, stop))
        for r, frame in enumerate(block, start=first):
            base = event_image(frame, zoom)
            none = "" if seq.repr_label_frame[r] >= 0 else " (no label)"
            panels = [draw_boxes(base, seq.boxes(r), gt_style, zoom)]
            titles = [f"{seq.timestamps_us[r] / 1e6:.2f} s ground truth{none}"]
            for o in overlays:
                boxes = pseudo_at(o.pseudo, r, downsample) if o.pseudo is not None else (o.boxes or {}).get(r)
                panels.append(base if boxes is None else draw_boxes(base, boxes, o.style, zoom))
                titles.append(o.title)
            yield side_by_side(panels, titles)


def find_split(manifest: Manifest, root: Path, name: str) -> str:
    """The split holding sequence ``name`` of a preprocessed dataset."""
    for split, names in manifest.splits.items():
        if name in names:
            return split
    raise ConfigError(f"{root}: no sequence '{name}' in the dataset (splits: {', '.join(manifest.splits)})")


def render_clip(
    data: Path,
    sequence: str,
    out: Path,
    span: ClipRange,
    pseudo: Path | None = None,
    predictions: Overlay | None = None,
) -> int:
    """Write the clip of one dataset sequence, named, into ``out`` (see :func:`write_clip`)."""
    manifest = load_manifest(data)
    seq = SequenceData(manifest.sequence(data, find_split(manifest, data, sequence), sequence))
    return write_clip(seq, manifest, out, span, pseudo, predictions)


def write_clip(
    seq: SequenceData,
    manifest: Manifest,
    out: Path,
    span: ClipRange,
    pseudo: Path | None = None,
    predictions: Overlay | None = None,
) -> int:
    """Write the clip of ``seq`` into ``out`` (from :func:`video_target`): ground truth, the
    pseudo labels in ``pseudo`` (a round's labels.npz, titled by its folder) and
    ``predictions``, side by side, at the dataset's frame rate; returns the frames written."""
    span.stop(seq)  # a bad range fails before anything is drawn
    overlays = []
    if pseudo is not None:
        overlays.append(pseudo_overlay(pseudo, seq, manifest.classes))
    if predictions is not None:
        overlays.append(predictions)
    n = 0
    with video_writer(out, fps=1000 / manifest.step_ms) as writer:
        for frame in sequence_frames(seq, span, overlays, manifest.classes, manifest.downsample):
            writer.add(frame)
            n += 1
    return n
