"""One typed, validated view of params.yaml, shared by every stage.

Each section of params.yaml maps to a frozen dataclass (validated by :mod:`leod.schema`)
declared in its domain's package (``data/config.py``, ``model/config.py``, ...); this module
only assembles them and checks what spans sections. The config modules import no torch,
h5py or model code, so loading params stays cheap. Loading fails before any work starts,
with a message that names the bad key.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from leod.data.config import DataConfig, DatasetPreset, SubsampleConfig
from leod.distributed.config import ShardConfig
from leod.model.config import ModelConfig
from leod.plumbing.config import TrackingConfig
from leod.plumbing.errors import ConfigError
from leod.preprocess.config import PreprocessConfig, RepresentationConfig
from leod.pseudo.config import PseudoConfig, RoundConfig, SelfTrainConfig
from leod.recipes import apply_recipe
from leod.schema import from_dict, rng
from leod.synthetic.config import SyntheticConfig
from leod.training.config import TrainConfig

SEED_MAX = 2**32 - 1

#: model keys that follow from the data and must not be set by hand
DERIVED_MODEL_KEYS = {
    "num_classes": "the dataset preset's classes",
    "in_channels": "2 x representation.nbins",
}


@dataclass(frozen=True)
class Params:
    """The whole of params.yaml."""

    #: the recipe applied over params.yaml (:mod:`leod.recipes`; synthetic-nano sets nothing)
    recipe: str
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
        if self.pseudo.weak_thresh is not None:
            per_class.append(("pseudo.weak_thresh", self.pseudo.weak_thresh))
        round_steps = [("selftrain.round_steps", self.selftrain.round_steps)]
        round_steps += [(f"rounds.{name}.steps", rnd.steps) for name, rnd in self.rounds.items()]
        for steps_key, steps in round_steps:
            if steps is not None and steps > self.train.steps:
                raise ConfigError(
                    f"params key '{steps_key}' = {steps} exceeds train.steps = {self.train.steps}: "
                    "a round gets no more steps than train_r0 (a fair protocol)"
                )
        for name, rnd in self.rounds.items():
            if name in ("r0", "full"):
                raise ConfigError(f"params key 'rounds.{name}': '{name}' is reserved for the baseline runs")
            if rnd.prev != "r0" and rnd.prev not in self.rounds:
                raise ConfigError(
                    f"params key 'rounds.{name}.prev' = {rnd.prev!r} is neither 'r0' nor a round"
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
            steps=next(n for n in (rnd.steps, self.selftrain.round_steps, self.train.steps) if n is not None),
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
    """Validate an already-parsed params mapping (tests build variants this way), with its
    ``recipe`` applied (:func:`leod.recipes.apply_recipe`)."""
    model = data.get("model") if isinstance(data, dict) else None
    for key, source in DERIVED_MODEL_KEYS.items():
        if isinstance(model, dict) and key in model:
            raise ConfigError(f"params key 'model.{key}' is derived from {source}; remove it")
    if isinstance(data, dict):
        data = apply_recipe(data, Params)
    return from_dict(Params, data)
