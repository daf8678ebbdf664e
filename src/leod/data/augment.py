"""Spatial augmentation of one sample (all its frames and boxes alike), as RVT trains.

Parameters are drawn once per sample by the sampler (per stream stretch for streaming, so
that an LSTM state carried across chunks sees one consistent view) and applied later,
possibly in a DataLoader worker; drawing and applying are therefore separate. Order as in
RVT: horizontal flip, then zoom in (crop a window holding a labelled box and scale it up)
or zoom out (scale the frame down onto a zero canvas). Resizing is nearest-exact so that
event counts stay integers, and box coordinates follow the same continuous mapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from leod.data.config import AugmentConfig
from leod.labels.boxes import clip_to_frame

#: Boxes narrower or lower than this (pixels) after a zoom are dropped: too small to learn.
MIN_BOX_SIDE = 2.0


@dataclass(frozen=True)
class AugParams:
    """One drawn augmentation; ``x0, y0`` is the zoom window's top-left corner (pixels)."""

    hflip: bool = False
    zoom: Literal["none", "in", "out"] = "none"
    factor: float = 1.0
    x0: int = 0
    y0: int = 0


IDENTITY = AugParams()


def window_size(hw: tuple[int, int], factor: float) -> tuple[int, int]:
    """The zoom window (h, w): the frame divided by ``factor``, truncated as RVT does."""
    return max(1, int(hw[0] / factor)), max(1, int(hw[1] / factor))


def _flip_x(boxes: np.ndarray, width: int) -> np.ndarray:
    out = boxes.copy()
    out["x"] = width - boxes["x"] - boxes["w"]
    return out


def _window_origin(lo_edge: float, hi_edge: float, window: int, size: int, u: float) -> int:
    """A window start that contains ``[lo_edge, hi_edge]`` (or lies inside it if it is larger)."""
    a, b = sorted((lo_edge, hi_edge - window))
    a, b = min(max(a, 0.0), size - window), min(max(b, 0.0), size - window)
    return int(np.floor(a + u * (b - a)))


def draw_augmentation(
    gen: np.random.Generator, cfg: AugmentConfig, hw: tuple[int, int], focus: np.ndarray | None
) -> AugParams:
    """Draw one augmentation for a frame of size ``hw``.

    ``focus`` are boxes (unflipped) of the latest labelled frame: zoom in picks one of them
    and keeps it in the window, as RVT does; without boxes zoom in is skipped.
    """
    height, width = hw
    hflip = bool(gen.random() < cfg.hflip_p)
    u = gen.random()
    if u < cfg.zoom_in_p and focus is not None and len(focus):
        factor = float(gen.uniform(1.0, cfg.zoom_in_max))
        wh, ww = window_size(hw, factor)
        box = focus[gen.integers(len(focus))]
        bx = width - box["x"] - box["w"] if hflip else box["x"]
        x0 = _window_origin(float(bx), float(bx + box["w"]), ww, width, gen.random())
        y0 = _window_origin(float(box["y"]), float(box["y"] + box["h"]), wh, height, gen.random())
        return AugParams(hflip, "in", factor, x0, y0)
    if cfg.zoom_in_p <= u < cfg.zoom_in_p + cfg.zoom_out_p:
        factor = float(gen.uniform(1.0, cfg.zoom_out_max))
        wh, ww = window_size(hw, factor)
        return AugParams(
            hflip, "out", factor, int(gen.integers(width - ww + 1)), int(gen.integers(height - wh + 1))
        )
    return AugParams(hflip=hflip)


def _nearest(out_len: int, in_len: int) -> np.ndarray:
    """Source index of each output pixel under nearest-exact resizing (pixel centres map)."""
    return np.minimum(((np.arange(out_len) + 0.5) * (in_len / out_len)).astype(np.int64), in_len - 1)


def augment_frames(frames: np.ndarray, params: AugParams) -> np.ndarray:
    """Apply ``params`` to frames (..., H, W); the result may be a view of ``frames``."""
    height, width = frames.shape[-2:]
    out = frames[..., ::-1] if params.hflip else frames
    if params.zoom == "none":
        return out
    wh, ww = window_size((height, width), params.factor)
    if params.zoom == "in":
        crop = out[..., params.y0 : params.y0 + wh, params.x0 : params.x0 + ww]
        return crop[..., _nearest(height, wh)[:, None], _nearest(width, ww)[None, :]]
    canvas = np.zeros_like(frames)
    canvas[..., params.y0 : params.y0 + wh, params.x0 : params.x0 + ww] = out[
        ..., _nearest(wh, height)[:, None], _nearest(ww, width)[None, :]
    ]
    return canvas


def augment_boxes(boxes: np.ndarray, params: AugParams, hw: tuple[int, int]) -> np.ndarray:
    """Map boxes (BOX_DTYPE, frame pixels) like :func:`augment_frames` maps pixels.

    After a zoom, boxes are clipped to the frame and those with a side below
    :data:`MIN_BOX_SIDE` are dropped.
    """
    height, width = hw
    out = _flip_x(boxes, width) if params.hflip else boxes.copy()
    if params.zoom == "none":
        return out
    wh, ww = window_size(hw, params.factor)
    if params.zoom == "in":
        sx, sy, ox, oy = width / ww, height / wh, -params.x0 * width / ww, -params.y0 * height / wh
    else:
        sx, sy, ox, oy = ww / width, wh / height, float(params.x0), float(params.y0)
    out["x"], out["w"] = out["x"] * sx + ox, out["w"] * sx
    out["y"], out["h"] = out["y"] * sy + oy, out["h"] * sy
    out = clip_to_frame(out, height, width)
    return out[(out["w"] >= MIN_BOX_SIDE) & (out["h"] >= MIN_BOX_SIDE)]
