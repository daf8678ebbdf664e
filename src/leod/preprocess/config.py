"""What preprocess computes (the event representation) and how (workers, compression, chunks)."""

from __future__ import annotations

from dataclasses import dataclass, field

from leod.plumbing.errors import ConfigError
from leod.schema import rng


@dataclass(frozen=True)
class RepresentationConfig:
    """RVT stacked histogram: ``nbins`` time bins per polarity over a ``window_ms`` window."""

    nbins: int = field(default=10, metadata=rng(ge=1, le=127))
    count_cutoff: int = field(default=10, metadata=rng(ge=1, le=255))
    #: whole microseconds, at least 1 ms (a shorter step means millions of empty frames)
    window_ms: float = field(default=50.0, metadata=rng(ge=1, le=60_000))
    step_ms: float = field(default=50.0, metadata=rng(ge=1, le=60_000))

    def check(self, key: str) -> None:
        for name in ("window_ms", "step_ms"):
            value = getattr(self, name)
            if abs(value * 1000 - round(value * 1000)) > 1e-6:
                raise ConfigError(
                    f"params key '{key}.{name}' = {value} must be a whole number of microseconds"
                )


@dataclass(frozen=True)
class PreprocessConfig:
    """How preprocess runs: parallel workers, HDF5 compression and the event read chunk."""

    workers: int = field(default=2, metadata=rng(ge=1))
    compression_level: int = field(default=1, metadata=rng(ge=0, le=9))
    #: events are streamed from disk in chunks of this many records (bounds memory)
    read_chunk_events: int = field(default=1 << 20, metadata=rng(ge=1024))
