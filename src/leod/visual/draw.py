"""Event frames as RGB images with boxes, class names and scores drawn on them (Pillow).

Images are ``uint8 (H, W, 3)`` arrays, enlarged by an integer ``zoom`` (nearest neighbour)
before boxes are drawn, so boxes and text stay sharp on small sensors. Panels of the same
size are put side by side under a title bar by :func:`side_by_side`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from leod.plumbing.errors import DataFormatError

GT_COLOR = (0, 160, 0)
PSEUDO_COLOR = (0, 90, 230)
PRED_COLOR = (220, 0, 0)
TITLE_HEIGHT = 14


def histogram_to_rgb(frame: np.ndarray) -> np.ndarray:
    """A stacked histogram ``(2*nbins, H, W)`` as an RGB image: white, ON events red, OFF blue.

    Counts are summed over time bins and divided by the 99th percentile of the non-zero
    counts, so one hot pixel does not make every other event invisible.
    """
    if frame.ndim != 3 or frame.shape[0] % 2:
        raise DataFormatError(f"event frame has shape {frame.shape}, expected (2*nbins, H, W)")
    nbins = frame.shape[0] // 2
    off = frame[:nbins].sum(axis=0, dtype=np.float64)  # polarity 0 first, as RVT stacks them
    on = frame[nbins:].sum(axis=0, dtype=np.float64)
    counts = np.concatenate([on[on > 0], off[off > 0]])
    scale = float(np.percentile(counts, 99)) if counts.size else 1.0
    on, off = np.clip(on / scale, 0, 1), np.clip(off / scale, 0, 1)
    rgb = np.ones((*on.shape, 3))
    rgb -= on[..., None] * np.array([0.0, 1.0, 1.0])  # leaves red
    rgb -= off[..., None] * np.array([1.0, 1.0, 0.0])  # leaves blue
    return np.clip(rgb, 0, 1)


def zoom_for(width: int, target: int = 384) -> int:
    """The integer enlargement that brings a frame ``width`` pixels wide near ``target``."""
    return max(1, round(target / max(width, 1)))


@dataclass(frozen=True)
class BoxStyle:
    """How one set of boxes is drawn: colour, class names, and which score to write."""

    color: tuple[int, int, int]
    classes: Sequence[str] = ()
    score_field: str | None = "class_confidence"  # None: no score written


@functools.cache
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()  # loaded once: it is drawn on every frame


def _label(box: np.void, style: BoxStyle) -> str:
    k = int(box["class_id"])
    name = style.classes[k] if 0 <= k < len(style.classes) else f"class {k}"
    if style.score_field is None:
        return name
    return f"{name} {float(box[style.score_field]):.2f}"


def draw_boxes(image: np.ndarray, boxes: np.ndarray, style: BoxStyle, zoom: int = 1) -> np.ndarray:
    """``image`` (uint8 RGB, already zoomed) with ``boxes`` (frame pixels, any box dtype with
    x, y, w, h, class_id) drawn on it; boxes flagged ``ignore`` are drawn thin and unlabelled."""
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    font = _font()
    ignore = boxes["ignore"] if "ignore" in (boxes.dtype.names or ()) else np.zeros(len(boxes), bool)
    for box, skip in zip(boxes, ignore, strict=True):
        x0, y0 = float(box["x"]) * zoom, float(box["y"]) * zoom
        x1, y1 = x0 + float(box["w"]) * zoom, y0 + float(box["h"]) * zoom
        draw.rectangle((x0, y0, x1, y1), outline=style.color, width=1 if skip else 2)
        if not skip:
            text = _label(box, style)
            left, top, right, bottom = draw.textbbox((x0, y0), text, font=font)
            lift = bottom - top + 2 if top - (bottom - top + 2) >= 0 else -2  # inside at the top edge
            draw.rectangle((left, top - lift, right + 2, bottom - lift + 1), fill=style.color)
            draw.text((x0 + 1, y0 - lift), text, fill=(255, 255, 255), font=font)
    return np.asarray(pil)


def event_image(frame: np.ndarray, zoom: int) -> np.ndarray:
    """A histogram frame as a zoomed uint8 RGB image."""
    rgb = np.rint(histogram_to_rgb(frame) * 255).astype(np.uint8)
    return rgb.repeat(zoom, axis=0).repeat(zoom, axis=1)


def side_by_side(panels: Sequence[np.ndarray], titles: Sequence[str], gap: int = 4) -> np.ndarray:
    """Equal-sized RGB panels left to right, each under its title, on a white canvas whose
    sides are even (what H.264 in yuv420p needs)."""
    h, w = panels[0].shape[:2]
    width = len(panels) * w + (len(panels) - 1) * gap
    height = h + TITLE_HEIGHT
    canvas = Image.new("RGB", (width + width % 2, height + height % 2), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font()
    for i, (panel, title) in enumerate(zip(panels, titles, strict=True)):
        left = i * (w + gap)
        canvas.paste(Image.fromarray(panel), (left, TITLE_HEIGHT))
        draw.text((left + 2, 1), title, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)
