"""One typed, validated view of params.yaml, shared by every stage.

Each section of params.yaml maps to a frozen dataclass (validated by :mod:`leod.schema`);
sections that belong to one domain (the synthetic generator, the model, ...) are declared
beside that domain's code and assembled here. Loading fails before any work starts, with
a message that names the bad key.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from leod.data.sampling import DataConfig
from leod.model.config import ModelConfig
from leod.plumbing.errors import ConfigError
from leod.pseudo.config import PseudoConfig, RoundConfig, SelfTrainConfig
from leod.schema import from_dict, rng
from leod.synthetic.config import SyntheticConfig
from leod.training.config import TrainConfig


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
class TrackingConfig:
    """MLflow: the experiment every stage run is logged under."""

    experiment: str = "leod"


@dataclass(frozen=True)
class ShardConfig:
    """pseudolabel and evaluate: sequences shared out over processes (one per GPU on CUDA).
    Their outputs are byte-identical for any count, so DVC does not track this section."""

    #: processes on this machine; above 1 the stage starts them itself (see docs/scaling.md)
    nproc_per_node: int = field(default=1, metadata=rng(ge=1, le=1024))


SEED_MAX = 2**32 - 1

#: model keys that follow from the data and must not be set by hand
DERIVED_MODEL_KEYS = {
    "num_classes": "the dataset preset's classes",
    "in_channels": "2 x representation.nbins",
}


@dataclass(frozen=True)
class Params:
    """The whole of params.yaml."""

    #: numpy/torch seeds are 32-bit
    seed: int = field(metadata=rng(ge=0, le=SEED_MAX))
    dataset: str
    datasets: dict[str, DatasetPreset]
    synthetic: SyntheticConfig
    representation: RepresentationConfig
    preprocess: PreprocessConfig
    subsample: SubsampleConfig
    loader: DataConfig
    model: ModelConfig
    train: TrainConfig
    tracking: TrackingConfig
    shard: ShardConfig
    pseudo: PseudoConfig
    selftrain: SelfTrainConfig
    rounds: dict[str, RoundConfig]

    def check(self, key: str) -> None:
        if self.dataset not in self.datasets:
            raise ConfigError(
                f"params key 'dataset' = {self.dataset!r} names no preset in 'datasets' "
                f"(have: {', '.join(sorted(self.datasets))})"
            )
        n = len(self.preset.classes)
        per_class = [
            ("pseudo.obj_thresh", self.pseudo.obj_thresh),
            ("pseudo.cls_thresh", self.pseudo.cls_thresh),
            ("selftrain.soft_thresh", self.selftrain.soft_thresh),
        ]
        for name, rnd in self.rounds.items():
            if name in ("r0", "full"):
                raise ConfigError(f"params key 'rounds.{name}': '{name}' is reserved for the baseline runs")
            if rnd.prev != "r0" and rnd.prev not in self.rounds:
                raise ConfigError(
                    f"params key 'rounds.{name}.prev' = {rnd.prev!r} is neither 'r0' nor a round"
                )
            if rnd.steps is not None and rnd.steps > self.train.steps:
                raise ConfigError(
                    f"params key 'rounds.{name}.steps' = {rnd.steps} exceeds train.steps = "
                    f"{self.train.steps}: a round gets no more steps than train_r0 (a fair protocol)"
                )
            per_class += [
                (f"rounds.{name}.{f}", getattr(rnd, f))
                for f in ("obj_thresh", "cls_thresh", "soft_thresh")
                if getattr(rnd, f) is not None
            ]
        for name, values in per_class:
            if len(values) != n:
                raise ConfigError(
                    f"params key '{name}' has {len(values)} values but dataset "
                    f"'{self.dataset}' has {n} classes"
                )
        self.round_order()

    def round_order(self) -> list[str]:
        """Round names in training order (following ``prev`` from r0); rejects cycles and forks."""
        order, current = [], "r0"
        children = {}
        for name, rnd in self.rounds.items():
            if rnd.prev in children:
                raise ConfigError(
                    f"params keys 'rounds.{children[rnd.prev]}' and 'rounds.{name}' both follow {rnd.prev!r}"
                )
            children[rnd.prev] = name
        while current in children:
            current = children[current]
            order.append(current)
        if len(order) != len(self.rounds):
            missing = sorted(set(self.rounds) - set(order))
            raise ConfigError(f"params key 'rounds.{missing[0]}' is not reachable from r0 through 'prev'")
        return order

    def check_round(self, name: str) -> None:
        """A round name given on the command line must be one of ``rounds``."""
        if name not in self.rounds:
            known = ", ".join(self.rounds) or "none"
            raise ConfigError(f"round '{name}' is not in params key 'rounds' (known: {known})")

    def for_round(self, name: str) -> Params:
        """These params with round ``name``'s overrides applied (steps, lr, thresholds)."""
        self.check_round(name)
        rnd = self.rounds[name]
        train = dataclasses.replace(
            self.train,
            steps=rnd.steps if rnd.steps is not None else self.train.steps,
            lr=rnd.lr if rnd.lr is not None else self.train.lr,
        )
        pseudo = dataclasses.replace(
            self.pseudo,
            obj_thresh=rnd.obj_thresh if rnd.obj_thresh is not None else self.pseudo.obj_thresh,
            cls_thresh=rnd.cls_thresh if rnd.cls_thresh is not None else self.pseudo.cls_thresh,
        )
        selftrain = dataclasses.replace(
            self.selftrain,
            soft_thresh=rnd.soft_thresh if rnd.soft_thresh is not None else self.selftrain.soft_thresh,
        )
        return dataclasses.replace(self, train=train, pseudo=pseudo, selftrain=selftrain)

    @property
    def preset(self) -> DatasetPreset:
        """The selected dataset preset."""
        return self.datasets[self.dataset]

    @property
    def model_config(self) -> ModelConfig:
        """The model section with the values that follow from the data filled in."""
        return dataclasses.replace(
            self.model, num_classes=len(self.preset.classes), in_channels=2 * self.representation.nbins
        )


class _StrictLoader(yaml.SafeLoader):
    """yaml.safe_load that rejects a key given twice in one mapping (YAML would keep the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    f"{self.name}:{line}: params key '{key}' is given twice (first at line {seen[key]})"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _yaml_error(path: Path, exc: yaml.YAMLError) -> ConfigError:
    """One line naming the file and the position of a YAML syntax error."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or str(exc)
    return ConfigError(f"{where}: not valid YAML ({' '.join(str(problem).split())})")


def load_params(path: str | os.PathLike[str] = "params.yaml") -> Params:
    """Read and validate params.yaml; raises :class:`ConfigError` naming the bad key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    loader = _StrictLoader(text)
    loader.name = str(path)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc) from exc
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping of params keys, got {type(data).__name__}")
    return params_from_dict(data)


def params_from_dict(data: Any) -> Params:
    """Validate an already-parsed params mapping (tests build variants this way)."""
    model = data.get("model") if isinstance(data, dict) else None
    for key, source in DERIVED_MODEL_KEYS.items():
        if isinstance(model, dict) and key in model:
            raise ConfigError(f"params key 'model.{key}' is derived from {source}; remove it")
    return from_dict(Params, data)
