"""RVT's stacked-histogram event representation, bit-exact and fast (numba).

The network is trained on RVT's preprocessed tensors, so "close" is not good enough: every
function reproduces uzh-rpg/RVT ``StackedHistogram`` (``fastmode=True``, as driven by
``scripts/genx/preprocess_dataset.py``) to the bit; the comments say how. Output ``uint8
(2*nbins, H, W)``, channels ``[pol0 bin 0..nbins-1, pol1 bin 0..nbins-1]``. Events are
time-sorted, so each time bin is one contiguous run (found by binary search) and the inner
loop is a pure scatter-increment; ``numba.set_num_threads`` chooses the cores.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from leod.events.types import Events
from leod.labels.boxes import downsample_factor, representation_size
from leod.plumbing.errors import ConfigError, DataFormatError

#: Largest count a uint8 channel can hold; RVT saturates ``count_cutoff`` here.
MAX_COUNT = 255
#: Events per compaction round when downsampling (a 32 KiB index buffer, L1-resident).
_DS_CHUNK = 4096
#: Below this many events per thread a window is built by one thread.
_MIN_EVENTS_PER_THREAD = 64


@njit(cache=True)
def _time_bin(dt: int, span_f32: np.float32, nbins: int) -> int:
    """RVT's bin of an event ``dt`` us after the window's first event, in torch's float32 arithmetic.

    RVT computes ``floor(dt / max(t_last - t_first, 1) * nbins)`` (clamped to ``nbins - 1``,
    over the first and last event *inside* the window, not its edges) as torch's int64 true
    division, i.e. in float32: emulated so that bins agree even for spans above 2**24 us.
    """
    scaled = (np.float32(dt) / span_f32) * np.float32(nbins)
    return min(np.int64(np.floor(scaled)), nbins - 1)


@njit(cache=True)
def _bin_starts(t: np.ndarray, nbins: int) -> np.ndarray:
    """First event index of each time bin (and ``len(t)`` last) for one window's sorted timestamps.

    ``_time_bin`` is monotonic in ``dt`` (every float step is), so each bin's first ``dt`` is
    found by binary search and its first event by ``searchsorted``: no per-event float maths.
    """
    n = len(t)
    starts = np.zeros(nbins + 1, np.int64)
    if n == 0:
        return starts
    t0 = t[0]
    span = max(t[n - 1] - t0, 1)
    span_f32 = np.float32(span)
    starts[nbins] = n
    for b in range(1, nbins):
        lo = 0
        hi = span  # _time_bin(span) == nbins - 1 >= b, so the first dt of bin b is <= span
        while lo < hi:
            mid = (lo + hi) // 2
            if _time_bin(mid, span_f32, nbins) >= b:
                hi = mid
            else:
                lo = mid + 1
        starts[b] = np.searchsorted(t, t0 + lo)
    return starts


@njit(cache=True)
def _scatter(
    x: np.ndarray,
    y: np.ndarray,
    p: np.ndarray,
    out: np.ndarray,
    base: int,
    pol_stride: int,
    width: int,
    downsample: bool,
) -> None:
    """Add one count per event at ``out[base + p*pol_stride + y*width + x]`` (uint8, wrapping
    modulo 256 like RVT's fastmode; only hot pixels with >= 256 events in one bin notice).

    Unsigned index maths over slices starting at 0 lets LLVM drop negative-index fix-ups,
    which more than halves the loop time. ``width`` is the output plane's (halved when
    downsampling, where only events on odd rows and columns land, see below).
    """
    b = np.uint64(base)
    ps = np.uint64(pol_stride)
    w = np.uint64(width)
    one = np.uint8(1)
    if not downsample:
        for i in range(len(x)):
            out[b + np.uint64(p[i]) * ps + np.uint64(y[i]) * w + np.uint64(x[i])] += one
        return
    # RVT halves the finished histogram with interpolate(scale_factor=0.5, mode='nearest-exact'),
    # which keeps source pixel (2i+1, 2j+1): dropping events with an even x or y once the time
    # bins are normalised over all events is identical and 4x less work. Compacting the indices
    # into a small L1-resident buffer first (branch-free write cursor), then scattering, beats
    # both a mispredicted branch per event and a dummy add-0 for every dropped event.
    buf = np.empty(_DS_CHUNK, np.uint64)
    for c in range(0, len(x), _DS_CHUNK):
        xs = x[c : c + _DS_CHUNK]
        ys = y[c : c + _DS_CHUNK]
        pc = p[c : c + _DS_CHUNK]
        kept = 0
        for i in range(len(xs)):
            xi = np.uint64(xs[i])
            yi = np.uint64(ys[i])
            buf[kept] = np.uint64(pc[i]) * ps + (yi >> np.uint64(1)) * w + (xi >> np.uint64(1))
            kept += xi & yi & np.uint64(1)
        for i in range(kept):
            out[b + buf[i]] += one


@njit(cache=True)
def _clip(out: np.ndarray, cutoff: np.uint8) -> None:
    """Saturate counts at ``cutoff`` in place, after the wrapping accumulation as in RVT
    (vectorises to byte-wise min)."""
    for i in range(len(out)):
        out[i] = min(out[i], cutoff)


@njit(cache=True)
def _range_valid(t: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray, height: int, width: int) -> bool:
    """True when ``t`` never decreases and every x, y, p is inside the ``height x width`` sensor.

    ``t`` may start one event before ``x, y, p`` so that the step into the range is checked too.
    One reduction loop per column: each vectorises on its own (3x faster than one fused loop).
    """
    x_max = np.uint16(0)
    for i in range(len(x)):
        x_max = max(x_max, x[i])
    y_max = np.uint16(0)
    for i in range(len(y)):
        y_max = max(y_max, y[i])
    p_max = np.uint8(0)
    for i in range(len(p)):
        p_max = max(p_max, p[i])
    step_min = np.int64(0)
    for i in range(len(t) - 1):
        step_min = min(step_min, t[i + 1] - t[i])
    return len(x) == 0 or (x_max < width and y_max < height and p_max <= 1 and step_min >= 0)


@njit(cache=True, parallel=True)
def _all_valid(
    t: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray, height: int, width: int, nparts: int
) -> bool:
    """``_range_valid`` over ``nparts`` event ranges in parallel (a memory-bandwidth-bound pass)."""
    n = len(t)
    ok = np.zeros(nparts, np.bool_)
    for k in prange(nparts):
        a = k * n // nparts
        z = (k + 1) * n // nparts
        ok[k] = _range_valid(t[max(a - 1, 0) : z], x[a:z], y[a:z], p[a:z], height, width)
    return ok.all()


@njit(cache=True)
def _fill_range(
    x: np.ndarray,
    y: np.ndarray,
    p: np.ndarray,
    starts: np.ndarray,
    first: int,
    stop: int,
    out: np.ndarray,
    spill: np.ndarray,
    height: int,
    width: int,
    downsample: bool,
) -> int:
    """Scatter events ``[first, stop)`` of a window, bin by bin (``starts``: each bin's first event).

    A bin whose first event lies in the range goes straight into ``out``; a bin that began
    before ``first`` (shared with the range before) goes into ``spill`` (two planes) instead.
    Returns that bin, or -1.
    """
    nbins = len(starts) - 1
    out_width = width // 2 if downsample else width
    plane = (height // 2 if downsample else height) * out_width
    spilled = -1
    for b in range(nbins):
        s = max(first, starts[b])
        e = min(stop, starts[b + 1])
        if s >= e:
            continue
        if s == starts[b]:
            _scatter(x[s:e], y[s:e], p[s:e], out, b * plane, nbins * plane, out_width, downsample)
        else:
            spilled = b
            _scatter(x[s:e], y[s:e], p[s:e], spill, 0, plane, out_width, downsample)
    return spilled


@njit(cache=True)
def _fill_window(
    t: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    p: np.ndarray,
    out: np.ndarray,
    nbins: int,
    height: int,
    width: int,
    downsample: bool,
    cutoff: np.uint8,
) -> None:
    """One window into the zeroed flat ``out`` (``2*nbins`` planes of the output size), one thread."""
    # the whole window is one range: no bin began before it, nothing spills
    _fill_range(x, y, p, _bin_starts(t, nbins), 0, len(t), out, out[:0], height, width, downsample)
    _clip(out, cutoff)


@njit(cache=True, parallel=True)
def _fill_window_parallel(
    t: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    p: np.ndarray,
    out: np.ndarray,
    nbins: int,
    height: int,
    width: int,
    downsample: bool,
    cutoff: np.uint8,
    nparts: int,
) -> None:
    """``_fill_window`` with the events split into ``nparts`` equal ranges, one per thread.

    Bins are disjoint output channels, so a part writes straight into ``out`` for every bin
    whose first event it owns. A part that starts inside a bin shares that bin with the part
    before it and counts it in a private two-plane buffer instead; these are added in afterwards
    (uint8 addition wraps exactly like a single accumulator).
    """
    n = len(t)
    plane = (height // 2 if downsample else height) * (width // 2 if downsample else width)
    starts = _bin_starts(t, nbins)
    spill = np.zeros((nparts, 2 * plane), np.uint8)
    spill_bin = np.full(nparts, -1, np.int64)
    for k in prange(nparts):
        first = k * n // nparts
        stop = (k + 1) * n // nparts
        spill_bin[k] = _fill_range(x, y, p, starts, first, stop, out, spill[k], height, width, downsample)
    for k in range(nparts):  # sequential: several parts may spill into the same bin
        b = spill_bin[k]
        if b >= 0:
            for pol in range(2):
                dst = out[(pol * nbins + b) * plane : (pol * nbins + b + 1) * plane]
                src = spill[k, pol * plane : (pol + 1) * plane]
                for i in range(plane):
                    dst[i] += src[i]
    for c in prange(2 * nbins):
        _clip(out[c * plane : (c + 1) * plane], cutoff)


@njit(cache=True, parallel=True)
def _fill_windows(
    t: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    p: np.ndarray,
    first: np.ndarray,
    stop: np.ndarray,
    out: np.ndarray,
    nbins: int,
    height: int,
    width: int,
    downsample: bool,
    cutoff: np.uint8,
) -> None:
    """Window ``k`` (events ``first[k]:stop[k]``) into row ``k`` of the zeroed ``out``, one per thread."""
    for k in prange(len(first)):
        a = first[k]
        z = stop[k]
        _fill_window(t[a:z], x[a:z], y[a:z], p[a:z], out[k], nbins, height, width, downsample, cutoff)


_DTYPES = {
    "t": np.dtype(np.int64),
    "x": np.dtype(np.uint16),
    "y": np.dtype(np.uint16),
    "p": np.dtype(np.uint8),
}


def _invalid(events: Events, height: int, width: int) -> DataFormatError:
    """The error naming the first bad event (slow path, only once a check has failed)."""
    for name in _DTYPES:
        if getattr(events, name).dtype.kind not in "iu":
            return DataFormatError(
                f"event column {name} has dtype {getattr(events, name).dtype}, expected integers"
            )
    for name, values, limit in (("x", events.x, width), ("y", events.y, height), ("p", events.p, 2)):
        bad = np.flatnonzero((values < 0) | (values >= limit))
        if len(bad):
            i = int(bad[0])
            what = "polarity must be 0 or 1" if name == "p" else f"outside the {height}x{width} sensor"
            return DataFormatError(f"event {i} has {name}={int(values[i])}: {what} ({len(bad)} such events)")
    i = int(np.flatnonzero(np.diff(events.t) < 0)[0])
    return DataFormatError(
        f"timestamps decrease at event {i + 1} (t={int(events.t[i + 1])} after {int(events.t[i])})"
    )


def _parallel_parts(n_events: int) -> int:
    """Threads worth using for ``n_events``: 1 means run the serial kernel.

    A parallel region waits for all its threads, which on a busy machine can cost a scheduler
    time slice, so small inputs and single-thread settings stay out of it.
    """
    threads = numba.get_num_threads()
    return threads if n_events >= _MIN_EVENTS_PER_THREAD * threads else 1


def _columns(
    events: Events, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The event columns, contiguous in the dtypes the kernels are compiled for, every event checked.

    Raises DataFormatError for coordinates outside the sensor, polarities other than 0/1 and
    decreasing timestamps (the caller prefixes the file name). Other integer dtypes are checked
    before narrowing, which could otherwise wrap a bad value into range.
    """
    native = all(getattr(events, name).dtype == dtype for name, dtype in _DTYPES.items())
    if not native:
        if any(getattr(events, name).dtype.kind not in "iu" for name in _DTYPES):
            raise _invalid(events, height, width)
        in_range = len(events) == 0 or all(
            int(values.min()) >= 0 and int(values.max()) < limit
            for values, limit in ((events.x, width), (events.y, height), (events.p, 2))
        )
        if not in_range:
            raise _invalid(events, height, width)
    cols = tuple(np.ascontiguousarray(getattr(events, name), dtype=dtype) for name, dtype in _DTYPES.items())
    nparts = _parallel_parts(len(events))
    ok = _all_valid(*cols, height, width, nparts) if nparts > 1 else _range_valid(*cols, height, width)
    if not ok:
        raise _invalid(events, height, width)
    return cols


def output_shape(height: int, width: int, nbins: int, downsample: bool = False) -> tuple[int, int, int]:
    """``(2*nbins, H, W)`` of one histogram, H and W halved (floored) when downsampling like RVT."""
    if nbins < 1:
        raise ConfigError(f"representation.nbins must be >= 1, got {nbins}")
    low = downsample_factor(downsample)
    if height < low or width < low:
        raise ConfigError(f"sensor size {height}x{width} is too small (downsample={downsample})")
    return 2 * nbins, *representation_size(height, width, downsample)


def _cutoff(count_cutoff: int) -> np.uint8:
    """RVT's effective cutoff: at least 1, saturated at the uint8 maximum."""
    if count_cutoff < 1:
        raise ConfigError(f"representation.count_cutoff must be >= 1, got {count_cutoff}")
    return np.uint8(min(count_cutoff, MAX_COUNT))


def _fill(
    cols: tuple[np.ndarray, ...],
    out: np.ndarray,
    nbins: int,
    height: int,
    width: int,
    downsample: bool,
    cutoff: np.uint8,
) -> None:
    """One window (all of the checked ``cols``) into the zeroed ``out``, over the numba threads."""
    flat = out.reshape(-1)
    nparts = _parallel_parts(len(cols[0]))
    if nparts > 1:
        _fill_window_parallel(*cols, flat, nbins, height, width, downsample, cutoff, nparts)
    else:
        _fill_window(*cols, flat, nbins, height, width, downsample, cutoff)


def stacked_histogram(
    events: Events, height: int, width: int, nbins: int, count_cutoff: int, downsample: bool = False
) -> np.ndarray:
    """RVT stacked histogram of ALL ``events`` (one window): ``uint8 (2*nbins, H', W')``.

    ``H', W'`` are ``height, width``, or ``height//2, width//2`` with ``downsample``. Time bins
    are normalised to the first and last event given, as RVT does. Raises DataFormatError for
    coordinates outside the sensor, polarities other than 0/1 and decreasing timestamps.
    """
    out = np.zeros(output_shape(height, width, nbins, downsample), np.uint8)
    _fill(_columns(events, height, width), out, nbins, height, width, downsample, _cutoff(count_cutoff))
    return out


def window_slices(t: np.ndarray, window_ends_us: np.ndarray, window_us: int) -> tuple[np.ndarray, np.ndarray]:
    """Event ranges ``[first, stop)`` of the windows ``end - window_us <= t <= end``: both ends
    inclusive, as RVT's ``searchsorted(t, end - dt, 'left')`` and ``searchsorted(t, end, 'right')``."""
    ends = np.asarray(window_ends_us, dtype=np.int64)
    first = np.searchsorted(t, ends - window_us, side="left").astype(np.int64)
    stop = np.searchsorted(t, ends, side="right").astype(np.int64)
    return first, stop


def stacked_histograms(
    events: Events,
    window_ends_us: np.ndarray,
    window_us: int,
    height: int,
    width: int,
    nbins: int,
    count_cutoff: int,
    downsample: bool = False,
) -> np.ndarray:
    """Histograms of many windows over one time-sorted chunk: ``uint8 (T, 2*nbins, H', W')``.

    Window ``k`` holds the events with ``window_ends_us[k] - window_us <= t <= window_ends_us[k]``
    (both ends inclusive, as in RVT; windows may overlap and need not be sorted). The chunk must
    hold every event of every window; all of its events are checked as in ``stacked_histogram``.
    Windows run in parallel, one per numba thread.
    """
    shape = output_shape(height, width, nbins, downsample)
    cutoff = _cutoff(count_cutoff)
    if window_us <= 0:
        raise ConfigError(f"representation window must be > 0 us, got {window_us}")
    cols = _columns(events, height, width)
    first, stop = window_slices(cols[0], window_ends_us, window_us)
    out = np.zeros((len(first), *shape), np.uint8)
    if len(first) >= numba.get_num_threads():
        _fill_windows(
            *cols, first, stop, out.reshape(len(first), -1), nbins, height, width, downsample, cutoff
        )
    else:  # fewer windows than threads: parallelise inside each window instead
        for k, (a, z) in enumerate(zip(first, stop, strict=True)):
            _fill(tuple(c[a:z] for c in cols), out[k], nbins, height, width, downsample, cutoff)
    return out
