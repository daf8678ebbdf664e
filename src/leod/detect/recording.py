"""Stream a recording of any length through a model: chunks -> histograms -> recurrent steps.

Events are read in chunks and turned into RVT stacked histograms by the streaming code the
preprocessing uses (:func:`leod.preprocess.convert.stream_histograms`); each histogram is
one model step, the LSTM state carried from window to window. Memory stays bounded by one
chunk plus one block of windows however long the recording is. Boxes come out in sensor
pixels in the Prophesee evaluator dtype, stamped with the end time of their window.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from leod.data.config import DatasetPreset
from leod.events import open_recording
from leod.events.types import Events
from leod.labels.boxes import empty_boxes, representation_size, to_evaluator, to_sensor_pixels
from leod.model.detector import RecurrentDetector
from leod.plumbing.errors import DataFormatError
from leod.plumbing.progress import progress_bar
from leod.preprocess.config import RepresentationConfig
from leod.preprocess.convert import stream_histograms


@dataclass(frozen=True)
class DetectOptions:
    """How to window the recording and filter the detections (None: the model's thresholds)."""

    window_ms: float = 50.0
    step_ms: float | None = None  # None: equal to the window (RVT's default grid)
    count_cutoff: int = 10
    conf_threshold: float | None = None
    nms_iou: float | None = None
    half_resolution: bool = False
    # to reproduce a preprocessed dataset's frames exactly (its grid runs through the first
    # label frame): first frame end - window (``--start-ms`` on the command line)
    start_us: int | None = None
    end_us: int | None = None
    height: int | None = None
    width: int | None = None
    chunk_events: int = 1 << 18  # events decoded per read (bounds the memory of a step)
    max_block_windows: int = 16  # chunks are also split by time: at most this many windows a block


@dataclass(frozen=True)
class DetectResult:
    boxes: np.ndarray  # EVALUATOR_DTYPE, sensor pixels
    frames: int
    events: int
    seconds: float


def _time_bounded(chunks: Iterator[Events], start: int, end: int | None, span_us: int) -> Iterator[Events]:
    """Events with ``start <= t <= end`` in pieces spanning at most ``span_us``."""
    for chunk in chunks:
        lo = int(np.searchsorted(chunk.t, start, side="left"))
        hi = len(chunk) if end is None else int(np.searchsorted(chunk.t, end, side="right"))
        while lo < hi:
            cut = int(np.searchsorted(chunk.t, int(chunk.t[lo]) + span_us, side="left"))
            stop = min(max(cut, lo + 1), hi)
            yield chunk.slice(lo, stop)
            lo = stop
        if end is not None and hi < len(chunk):
            return


def fix_malloc_mmap_threshold(threshold: int = 1 << 17) -> None:
    """Stop glibc raising its mmap threshold as buffers are freed (a no-op elsewhere).

    The event buffers of a long run are a few MB each and vary in size; once glibc has raised
    the threshold they come from the heap, which fragments and grows with the recording's
    length (measured: +70 MB over 10 minutes of events); fixed, they are mapped and unmapped.
    """
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is not None:
        mallopt(-3, threshold)  # M_MMAP_THRESHOLD


def check_input_size(path: Path, info: dict, height: int, width: int) -> None:
    """An imported model states the histogram size it was trained on; another size is refused."""
    size = info.get("input_size")
    if size is not None and list(size) != [height, width]:
        raise DataFormatError(
            f"{path}: histograms of {height}x{width} but the model takes {size[0]}x{size[1]} "
            "(use --half-resolution for a 1Mpx recording and a 1Mpx model)"
        )


#: Called once per window with its end time, its histogram ``(2*nbins, H, W)`` and its boxes
#: (BOX_DTYPE in histogram pixels, i.e. halved with ``half_resolution``), e.g. to draw a video.
FrameHook = Callable[[int, np.ndarray, np.ndarray], None]


@torch.inference_mode()
def detect_recording(
    path: Path,
    model: RecurrentDetector,
    info: dict,
    opts: DetectOptions,
    progress: bool = True,
    on_frame: FrameHook | None = None,
) -> DetectResult:
    """Detections of every window of ``path`` (see module doc)."""
    path = Path(path)
    reader = open_recording(path, opts.height, opts.width, chunk_size=opts.chunk_events)
    if reader.height is None or reader.width is None:
        raise DataFormatError(f"{path}: the file does not state its sensor size; pass --height and --width")
    height, width = representation_size(reader.height, reader.width, opts.half_resolution)
    check_input_size(path, info, height, width)
    nbins = model.cfg.in_channels // 2
    window_us = round(opts.window_ms * 1000)
    step_us = round((opts.step_ms or opts.window_ms) * 1000)
    preset = DatasetPreset(
        format="raw", height=reader.height, width=reader.width, classes=["?"], downsample=opts.half_resolution
    )
    rep = RepresentationConfig(nbins=nbins, count_cutoff=opts.count_cutoff, window_ms=opts.window_ms)
    device = next(model.parameters()).device
    model.eval()

    chunks = reader.iter_chunks()
    first = next(chunks, None)
    if first is None:
        raise DataFormatError(f"{path}: no events")
    start = opts.start_us if opts.start_us is not None else int(first.t[0]) // step_us * step_us

    stream = itertools.chain((first,), chunks)
    del first  # the chain alone holds it, until it is consumed
    n_events = 0

    def counted(pieces: Iterator[Events]) -> Iterator[Events]:
        nonlocal n_events
        for piece in pieces:
            n_events += len(piece)
            yield piece

    pieces = counted(_time_bounded(stream, start, opts.end_us, opts.max_block_windows * step_us))
    parts, states, frames = [], None, 0
    began = time.perf_counter()
    with progress_bar(0, f"detect {path.name}", "frame", progress) as bar:
        bar.total = None
        for ends, hists in stream_histograms(pieces, start + window_us, window_us, step_us, preset, rep):
            x = torch.from_numpy(hists).to(device)
            for k in range(len(ends)):
                preds, states = model.forward_step(x[k : k + 1].float(), states)
                det = model.predict(preds, opts.conf_threshold, opts.nms_iou)[0]
                boxes = det.to_box_array(int(ends[k]))
                parts.append(to_sensor_pixels(boxes, opts.half_resolution))
                if on_frame is not None:
                    on_frame(int(ends[k]), hists[k], boxes)
            frames += len(ends)
            bar.update(len(ends))
            elapsed = max(time.perf_counter() - began, 1e-9)
            bar.set_postfix_str(
                f"{n_events / elapsed:,.0f} ev/s, {frames / elapsed:.1f} frames/s", refresh=False
            )
    boxes = np.concatenate(parts) if parts else empty_boxes()
    return DetectResult(to_evaluator(boxes), frames, n_events, time.perf_counter() - began)
