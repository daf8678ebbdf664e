"""Which training labels the detector may see: LEOD's weakly (WSOD) and semi (SSOD) supervised splits.

WSOD keeps every ``round(1/ratio)``-th label frame of each sequence, SSOD a strided
``train_ratio`` of the sequences fully labelled, full everything (``train_full``'s upper
bound). As in LEOD there is no randomness: the split is a pure function of labels and params.
The split file lists every train sequence (an empty list when unlabelled), because
self-training rounds label those too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from leod.data.config import SubsampleConfig
from leod.data.layout import Manifest, SequencePaths
from leod.data.sequence import Split, check_sequence_length
from leod.plumbing.errors import DataFormatError


def wsod_frames(repr_idx: np.ndarray, ratio: float, offset: int, history: int) -> list[int]:
    """Kept label-frame indices of one sequence under WSOD: every ``round(1/ratio)``-th, counted
    from the first label frame with ``history`` repr frames before it (so random-access samples
    of that length exist for every kept frame), shifted by ``offset``; at least one frame."""
    n = len(repr_idx)
    if n == 0:
        return []
    stride = max(1, round(1 / ratio))
    eligible = np.flatnonzero(repr_idx >= history - 1)
    first = int(eligible[0]) if len(eligible) else 0
    kept = list(range(first + offset % stride, n, stride))
    return kept or [first]


def ssod_sequences(names: list[str], train_ratio: float, offset: int) -> list[str]:
    """The fully labelled sequences under SSOD: ``round(N * train_ratio)`` of them, an even
    stride through the sorted names."""
    names = sorted(names)
    count = max(1, round(len(names) * train_ratio))
    stride = max(1, len(names) // count)
    return names[offset % stride :: stride][:count]


def _read_sequence(seq: SequencePaths) -> tuple[int, np.ndarray, np.ndarray]:
    """Frame count, label frame -> repr index, and boxes per label frame of one sequence."""
    for path in (seq.objframe_to_repr, seq.labels, seq.repr_timestamps):
        if not path.is_file():
            raise DataFormatError(f"{path}: missing; rerun `dvc repro preprocess`")
    path = seq.repr_timestamps
    try:
        n_frames = len(np.load(path, mmap_mode="r", allow_pickle=False))
        path = seq.objframe_to_repr
        repr_idx = np.load(path, allow_pickle=False)
        path = seq.labels
        with np.load(path, allow_pickle=False) as npz:
            starts = npz["objframe_idx_2_label_idx"]
            n_boxes = len(npz["labels"])
    except (ValueError, OSError, EOFError, KeyError, TypeError) as exc:
        raise DataFormatError(f"{path}: unreadable ({exc})") from exc
    return n_frames, repr_idx, np.diff(np.append(starts, n_boxes))


def make_split(manifest: Manifest, root: Path, cfg: SubsampleConfig, history: int) -> Split:
    """Compute the split of the train sequences of a preprocessed dataset."""
    seqs = manifest.sequences(root, "train")
    if not seqs:
        raise DataFormatError(f"{root}: the train split has no sequences (empty split)")
    labelled = (
        set(ssod_sequences([s.name for s in seqs], cfg.train_ratio, cfg.offset))
        if cfg.mode == "ssod"
        else set()
    )
    kept: dict[str, tuple[int, ...]] = {}
    frames_total = boxes_total = boxes_kept = 0
    lengths = []
    for seq in seqs:
        n_frames, repr_idx, counts = _read_sequence(seq)
        lengths.append(n_frames)
        if cfg.mode == "wsod":
            frames = wsod_frames(repr_idx, cfg.ratio, cfg.offset, history)
        elif cfg.mode == "ssod":
            frames = list(range(len(repr_idx))) if seq.name in labelled else []
        else:
            frames = list(range(len(repr_idx)))
        kept[seq.name] = tuple(frames)
        frames_total += len(repr_idx)
        boxes_total += int(counts.sum())
        boxes_kept += int(counts[frames].sum()) if frames else 0
    check_sequence_length(history, lengths, f"the train split in {root}")
    split = Split(cfg.mode, kept, frames_total, boxes_total, boxes_kept)
    if split.frames_kept == 0:
        raise DataFormatError(f"subsample: no label frame kept with mode={cfg.mode} (empty split)")
    return split
