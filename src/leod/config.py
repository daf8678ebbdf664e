"""One typed, validated view of params.yaml, shared by every stage.

Each section of params.yaml maps to a frozen dataclass (validated by :mod:`leod.schema`);
sections that belong to one domain (the synthetic generator, the model, ...) are declared
beside that domain's code and assembled here. Loading fails before any work starts, with
a message that names the bad key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from leod.errors import ConfigError
from leod.data.sampling import DataConfig
from leod.schema import from_dict, rng
from leod.synthetic.config import SyntheticConfig



@dataclass(frozen=True)
class EvalFilter:
    """Prophesee box filter applied to GT and predictions at evaluation time (full-res px)."""

    skip_first_us: int = field(default=500_000, metadata=rng(ge=0))
    min_diag: float = field(default=30.0, metadata=rng(ge=0))
    min_side: float = field(default=10.0, metadata=rng(ge=0))


@dataclass(frozen=True)
class DatasetPreset:
    """Everything that describes one dataset family (sensor, classes, label rules)."""

    #: what data/raw/<dataset>/ holds: ``raw``, Gen1-layout split folders of
    #: <name>_td.{dat,dat.h5,h5,raw} + <name>_bbox.npy that preprocess converts, or
    #: ``rvt_preprocessed``, an RVT download that preprocess only indexes (no conversion)
    format: Literal["raw", "rvt_preprocessed"]
    height: int = field(metadata=rng(gt=0, le=16383))
    width: int = field(metadata=rng(gt=0, le=16383))
    classes: list[str]
    #: original class ids that are kept (others dropped), in order; None keeps all
    keep_classes: list[int] | None = None
    #: halve the resolution of the representation (1Mpx / eTraM)
    downsample: bool = False
    #: target period of label frames; the base delta is the median label period times
    #: round(target / median), as RVT does for 30/60 Hz labels
    label_period_ms: float = field(default=50.0, metadata=rng(gt=0))
    label_tolerance_ms: float = field(default=2.0, metadata=rng(ge=0))
    #: the first label frame must lie at least this far into the recording
    first_label_min_ms: float = field(default=100.0, metadata=rng(ge=0))
    #: preprocessing box filter (RVT: Gen1 applies the Prophesee diag 30 / side 10)
    min_box_diag: float = field(default=0.0, metadata=rng(ge=0))
    min_box_side: float = field(default=0.0, metadata=rng(ge=0))
    #: train split only: drop boxes wider than this fraction of the frame width
    max_box_width_frac: float = field(default=0.9, metadata=rng(gt=0, le=1))
    evaluation: EvalFilter = field(default_factory=EvalFilter)

    def check(self, key: str) -> None:
        if not self.classes:
            raise ConfigError(f"params key '{key}.classes' must list at least one class")
        if self.keep_classes is not None and len(self.keep_classes) != len(self.classes):
            raise ConfigError(
                f"params key '{key}.keep_classes' has {len(self.keep_classes)} ids but "
                f"'{key}.classes' names {len(self.classes)}"
            )


@dataclass(frozen=True)
class RepresentationConfig:
    """RVT stacked histogram: ``nbins`` time bins per polarity over a ``window_ms`` window."""

    nbins: int = field(default=10, metadata=rng(ge=1, le=127))
    count_cutoff: int = field(default=10, metadata=rng(ge=1, le=255))
    window_ms: float = field(default=50.0, metadata=rng(gt=0))
    step_ms: float = field(default=50.0, metadata=rng(gt=0))


@dataclass(frozen=True)
class PreprocessConfig:
    workers: int = field(default=2, metadata=rng(ge=1))
    compression_level: int = field(default=1, metadata=rng(ge=0, le=9))
    #: events are streamed from disk in chunks of this many records (bounds memory)
    read_chunk_events: int = field(default=1 << 20, metadata=rng(ge=1024))


@dataclass(frozen=True)
class SubsampleConfig:
    """Which training labels the detector may see (LEOD's WSOD / SSOD settings)."""

    mode: Literal["wsod", "ssod", "full"] = "wsod"
    #: WSOD: keep every round(1/ratio)-th label frame of every sequence
    ratio: float = field(default=0.05, metadata=rng(gt=0, le=1))
    #: SSOD: keep round(N * train_ratio) whole sequences, evenly strided
    train_ratio: float = field(default=0.1, metadata=rng(gt=0, le=1))
    offset: int = field(default=0, metadata=rng(ge=0))


@dataclass(frozen=True)
class Params:
    """The whole of params.yaml."""

    seed: int
    dataset: str
    datasets: dict[str, DatasetPreset]
    synthetic: SyntheticConfig
    representation: RepresentationConfig
    preprocess: PreprocessConfig
    subsample: SubsampleConfig
    loader: DataConfig

    def check(self, key: str) -> None:
        if self.dataset not in self.datasets:
            raise ConfigError(
                f"params key 'dataset' = {self.dataset!r} names no preset in 'datasets' "
                f"(have: {', '.join(sorted(self.datasets))})"
            )

    @property
    def preset(self) -> DatasetPreset:
        """The selected dataset preset."""
        return self.datasets[self.dataset]


def load_params(path: str | os.PathLike[str] = "params.yaml") -> Params:
    """Read and validate params.yaml; raises :class:`ConfigError` naming the bad key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    return params_from_dict(data)


def params_from_dict(data: Any) -> Params:
    """Validate an already-parsed params mapping (tests build variants this way)."""
    return from_dict(Params, data)
