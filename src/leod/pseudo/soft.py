"""LEOD's soft pseudo labels: weak boxes are not trusted as objects nor as background."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from leod.data.sequence import LabelArrays
from leod.plumbing.errors import DataFormatError
from leod.pseudo.store import SequenceLabels


def soften(labels: np.ndarray, soft_thresh: Sequence[float]) -> np.ndarray:
    """A copy where each box whose objectness or class confidence is under its class's
    threshold becomes an ignore box (LEOD's ``rnndet-soft``; ground truth has both at 1)."""
    out = labels.copy()
    thresh = np.asarray(soft_thresh, np.float32)[out["class_id"].astype(np.int64)]
    out["ignore"] |= (out["objectness"] < thresh) | (out["class_confidence"] < thresh)
    return out


def training_labels(
    pseudo: Mapping[str, SequenceLabels], soft_thresh: Sequence[float], source: str
) -> tuple[dict[str, LabelArrays], dict[str, list[int]]]:
    """Label overrides for the trainer and the frames they supervise (every pseudo-labelled frame).

    ``source`` names the pseudo-label file in errors: a class id beyond the dataset's classes
    (one per ``soft_thresh`` value) is refused.
    """
    for name, s in pseudo.items():
        ids = s.labels["class_id"]
        bad = (ids < 0) | (ids >= len(soft_thresh))
        if bad.any():
            raise DataFormatError(
                f"{source}: sequence {name} has a box of class id {ids[bad][0]}, but the dataset has "
                f"{len(soft_thresh)} classes (ids 0-{len(soft_thresh) - 1})"
            )
    overrides = {
        name: LabelArrays(soften(s.labels, soft_thresh), s.repr_idx, s.starts, f"{source}:{name}")
        for name, s in pseudo.items()
    }
    kept = {name: list(range(len(s.repr_idx))) for name, s in pseudo.items()}
    return overrides, kept
