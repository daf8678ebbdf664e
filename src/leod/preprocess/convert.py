"""Convert one raw recording (events + boxes) into the RVT preprocessed layout.

Events are streamed in chunks of ``read_chunk_events``; a small carry buffer holds the
events later windows still need, and windows are computed at most ``_BLOCK_BYTES`` of
frames at a time, so memory stays bounded whatever the recording's length or the time one
chunk spans. Frames go to a resizable Blosc-zstd HDF5 dataset, one chunk per frame (RVT's).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hdf5plugin
import numpy as np

from leod.data.config import DatasetPreset
from leod.data.layout import SequencePaths
from leod.events import open_recording
from leod.events.types import Events
from leod.labels.boxes import load_bbox_npy
from leod.plumbing.atomic import save_npy, save_npz, write_h5
from leod.plumbing.errors import ConfigError, DataFormatError
from leod.preprocess.config import PreprocessConfig, RepresentationConfig
from leod.preprocess.histogram import output_shape, stacked_histograms
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
    reader: dict[str, int]  # the reader's ReadStats of its pass
    box_stats: BoxFilterStats
    skipped: str | None = None


#: Most frame bytes computed at once (one block of windows).
_BLOCK_BYTES = 64 << 20
#: Events this long after the last label frame mean corrupt timestamps: datasets label their
#: recordings to the end, and a counter misread as a wrap or a flipped high bit moves every
#: later event minutes to hours ahead.
MAX_EVENTS_AFTER_LABELS_S = 600


def grid_us(rep: RepresentationConfig) -> tuple[int, int]:
    """``(window_us, step_us)`` of the representation grid; both must be at least 1 us."""
    window_us, step_us = round(rep.window_ms * 1000), round(rep.step_ms * 1000)
    for key, value, us in (("window_ms", rep.window_ms, window_us), ("step_ms", rep.step_ms, step_us)):
        if us < 1:
            raise ConfigError(
                f"params key 'representation.{key}' = {value} is below the 1 us timestamp resolution"
            )
    return window_us, step_us


def stream_histograms(
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
    of the windows still open; a block holds at most ``_BLOCK_BYTES`` of frames.
    """
    frame_bytes = int(np.prod(output_shape(preset.height, preset.width, rep.nbins, preset.downsample)))
    block_span = max(1, _BLOCK_BYTES // frame_bytes) * step_us
    carry = Events.empty()
    next_end = first_end
    last_t: int | None = None

    def blocks(buf: Events, stop: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The windows ending in ``[next_end, stop)``, block by block, each from its own events."""
        for start in range(next_end, stop, block_span):
            ends = np.arange(start, min(start + block_span, stop), step_us, dtype=np.int64)
            first = int(np.searchsorted(buf.t, ends[0] - window_us, side="left"))
            last = int(np.searchsorted(buf.t, ends[-1], side="right"))
            frames = stacked_histograms(
                buf.slice(first, last),
                ends,
                window_us,
                preset.height,
                preset.width,
                rep.nbins,
                rep.count_cutoff,
                downsample=preset.downsample,
            )
            yield ends, frames

    for chunk in chunks:
        buf = Events.concatenate([carry, chunk])
        last_t = int(buf.t[-1])
        if next_end < last_t:
            for ends, frames in blocks(buf, last_t):
                yield ends, frames
            next_end = int(ends[-1]) + step_us
        carry = buf.slice(int(np.searchsorted(buf.t, next_end - window_us, side="left")), len(buf))
    if last_t is not None and next_end <= last_t:
        yield from blocks(carry, last_t + 1)


def _plausible(chunks: Iterator[Events], path: Path, last_label_us: int) -> Iterator[Events]:
    """``chunks`` unchanged, failing at the first event implausibly long after the labels."""
    limit = last_label_us + MAX_EVENTS_AFTER_LABELS_S * 1_000_000
    for chunk in chunks:
        t = int(chunk.t[-1])
        if t > limit:
            raise DataFormatError(
                f"{path}: events run to t={t} us, {(t - last_label_us) / 1e6:.0f} s after the last "
                f"label frame (more than {MAX_EVENTS_AFTER_LABELS_S} s): corrupt timestamps"
            )
        yield chunk


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
    if stats.none_on_sensor:
        # Not a skip: boxes that all miss the sensor mean a wrong preset size or a corrupt box
        # file, and skipping would silently drop the sequence from its split.
        raise DataFormatError(
            f"{rec.boxes_path}: none of its {stats.total - stats.dropped_class} boxes lies on the "
            f"{preset.width}x{preset.height} sensor (wrong dataset preset or corrupt box file)"
        )
    frame_times = label_frame_times(boxes["t"], preset)

    def skipped(reason: str) -> SequenceSummary:
        return SequenceSummary(rec.name, rec.split, 0, 0, 0, 0, {}, stats, skipped=reason)

    if len(frame_times) == 0:
        return skipped("no label frame left after the box rules")
    window_us, step_us = grid_us(rep)
    first_end = grid_start(int(frame_times[0]), window_us, step_us)

    reader = open_recording(
        rec.events_path, height=preset.height, width=preset.width, chunk_size=pp.read_chunk_events
    )
    out.repr_dir.mkdir(parents=True, exist_ok=True)
    out.labels_dir.mkdir(parents=True, exist_ok=True)
    channels, height, width = output_shape(preset.height, preset.width, rep.nbins, preset.downsample)
    all_ends: list[np.ndarray] = []
    with write_h5(out.representations) as h5:
        data = h5.file.create_dataset(
            "data",
            shape=(0, channels, height, width),
            maxshape=(None, channels, height, width),
            dtype=np.uint8,
            chunks=(1, channels, height, width),
            **hdf5plugin.Blosc(cname="zstd", clevel=pp.compression_level, shuffle=hdf5plugin.Blosc.SHUFFLE),
        )
        chunks = _plausible(reader.iter_chunks(), rec.events_path, int(frame_times[-1]))
        for ends, frames in stream_histograms(chunks, first_end, window_us, step_us, preset, rep):
            n = data.shape[0]
            data.resize(n + len(frames), axis=0)
            data[n:] = frames
            h5.check()
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
        rec.name,
        rec.split,
        len(ends),
        len(frame_times),
        len(boxes),
        reader.stats.events,
        reader.stats.as_dict(),
        stats,
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
