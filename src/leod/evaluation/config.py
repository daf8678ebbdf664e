"""The evaluation section of a dataset preset: the Prophesee box filter."""

from __future__ import annotations

from dataclasses import dataclass, field

from leod.schema import rng


@dataclass(frozen=True)
class EvalFilter:
    """Prophesee box filter applied to GT and predictions at evaluation time (full-res px)."""

    skip_first_us: int = field(default=500_000, metadata=rng(ge=0))
    min_diag: float = field(default=30.0, metadata=rng(ge=0))
    min_side: float = field(default=10.0, metadata=rng(ge=0))
