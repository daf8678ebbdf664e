"""LEOD's linear tracker as a pseudo-label filter: boxes of short tracks become ignore regions.

True objects move smoothly and are detected in many consecutive frames; false positives flicker.
So, as LEOD does (``modules/tracking/linear.py``, ``modules/pseudo_labeler.py::_track_filter``),
the pseudo labels of a sequence are tracked, boxes of short tracks are marked ``ignore`` (LEOD's
class 1024) and long tracks inpaint ignore boxes where they missed a frame, so that a missed
object is not learned as background. numba over flat arrays: thousands of frames take milliseconds.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

import numpy as np
from numba import njit

from leod.labels.boxes import BOX_DTYPE, validate_boxes
from leod.plumbing.errors import ConfigError, DataFormatError
from leod.pseudo.config import TrackerConfig

_METHODS = ("forward", "forward_or_backward")
_SOURCE = "track_filter input"
#: BOX_DTYPE seen as opaque records: numpy concatenates and indexes these without its slow
#: structured-dtype handling (~150 ns a row otherwise).
_RECORD = np.dtype((np.void, BOX_DTYPE.itemsize))


@dataclass(frozen=True)
class TrackStats:
    """What :func:`track_filter` did to one sequence (add them up over sequences)."""

    #: boxes that took part in tracking (input boxes not already ``ignore``)
    boxes_in: int
    #: of those, boxes newly marked ``ignore`` because their track is short
    boxes_ignored: int
    #: ignore boxes added at the missed frames of long tracks
    boxes_inpainted: int
    #: tracks of the forward pass, and how many of them are long
    tracks: int
    long_tracks: int

    @property
    def boxes_kept(self) -> int:
        """Tracked boxes that stay ordinary labels (their track is long)."""
        return self.boxes_in - self.boxes_ignored

    def metrics(self) -> dict[str, int]:
        """The counts under the names the pseudo-label summary and MLflow record them by."""
        return {
            "track_kept": self.boxes_kept,
            "track_ignored": self.boxes_ignored,
            "track_inpainted": self.boxes_inpainted,
            "tracks": self.tracks,
            "long_tracks": self.long_tracks,
        }

    def __add__(self, other: TrackStats) -> TrackStats:
        return TrackStats(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


@dataclass(frozen=True)
class _Boxes:
    """The tracked boxes as float64 corner columns, concatenated frame by frame."""

    x1: np.ndarray
    y1: np.ndarray
    x2: np.ndarray
    y2: np.ndarray
    cls: np.ndarray
    offsets: np.ndarray  # F + 1 starts

    def reversed(self) -> _Boxes:
        """The frames in reverse order, and the boxes within each frame too (as LEOD does)."""
        cols = (np.ascontiguousarray(a[::-1]) for a in (self.x1, self.y1, self.x2, self.y2, self.cls))
        return _Boxes(*cols, np.ascontiguousarray(self.offsets[-1] - self.offsets[::-1]))


@njit(cache=True)
def _clamp(v: float, size: float) -> float:
    """``v`` clipped to ``[0, size]``: the frame detections are clipped to (``clip_to_frame``);
    LEOD clips both to ``[0, size - 1]``, the same rule in its pixel convention."""
    return min(max(v, 0.0), size)


@njit(cache=True)
def _iou(
    ax1: float, ay1: float, ax2: float, ay2: float, a_area: float,
    bx1: float, by1: float, bx2: float, by2: float, b_area: float,
) -> float:  # fmt: skip
    """IoU of two corner-format boxes given their areas; 0 when they do not overlap."""
    ix = min(ax2, bx2) - max(ax1, bx1)
    if ix <= 0.0:
        return 0.0
    iy = min(ay2, by2) - max(ay1, by1)
    if iy <= 0.0:
        return 0.0
    inter = ix * iy
    return inter / (a_area + b_area - inter)


@njit(cache=True)
def _velocity(
    new_lo: float, new_hi: float, old_c: float, c: float, size: float, q_lo: float, q_hi: float
) -> float:
    """LEOD's ``_robust_velocity`` on one axis: the centre's move from the previous (unclamped)
    state ``old_c`` to the detection ``[new_lo, new_hi]``; but where the prediction (centre ``c``,
    clamped to ``[q_lo, q_hi]``) was clamped on one side only, the object was leaving the image and
    its clipped detection's centre moved less than it did, so the move of the opposite, unclamped
    edge is taken instead."""
    lo_moved, hi_moved = q_lo != c - size / 2, q_hi != c + size / 2
    if lo_moved and not hi_moved:
        return new_hi - (old_c + size / 2)
    if hi_moved and not lo_moved:
        return new_lo - (old_c - size / 2)
    return (new_lo + new_hi) / 2 - old_c


@njit(cache=True)
def _weight(decay: float, age: int) -> float:
    """``decay + decay^2 + ... + decay^age``: how much the old confidence counts at a match."""
    if decay == 1.0:
        return float(age)
    return decay * (1.0 - decay**age) / (1.0 - decay)


@njit(cache=True)
def _track_pass(
    x1: np.ndarray,
    y1: np.ndarray,
    x2: np.ndarray,
    y2: np.ndarray,
    cls: np.ndarray,
    offsets: np.ndarray,
    frame_gt: np.ndarray,
    height: float,
    width: float,
    iou_thr: float,
    init_conf: float,
    decay: float,
    min_conf: float,
    min_len: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One tracking pass. Returns per box its track, the previous box matched by that track (-1
    for the first) and the track's velocity right after this box; per track whether it is long.
    At most one track is born per box, so every track array is sized by the box count."""
    n = x1.shape[0]
    area = (x2 - x1) * (y2 - y1)
    box_track = np.full(n, -1, np.int64)
    box_prev = np.full(n, -1, np.int64)
    box_vx = np.zeros(n)
    box_vy = np.zeros(n)
    used = np.zeros(n, np.bool_)

    tx, ty, tw, th = np.empty(n), np.empty(n), np.empty(n), np.empty(n)  # unclamped state
    px, py = np.empty(n), np.empty(n)  # centre held in the previous frame
    qx1, qy1, qx2, qy2 = np.empty(n), np.empty(n), np.empty(n), np.empty(n)  # prediction, clamped
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
            if tw[j] * th[j] <= 0.0:  # no area: finished (LEOD's check on the unclamped box)
                continue
            # constant velocity for the centre, size as last observed; matching sees the
            # prediction clamped to the image, the state itself stays unclamped
            age[j] += 1
            px[j], py[j] = tx[j], ty[j]
            tx[j] += tvx[j]
            ty[j] += tvy[j]
            qx1[j], qx2[j] = _clamp(tx[j] - tw[j] / 2, width), _clamp(tx[j] + tw[j] / 2, width)
            qy1[j], qy2[j] = _clamp(ty[j] - th[j] / 2, height), _clamp(ty[j] + th[j] / 2, height)
            active[kept] = j
            kept += 1
        n_active = kept

        for a in range(n_active):  # stable insertion sort (ties: older first); few tracks a frame
            j = active[a]
            b = a
            while b > 0 and conf[order[b - 1]] < conf[j]:
                order[b] = order[b - 1]
                b -= 1
            order[b] = j

        # greedy, class-aware: each track takes the free detection of highest IoU (first on ties)
        for a in range(n_active):
            j = order[a]
            best = -1
            best_iou = -1.0
            ax1, ay1, ax2, ay2, c = qx1[j], qy1[j], qx2[j], qy2[j], tcls[j]
            a_area = (ax2 - ax1) * (ay2 - ay1)
            for d in range(start, stop):
                if used[d] or cls[d] != c:
                    continue
                o = _iou(ax1, ay1, ax2, ay2, a_area, x1[d], y1[d], x2[d], y2[d], area[d])
                if o > best_iou:
                    best_iou = o
                    best = d
            if best < 0 or best_iou < iou_thr:
                conf[j] *= decay
                continue
            used[best] = True
            hits[j] = age[j] + 1  # frames from birth to now, inclusive
            # not divided by the gap after misses: LEOD's rule
            tvx[j] = _velocity(x1[best], x2[best], px[j], tx[j], tw[j], qx1[j], qx2[j])
            tvy[j] = _velocity(y1[best], y2[best], py[j], ty[j], th[j], qy1[j], qy2[j])
            tx[j], ty[j] = (x1[best] + x2[best]) / 2, (y1[best] + y2[best]) / 2
            tw[j], th[j] = x2[best] - x1[best], y2[best] - y1[best]
            is_gt[j] = is_gt[j] or gt_frame
            s = _weight(decay, age[j])  # confidence moves towards 1, never reset to init_conf
            conf[j] = (s * conf[j] + 1.0) / (s + 1.0)
            box_track[best] = j
            box_prev[best] = last_box[j]
            box_vx[best], box_vy[best] = tvx[j], tvy[j]
            last_box[j] = best

        for d in range(start, stop):  # every unmatched detection starts a track
            if used[d]:
                continue
            j = n_tracks
            n_tracks += 1
            tx[j], ty[j] = (x1[d] + x2[d]) / 2, (y1[d] + y2[d]) / 2
            tw[j], th[j] = x2[d] - x1[d], y2[d] - y1[d]
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

        # no age limit: with the defaults a newborn track dies at its 5th miss, a matched one at its 6th
        kept = 0
        for a in range(n_active):
            j = active[a]
            if conf[j] >= min_conf:
                active[kept] = j
                kept += 1
        n_active = kept

    # long: enough hits, or a GT box, or cut by the end of the sequence (trailing empty frames
    # count as misses: LEOD stops at its last labelled frame, we are given every frame)
    for a in range(n_active):
        alive[active[a]] = True
    track_long = (hits[:n_tracks] >= min_len) | is_gt[:n_tracks] | alive[:n_tracks]
    return box_track, box_prev, box_vx, box_vy, track_long


def _run(
    boxes: _Boxes, gt: np.ndarray, cfg: TrackerConfig, frame_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_track_pass` with the config's scalars in the types numba compiled for."""
    height, width = map(float, frame_hw)
    rules = (float(cfg.iou), float(cfg.init_conf), float(cfg.conf_decay), float(cfg.min_conf))
    cols = (boxes.x1, boxes.y1, boxes.x2, boxes.y2, boxes.cls, boxes.offsets)
    return _track_pass(*cols, gt, height, width, *rules, int(cfg.min_track_len))


@njit(cache=True)
def _inpaint(
    box_frame: np.ndarray,
    box_track: np.ndarray,
    box_prev: np.ndarray,
    x1: np.ndarray,
    y1: np.ndarray,
    x2: np.ndarray,
    y2: np.ndarray,
    box_vx: np.ndarray,
    box_vy: np.ndarray,
    track_long: np.ndarray,
    frame_gt: np.ndarray,
    height: float,
    width: float,
    most: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame, source box and corners (x1, y1, x2, y2) of every inpainted box (at ``most``): the
    frames a long track missed between two of its matches ``p`` and ``i``, GT frames excepted (GT
    is complete there). The box is ``p`` moved ``f - frame(p)`` times by the velocity held after
    ``p`` and clamped to the image: what the tracker predicted there, computed after the fact."""
    out_frame = np.empty(most, np.int64)
    out_src = np.empty(most, np.int64)
    corners = np.empty((most, 4))
    k = 0
    for i in range(box_frame.shape[0]):
        p = box_prev[i]
        if p < 0 or not track_long[box_track[i]]:
            continue
        for f in range(box_frame[p] + 1, box_frame[i]):
            if frame_gt[f]:
                continue
            step = f - box_frame[p]
            out_frame[k], out_src[k] = f, p
            corners[k, 0] = _clamp(x1[p] + box_vx[p] * step, width)
            corners[k, 1] = _clamp(y1[p] + box_vy[p] * step, height)
            corners[k, 2] = _clamp(x2[p] + box_vx[p] * step, width)
            corners[k, 3] = _clamp(y2[p] + box_vy[p] * step, height)
            k += 1
    return out_frame[:k], out_src[:k], corners[:k]


def _check_inputs(
    frames: list[np.ndarray],
    is_gt: np.ndarray,
    cfg: TrackerConfig,
    frame_hw: tuple[int, int],
    frame_times: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate the call; return the per-frame GT flags and frame times as flat arrays."""
    if cfg.method not in _METHODS:
        raise ConfigError(f"pseudo.track_method: {cfg.method!r} is not one of {list(_METHODS)}")
    if len(frame_hw) != 2 or not all(isinstance(s, int | np.integer) and s > 0 for s in frame_hw):
        raise DataFormatError(f"{_SOURCE}: frame_hw must be two positive integers, got {frame_hw}")
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


def track_filter(
    frames: list[np.ndarray],
    is_gt: np.ndarray,
    cfg: TrackerConfig,
    *,
    frame_hw: tuple[int, int],
    frame_times: np.ndarray | None = None,
) -> tuple[list[np.ndarray], TrackStats]:
    """Mark the boxes of short tracks ``ignore``, fill ``track_id``, inpaint missed frames.

    ``frames``: one BOX_DTYPE array per frame of one sequence, in time order; ``is_gt``: one bool
    per frame, True where the boxes are ground truth; ``frame_hw``: the image (height, width) in
    the boxes' pixels, which predictions are clamped to; ``frame_times`` (optional): one time per
    frame (us) for the inpainted boxes, else a frame's time is that of its boxes (interpolated for
    empty frames). Returns new arrays (one per frame: the input boxes in their order, then the
    inpainted boxes by track id) and the :class:`TrackStats`. Deterministic; inputs unchanged.
    """
    gt, times = _check_inputs(frames, is_gt, cfg, frame_hw, frame_times)
    n_frames = len(frames)
    if n_frames == 0:
        return [], TrackStats(0, 0, 0, 0, 0)
    counts = np.fromiter(map(len, frames), np.int64, n_frames)
    # joined as bytes: concatenating thousands of small structured arrays costs more
    boxes = np.frombuffer(b"".join([frame.tobytes() for frame in frames]), BOX_DTYPE).copy()
    validate_boxes(boxes, _SOURCE)
    all_offsets = np.zeros(n_frames + 1, np.int64)
    np.cumsum(counts, out=all_offsets[1:])
    box_frame = np.repeat(np.arange(n_frames, dtype=np.int64), counts)

    # boxes already ignore take no part and come back unchanged (their track_id too)
    sel = np.flatnonzero(~boxes["ignore"])
    frame = box_frame[sel]
    offsets = np.zeros(n_frames + 1, np.int64)
    np.cumsum(np.bincount(frame, minlength=n_frames), out=offsets[1:])
    # field by field: fancy indexing of a structured array costs ~150 ns a row
    x1 = boxes["x"][sel].astype(np.float64)
    y1 = boxes["y"][sel].astype(np.float64)
    cols = _Boxes(
        x1, y1, x1 + boxes["w"][sel], y1 + boxes["h"][sel], boxes["class_id"][sel].astype(np.int64), offsets
    )

    box_track, box_prev, box_vx, box_vy, track_long = _run(cols, gt, cfg, frame_hw)
    short = ~track_long[box_track]
    if cfg.method == "forward_or_backward":  # ignored only if short in the reversed pass too
        back_track, _, _, _, back_long = _run(cols.reversed(), np.ascontiguousarray(gt[::-1]), cfg, frame_hw)
        short &= ~back_long[back_track][::-1]
    # every tracked box, GT included, gets its forward track's id; GT is never marked (long)
    boxes["track_id"][sel] = box_track
    boxes["ignore"][sel] = short

    n_inpaint = 0
    if cfg.inpaint:  # forward pass only, as LEOD
        matched = box_prev >= 0
        most = int((frame[matched] - frame[box_prev[matched]] - 1).sum())  # every gap, GT or not
        height, width = map(float, frame_hw)
        ip_frame, src, corners = _inpaint(
            frame, box_track, box_prev, cols.x1, cols.y1, cols.x2, cols.y2, box_vx, box_vy,
            track_long, gt, height, width, most,
        )  # fmt: skip
        n_inpaint = len(ip_frame)
    if n_inpaint:
        if times is None:
            times = _frame_times_from_boxes(boxes, all_offsets)
        ip_track = box_track[src]
        order = np.lexsort((ip_track, ip_frame))
        ip_frame, src, corners, ip_track = ip_frame[order], src[order], corners[order], ip_track[order]
        painted = np.zeros(n_inpaint, BOX_DTYPE)  # class_confidence = objectness = 0
        painted["t"] = times[ip_frame]
        # as LEOD, a prediction fully outside the image is inpainted with no area
        painted["x"], painted["y"] = corners[:, 0], corners[:, 1]
        painted["w"], painted["h"] = corners[:, 2] - corners[:, 0], corners[:, 3] - corners[:, 1]
        painted["class_id"] = cols.cls[src]
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
