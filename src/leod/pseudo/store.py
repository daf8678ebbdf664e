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
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leod.labels.boxes import BOX_DTYPE, validate_boxes
from leod.plumbing.atomic import save_npz
from leod.plumbing.errors import DataFormatError, MissingInputError

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


def label_arrays(seqs: Mapping[str, SequenceLabels]) -> dict[str, np.ndarray]:
    """Every sequence's labels as the file's named arrays, in the order of ``seqs``."""
    arrays: dict[str, np.ndarray] = {}
    for name, s in seqs.items():
        if _SEP in name:
            raise ValueError(f"sequence name {name!r} contains {_SEP!r}")
        arrays[f"{name}{_SEP}labels"] = s.labels
        arrays[f"{name}{_SEP}objframe_idx_2_repr_idx"] = s.repr_idx
        arrays[f"{name}{_SEP}objframe_idx_2_label_idx"] = s.starts
    return arrays


def save_pseudo_labels(path: str | os.PathLike[str], seqs: dict[str, SequenceLabels]) -> None:
    """Write every sequence's labels into one npz (atomically)."""
    save_npz(path, **label_arrays(seqs))


def load_pseudo_labels(path: str | os.PathLike[str]) -> dict[str, SequenceLabels]:
    """Read a round's labels; a missing file names the stage to run."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: no pseudo labels; run the pseudolabel stage of this round first")
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise DataFormatError(f"{path}: not an npz archive of pseudo labels")
        with npz:
            return labels_from_arrays(npz, str(path))
    except ValueError as exc:  # numpy's text would advise loading pickles: never repeat it
        raise DataFormatError(f"{path}: not an npz archive of pseudo labels") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataFormatError(f"{path}: corrupt or truncated pseudo-label file ({exc})") from exc


def labels_from_arrays(arrays: Mapping[str, np.ndarray], source: str) -> dict[str, SequenceLabels]:
    """The checked labels of every sequence in a file's named arrays (``source`` names them in
    errors), in the sequences' sorted order."""
    out: dict[str, SequenceLabels] = {}
    try:
        names = sorted({k.split(_SEP)[0] for k in arrays})
        for name in names:
            labels = arrays[f"{name}{_SEP}labels"]
            if labels.dtype != BOX_DTYPE or labels.ndim != 1:
                raise DataFormatError(
                    f"{source}: sequence '{name}' labels are {labels.dtype} {labels.shape}, not 1-D boxes"
                )
            validate_boxes(labels, f"{source}: sequence '{name}'")
            seq = SequenceLabels(
                labels,
                arrays[f"{name}{_SEP}objframe_idx_2_repr_idx"],
                arrays[f"{name}{_SEP}objframe_idx_2_label_idx"],
            )
            _check_layout(seq, f"{source}: sequence '{name}'")
            out[name] = seq
    except KeyError as exc:
        raise DataFormatError(f"{source}: corrupt pseudo-label file (missing array {exc})") from exc
    except ValueError as exc:  # numpy's text would advise loading pickles: never repeat it
        raise DataFormatError(f"{source}: corrupt pseudo-label file (not plain numeric arrays)") from exc
    return out


def _check_layout(seq: SequenceLabels, source: str) -> None:
    """Frame indices: 1-D integers, representation indices increasing, label starts a valid split."""
    for arr, what in ((seq.repr_idx, "objframe_idx_2_repr_idx"), (seq.starts, "objframe_idx_2_label_idx")):
        if arr.ndim != 1 or arr.dtype.kind not in "iu" or len(arr) != len(seq.repr_idx):
            raise DataFormatError(
                f"{source}: {what} is {arr.dtype} {arr.shape}, expected {len(seq.repr_idx)} integers"
            )
    if len(seq.repr_idx) and (seq.repr_idx[0] < 0 or np.any(np.diff(seq.repr_idx) <= 0)):
        raise DataFormatError(f"{source}: frame indices are not increasing non-negative integers")
    if len(seq.starts) and (
        seq.starts[0] != 0 or np.any(np.diff(seq.starts) < 0) or seq.starts[-1] > len(seq.labels)
    ):
        raise DataFormatError(f"{source}: label offsets do not split its {len(seq.labels)} boxes into frames")


def check_against_dataset(
    path: str | os.PathLike[str],
    pseudo: dict[str, SequenceLabels],
    frame_times: dict[str, np.ndarray],
    classes: Sequence[str],
) -> None:
    """Pseudo labels read from ``path`` that fit the dataset they claim to label: the same
    sequences (``frame_times``: each sequence's representation times), frame indices within each
    sequence, boxes stamped at their frame's time, class ids of the dataset's classes."""
    if set(pseudo) != set(frame_times):
        extra, missing = sorted(set(pseudo) - set(frame_times)), sorted(set(frame_times) - set(pseudo))
        raise DataFormatError(
            f"{path}: its sequences do not match the dataset's training sequences (only in the file: "
            f"{extra[:3] or 'none'}; only in the dataset: {missing[:3] or 'none'}; "
            f"{len(set(pseudo) & set(frame_times))} in common)"
        )
    for name, seq in sorted(pseudo.items()):
        times = frame_times[name]
        if len(seq.repr_idx) and seq.repr_idx[-1] >= len(times):
            raise DataFormatError(
                f"{path}: sequence '{name}' has pseudo labels at frame {int(seq.repr_idx[-1])} "
                f"but only {len(times)} frames"
            )
        per_box = np.repeat(times[seq.repr_idx], np.diff(np.append(seq.starts, len(seq.labels))))
        if np.any(seq.labels["t"] != per_box):
            k = int(np.flatnonzero(seq.labels["t"] != per_box)[0])
            raise DataFormatError(
                f"{path}: sequence '{name}': box {k} has t={int(seq.labels['t'][k])} us, not its "
                f"frame's time {int(per_box[k])} us"
            )
        cls = seq.labels["class_id"][~seq.labels["ignore"]]
        if len(cls) and int(cls.max()) >= len(classes):
            raise DataFormatError(
                f"{path}: sequence '{name}': class_id {int(cls.max())} beyond the dataset's "
                f"{len(classes)} classes {list(classes)}"
            )


def check_split_names(
    split_path: str | os.PathLike[str], kept: Mapping[str, object], names: Sequence[str]
) -> None:
    """A split whose sequences are not the dataset's would silently count its kept GT frames as
    withheld (or keep none): every sequence the split names must be one of ``names``."""
    unknown = sorted(set(kept) - set(names))
    if unknown:
        raise DataFormatError(
            f"{split_path}: {len(unknown)} of its {len(kept)} sequence(s) are not training sequences of "
            f"the dataset (split: {unknown[:3]}; dataset: {sorted(names)[:3]})"
        )
