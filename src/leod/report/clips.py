"""One short clip per self-training round for the report: a train sequence with its ground
truth beside the round's pseudo labels, as an animated GIF (shown inline by Markdown viewers,
written by Pillow alone, so the report needs no video encoder)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leod.data.layout import Manifest, load_manifest
from leod.data.sequence import SequenceData
from leod.visual.clip import ClipRange, write_clip

CLIP_DIR = "clips"
CLIP_FRAMES = 40  # 2 s at 50 ms: a few seconds of run time for the whole report


@dataclass(frozen=True)
class ClipInputs:
    """Where the clips come from: the dataset, the rounds' pseudo-label folders, the rounds."""

    data: Path
    pseudo_root: Path
    rounds: Sequence[str]
    min_time_us: int = 0  # the clip starts here (the teacher had no history before)


def clip_span(seq: SequenceData, min_time_us: int, frames: int = CLIP_FRAMES) -> ClipRange:
    """``frames`` frames from the first frame ending at or after ``min_time_us`` (earlier when
    the sequence is too short)."""
    first = int(np.searchsorted(seq.timestamps_us, min_time_us, side="left"))
    return ClipRange(max(0, min(first, seq.num_frames - frames)), frames)


def _busiest(
    data: Path, manifest: Manifest, names: Sequence[str], min_time_us: int
) -> tuple[SequenceData, ClipRange]:
    """The train sequence with the most ground-truth boxes in its clip (the first on ties)."""
    best: tuple[int, SequenceData, ClipRange] | None = None
    for name in names:
        seq = SequenceData(manifest.sequence(data, "train", name))
        span = clip_span(seq, min_time_us)
        count = sum(len(seq.boxes(r)) for r in range(span.start, span.stop(seq)))
        if best is None or count > best[0]:
            best = (count, seq, span)
    assert best is not None
    return best[1], best[2]


def write_round_clips(inputs: ClipInputs, out_dir: Path) -> tuple[dict[str, str], list[str]]:
    """``<out_dir>/clips/<round>.gif`` for each round with pseudo labels, all of the train
    sequence with the most ground truth in its clip; returns {path relative to out_dir:
    caption} and notes on rounds without."""
    manifest = load_manifest(inputs.data)
    names = manifest.splits.get("train", [])
    figures: dict[str, str] = {}
    notes: list[str] = []
    if not names or not inputs.rounds:
        return figures, notes
    seq, span = _busiest(inputs.data, manifest, names, inputs.min_time_us)
    stop = span.stop(seq)
    for name in inputs.rounds:
        labels = inputs.pseudo_root / name / "labels.npz"
        if not labels.is_file():
            notes.append(f"`{labels}` not found: no clip of round {name}")
            continue
        rel = f"{CLIP_DIR}/{name}.gif"
        write_clip(seq, manifest, out_dir / rel, span, labels)
        t0, t1 = seq.timestamps_us[span.start] / 1e6, seq.timestamps_us[stop - 1] / 1e6
        figures[rel] = (
            f"Round {name}: {seq.name} from {t0:.2f} to {t1:.2f} s, ground truth (green) beside the "
            f"pseudo labels of `{labels}` (blue with class confidence; thin: ignore regions)."
        )
    return figures, notes
