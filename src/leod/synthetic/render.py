"""Grayscale frames of a :class:`~leod.synthetic.scene.Scene` at arbitrary times (numba).

Objects are drawn with one pixel of anti-aliasing (coverage from a signed distance to a
rounded box) and bilinearly sampled textures, so sub-pixel motion changes intensities
gradually and the event simulator sees smooth brightness changes, as a real lens would
deliver. A stationary object renders bit-identical frames and therefore fires no events.
"""

from __future__ import annotations

import numba
import numpy as np

from leod.synthetic.scene import Scene


@numba.njit(cache=True)
def _paint(
    frame: np.ndarray,
    cx: float,
    cy: float,
    hw: float,
    hh: float,
    radius: float,
    texture: np.ndarray,
    tex_h: int,
    tex_w: int,
) -> None:
    """Alpha-blend one textured rounded box centred at (cx, cy) into ``frame`` in place."""
    height, width = frame.shape
    i0, i1 = max(0, int(np.floor(cy - hh - 1.0))), min(height, int(np.ceil(cy + hh + 1.0)))
    j0, j1 = max(0, int(np.floor(cx - hw - 1.0))), min(width, int(np.ceil(cx + hw + 1.0)))
    for i in range(i0, i1):
        py = i + 0.5 - cy
        qy = abs(py) - (hh - radius)
        for j in range(j0, j1):
            px = j + 0.5 - cx
            qx = abs(px) - (hw - radius)
            outside = np.sqrt(max(qx, 0.0) ** 2 + max(qy, 0.0) ** 2) + min(max(qx, qy), 0.0) - radius
            alpha = min(max(0.5 - outside, 0.0), 1.0)
            if alpha <= 0.0:
                continue
            u = min(max(px + hw, 0.0), tex_w - 1.000001)
            v = min(max(py + hh, 0.0), tex_h - 1.000001)
            u0, v0 = int(u), int(v)
            fu, fv = u - u0, v - v0
            value = (1 - fv) * ((1 - fu) * texture[v0, u0] + fu * texture[v0, u0 + 1]) + fv * (
                (1 - fu) * texture[v0 + 1, u0] + fu * texture[v0 + 1, u0 + 1]
            )
            frame[i, j] = alpha * value + (1.0 - alpha) * frame[i, j]


@numba.njit(cache=True)
def _render(
    out: np.ndarray,
    background: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    alive: np.ndarray,
    half_w: np.ndarray,
    half_h: np.ndarray,
    radius: np.ndarray,
    textures: np.ndarray,
    tex_h: np.ndarray,
    tex_w: np.ndarray,
) -> None:
    """Fill ``out[k]`` with the background and every object alive at frame ``k``, in order."""
    for k in range(out.shape[0]):
        out[k] = background
        for n in range(cx.shape[1]):
            if alive[k, n]:
                _paint(
                    out[k],
                    cx[k, n],
                    cy[k, n],
                    half_w[n],
                    half_h[n],
                    radius[n],
                    textures[n],
                    tex_h[n],
                    tex_w[n],
                )


class SceneRenderer:
    """Packs a scene's tracks into flat arrays once, then renders any batch of times."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        # one memory layout for every scene, so numba compiles (and caches) one specialisation
        self.background = np.ascontiguousarray(scene.background, dtype=np.float32)
        tracks = scene.tracks
        n = len(tracks)
        self.half_w = np.array([t.width / 2 for t in tracks], dtype=np.float64)
        self.half_h = np.array([t.height / 2 for t in tracks], dtype=np.float64)
        self.radius = np.array([t.roundness * min(t.width, t.height) / 2 for t in tracks], dtype=np.float64)
        self.tex_h = np.array([t.texture.shape[0] for t in tracks], dtype=np.int64)
        self.tex_w = np.array([t.texture.shape[1] for t in tracks], dtype=np.int64)
        shape = (n, int(self.tex_h.max(initial=1)), int(self.tex_w.max(initial=1)))
        self.textures = np.zeros(shape, dtype=np.float32)
        for k, t in enumerate(tracks):
            self.textures[k, : t.texture.shape[0], : t.texture.shape[1]] = t.texture

    def render(self, times_us: np.ndarray) -> np.ndarray:
        """Intensities in [0, 1] of shape (len(times), H, W), float32."""
        tracks = self.scene.tracks
        k, n = len(times_us), len(tracks)
        cx, cy = np.zeros((k, n)), np.zeros((k, n))
        alive = np.zeros((k, n), dtype=np.bool_)
        for i, track in enumerate(tracks):
            cx[:, i], cy[:, i], alive[:, i] = track.centers(times_us)
        out = np.empty((k, *self.background.shape), dtype=np.float32)
        _render(
            out,
            self.background,
            cx,
            cy,
            alive,
            self.half_w,
            self.half_h,
            self.radius,
            self.textures,
            self.tex_h,
            self.tex_w,
        )
        return out
