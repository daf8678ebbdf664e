"""The ground truth that detections are scored against: every label-frame box of a sequence.

One home for evaluation (training's validation, the evaluate stage) and for pseudo-label
quality, which compares pseudo labels with the same boxes frame by frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from leod.data.sequence import SequenceData
from leod.labels.boxes import BOX_DTYPE


def ground_truth(seqs: Sequence[SequenceData], at_frame_time: bool = False) -> dict[str, np.ndarray]:
    """All label-frame boxes of each sequence (representation pixels), time-sorted.

    ``at_frame_time``: stamp each box with its representation frame's end time instead of
    its label time, as pseudo labels are stamped, so the two can be matched frame by frame.
    """
    out = {}
    for seq in seqs:
        parts = []
        for r in seq.label_repr:
            boxes = seq.boxes(int(r))
            if at_frame_time:
                boxes = boxes.copy()
                boxes["t"] = seq.timestamps_us[r]
            parts.append(boxes)
        out[seq.name] = np.concatenate(parts) if parts else np.zeros(0, dtype=BOX_DTYPE)
    return out
