"""ESIM-style event simulation: log-intensity threshold crossings plus sensor noise.

Each pixel keeps a reference log level. Between two rendered frames the log intensity is
assumed to change linearly, so every multiple of the pixel's contrast threshold crossed
yields one event at the linearly interpolated time. An event closer than the refractory
period to the pixel's previous event is dropped, but the reference level still moves (as
in ESIM), so a dropped event does not delay later ones. Thresholds differ per pixel and per
polarity (fixed-pattern noise). Background activity and hot pixels are added separately.
"""

from __future__ import annotations

import numba
import numpy as np

from leod.events.types import Events
from leod.synthetic.config import SyntheticConfig


@numba.njit(cache=True)
def _grow(a: np.ndarray, size: int) -> np.ndarray:
    b = np.empty(size, dtype=a.dtype)
    b[: a.shape[0]] = a
    return b


@numba.njit(cache=True)
def _crossings(
    log_frames: np.ndarray,
    times_us: np.ndarray,
    t_prev: float,
    prev: np.ndarray,
    ref: np.ndarray,
    last_t: np.ndarray,
    c_pos: np.ndarray,
    c_neg: np.ndarray,
    refractory_us: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Events of consecutive frames; updates the per-pixel state ``prev``/``ref``/``last_t``."""
    n_frames, height, width = log_frames.shape
    cap = 1 << 14
    ts = np.empty(cap, np.float64)
    xs = np.empty(cap, np.uint16)
    ys = np.empty(cap, np.uint16)
    ps = np.empty(cap, np.uint8)
    n = 0
    for k in range(n_frames):
        t_cur = times_us[k]
        dt = t_cur - t_prev
        for i in range(height):
            for j in range(width):
                lp = prev[i, j]
                lc = np.float64(log_frames[k, i, j])
                delta = lc - lp
                prev[i, j] = lc
                if abs(delta) <= 1e-6:
                    continue
                up = delta > 0
                step = c_pos[i, j] if up else -c_neg[i, j]
                level = ref[i, j]
                while True:
                    nxt = level + step
                    if not ((up and lp < nxt <= lc) or (not up and lc <= nxt < lp)):
                        break
                    level = nxt
                    te = t_prev + (nxt - lp) / delta * dt
                    if te - last_t[i, j] < refractory_us:
                        continue
                    last_t[i, j] = te
                    if n == cap:
                        cap *= 2
                        ts, xs, ys, ps = _grow(ts, cap), _grow(xs, cap), _grow(ys, cap), _grow(ps, cap)
                    ts[n], xs[n], ys[n], ps[n] = te, j, i, 1 if up else 0
                    n += 1
                ref[i, j] = level
        t_prev = t_cur
    return ts[:n], xs[:n], ys[:n], ps[:n]


class EsimSensor:
    """Per-pixel simulator state, fed with consecutive log-intensity frames."""

    def __init__(self, cfg: SyntheticConfig, rng: np.random.Generator, height: int, width: int) -> None:
        def thresholds() -> np.ndarray:
            c = rng.normal(cfg.threshold_mean, cfg.threshold_sigma, size=(height, width))
            return np.maximum(c, cfg.threshold_min)

        self.c_pos, self.c_neg = thresholds(), thresholds()
        self.refractory_us = cfg.refractory_ms * 1000.0
        self.prev = np.zeros((height, width))
        self.ref = np.zeros((height, width))
        self.last_t = np.full((height, width), -np.inf)
        self.t_prev = 0.0

    def start(self, log_frame: np.ndarray, t_us: float) -> None:
        """Set the reference levels to the first frame (no events for the initial image)."""
        self.prev[:] = log_frame
        self.ref[:] = log_frame
        self.t_prev = float(t_us)

    def feed(self, log_frames: np.ndarray, times_us: np.ndarray) -> Events:
        """Events between the last frame seen and each of ``log_frames`` (time-sorted)."""
        t, x, y, p = _crossings(
            log_frames,
            times_us.astype(np.float64),
            self.t_prev,
            self.prev,
            self.ref,
            self.last_t,
            self.c_pos,
            self.c_neg,
            self.refractory_us,
        )
        self.t_prev = float(times_us[-1])
        order = np.argsort(t, kind="stable")
        return Events(t=np.floor(t[order]).astype(np.int64), x=x[order], y=y[order], p=p[order])


def noise_events(
    cfg: SyntheticConfig, rng: np.random.Generator, height: int, width: int, duration_us: int
) -> Events:
    """Background activity (Poisson per pixel) plus a few hot pixels, random polarity, unsorted."""
    seconds = duration_us / 1e6
    n_ba = int(rng.poisson(cfg.noise_rate_hz * height * width * seconds))
    flat = rng.integers(0, height * width, size=n_ba)
    n_hot = min(cfg.hot_pixels, height * width)
    hot = rng.choice(height * width, size=n_hot, replace=False)
    counts = rng.poisson(cfg.hot_pixel_rate_hz * seconds, size=n_hot)
    flat = np.concatenate([flat, np.repeat(hot, counts)])
    return Events(
        t=rng.integers(0, duration_us, size=len(flat)).astype(np.int64),
        x=(flat % width).astype(np.uint16),
        y=(flat // width).astype(np.uint16),
        p=rng.integers(0, 2, size=len(flat)).astype(np.uint8),
    )
