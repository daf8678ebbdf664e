"""The quality gate (not in LEOD): a round trains only on pseudo labels precise enough."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from leod.plumbing.errors import DataFormatError, MissingInputError, read_json

#: the eval_pseudo metric the gate reads
GATE_METRIC = "precision@0.5"


def read_quality(path: Path) -> dict:
    """A round's eval_pseudo metrics JSON; a missing or damaged file is one error naming it."""
    if not path.is_file():
        raise MissingInputError(f"{path}: no pseudo-label metrics; run this round's eval_pseudo stage first")
    quality = read_json(path, "pseudo-label metrics")
    value = quality.get(GATE_METRIC) if isinstance(quality, dict) else None
    if type(value) not in (int, float) or not math.isfinite(value):
        raise DataFormatError(f"{path}: key '{GATE_METRIC}' must be a finite number, got {value!r}")
    return quality


def gate_reason(min_precision: float, quality: Mapping[str, float]) -> str | None:
    """Why a round must not train, or None. ``quality`` is the round's eval_pseudo metrics.

    Training on imprecise pseudo labels can undo what the previous round learned; a gated
    round carries the previous model forward instead, so the chain stays consistent and the
    report shows why. ``min_precision`` 0 disables the gate.
    """
    if min_precision <= 0:
        return None
    precision = quality[GATE_METRIC]
    if precision < min_precision:
        return (
            f"pseudo-label precision@0.5 {precision:.3f} < selftrain.min_precision {min_precision:.3f}: "
            "the previous model is carried forward"
        )
    return None
