"""The data sections of params.yaml: dataset presets, the label subsample and batch sampling."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from leod.evaluation.config import EvalFilter
from leod.plumbing.errors import ConfigError
from leod.schema import rng


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
class SubsampleConfig:
    """Which training labels the detector may see (LEOD's WSOD / SSOD settings)."""

    mode: Literal["wsod", "ssod", "full"] = "wsod"
    #: WSOD: keep every round(1/ratio)-th label frame of every sequence
    ratio: float = field(default=0.02, metadata=rng(gt=0, le=1))
    #: SSOD: keep round(N * train_ratio) whole sequences, evenly strided
    train_ratio: float = field(default=0.1, metadata=rng(gt=0, le=1))
    offset: int = field(default=0, metadata=rng(ge=0))


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of one augmentation policy; zoom in and zoom out exclude each other."""

    hflip_p: float = field(default=0.5, metadata=rng(ge=0, le=1))
    zoom_in_p: float = field(default=0.0, metadata=rng(ge=0, le=1))
    zoom_in_max: float = field(default=1.5, metadata=rng(ge=1))
    zoom_out_p: float = field(default=0.0, metadata=rng(ge=0, le=1))
    zoom_out_max: float = field(default=1.2, metadata=rng(ge=1))

    def check(self, key: str) -> None:
        if self.zoom_in_p + self.zoom_out_p > 1:
            raise ConfigError(
                f"params keys '{key}.zoom_in_p' + '{key}.zoom_out_p' = "
                f"{self.zoom_in_p + self.zoom_out_p:g} must be <= 1 (the two zooms exclude each other)"
            )


@dataclass(frozen=True)
class DataConfig:
    """Sampling and augmentation of training batches (RVT defaults)."""

    batch_size: int = field(default=8, metadata=rng(ge=1))
    #: frames per sample (RVT: gen1 21, gen4 5; LEOD gen4 subsets 10)
    sequence_length: int = field(default=5, metadata=rng(ge=1))
    w_stream: float = field(default=1.0, metadata=rng(ge=0))
    w_random: float = field(default=1.0, metadata=rng(ge=0))
    #: RVT random access: hflip 0.5, zoom p 0.8 split 8:2 between in (1-1.5) and out (1-1.2)
    augment_random: AugmentConfig = field(
        default_factory=lambda: AugmentConfig(hflip_p=0.5, zoom_in_p=0.64, zoom_in_max=1.5, zoom_out_p=0.16)
    )
    #: RVT streaming: hflip 0.5, zoom out p 0.5 (1-1.2); no zoom in (its window needs one frame's boxes)
    augment_stream: AugmentConfig = field(default_factory=lambda: AugmentConfig(hflip_p=0.5, zoom_out_p=0.5))
    #: DataLoader worker processes; 0 loads in the training process
    num_workers: int = field(default=0, metadata=rng(ge=0))

    def check(self, key: str) -> None:
        prefix = f"{key}." if key else ""
        if self.w_stream + self.w_random <= 0:
            raise ConfigError(f"params keys '{prefix}w_stream' and '{prefix}w_random' cannot both be 0")
        if self.w_stream > 0 and self.w_random > 0 and self.batch_size < 2:
            raise ConfigError(
                f"params key '{prefix}batch_size' must be >= 2 to mix streaming and random slots"
            )
        if self.augment_stream.zoom_in_p > 0:
            raise ConfigError(
                f"params key '{prefix}augment_stream.zoom_in_p' must be 0: a zoom-in window is placed on one "
                "frame's boxes, which move while a stream goes on"
            )

    @property
    def slots(self) -> tuple[int, int]:
        """(streaming, random) slots of a batch, split by the weights as RVT does."""
        if self.w_random == 0:
            return self.batch_size, 0
        if self.w_stream == 0:
            return 0, self.batch_size
        share = round(self.batch_size * self.w_random / (self.w_stream + self.w_random))
        n_random = min(max(share, 1), self.batch_size - 1)
        return self.batch_size - n_random, n_random
