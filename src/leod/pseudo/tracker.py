"""LEOD's linear tracker as a pseudo-label filter: boxes of short tracks become ignore regions.

True objects move smoothly and are detected in many consecutive frames; false positives flicker.
LEOD (``modules/tracking/linear.py`` and ``modules/pseudo_labeler.py::_track_filter``) therefore
tracks the pseudo labels of a sequence and turns the boxes of short tracks into ignore regions
(class 1024 there, ``ignore=True`` here), and "inpaints" ignore boxes where a good track missed a
frame, so that a missed object is not learned as background. This module reproduces those rules
over flat arrays with numba: a sequence of thousands of frames takes milliseconds.

One pass over the frames, per frame:

1. Tracks whose box has no area are dropped (finished). Every other track predicts its box:
   the centre moves by the track's velocity, width and height stay those last observed.
2. Tracks are visited from the most to the least confident (ties: the older track first). Each
   takes the unused detection of its own class with the highest IoU with its prediction (ties:
   the first detection) if that IoU is >= ``cfg.iou``. A detection is matched at most once.
3. A matched track takes the detection's box; its velocity becomes the detection's centre minus
   the centre the track held in the previous frame (after a gap this is LEOD's rule too, the
   difference is not divided by the gap); ``hits`` becomes the number of frames from its birth
   to now, inclusive; it becomes a GT track if the frame is a GT frame; and its confidence moves
   towards 1 as in LEOD: ``conf = (s * conf + 1) / (s + 1)`` with
   ``s = d + d^2 + ... + d^age`` (``d = cfg.conf_decay``, ``age`` = frames since birth), i.e. the
   confidence is *not* reset to ``init_conf``. An unmatched track's confidence is multiplied
   by ``d``.
4. Every unmatched detection starts a track with confidence ``cfg.init_conf``, ``hits = 1`` and
   zero velocity. Tracks whose confidence fell under ``cfg.min_conf`` finish. With the defaults
   a new track survives 4 misses and dies at the 5th; a track matched in the frames after its
   birth (conf > 0.93) survives 5; none survives 6. There is no other age limit.

A track is *long* if ``hits >= cfg.min_track_len``, if it holds a box of a GT frame, or if it
is still alive after the last frame of the list (it may be cut by the sequence end). The list
*is* the sequence: trailing empty frames count as misses (LEOD stops at its last frame with
labels; we are given every frame, so an object that vanished for good is judged on its track).

``method="forward"`` ignores the boxes of short forward tracks; ``"forward_or_backward"`` also
runs the tracker over the reversed frames (box order within each frame reversed too, as LEOD
does) and ignores a box only if its track is short in both passes.

Inpainting (``cfg.inpaint``) follows LEOD: only tracks of the forward pass that are long, only at
the frames between the track's birth and its last match where it had no match, and never in a
GT frame (GT is complete there). The box is the track's prediction at that frame (last observed
box moved at constant velocity), ``ignore=True``, ``class_confidence = objectness = 0``, the
track's class and id, ``t`` = the frame time. LEOD clamps predictions to the image; this API
does not know the image size, so inpainted boxes may reach outside it (use
:func:`leod.labels.boxes.clip_to_frame`).

Output conventions: every tracked box gets its forward track's ``track_id`` (0, 1, ... in order
of birth, unique within the sequence), GT boxes included; apart from that, GT boxes are never
changed (their track is long by definition). Input boxes that are already ``ignore=True`` take
no part and come back unchanged (their ``track_id`` too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from leod.errors import ConfigError, DataFormatError
from leod.labels.boxes import BOX_DTYPE, validate_boxes
from leod.pseudo.config import TrackerConfig

_METHODS = ("forward", "forward_or_backward")
_SOURCE = "track_filter input"
#: BOX_DTYPE seen as opaque records: numpy concatenates these without its slow per-array
#: structured-dtype promotion (15 us a frame, most of the run time otherwise).
_RECORD = np.dtype((np.void, BOX_DTYPE.itemsize))


@dataclass(frozen=True)
class TrackStats:
    """What :func:`track_filter` did to one sequence (sum them over sequences for a round)."""

    #: boxes that took part in tracking (input boxes not already ``ignore``)
    boxes_in: int
    #: of those, boxes newly marked ``ignore`` because their track is short
    boxes_ignored: int
    #: ignore boxes added at the missed frames of long tracks
    boxes_inpainted: int
    #: tracks of the forward pass, and how many of them are long
    tracks: int
    long_tracks: int


@njit(cache=True)
def _iou_centre(
    ax: float, ay: float, aw: float, ah: float, bx: float, by: float, bw: float, bh: float
) -> float:
    """IoU of two centre-format boxes; 0 when they do not overlap or both are degenerate."""
    ix = min(ax + aw / 2, bx + bw / 2) - max(ax - aw / 2, bx - bw / 2)
    iy = min(ay + ah / 2, by + bh / 2) - max(ay - ah / 2, by - bh / 2)
    if ix <= 0.0 or iy <= 0.0:
        return 0.0
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0.0 else 0.0


@njit(cache=True)
def _weight(decay: float, age: int) -> float:
    """``decay + decay^2 + ... + decay^age``: how much the old confidence counts at a match."""
    if decay == 1.0:
        return float(age)
    return decay * (1.0 - decay**age) / (1.0 - decay)


@njit(cache=True)
def _track_pass(
    cx: np.ndarray,
    cy: np.ndarray,
    w: np.ndarray,
    h: np.ndarray,
    cls: np.ndarray,
    offsets: np.ndarray,
    frame_gt: np.ndarray,
    iou_thr: float,
    init_conf: float,
    decay: float,
    min_conf: float,
    min_len: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One tracking pass over boxes concatenated frame by frame (``offsets``: F + 1 starts).

    Returns per box its track, the previous box matched by that track (-1 for the first), the
    track's velocity right after this box, and per track whether it is long. At most one track
    is born per box, so every track array is sized by the box count.
    """
    n = cx.shape[0]
    box_track = np.full(n, -1, np.int64)
    box_prev = np.full(n, -1, np.int64)
    box_vx = np.zeros(n)
    box_vy = np.zeros(n)
    used = np.zeros(n, np.bool_)

    tx, ty, tw, th = np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    px, py = np.empty(n), np.empty(n)  # centre held in the previous frame
    tvx, tvy, conf = np.empty(n), np.empty(n), np.empty(n)
    tcls = np.empty(n, np.int64)
    age = np.empty(n, np.int64)
    hits = np.empty(n, np.int64)
    last_box = np.empty(n, np.int64)
    is_gt = np.zeros(n, np.bool_)
    alive = np.zeros(n, np.bool_)
    active = np.empty(n, np.int64)  # live tracks in order of birth
    order = np.empty(n, np.int64)  # live tracks by decreasing confidence
    n_active = 0
    n_tracks = 0

    for f in range(offsets.shape[0] - 1):
        start, stop = offsets[f], offsets[f + 1]
        gt_frame = frame_gt[f]
        kept = 0
        for a in range(n_active):
            j = active[a]
            if tw[j] * th[j] <= 0.0:
                continue
            age[j] += 1
            px[j], py[j] = tx[j], ty[j]
            tx[j] += tvx[j]
            ty[j] += tvy[j]
            active[kept] = j
            kept += 1
        n_active = kept

        for a in range(n_active):  # stable insertion sort: few tracks per frame
            j = active[a]
            b = a
            while b > 0 and conf[order[b - 1]] < conf[j]:
                order[b] = order[b - 1]
                b -= 1
            order[b] = j

        for a in range(n_active):
            j = order[a]
            best = -1
            best_iou = -1.0
            for d in range(start, stop):
                if used[d] or cls[d] != tcls[j]:
                    continue
                o = _iou_centre(tx[j], ty[j], tw[j], th[j], cx[d], cy[d], w[d], h[d])
                if o > best_iou:
                    best_iou = o
                    best = d
            if best < 0 or best_iou < iou_thr:
                conf[j] *= decay
                continue
            used[best] = True
            hits[j] = age[j] + 1
            tvx[j] = cx[best] - px[j]
            tvy[j] = cy[best] - py[j]
            tx[j], ty[j], tw[j], th[j] = cx[best], cy[best], w[best], h[best]
            is_gt[j] = is_gt[j] or gt_frame
            s = _weight(decay, age[j])
            conf[j] = (s * conf[j] + 1.0) / (s + 1.0)
            box_track[best] = j
            box_prev[best] = last_box[j]
            box_vx[best], box_vy[best] = tvx[j], tvy[j]
            last_box[j] = best

        for d in range(start, stop):
            if used[d]:
                continue
            j = n_tracks
            n_tracks += 1
            tx[j], ty[j], tw[j], th[j] = cx[d], cy[d], w[d], h[d]
            tvx[j] = 0.0
            tvy[j] = 0.0
            tcls[j] = cls[d]
            conf[j] = init_conf
            age[j] = 0
            hits[j] = 1
            is_gt[j] = gt_frame
            last_box[j] = d
            box_track[d] = j
            active[n_active] = j
            n_active += 1

        kept = 0
        for a in range(n_active):
            j = active[a]
            if conf[j] >= min_conf:
                active[kept] = j
                kept += 1
        n_active = kept

    for a in range(n_active):
        alive[active[a]] = True
    track_long = (hits[:n_tracks] >= min_len) | is_gt[:n_tracks] | alive[:n_tracks]
    return box_track, box_prev, box_vx, box_vy, track_long


@njit(cache=True)
def _inpaint(
    box_frame: np.ndarray,
    box_track: np.ndarray,
    box_prev: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    w: np.ndarray,
    h: np.ndarray,
    vx: np.ndarray,
    vy: np.ndarray,
    track_long: np.ndarray,
    frame_gt: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame, source box and centre of every inpainted box (missed non-GT frames of long tracks).

    Between two consecutive matches ``p`` and ``i`` of a track, the prediction at frame ``f`` is
    box ``p``'s centre moved ``f - frame(p)`` times by the velocity held after ``p``, with box
    ``p``'s size: exactly what the tracker predicted there, computed after the fact.
    """
    count = 0
    for i in range(box_frame.shape[0]):
        p = box_prev[i]
        if p < 0 or not track_long[box_track[i]]:
            continue
        for f in range(box_frame[p] + 1, box_frame[i]):
            if not frame_gt[f]:
                count += 1
    out_frame = np.empty(count, np.int64)
    out_src = np.empty(count, np.int64)
    out_centre = np.empty((count, 2))
    k = 0
    for i in range(box_frame.shape[0]):
        p = box_prev[i]
        if p < 0 or not track_long[box_track[i]]:
            continue
        for f in range(box_frame[p] + 1, box_frame[i]):
            if frame_gt[f]:
                continue
            step = f - box_frame[p]
            out_frame[k] = f
            out_src[k] = p
            out_centre[k, 0] = cx[p] + vx[p] * step
            out_centre[k, 1] = cy[p] + vy[p] * step
            k += 1
    return out_frame, out_src, out_centre


def _check_inputs(
    frames: list[np.ndarray], is_gt: np.ndarray, cfg: TrackerConfig, frame_times: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate the call; return the per-frame GT flags and frame times as flat arrays."""
    if cfg.method not in _METHODS:
        raise ConfigError(f"pseudo.track_method: {cfg.method!r} is not one of {list(_METHODS)}")
    gt = np.asarray(is_gt)
    if gt.dtype != np.bool_ or gt.shape != (len(frames),):
        raise DataFormatError(
            f"{_SOURCE}: is_gt must be a bool array of one flag per frame ({len(frames)}), "
            f"got {gt.dtype} {gt.shape}"
        )
    for k, frame in enumerate(frames):
        if not isinstance(frame, np.ndarray) or frame.dtype != BOX_DTYPE or frame.ndim != 1:
            raise DataFormatError(f"{_SOURCE}: frame {k} is not a 1-D BOX_DTYPE array")
    if frame_times is None:
        return gt, None
    times = np.asarray(frame_times)
    if times.shape != (len(frames),) or not np.issubdtype(times.dtype, np.integer):
        raise DataFormatError(
            f"{_SOURCE}: frame_times must hold one integer time per frame ({len(frames)}), "
            f"got {times.dtype} {times.shape}"
        )
    return gt, times.astype(np.int64)


def _frame_times_from_boxes(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Each frame's time from its first box; empty frames interpolated between their neighbours.

    Inpainted boxes only land between two frames of their track, so the interpolation never
    extrapolates for them; with RVT's regular frame grid it is exact.
    """
    filled = np.flatnonzero(offsets[1:] > offsets[:-1])
    known = boxes["t"][offsets[filled]].astype(np.float64)
    return np.rint(np.interp(np.arange(len(offsets) - 1), filled, known)).astype(np.int64)


def _long_boxes(
    cx: np.ndarray,
    cy: np.ndarray,
    w: np.ndarray,
    h: np.ndarray,
    cls: np.ndarray,
    offsets: np.ndarray,
    gt: np.ndarray,
    cfg: TrackerConfig,
) -> np.ndarray:
    """Per box, whether its track is long when the frames (and boxes) are played backwards."""
    rev = [np.ascontiguousarray(a[::-1]) for a in (cx, cy, w, h, cls)]
    rev_offsets = np.ascontiguousarray(offsets[-1] - offsets[::-1])
    box_track, _, _, _, track_long = _run(*rev, rev_offsets, np.ascontiguousarray(gt[::-1]), cfg)
    return track_long[box_track][::-1]


def _run(
    cx: np.ndarray,
    cy: np.ndarray,
    w: np.ndarray,
    h: np.ndarray,
    cls: np.ndarray,
    offsets: np.ndarray,
    gt: np.ndarray,
    cfg: TrackerConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_track_pass` with the config's scalars in the types numba compiled for."""
    return _track_pass(
        cx,
        cy,
        w,
        h,
        cls,
        offsets,
        gt,
        float(cfg.iou),
        float(cfg.init_conf),
        float(cfg.conf_decay),
        float(cfg.min_conf),
        int(cfg.min_track_len),
    )


def track_filter(
    frames: list[np.ndarray],
    is_gt: np.ndarray,
    cfg: TrackerConfig,
    *,
    frame_times: np.ndarray | None = None,
) -> tuple[list[np.ndarray], TrackStats]:
    """Mark the boxes of short tracks ``ignore``, fill ``track_id``, inpaint missed frames.

    ``frames``: one BOX_DTYPE array per frame of one sequence, in time order. ``is_gt``: one
    bool per frame, True where the boxes are ground truth. ``frame_times`` (optional): one time
    per frame (us) for the inpainted boxes; without it a frame's time is that of its boxes,
    interpolated for empty frames. Returns new arrays (one per frame: the input boxes in their
    order, then the inpainted boxes by track id) and the :class:`TrackStats`. The inputs are not
    modified. Deterministic. See the module docstring for the rules.
    """
    gt, times = _check_inputs(frames, is_gt, cfg, frame_times)
    n_frames = len(frames)
    if n_frames == 0:
        return [], TrackStats(0, 0, 0, 0, 0)
    counts = np.fromiter(map(len, frames), np.int64, n_frames)
    boxes = np.concatenate([frame.view(_RECORD) for frame in frames]).view(BOX_DTYPE)
    validate_boxes(boxes, _SOURCE)
    all_offsets = np.zeros(n_frames + 1, np.int64)
    np.cumsum(counts, out=all_offsets[1:])
    box_frame = np.repeat(np.arange(n_frames, dtype=np.int64), counts)

    sel = np.flatnonzero(~boxes["ignore"])
    frame = box_frame[sel]
    offsets = np.zeros(n_frames + 1, np.int64)
    np.cumsum(np.bincount(frame, minlength=n_frames), out=offsets[1:])
    # field by field: fancy indexing of a structured array costs ~150 ns a row
    w = boxes["w"][sel].astype(np.float64)
    h = boxes["h"][sel].astype(np.float64)
    cx = boxes["x"][sel] + w / 2
    cy = boxes["y"][sel] + h / 2
    cls = boxes["class_id"][sel].astype(np.int64)

    box_track, box_prev, box_vx, box_vy, track_long = _run(cx, cy, w, h, cls, offsets, gt, cfg)
    short = ~track_long[box_track]
    if cfg.method == "forward_or_backward":
        short &= ~_long_boxes(cx, cy, w, h, cls, offsets, gt, cfg)
    boxes["track_id"][sel] = box_track
    boxes["ignore"][sel] = short

    n_inpaint = 0
    if cfg.inpaint:
        ip_frame, src, centre = _inpaint(
            frame, box_track, box_prev, cx, cy, w, h, box_vx, box_vy, track_long, gt
        )
        n_inpaint = len(ip_frame)
    if n_inpaint:
        if times is None:
            times = _frame_times_from_boxes(boxes, all_offsets)
        ip_track = box_track[src]
        order = np.lexsort((ip_track, ip_frame))
        ip_frame, src, centre, ip_track = ip_frame[order], src[order], centre[order], ip_track[order]
        painted = np.zeros(n_inpaint, BOX_DTYPE)
        painted["t"] = times[ip_frame]
        painted["x"] = centre[:, 0] - w[src] / 2
        painted["y"] = centre[:, 1] - h[src] / 2
        painted["w"] = w[src]
        painted["h"] = h[src]
        painted["class_id"] = cls[src]
        painted["track_id"] = ip_track
        painted["ignore"] = True
        key = np.concatenate((2 * box_frame, 2 * ip_frame + 1))
        merged = np.concatenate((boxes.view(_RECORD), painted.view(_RECORD)))
        boxes = merged[np.argsort(key, kind="stable")].view(BOX_DTYPE)
        counts = counts + np.bincount(ip_frame, minlength=n_frames)
        np.cumsum(counts, out=all_offsets[1:])

    bounds = all_offsets.tolist()
    out = [boxes[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    stats = TrackStats(
        boxes_in=len(sel),
        boxes_ignored=int(short.sum()),
        boxes_inpainted=n_inpaint,
        tracks=len(track_long),
        long_tracks=int(track_long.sum()),
    )
    return out, stats
