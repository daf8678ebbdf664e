"""One preprocessed sequence as the data loaders see it: lazy frames, per-frame labels.

Event frames stay in their HDF5 file and are read on demand, one slice per sample; the
labels (small) are loaded, validated and converted to representation pixels once. Pseudo
labels come from beside the data (``labels_override``), so event data is never copied; the
subsample split (:class:`Split`) says which label frames supervise training, the others
still serve evaluation and streaming ranges.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter for h5py)
import numpy as np

from leod.data.layout import Manifest, SequencePaths
from leod.labels.boxes import (
    clip_to_frame,
    fold_ignore_class,
    to_internal,
    to_representation_pixels,
    validate_boxes,
)
from leod.plumbing.errors import ConfigError, DataFormatError, MissingInputError, read_json

if TYPE_CHECKING:
    from leod.data.config import SubsampleConfig

#: Open HDF5 handles kept per process; bounded so that thousands of sequences never
#: exhaust file descriptors, large enough for every batch slot to keep its file open.
_MAX_OPEN_FILES = 64


@dataclass(frozen=True)
class LabelFiles:
    """Where one sequence's labels come from: the sequence's own files or an override."""

    labels: Path  # labels.npz: 'labels' (boxes) and 'objframe_idx_2_label_idx' (start offsets)
    objframe_to_repr: Path  # objframe_idx_2_repr_idx.npy: label frame -> repr index
    #: label frame times (us); None: the end times of their repr frames (pseudo labels)
    timestamps: Path | None = None

    @classmethod
    def of(cls, paths: SequencePaths) -> LabelFiles:
        """The ground-truth label files of a preprocessed sequence."""
        return cls(paths.labels, paths.objframe_to_repr, paths.label_timestamps)


@dataclass(frozen=True)
class LabelArrays:
    """One sequence's labels already in memory (a self-training round's pseudo labels, which
    live in one file per round); label frame times are their repr frames' end times."""

    labels: np.ndarray
    objframe_to_repr: np.ndarray
    starts: np.ndarray  # objframe_idx_2_label_idx
    source: str  # for error messages: the file and sequence they came from


class _H5Cache:
    """Per-process LRU of read-only HDF5 handles.

    A handle must not cross a fork (DataLoader workers), so the cache is emptied when the
    process id changes; handles are opened lazily on the first read of a file.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._pid = os.getpid()
        self._files: OrderedDict[Path, h5py.File] = OrderedDict()

    def dataset(self, path: Path) -> h5py.Dataset:
        if self._pid != os.getpid():
            self._files = OrderedDict()  # the parent's handles stay with the parent
            self._pid = os.getpid()
        handle = self._files.get(path)
        if handle is None:
            try:
                handle = h5py.File(path, "r")
            except OSError as exc:
                raise DataFormatError(f"{path}: cannot open event representations ({exc})") from exc
            self._files[path] = handle
            if len(self._files) > self._capacity:
                _, oldest = self._files.popitem(last=False)
                oldest.close()
        else:
            self._files.move_to_end(path)
        return handle["data"]


_H5 = _H5Cache(_MAX_OPEN_FILES)


def _load_npy(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise MissingInputError(f"{path}: {what} not found")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataFormatError(f"{path}: not a readable .npy file ({exc})") from exc


def _int_vector(array: np.ndarray, source: str, length: int | None = None) -> np.ndarray:
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise DataFormatError(f"{source}: expected a 1-D integer array, got {array.dtype} {array.shape}")
    if length is not None and len(array) != length:
        raise DataFormatError(f"{source}: has {len(array)} entries, expected {length}")
    return array.astype(np.int64)


def _read_label_files(files: LabelFiles) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Raw boxes, start offsets, repr index per frame and (optional) frame times from disk."""
    frame_repr = _int_vector(
        _load_npy(files.objframe_to_repr, "label frame -> repr index map"), str(files.objframe_to_repr)
    )
    frame_times = None
    if files.timestamps is not None:
        frame_times = _int_vector(
            _load_npy(files.timestamps, "label timestamps"), str(files.timestamps), len(frame_repr)
        )
    if not files.labels.is_file():
        raise MissingInputError(f"{files.labels}: labels not found")
    try:
        with np.load(files.labels, allow_pickle=False) as npz:
            missing = {"labels", "objframe_idx_2_label_idx"} - set(npz.files)
            if missing:
                raise DataFormatError(f"{files.labels}: lacks key(s) {sorted(missing)}")
            raw, starts = npz["labels"], npz["objframe_idx_2_label_idx"]
    except (ValueError, OSError, EOFError) as exc:
        raise DataFormatError(f"{files.labels}: not a readable .npz file ({exc})") from exc
    return raw, starts, frame_repr, frame_times


def _load_labels(
    source: LabelFiles | LabelArrays, repr_times: np.ndarray, downsample: bool, hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (repr pixels, clipped), their frame start offsets, repr index and time per frame."""
    if isinstance(source, LabelArrays):
        raw, starts, frame_times = source.labels, source.starts, None
        frame_repr = _int_vector(source.objframe_to_repr, f"{source.source}:objframe_idx_2_repr_idx")
        where, repr_where = source.source, source.source
    else:
        raw, starts, frame_repr, frame_times = _read_label_files(source)
        where, repr_where = str(source.labels), str(source.objframe_to_repr)
    n_label_frames, num_frames = len(frame_repr), len(repr_times)
    if n_label_frames and (
        frame_repr[0] < 0 or frame_repr[-1] >= num_frames or np.any(np.diff(frame_repr) <= 0)
    ):
        raise DataFormatError(f"{repr_where}: repr indices must increase strictly within [0, {num_frames})")
    if frame_times is None:
        frame_times = repr_times[frame_repr]
    offsets = f"{where}:objframe_idx_2_label_idx"
    starts = _int_vector(starts, offsets, n_label_frames)
    if n_label_frames and (starts[0] != 0 or np.any(np.diff(starts) < 0) or starts[-1] > len(raw)):
        raise DataFormatError(f"{offsets}: start offsets must begin at 0 and not decrease up to {len(raw)}")
    boxes = to_internal(raw, where)
    validate_boxes(boxes, where)
    boxes = clip_to_frame(to_representation_pixels(fold_ignore_class(boxes), downsample), *hw)
    if n_label_frames == 0:
        return boxes[:0], starts, frame_repr, frame_times
    # Boxes cropped away entirely are dropped; offsets follow the surviving boxes.
    frame_of_box = np.repeat(np.arange(n_label_frames), np.diff(np.append(starts, len(boxes))))
    alive = (boxes["w"] > 0) & (boxes["h"] > 0)
    new_starts = np.searchsorted(frame_of_box[alive], np.arange(n_label_frames))
    return boxes[alive], new_starts.astype(np.int64), frame_repr, frame_times


class SequenceData:
    """One preprocessed sequence: lazy frames, labels in representation pixels, supervision mask.

    ``labels_override`` replaces the sequence's own label files (pseudo labels of a
    self-training round); ``kept`` lists the label-frame indices (of the label files in
    use) that supervise training, None meaning all of them.
    """

    def __init__(
        self,
        paths: SequencePaths,
        labels_override: LabelFiles | LabelArrays | None = None,
        kept: Iterable[int] | None = None,
        kept_source: str | None = None,
    ) -> None:
        self.paths = paths
        self.name = paths.name
        self.label_files = labels_override or LabelFiles.of(paths)
        lf = self.label_files
        self.label_source = lf.source if isinstance(lf, LabelArrays) else str(lf.labels)
        self.timestamps_us = _int_vector(
            _load_npy(paths.repr_timestamps, "representation timestamps"), str(paths.repr_timestamps)
        )
        self.frame_shape = self._read_shape()
        self._boxes, self._starts, self.label_repr, self.label_times_us = _load_labels(
            self.label_files, self.timestamps_us, paths.downsample, self.frame_shape[1:]
        )
        self.repr_label_frame = np.full(self.num_frames, -1, np.int64)  # label frame at a repr frame
        self.repr_label_frame[self.label_repr] = np.arange(len(self.label_repr))
        self.repr_label_time_us = np.full(self.num_frames, -1, np.int64)  # its time, -1 if none
        self.repr_label_time_us[self.label_repr] = self.label_times_us
        self.supervised = np.zeros(self.num_frames, bool)
        kept_frames = np.arange(len(self.label_repr)) if kept is None else np.fromiter(kept, np.int64)
        bad = (kept_frames < 0) | (kept_frames >= len(self.label_repr))
        if bad.any():
            raise DataFormatError(
                f"{kept_source or self.label_source}: kept label frame {int(kept_frames[bad][0])} of "
                f"sequence '{self.name}' is out of range [0, {len(self.label_repr)}) "
                f"(labels: {self.label_source})"
            )
        self.supervised[self.label_repr[kept_frames]] = True

    def _read_shape(self) -> tuple[int, int, int]:
        path = self.paths.representations
        if not path.is_file():
            raise MissingInputError(f"{path}: event representations not found")
        try:
            with h5py.File(path, "r") as h5:
                data = h5["data"]
                shape, dtype = data.shape, data.dtype
        except (OSError, KeyError) as exc:
            raise DataFormatError(f"{path}: no readable dataset 'data' ({exc})") from exc
        channels = 2 * self.paths.nbins
        if len(shape) != 4 or shape[1] != channels or dtype != np.uint8:
            raise DataFormatError(f"{path}: 'data' is {dtype} {shape}, expected uint8 (T, {channels}, H, W)")
        if shape[0] != len(self.timestamps_us):
            raise DataFormatError(
                f"{path}: holds {shape[0]} frames but {self.paths.repr_timestamps} "
                f"has {len(self.timestamps_us)} timestamps"
            )
        return int(shape[1]), int(shape[2]), int(shape[3])

    @property
    def num_frames(self) -> int:
        return len(self.timestamps_us)

    @property
    def kept_repr(self) -> np.ndarray:
        """Repr indices of the frames that supervise training, ascending."""
        return np.flatnonzero(self.supervised)

    def boxes(self, repr_idx: int) -> np.ndarray:
        """The label boxes (BOX_DTYPE, repr pixels) at one repr frame; empty if none there."""
        frame = self.repr_label_frame[repr_idx]
        if frame < 0:
            return self._boxes[:0]
        stop = self._starts[frame + 1] if frame + 1 < len(self._starts) else len(self._boxes)
        return self._boxes[self._starts[frame] : stop]

    def read_frames(self, start: int, stop: int) -> np.ndarray:
        """Frames ``[start, stop)`` as uint8 (n, C, H, W), read in one HDF5 slice."""
        if not 0 <= start < stop <= self.num_frames:
            raise IndexError(f"{self.name}: frame range [{start}, {stop}) outside [0, {self.num_frames})")
        try:
            return _H5.dataset(self.paths.representations)[start:stop]
        except OSError as exc:
            raise DataFormatError(
                f"{self.paths.representations}: cannot read frames [{start}, {stop}) ({exc})"
            ) from exc


def check_sequence_length(length: int, frame_counts: Iterable[int], where: str) -> None:
    """``loader.sequence_length`` may not exceed the longest sequence of ``where``: batches are
    allocated at full length, so a length far beyond the data would fill memory with padding."""
    longest = max(frame_counts, default=0)
    if length > longest:
        raise ConfigError(
            f"params key 'loader.sequence_length' = {length} exceeds the longest sequence of {where} "
            f"({longest} frames)"
        )


class KeptFrames(dict[str, tuple[int, ...]]):
    """Kept label frames per sequence name, remembering the split file they were read from."""

    def __init__(self, frames: dict[str, tuple[int, ...]], source: str) -> None:
        super().__init__(frames)
        self.source = source


@dataclass(frozen=True)
class Split:
    """A subsample split: which label frames of which training sequences are kept.

    The subsample stage makes it with the totals of the train split it was cut from (for its
    log and metrics); :func:`load_split` reads back only the mode and the kept frames.
    """

    mode: str
    sequences: Mapping[str, tuple[int, ...]]  # a KeptFrames when read from a split file
    frames_total: int | None = None
    boxes_total: int | None = None
    boxes_kept: int | None = None

    @property
    def frames_kept(self) -> int:
        return sum(len(v) for v in self.sequences.values())

    def to_dict(self, cfg: SubsampleConfig, history: int) -> dict:
        """The split file: mode, the settings that made it, totals and the kept frames."""
        return {
            "mode": self.mode,
            "ratio": cfg.ratio,
            "train_ratio": cfg.train_ratio,
            "offset": cfg.offset,
            "history": history,
            "frames_kept": self.frames_kept,
            "frames_total": self.frames_total,
            "boxes_kept": self.boxes_kept,
            "boxes_total": self.boxes_total,
            "sequences": {name: list(frames) for name, frames in self.sequences.items()},
        }


def load_split(path: str | os.PathLike[str]) -> Split:
    """Read the JSON split written by the subsample stage (``{"mode", "sequences"}``)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: split file not found; run `dvc repro subsample` first")
    data = read_json(path, "split")
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("mode"), str)
        or not isinstance(data.get("sequences"), dict)
    ):
        raise DataFormatError(f"{path}: expected an object with 'mode' (string) and 'sequences' (object)")
    sequences: dict[str, tuple[int, ...]] = {}
    for name, frames in data["sequences"].items():
        if not isinstance(frames, list) or not all(
            isinstance(f, int) and not isinstance(f, bool) and 0 <= f < 2**63 for f in frames
        ):
            raise DataFormatError(
                f"{path}: sequences.{name} must be a list of label-frame indices (integers >= 0)"
            )
        sequences[name] = tuple(frames)
    return Split(data["mode"], KeptFrames(sequences, str(path)))


def open_sequences(
    root: str | os.PathLike[str],
    manifest: Manifest,
    split: str,
    kept: Mapping[str, Iterable[int]] | None = None,
    labels_override: Mapping[str, LabelFiles | LabelArrays] | None = None,
) -> list[SequenceData]:
    """Open the sequences of one split of a preprocessed dataset, in manifest order.

    With ``kept`` (a :class:`Split`'s ``sequences``) only the listed sequences are opened
    and only their listed label frames supervise; without it every sequence and every
    label frame is used (evaluation, pseudo labelling). ``labels_override`` maps sequence
    names to replacement label files; sequences it does not name keep their own labels.
    """
    names = manifest.splits.get(split, [])
    if kept is not None:
        unknown = sorted(set(kept) - set(names))
        if unknown:
            source = f"{kept.source}: " if isinstance(kept, KeptFrames) else ""
            raise DataFormatError(
                f"{source}split lists sequence '{unknown[0]}' that the '{split}' split does not hold"
            )
        names = [n for n in names if n in kept]
    override = labels_override or {}
    out = []
    for name in names:
        seq = SequenceData(
            manifest.sequence(Path(root), split, name),
            labels_override=override.get(name),
            kept=None if kept is None else kept[name],
            kept_source=kept.source if isinstance(kept, KeptFrames) else None,
        )
        if seq.frame_shape[1:] != (manifest.height, manifest.width):
            raise DataFormatError(
                f"{seq.paths.representations}: frames are {seq.frame_shape[1:]} but the manifest says "
                f"{(manifest.height, manifest.width)}"
            )
        out.append(seq)
    return out
