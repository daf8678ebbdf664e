"""Convert one raw recording (events + boxes) into the RVT preprocessed layout.

Events are streamed from disk in chunks of ``read_chunk_ms``; a small carry buffer holds
the events that later windows still need, so memory stays bounded by one chunk plus one
window whatever the recording's length. Histogram frames are appended to a resizable,
Blosc-zstd compressed HDF5 dataset with one chunk per frame (RVT's layout).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from leod.atomic import save_npy, save_npz
from leod.config import DatasetPreset, PreprocessConfig, RepresentationConfig
from leod.data.layout import SequencePaths
from leod.errors import DataFormatError
from leod.events import open_recording
from leod.events.types import Events
from leod.labels.boxes import load_bbox_npy
from leod.preprocess.histogram import stacked_histograms
from leod.preprocess.labels import (
    BoxFilterStats,
    filter_boxes,
    frames_to_repr,
    grid_start,
    label_frame_times,
)


@dataclass(frozen=True)
class Recording:
    """One raw sequence: its event file and its box file."""

    name: str
    split: str
    events_path: Path
    boxes_path: Path


@dataclass(frozen=True)
class SequenceSummary:
    """What converting one sequence produced (or why it was skipped)."""

    name: str
    split: str
    frames: int
    label_frames: int
    boxes: int
    events: int
    clamped_timestamps: int
    box_stats: BoxFilterStats
    skipped: str | None = None


def _stream_histograms(
    chunks: Iterator[Events],
    first_end: int,
    window_us: int,
    step_us: int,
    preset: DatasetPreset,
    rep: RepresentationConfig,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(ends, frames)`` blocks for window ends ``first_end + k*step`` up to the last event.

    A window is finalised once an event later than its end has been read (events are
    time-sorted), so each block only needs the current chunk plus the carried-over events
    of the windows still open.
    """
    carry = Events.empty()
    next_end = first_end
    last_t: int | None = None

    def block(buf: Events, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        frames = stacked_histograms(
            buf,
            ends,
            window_us,
            preset.height,
            preset.width,
            rep.nbins,
            rep.count_cutoff,
            downsample=preset.downsample,
        )
        return ends, frames

    for chunk in chunks:
        buf = Events.concatenate([carry, chunk])
        last_t = int(buf.t[-1])
        if next_end < last_t:
            ends = np.arange(next_end, last_t, step_us, dtype=np.int64)
            yield block(buf, ends)
            next_end = int(ends[-1]) + step_us
        carry = buf.slice(int(np.searchsorted(buf.t, next_end - window_us, side="left")), len(buf))
    if last_t is not None and next_end <= last_t:
        yield block(carry, np.arange(next_end, last_t + 1, step_us, dtype=np.int64))


def convert_sequence(
    rec: Recording,
    out: SequencePaths,
    preset: DatasetPreset,
    rep: RepresentationConfig,
    pp: PreprocessConfig,
) -> SequenceSummary:
    """Write the preprocessed files of one recording under ``out.root``.

    Label frames are the kept label timestamps (see :mod:`leod.preprocess.labels`); the
    representation grid runs through the first of them, so each sits at a window end.
    """
    boxes = load_bbox_npy(rec.boxes_path)
    boxes, stats = filter_boxes(boxes, preset, train=rec.split == "train")
    frame_times = label_frame_times(boxes["t"], preset)

    def skipped(reason: str) -> SequenceSummary:
        return SequenceSummary(rec.name, rec.split, 0, 0, 0, 0, 0, stats, skipped=reason)

    if len(frame_times) == 0:
        return skipped("no label frame left after the box rules")
    window_us = round(rep.window_ms * 1000)
    step_us = round(rep.step_ms * 1000)
    first_end = grid_start(int(frame_times[0]), window_us, step_us)

    reader = open_recording(
        rec.events_path, height=preset.height, width=preset.width, chunk_size=pp.read_chunk_events
    )
    out.repr_dir.mkdir(parents=True, exist_ok=True)
    out.labels_dir.mkdir(parents=True, exist_ok=True)
    scale = 2 if preset.downsample else 1
    channels, height, width = 2 * rep.nbins, preset.height // scale, preset.width // scale
    all_ends: list[np.ndarray] = []
    n_events = 0

    def counted(chunks: Iterator[Events]) -> Iterator[Events]:
        nonlocal n_events
        for chunk in chunks:
            n_events += len(chunk)
            yield chunk

    with h5py.File(out.representations, "w") as h5:
        data = h5.create_dataset(
            "data",
            shape=(0, channels, height, width),
            maxshape=(None, channels, height, width),
            dtype=np.uint8,
            chunks=(1, channels, height, width),
            **hdf5plugin.Blosc(cname="zstd", clevel=pp.compression_level, shuffle=hdf5plugin.Blosc.SHUFFLE),
        )
        for ends, frames in _stream_histograms(
            counted(reader.iter_chunks()), first_end, window_us, step_us, preset, rep
        ):
            n = data.shape[0]
            data.resize(n + len(frames), axis=0)
            data[n:] = frames
            all_ends.append(ends)
    ends = np.concatenate(all_ends) if all_ends else np.zeros(0, np.int64)

    repr_idx = frames_to_repr(frame_times, ends, step_us, preset.label_tolerance_ms * 1000)
    on_grid = repr_idx >= 0
    frame_times, repr_idx = frame_times[on_grid], repr_idx[on_grid]
    if len(frame_times) == 0:
        shutil.rmtree(out.root)
        return skipped("no label frame falls inside the recorded events")
    boxes = boxes[np.isin(boxes["t"], frame_times)]
    starts = np.searchsorted(boxes["t"], frame_times, side="left").astype(np.int64)

    save_npy(out.repr_timestamps, ends)
    save_npy(out.objframe_to_repr, repr_idx)
    save_npy(out.label_timestamps, frame_times)
    save_npz(out.labels, labels=boxes, objframe_idx_2_label_idx=starts)
    return SequenceSummary(
        rec.name, rec.split, len(ends), len(frame_times), len(boxes), n_events, reader.clamped_count, stats
    )


def find_recordings(raw_dir: str | os.PathLike[str], splits: tuple[str, ...]) -> list[Recording]:
    """Pair ``<name>_td.{dat,dat.h5,h5,raw}`` with ``<name>_bbox.npy`` in each split folder."""
    raw = Path(raw_dir)
    suffixes = ("_td.dat.h5", "_td.dat", "_td.h5", "_td.raw")
    recs: list[Recording] = []
    for split in splits:
        folder = raw / split
        if not folder.is_dir():
            raise DataFormatError(f"{folder}: split folder missing in the raw dataset")
        for ev in sorted(folder.iterdir()):
            suffix = next((s for s in suffixes if ev.name.endswith(s)), None)
            if suffix is None:
                continue
            name = ev.name[: -len(suffix)]
            bbox = folder / f"{name}_bbox.npy"
            if not bbox.is_file():
                raise DataFormatError(f"{ev}: no matching box file {bbox.name}")
            recs.append(Recording(name, split, ev, bbox))
    return recs
