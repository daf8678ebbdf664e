"""Preprocess a whole dataset: every recording of every split, in parallel, plus the manifest.

Either converts raw recordings (``format: raw``) or indexes an existing RVT-preprocessed
download in place (``format: rvt_preprocessed``: nothing is copied, the manifest points
at it). The output folder is written atomically: a killed run leaves no partial dataset.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

from leod.config import Params
from leod.data.layout import MANIFEST, SPLITS, Manifest, SequencePaths
from leod.data.sequence import SequenceData
from leod.labels.boxes import representation_size
from leod.plumbing.atomic import atomic_path
from leod.plumbing.errors import DataFormatError, MissingInputError
from leod.plumbing.progress import progress_bar
from leod.preprocess.convert import (
    Recording,
    SequenceSummary,
    convert_sequence,
    find_recordings,
    grid_us,
)
from leod.preprocess.labels import BoxFilterStats


@dataclass(frozen=True)
class Preprocessed:
    """What the stage produced: the manifest, and the counts for its metrics file."""

    manifest: Manifest
    metrics: dict[str, Any]


def _convert_one(args: tuple[Recording, Path, Params]) -> SequenceSummary:
    rec, root, params = args
    import numba

    numba.set_num_threads(1)  # parallelism comes from the process pool
    out = SequencePaths(
        root / rec.split / rec.name,
        params.representation.window_ms,
        params.representation.nbins,
        params.preset.downsample,
    )
    return convert_sequence(rec, out, params.preset, params.representation, params.preprocess)


def _manifest(
    params: Params, splits: dict[str, list[str]], data_root: str | None, hw: tuple[int, int]
) -> Manifest:
    preset, rep = params.preset, params.representation
    return Manifest(
        dataset=params.dataset,
        height=hw[0],
        width=hw[1],
        orig_height=preset.height,
        orig_width=preset.width,
        downsample=preset.downsample,
        classes=list(preset.classes),
        nbins=rep.nbins,
        window_ms=rep.window_ms,
        step_ms=rep.step_ms,
        splits=splits,
        data_root=data_root,
    )


def convert_dataset(
    params: Params,
    raw_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> Preprocessed:
    """Convert every raw recording of the selected preset into ``out_dir`` (see module doc)."""
    preset = params.preset
    grid_us(params.representation)  # a bad grid fails before any work
    raw = Path(raw_dir)
    if not raw.is_dir():
        raise MissingInputError(f"{raw}: raw dataset folder does not exist (dataset: {params.dataset})")
    recordings = find_recordings(raw, SPLITS)
    if not recordings:
        raise DataFormatError(
            f"{raw}: no recordings (<name>_td.dat|.dat.h5|.h5|.raw + <name>_bbox.npy) found"
        )
    with atomic_path(out_dir, is_dir=True) as tmp:
        jobs = [(rec, tmp, params) for rec in recordings]
        workers = min(params.preprocess.workers, len(jobs))
        summaries: list[SequenceSummary] = []
        # closed before an error propagates, so the error stays the last line printed
        with progress_bar(len(jobs), "preprocess", "seq", enabled=progress) as bar:
            if workers == 1:
                for job in jobs:
                    summaries.append(_convert_one(job))
                    bar.update()
            else:
                with mp.get_context("spawn").Pool(workers) as pool:
                    for summary in pool.imap(_convert_one, jobs):
                        summaries.append(summary)
                        bar.update()
        splits = {s: [x.name for x in summaries if x.split == s and x.skipped is None] for s in SPLITS}
        for x in summaries:
            if x.skipped:
                log(f"skipped {x.split}/{x.name}: {x.skipped}")
        for split, names in splits.items():
            if not names:
                raise DataFormatError(f"{raw}/{split}: no usable sequence after preprocessing (empty split)")
        manifest = _manifest(
            params, splits, None, representation_size(preset.height, preset.width, preset.downsample)
        )
        (tmp / MANIFEST).write_text(manifest.to_json())
    metrics = _metrics(summaries)
    for split, m in metrics.items():
        reader = ", ".join(f"{k} {v}" for k, v in m["reader"].items())
        rules = m["box_rules"].items()
        drops = ", ".join(f"{k.removeprefix('dropped_')} {v}" for k, v in rules if k != "total")
        log(
            f"{split}: {m['sequences']} sequences ({m['skipped']} skipped), {m['frames']} frames, "
            f"{m['label_frames']} label frames, {m['boxes']} boxes kept; {m['events']:,} events "
            f"(reader: {reader or 'nothing counted'}); boxes dropped: {drops}"
        )
    return Preprocessed(manifest, metrics)


def _sum_counts(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for one in counts:
        for key, value in one.items():
            total[key] = total.get(key, 0) + value
    return total


def _metrics(summaries: list[SequenceSummary]) -> dict[str, Any]:
    """Per-split totals of the converted sequences (the stage's metrics file)."""
    out: dict[str, Any] = {}
    for split in SPLITS:
        done = [s for s in summaries if s.split == split and s.skipped is None]
        every = [s for s in summaries if s.split == split]
        stats = reduce(lambda a, b: a + b, (s.box_stats for s in every), BoxFilterStats(0, 0, 0, 0, 0, 0))
        out[split] = {
            "sequences": len(done),
            "skipped": len(every) - len(done),
            "frames": sum(s.frames for s in done),
            "label_frames": sum(s.label_frames for s in done),
            "boxes": sum(s.boxes for s in done),
            "events": sum(s.events for s in done),
            "reader": _sum_counts(s.reader for s in done),
            "box_rules": stats.as_dict(),
        }
    return out


def index_rvt_preprocessed(
    params: Params,
    raw_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    log: Callable[[str], None] = print,
) -> Preprocessed:
    """Validate an RVT-preprocessed download and write a manifest that points at it.

    Every sequence is opened as the loaders will (files, shapes, label indices) and its first
    and last frames are decoded, so a corrupt download fails here, naming the file.
    """
    root = Path(raw_dir).resolve()
    if not root.is_dir():
        raise MissingInputError(
            f"{root}: preprocessed dataset folder does not exist (dataset: {params.dataset})"
        )
    rep, preset = params.representation, params.preset
    splits: dict[str, list[str]] = {}
    shape: tuple[int, int] | None = None
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            raise DataFormatError(f"{folder}: split folder missing in the preprocessed dataset")
        names = sorted(p.name for p in folder.iterdir() if p.is_dir())
        for name in names:
            seq = SequencePaths(folder / name, rep.window_ms, rep.nbins, preset.downsample)
            for path in (seq.representations, seq.objframe_to_repr, seq.repr_timestamps, seq.labels):
                if not path.is_file():
                    raise DataFormatError(f"{path}: missing (expected RVT preprocessed layout)")
            data = SequenceData(seq)
            if data.num_frames:
                data.read_frames(0, 1)
                data.read_frames(data.num_frames - 1, data.num_frames)
            shape = shape or data.frame_shape[1:]
            if data.frame_shape[1:] != shape:
                raise DataFormatError(
                    f"{seq.representations}: frames are {data.frame_shape[1:]}, other sequences' {shape}"
                )
        if not names:
            raise DataFormatError(f"{folder}: no sequences (empty split)")
        splits[split] = names
    assert shape is not None
    manifest = _manifest(params, splits, str(root), shape)
    with atomic_path(out_dir, is_dir=True) as tmp:
        (tmp / MANIFEST).write_text(manifest.to_json())
    log(f"indexed {sum(map(len, splits.values()))} preprocessed sequences in {root} (no conversion)")
    return Preprocessed(manifest, {split: {"sequences": len(names)} for split, names in splits.items()})
