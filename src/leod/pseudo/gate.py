"""The quality gate (not in LEOD): a round trains only on pseudo labels precise enough."""

from __future__ import annotations

from collections.abc import Mapping


def gate_reason(min_precision: float, quality: Mapping[str, float]) -> str | None:
    """Why a round must not train, or None. ``quality`` is the round's eval_pseudo metrics.

    Training on imprecise pseudo labels can undo what the previous round learned; a gated
    round carries the previous model forward instead, so the chain stays consistent and the
    report shows why. ``min_precision`` 0 disables the gate.
    """
    if min_precision <= 0:
        return None
    precision = quality["precision@0.5"]
    if precision < min_precision:
        return (
            f"pseudo-label precision@0.5 {precision:.3f} < selftrain.min_precision {min_precision:.3f}: "
            "the previous model is carried forward"
        )
    return None
