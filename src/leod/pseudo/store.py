"""One file per round for the pseudo labels of every training sequence.

``<dir>/labels.npz`` holds, for each sequence ``s``, three arrays in the RVT label layout:
``s/labels`` (BOX_DTYPE boxes, coordinates in sensor pixels, ``ignore`` flags set),
``s/objframe_idx_2_repr_idx`` (label frame -> representation index, every frame that has
pseudo labels or GT) and ``s/objframe_idx_2_label_idx`` (start offsets). Events are never
copied: the trainer reads them from the preprocessed dataset. A few files per round,
whatever the number of sequences (DVC hashes thousands of small files slowly).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leod.atomic import save_npz
from leod.errors import DataFormatError, MissingInputError
from leod.labels.boxes import BOX_DTYPE, validate_boxes

LABELS_FILE = "labels.npz"
_SEP = "/"


@dataclass(frozen=True)
class SequenceLabels:
    """The labels of one sequence in the RVT layout."""

    labels: np.ndarray  # BOX_DTYPE, grouped by frame in frame order
    repr_idx: np.ndarray  # (F,) int64
    starts: np.ndarray  # (F,) int64 offsets into labels

    def frame(self, f: int) -> np.ndarray:
        stop = self.starts[f + 1] if f + 1 < len(self.starts) else len(self.labels)
        return self.labels[self.starts[f] : stop]

    @staticmethod
    def from_frames(repr_idx: np.ndarray, frames: list[np.ndarray]) -> SequenceLabels:
        counts = np.array([len(b) for b in frames], dtype=np.int64)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
        labels = np.concatenate(frames) if frames else np.zeros(0, BOX_DTYPE)
        return SequenceLabels(labels.astype(BOX_DTYPE), np.asarray(repr_idx, np.int64), starts)


def save_pseudo_labels(path: str | os.PathLike[str], seqs: dict[str, SequenceLabels]) -> None:
    """Write every sequence's labels into one npz (atomically)."""
    arrays: dict[str, np.ndarray] = {}
    for name, s in seqs.items():
        if _SEP in name:
            raise ValueError(f"sequence name {name!r} contains {_SEP!r}")
        arrays[f"{name}{_SEP}labels"] = s.labels
        arrays[f"{name}{_SEP}objframe_idx_2_repr_idx"] = s.repr_idx
        arrays[f"{name}{_SEP}objframe_idx_2_label_idx"] = s.starts
    save_npz(path, **arrays)


def load_pseudo_labels(path: str | os.PathLike[str]) -> dict[str, SequenceLabels]:
    """Read a round's labels; a missing file names the stage to run."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: no pseudo labels; run the pseudolabel stage of this round first")
    out: dict[str, SequenceLabels] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = sorted({k.split(_SEP)[0] for k in npz.files})
            for name in names:
                labels = npz[f"{name}{_SEP}labels"]
                if labels.dtype != BOX_DTYPE:
                    raise DataFormatError(f"{path}: sequence {name} labels have dtype {labels.dtype}")
                validate_boxes(labels, f"{path}:{name}")
                out[name] = SequenceLabels(
                    labels,
                    npz[f"{name}{_SEP}objframe_idx_2_repr_idx"],
                    npz[f"{name}{_SEP}objframe_idx_2_label_idx"],
                )
    except (KeyError, ValueError, OSError) as exc:
        raise DataFormatError(f"{path}: corrupt pseudo-label file ({exc})") from exc
    return out
