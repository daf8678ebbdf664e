"""A random traffic scene: a static textured background and textured objects on straight paths.

Objects enter from outside the frame, cross it on a straight line at constant speed and
leave; some stop once while fully in view (a stopped object fires no events, so only a
detector with memory keeps seeing it). Every object has its own texture so that edges and
interiors fire events, and a minority has low contrast so that detection is not trivial.
Positions are piecewise linear in time (keyframes), which makes ground-truth boxes exact
at any label time. All randomness comes from the ``rng`` passed in (determinism).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from leod.labels.boxes import empty_boxes
from leod.synthetic.config import ObjectClassConfig, SyntheticConfig


@dataclass(frozen=True)
class Track:
    """One object: its silhouette, texture and keyframed centre trajectory (times in us)."""

    track_id: int
    class_id: int
    width: float
    height: float
    #: corner radius as a fraction of the half short side (0 = rectangle, 1 = capsule)
    roundness: float
    key_t: np.ndarray
    key_x: np.ndarray
    key_y: np.ndarray
    #: intensities in [0, 1] on a pixel grid covering the silhouette (row = y)
    texture: np.ndarray

    def centers(self, t_us: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centre x, y at the given times and whether the object exists then."""
        t = np.asarray(t_us, dtype=np.float64)
        cx = np.interp(t, self.key_t, self.key_x)
        cy = np.interp(t, self.key_t, self.key_y)
        alive = (t >= self.key_t[0]) & (t <= self.key_t[-1])
        return cx, cy, alive


@dataclass(frozen=True)
class Scene:
    """Background intensities (H, W) and the tracks in drawing order (last is on top)."""

    background: np.ndarray
    tracks: list[Track]
    duration_us: int


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Bilinearly upsampled Gaussian noise with features about ``cell`` pixels apart."""
    gh, gw = int(math.ceil(height / cell)) + 2, int(math.ceil(width / cell)) + 2
    grid = rng.standard_normal((gh, gw))
    oy, ox = rng.uniform(0.0, 1.0, size=2)
    ys = np.arange(height) / cell + oy
    xs = np.arange(width) / cell + ox
    y0, x0 = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    g00, g01 = grid[y0][:, x0], grid[y0][:, x0 + 1]
    g10, g11 = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (1 - fy) * ((1 - fx) * g00 + fx * g01) + fy * ((1 - fx) * g10 + fx * g11)


def _unit(pattern: np.ndarray) -> np.ndarray:
    """Scale a zero-mean pattern into [-1, 1]."""
    pattern = pattern - pattern.mean()
    peak = np.abs(pattern).max()
    return pattern / peak if peak > 0 else pattern


def make_background(cfg: SyntheticConfig, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A static textured ground: coarse shading plus medium-scale blotches, in [0, 1]."""
    pattern = 0.6 * _unit(smooth_noise(rng, height, width, 16.0)) + 0.4 * _unit(
        smooth_noise(rng, height, width, 4.0)
    )
    log_i = math.log(cfg.background_mean) + cfg.background_contrast * _unit(pattern)
    return np.clip(np.exp(log_i), 0.0, 1.0).astype(np.float32)


def make_texture(
    rng: np.random.Generator, width: float, height: float, mean: float, amplitude: float
) -> np.ndarray:
    """Object texture: stripes, blobs or both around ``mean`` with log amplitude ``amplitude``."""
    th, tw = int(math.ceil(height)) + 2, int(math.ceil(width)) + 2
    v, u = np.mgrid[0:th, 0:tw].astype(np.float64)
    angle, period, phase = rng.uniform(0, math.pi), rng.uniform(3.0, 7.0), rng.uniform(0, 2 * math.pi)
    stripes = np.tanh(
        3.0 * np.sin(2 * math.pi * (u * math.cos(angle) + v * math.sin(angle)) / period + phase)
    )
    blobs = _unit(smooth_noise(rng, th, tw, 3.0))
    kind = rng.integers(3)
    pattern = stripes if kind == 0 else blobs if kind == 1 else 0.5 * (stripes + blobs)
    return np.clip(mean * np.exp(amplitude * _unit(pattern)), 0.0, 1.0).astype(np.float32)


def _leave_distance(p: np.ndarray, d: np.ndarray, hw: float, hh: float, width: int, height: int) -> float:
    """Distance along ``d`` after which a box centred at ``p`` lies wholly outside the frame."""
    candidates = []
    for pos, dir_, half, size in ((p[0], d[0], hw, width), (p[1], d[1], hh, height)):
        if dir_ > 1e-9:
            candidates.append((size + half - pos) / dir_)
        elif dir_ < -1e-9:
            candidates.append((pos + half) / -dir_)
    return max(0.0, min(candidates))


def _inside_interval(
    start: np.ndarray, d: np.ndarray, hw: float, hh: float, width: int, height: int, length: float
) -> tuple[float, float]:
    """Path distances ``[a, b]`` where the box lies wholly inside the frame (a > b if never)."""
    lo, hi = 0.0, length
    for pos, dir_, half, size in ((start[0], d[0], hw, width), (start[1], d[1], hh, height)):
        a, b = half, size - half
        if abs(dir_) < 1e-9:
            if not a <= pos <= b:
                return 1.0, 0.0
            continue
        s1, s2 = (a - pos) / dir_, (b - pos) / dir_
        lo, hi = max(lo, min(s1, s2)), min(hi, max(s1, s2))
    return lo, hi


def sample_track(
    cfg: SyntheticConfig,
    profile: ObjectClassConfig,
    class_id: int,
    start_us: float | None,
    rng: np.random.Generator,
    height: int,
    width: int,
) -> Track:
    """One object crossing the frame; ``start_us=None`` places it mid-path at t = 0."""
    w = rng.uniform(profile.width_px.min, profile.width_px.max)
    h = rng.uniform(profile.height_px.min, profile.height_px.max)
    speed = rng.uniform(profile.speed_px_s.min, profile.speed_px_s.max) / 1e6  # px per us
    heading = math.pi * rng.integers(2) + math.radians(rng.uniform(-1, 1) * profile.heading_spread_deg)
    d = np.array([math.cos(heading), math.sin(heading)])
    cross = np.array(
        [
            rng.uniform(min(w / 2, width / 2), max(width - w / 2, width / 2)),
            rng.uniform(min(h / 2, height / 2), max(height - h / 2, height / 2)),
        ]
    )
    start = cross - _leave_distance(cross, -d, w / 2, h / 2, width, height) * d
    length = _leave_distance(start, d, w / 2, h / 2, width, height)
    end = start + length * d
    travel = length / speed

    if rng.uniform() < profile.stop_probability:
        a, b = _inside_interval(start, d, w / 2, h / 2, width, height, length)
        s_stop = rng.uniform(a, b) if a <= b else rng.uniform(0.3, 0.7) * length
        pause = rng.uniform(cfg.stop_duration_s.min, cfg.stop_duration_s.max) * 1e6
        stop = start + s_stop * d
        t_stop = s_stop / speed
        key_t = np.array([0.0, t_stop, t_stop + pause, travel + pause])
        key_xy = np.stack([start, stop, stop, end])
    else:
        key_t = np.array([0.0, travel])
        key_xy = np.stack([start, end])
    offset = start_us if start_us is not None else -rng.uniform(0.05, 0.95) * key_t[-1]

    low = rng.uniform() < cfg.low_contrast_fraction
    rc = cfg.low_contrast if low else cfg.contrast
    contrast = rng.uniform(rc.min, rc.max)
    mean = cfg.background_mean * math.exp(contrast if rng.uniform() < 0.5 else -contrast)
    texture = make_texture(rng, w, h, mean, cfg.texture_amplitude * contrast)
    return Track(
        track_id=0,  # assigned by sample_scene once all tracks are known
        class_id=class_id,
        width=w,
        height=h,
        roundness=profile.roundness,
        key_t=key_t + offset,
        key_x=key_xy[:, 0].copy(),
        key_y=key_xy[:, 1].copy(),
        texture=texture,
    )


def sample_scene(
    cfg: SyntheticConfig,
    profiles: list[ObjectClassConfig],
    rng: np.random.Generator,
    height: int,
    width: int,
) -> Scene:
    """Background plus, per class, the objects in view at t = 0 and Poisson arrivals after."""
    duration_us = round(cfg.duration_s * 1e6)
    background = make_background(cfg, rng, height, width)
    tracks: list[Track] = []
    for class_id, profile in enumerate(profiles):
        starts: list[float | None] = [None] * int(rng.poisson(profile.initial_count))
        n_arrivals = int(rng.poisson(profile.arrival_rate_hz * cfg.duration_s))
        starts += sorted(rng.uniform(0.0, duration_us, size=n_arrivals).tolist())
        tracks += [sample_track(cfg, profile, class_id, s, rng, height, width) for s in starts]
    # ids follow appearance order; drawing order (occlusion) is an independent shuffle
    by_start = sorted(range(len(tracks)), key=lambda i: (tracks[i].key_t[0], i))
    ids = {idx: new_id for new_id, idx in enumerate(by_start)}
    depth = rng.permutation(len(tracks))
    ordered = [replace(tracks[i], track_id=ids[i]) for i in depth]
    return Scene(background=background, tracks=ordered, duration_us=duration_us)


def label_times_us(cfg: SyntheticConfig) -> np.ndarray:
    """The dense label grid: ``first_label_ms`` then every ``label_period_ms`` to the end."""
    end_ms = cfg.duration_s * 1000.0
    n = int(math.floor((end_ms - cfg.first_label_ms) / cfg.label_period_ms + 1e-9)) + 1
    return np.round((cfg.first_label_ms + cfg.label_period_ms * np.arange(n)) * 1000.0).astype(np.int64)


def scene_boxes(scene: Scene, times_us: np.ndarray, height: int, width: int) -> np.ndarray:
    """Ground-truth boxes (top-left x, y, w, h) of every object at least partly in view."""
    parts = []
    for track in scene.tracks:
        cx, cy, alive = track.centers(times_us)
        x, y = cx - track.width / 2, cy - track.height / 2
        seen = alive & (x < width) & (x + track.width > 0) & (y < height) & (y + track.height > 0)
        boxes = empty_boxes(int(seen.sum()))
        boxes["t"] = times_us[seen]
        boxes["x"], boxes["y"] = x[seen], y[seen]
        boxes["w"], boxes["h"] = track.width, track.height
        boxes["class_id"] = track.class_id
        boxes["track_id"] = track.track_id
        parts.append(boxes)
    boxes = np.concatenate(parts) if parts else empty_boxes(0)
    return boxes[np.lexsort((boxes["track_id"], boxes["t"]))]
