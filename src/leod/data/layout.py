"""Paths of the RVT preprocessed layout, the contract between preprocess and every later stage.

Per sequence, as in RVT's released ``gen1.tar`` / ``gen4.tar``: ``<root>/<split>/<seq>/``
``event_representations_v2/stacked_histogram_dt=<dt>_nbins=<n>/`` (the histograms, label
frame -> repr index, repr end times) and ``labels_v2/`` (``labels.npz``, label frame times);
see :class:`SequencePaths`. ``<root>/manifest.json`` (ours, not RVT's) records what produced
the data (:class:`Manifest`).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from leod.plumbing.errors import DataFormatError, MissingInputError, read_json

SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"


def repr_dir_name(window_ms: float, nbins: int) -> str:
    return f"stacked_histogram_dt={window_ms:g}_nbins={nbins}"


def repr_file_name(downsample: bool) -> str:
    return "event_representations_ds2_nearest.h5" if downsample else "event_representations.h5"


@dataclass(frozen=True)
class SequencePaths:
    """Every file of one preprocessed sequence."""

    root: Path
    window_ms: float
    nbins: int
    downsample: bool

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def repr_dir(self) -> Path:
        return self.root / "event_representations_v2" / repr_dir_name(self.window_ms, self.nbins)

    @property
    def representations(self) -> Path:
        """HDF5 dataset ``data``: uint8 ``(T, 2*nbins, H, W)`` histograms."""
        return self.repr_dir / repr_file_name(self.downsample)

    @property
    def objframe_to_repr(self) -> Path:
        """int64 repr index of each label frame."""
        return self.repr_dir / "objframe_idx_2_repr_idx.npy"

    @property
    def repr_timestamps(self) -> Path:
        """int64 end time (us) of each repr frame."""
        return self.repr_dir / "timestamps_us.npy"

    @property
    def labels_dir(self) -> Path:
        return self.root / "labels_v2"

    @property
    def labels(self) -> Path:
        """``labels`` (boxes) and ``objframe_idx_2_label_idx`` (each label frame's first box)."""
        return self.labels_dir / "labels.npz"

    @property
    def label_timestamps(self) -> Path:
        """int64 time (us) of each label frame."""
        return self.labels_dir / "timestamps_us.npy"


@dataclass(frozen=True)
class Manifest:
    """What a preprocessed dataset is; written by ``preprocess``, read by every later stage:
    resolution, classes, representation, the sequences per split, and ``data_root`` when the
    sequences live elsewhere (a user's RVT download used without conversion)."""

    dataset: str
    height: int  # of the representation (after optional downsampling)
    width: int
    orig_height: int  # of the sensor; label coordinates are in this frame
    orig_width: int
    downsample: bool
    classes: list[str]
    nbins: int
    window_ms: float
    step_ms: float
    splits: dict[str, list[str]] = field(default_factory=dict)
    data_root: str | None = None  # None: the sequences sit beside the manifest

    def sequence(self, root: Path, split: str, name: str) -> SequencePaths:
        base = Path(self.data_root) if self.data_root else root
        return SequencePaths(base / split / name, self.window_ms, self.nbins, self.downsample)

    def sequences(self, root: Path, split: str) -> list[SequencePaths]:
        return [self.sequence(root, split, n) for n in self.splits.get(split, [])]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def load_manifest(root: str | os.PathLike[str]) -> Manifest:
    """Read ``<root>/manifest.json``; a missing one means ``preprocess`` has not run."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise MissingInputError(f"{path}: no preprocessed dataset here; run `dvc repro preprocess` first")
    data = read_json(path, "manifest")
    try:
        return Manifest(**data)
    except TypeError as exc:
        raise DataFormatError(f"{path}: corrupt manifest ({exc})") from exc
