"""RVT's label rules: which boxes survive preprocessing, and which timestamps become label frames.

Both follow RVT's ``preprocess_dataset.py`` (see the facts file) rule by rule, in its order,
so that our preprocessed labels equal RVT's released ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from leod.data.config import DatasetPreset
from leod.labels.boxes import clip_to_frame


@dataclass(frozen=True)
class BoxFilterStats:
    """How many boxes each rule removed (printed by the preprocess stage)."""

    total: int
    dropped_class: int
    dropped_empty: int  # zero width or height in the file
    dropped_outside: int  # an area, but none of it on the sensor
    dropped_small: int
    dropped_wide: int

    @property
    def kept(self) -> int:
        return self.total - sum(self.astuple()[1:])

    @property
    def none_on_sensor(self) -> bool:
        """True when boxes of the preset's classes exist but none has an area on the sensor."""
        of_classes = self.total - self.dropped_class
        return self.dropped_outside > 0 and self.dropped_outside + self.dropped_empty == of_classes

    def __add__(self, other: BoxFilterStats) -> BoxFilterStats:
        return BoxFilterStats(*(a + b for a, b in zip(self.astuple(), other.astuple(), strict=True)))

    def astuple(self) -> tuple[int, ...]:
        return (
            self.total,
            self.dropped_class,
            self.dropped_empty,
            self.dropped_outside,
            self.dropped_small,
            self.dropped_wide,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "total": self.total,
            "dropped_class": self.dropped_class,
            "dropped_empty": self.dropped_empty,
            "dropped_outside": self.dropped_outside,
            "dropped_small": self.dropped_small,
            "dropped_wide": self.dropped_wide,
        }


def filter_boxes(boxes: np.ndarray, preset: DatasetPreset, train: bool) -> tuple[np.ndarray, BoxFilterStats]:
    """Apply the preset's box rules in RVT's order; returns kept boxes and counts.

    1. keep only the preset's classes (1Mpx: ids 0-2) and re-index them 0..K-1;
    2. crop to the field of view, drop boxes left with zero width or height (counted apart:
       boxes that had an area but lie wholly outside the sensor);
    3. the Prophesee minimum diagonal / side filter where the preset uses one (Gen1 30/10);
    4. train split only: drop boxes wider than ``max_box_width_frac`` of the frame (faulty).
    """
    total = len(boxes)
    if preset.keep_classes is not None:
        keep_ids = np.asarray(preset.keep_classes, dtype=np.int64)
        match = boxes["class_id"].astype(np.int64)[:, None] == keep_ids[None, :]
        known = match.any(axis=1)
        boxes = boxes[known].copy()
        boxes["class_id"] = np.argmax(match[known], axis=1)
        dropped_class = total - len(boxes)
    else:
        outside = boxes["class_id"] >= len(preset.classes)
        boxes = boxes[~outside]
        dropped_class = int(outside.sum())

    had_area = (boxes["w"] > 0) & (boxes["h"] > 0)
    boxes = clip_to_frame(boxes, preset.height, preset.width)
    nonempty = (boxes["w"] > 0) & (boxes["h"] > 0)
    dropped_empty = int((~had_area).sum())
    dropped_outside = int((had_area & ~nonempty).sum())
    boxes = boxes[nonempty]

    w, h = boxes["w"], boxes["h"]
    big = (w * w + h * h >= preset.min_box_diag**2) & (w >= preset.min_box_side) & (h >= preset.min_box_side)
    dropped_small = int((~big).sum())
    boxes = boxes[big]

    dropped_wide = 0
    if train:
        narrow = boxes["w"] <= preset.max_box_width_frac * preset.width
        dropped_wide = int((~narrow).sum())
        boxes = boxes[narrow]
    stats = BoxFilterStats(total, dropped_class, dropped_empty, dropped_outside, dropped_small, dropped_wide)
    return boxes, stats


def label_frame_times(timestamps_us: np.ndarray, preset: DatasetPreset) -> np.ndarray:
    """The label-frame timestamps kept from the unique box timestamps of one sequence.

    The first timestamp at or after ``first_label_min_ms`` is the reference; later ones are
    kept only on multiples of a base delta (within a tolerance; one per multiple, the
    closest). The delta is the median label period times ``round(label_period_ms / median)``:
    RVT's rule for 30/60 Hz labels, the native period for 20 Hz / 4 Hz labels.
    """
    ts = np.unique(timestamps_us.astype(np.int64))
    ts = ts[ts >= round(preset.first_label_min_ms * 1000)]
    if len(ts) < 2:
        return ts
    median = float(np.median(np.diff(ts)))
    delta = median * max(1, round(preset.label_period_ms * 1000 / median))
    tol = preset.label_tolerance_ms * 1000
    offset = (ts - ts[0]).astype(np.float64)
    slot = np.round(offset / delta).astype(np.int64)
    error = np.abs(offset - slot * delta)
    on_grid = error <= tol
    ts, slot, error = ts[on_grid], slot[on_grid], error[on_grid]
    # two stamps within tolerance of one grid slot: keep the closer (ties: the earlier)
    order = np.lexsort((ts, error, slot))
    first_of_slot = np.ones(len(order), dtype=bool)
    first_of_slot[1:] = slot[order][1:] != slot[order][:-1]
    return np.sort(ts[order][first_of_slot])


def grid_start(first_label_us: int, window_us: int, step_us: int) -> int:
    """First window end of a sequence: on the ``step`` grid through the first label frame,
    as early as possible while a whole window of time still precedes it."""
    return first_label_us - max(0, (first_label_us - window_us) // step_us) * step_us


def frames_to_repr(
    label_times_us: np.ndarray, ends_us: np.ndarray, step_us: int, tolerance_us: float
) -> np.ndarray:
    """Index of the window whose end is nearest each label frame; -1 if none lies within tolerance."""
    if len(ends_us) == 0:
        return np.full(len(label_times_us), -1, dtype=np.int64)
    idx = np.rint((label_times_us - ends_us[0]) / step_us).astype(np.int64)
    inside = (idx >= 0) & (idx < len(ends_us))
    near = np.abs(ends_us[np.clip(idx, 0, len(ends_us) - 1)] - label_times_us) <= tolerance_us
    return np.where(inside & near, idx, -1)
