"""params.yaml section ``synthetic``: every knob of the embedded dataset generator.

Sizes and speeds are in pixels of the dataset preset's resolution (the defaults suit the
96x128 preset); the resolution and the class names themselves come from the preset and
are passed to the generator, which looks up one :class:`ObjectClassConfig` per class name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from leod.plumbing.errors import ConfigError
from leod.schema import rng

#: The splits of the Gen1 layout, in the order used to derive per-sequence seeds.
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Range:
    """A closed interval ``[min, max]`` from which a per-object value is drawn uniformly."""

    min: float = field(metadata=rng(ge=0))
    max: float = field(metadata=rng(ge=0))

    def check(self, key: str) -> None:
        if self.min > self.max:
            raise ConfigError(f"params key '{key}.min' = {self.min} exceeds '{key}.max' = {self.max}")


@dataclass(frozen=True)
class SplitCounts:
    """Number of sequences written per split."""

    train: int = field(default=24, metadata=rng(ge=0))
    val: int = field(default=4, metadata=rng(ge=0))
    test: int = field(default=12, metadata=rng(ge=0))

    def count(self, split: str) -> int:
        return {"train": self.train, "val": self.val, "test": self.test}[split]


@dataclass(frozen=True)
class ObjectClassConfig:
    """Shape and motion of one object class; classes must differ here to be learnable."""

    #: silhouette width and height (the ground-truth box size)
    width_px: Range
    height_px: Range
    speed_px_s: Range
    #: heading is left or right plus a uniform offset in [-spread, spread]; 90 covers all directions
    heading_spread_deg: float = field(metadata=rng(ge=0, le=90))
    #: corner radius as a fraction of the half short side: 0 = rectangle, 1 = capsule
    roundness: float = field(metadata=rng(ge=0, le=1))
    #: Poisson rate of objects entering the frame
    arrival_rate_hz: float = field(metadata=rng(ge=0))
    #: mean (Poisson) number of objects already in view at t = 0
    initial_count: float = field(metadata=rng(ge=0))
    #: probability that an object stops once, fully in view, for ``synthetic.stop_duration_s``
    stop_probability: float = field(metadata=rng(ge=0, le=1))

    def check(self, key: str) -> None:
        for name in ("width_px", "height_px", "speed_px_s"):
            if getattr(self, name).min <= 0:
                raise ConfigError(f"params key '{key}.{name}.min' must be > 0 (objects must cross the frame)")


def _default_objects() -> dict[str, ObjectClassConfig]:
    return {
        "car": ObjectClassConfig(
            width_px=Range(16.0, 28.0),
            height_px=Range(9.0, 14.0),
            speed_px_s=Range(25.0, 55.0),
            heading_spread_deg=8.0,
            roundness=0.35,
            arrival_rate_hz=0.45,
            initial_count=1.2,
            stop_probability=0.3,
        ),
        "pedestrian": ObjectClassConfig(
            width_px=Range(5.0, 8.0),
            height_px=Range(12.0, 20.0),
            speed_px_s=Range(8.0, 18.0),
            heading_spread_deg=60.0,
            roundness=1.0,
            arrival_rate_hz=0.3,
            initial_count=1.5,
            stop_probability=0.3,
        ),
    }


@dataclass(frozen=True)
class SyntheticConfig:
    """Every knob of the ESIM-style generator (scene, sensor, noise, labels, splits)."""

    seed: int = field(default=0, metadata=rng(ge=0, le=2**32 - 1))
    sequences: SplitCounts = field(default_factory=SplitCounts)
    duration_s: float = field(default=6.0, metadata=rng(gt=0, le=4000))
    #: render/simulation step; the fastest object must move at most 1 px per step
    substep_ms: float = field(default=2.0, metadata=rng(gt=0))
    label_period_ms: float = field(default=50.0, metadata=rng(gt=0))
    first_label_ms: float = field(default=50.0, metadata=rng(ge=0))
    #: one profile per class name of the dataset preset (extra profiles are ignored)
    objects: dict[str, ObjectClassConfig] = field(default_factory=_default_objects)
    stop_duration_s: Range = field(default_factory=lambda: Range(0.6, 2.0))
    #: object mean log-intensity offset from the background (sign drawn at random)
    contrast: Range = field(default_factory=lambda: Range(0.5, 1.2))
    low_contrast: Range = field(default_factory=lambda: Range(0.15, 0.3))
    low_contrast_fraction: float = field(default=0.2, metadata=rng(ge=0, le=1))
    #: amplitude of an object's internal texture, as a fraction of its contrast
    texture_amplitude: float = field(default=0.6, metadata=rng(ge=0, le=2))
    background_mean: float = field(default=0.35, metadata=rng(gt=0, le=1))
    #: log-intensity amplitude of the static background texture
    background_contrast: float = field(default=0.5, metadata=rng(ge=0, le=3))
    log_eps: float = field(default=0.01, metadata=rng(gt=0, le=1))
    threshold_mean: float = field(default=0.2, metadata=rng(gt=0))
    threshold_sigma: float = field(default=0.03, metadata=rng(ge=0))
    threshold_min: float = field(default=0.05, metadata=rng(gt=0))
    refractory_ms: float = field(default=0.5, metadata=rng(ge=0))
    #: background-activity noise per pixel (Poisson)
    noise_rate_hz: float = field(default=0.2, metadata=rng(ge=0))
    hot_pixels: int = field(default=3, metadata=rng(ge=0))
    hot_pixel_rate_hz: float = field(default=50.0, metadata=rng(ge=0))

    def check(self, key: str) -> None:
        prefix = f"{key}." if key else ""
        if not self.objects:
            raise ConfigError(f"params key '{prefix}objects' must define at least one object class")
        name, fastest = max(self.objects.items(), key=lambda kv: kv[1].speed_px_s.max)
        step_px = fastest.speed_px_s.max * self.substep_ms / 1000.0
        if step_px > 1.0:
            raise ConfigError(
                f"params key '{prefix}substep_ms' = {self.substep_ms} lets class '{name}' move "
                f"{step_px:.2f} px per step (max 1 px); lower it or '{prefix}objects.{name}.speed_px_s.max'"
            )
        if self.first_label_ms > self.duration_s * 1000.0:
            raise ConfigError(
                f"params key '{prefix}first_label_ms' = {self.first_label_ms} lies after the end of "
                f"the {self.duration_s} s sequence ('{prefix}duration_s')"
            )
        if self.threshold_min > self.threshold_mean:
            raise ConfigError(
                f"params key '{prefix}threshold_min' = {self.threshold_min} exceeds "
                f"'{prefix}threshold_mean' = {self.threshold_mean}"
            )

    def profiles(self, classes: Sequence[str], key: str = "synthetic") -> list[ObjectClassConfig]:
        """The object profile of each preset class, in class-id order."""
        missing = [c for c in classes if c not in self.objects]
        if missing:
            raise ConfigError(
                f"params key '{key}.objects' has no profile for dataset class '{missing[0]}' "
                f"(profiles: {', '.join(sorted(self.objects))})"
            )
        if not classes:
            raise ConfigError(f"params key '{key}.objects': the dataset preset names no classes")
        return [self.objects[c] for c in classes]
