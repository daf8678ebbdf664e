"""The ``shard`` section of params.yaml: how many processes pseudolabel and evaluate use."""

from __future__ import annotations

from dataclasses import dataclass, field

from leod.schema import rng


@dataclass(frozen=True)
class ShardConfig:
    """pseudolabel and evaluate: sequences shared out over processes (one per GPU on CUDA).
    Their outputs are byte-identical for any count, so DVC does not track this section."""

    #: processes on this machine; above 1 the stage starts them itself (see docs/scaling.md)
    nproc_per_node: int = field(default=1, metadata=rng(ge=1, le=1024))
