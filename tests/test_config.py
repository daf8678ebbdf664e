"""The typed params view: the repository's params.yaml loads, bad values fail naming the key."""

from __future__ import annotations

import copy
import dataclasses
import re
import typing

import pytest
import yaml

from leod.config import Params, load_params, params_from_dict
from leod.plumbing.errors import ConfigError
from leod.schema import flatten, to_dict


def test_repository_params_load(repo_root):
    params = load_params(repo_root / "params.yaml")
    assert params.preset.classes == ["car", "pedestrian"]
    assert set(params.datasets) >= {"synthetic", "gen1", "gen4", "etram"}
    assert params.datasets["gen4"].downsample and params.datasets["gen4"].keep_classes == [0, 1, 2]


def variant(params_dict: dict, dotted: str, value) -> dict:
    data = copy.deepcopy(params_dict)
    *parents, leaf = dotted.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[leaf] = value
    return data


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("subsample.ratio", 0.0, "'subsample.ratio' = 0.0 must be > 0"),
        ("subsample.ratio", 1.5, "'subsample.ratio' = 1.5 must be <= 1"),
        ("subsample.ratio", "half", "'subsample.ratio' must be a number"),
        ("subsample.mode", "weak", "'subsample.mode' = 'weak' must be one of"),
        ("representation.nbins", 2.5, "'representation.nbins' must be an integer"),
        ("representation.nbins", True, "'representation.nbins' must be an integer"),
        ("preprocess.workers", 0, "'preprocess.workers' = 0 must be >= 1"),
        ("datasets.gen1.height", -1, "'datasets.gen1.height' = -1 must be > 0"),
        ("datasets.gen1.downsample", "yes", "'datasets.gen1.downsample' must be true or false"),
        ("dataset", "nope", "'dataset' = 'nope' names no preset"),
        ("subsample.ratio", float("nan"), "'subsample.ratio' must be finite"),
        ("pseudo.weak_thresh", [0.3], "'pseudo.weak_thresh' has 1 values but dataset 'synthetic' has 2"),
        ("pseudo.weak_thresh", [0.3, 1.5], "'pseudo.weak_thresh[1]' = 1.5 must be within [0, 1]"),
    ],
)
def test_bad_values_name_the_key(params_dict, key, value, message):
    with pytest.raises(ConfigError) as err:
        params_from_dict(variant(params_dict, key, value))
    assert message in str(err.value)


def test_unknown_and_missing_keys(params_dict):
    with pytest.raises(ConfigError, match="unknown params key 'subsample.ratioo'"):
        params_from_dict(variant(params_dict, "subsample.ratioo", 0.1))
    data = copy.deepcopy(params_dict)
    del data["representation"]
    with pytest.raises(ConfigError, match="missing params key 'representation'"):
        params_from_dict(data)


def test_flatten_gives_dotted_keys(repo_root):
    flat = flatten(load_params(repo_root / "params.yaml"))
    assert flat["subsample.ratio"] == 0.02
    assert flat["datasets.gen1.evaluation.min_diag"] == 30


def test_stage_rejects_bad_params_before_work(tmp_path, params_dict, run_stage):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(variant(params_dict, "subsample.ratio", -0.5)))
    out = tmp_path / "split.json"
    proc = run_stage(
        "subsample",
        "--params",
        bad,
        "--data",
        tmp_path / "missing",
        "--out",
        out,
        "--metrics",
        tmp_path / "m.json",
    )
    assert proc.returncode == 2
    assert "subsample.ratio" in proc.stderr and proc.stderr.count("\n") == 1
    assert not out.exists()


def _schema_keys(data: dict, cls: type, prefix: str = "") -> list[tuple[str, bool]]:
    """``(dotted key, optional)`` of every key of params.yaml that a dataclass field reads
    (entries of free-form mappings such as ``datasets`` are walked, not listed)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        key = f"{prefix}{f.name}"
        out.append((key, bool(f.metadata.get("optional"))))
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out += _schema_keys(data[f.name], hint, f"{key}.")
        elif typing.get_origin(hint) is dict and dataclasses.is_dataclass(typing.get_args(hint)[1]):
            for name, value in data[f.name].items():
                out += _schema_keys(value, typing.get_args(hint)[1], f"{key}.{name}.")
    return out


def test_every_params_key_is_required(params_dict):
    """Deleting any key of params.yaml is an error naming it, never a silent default."""
    keys = _schema_keys(params_dict, Params)
    assert len(keys) > 100
    for key, optional in keys:
        data = copy.deepcopy(params_dict)
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        del node[leaf]
        if optional:
            params_from_dict(data)
            continue
        with pytest.raises(ConfigError, match=f"missing params key '{re.escape(key)}'"):
            params_from_dict(data)


def test_dataclass_defaults_equal_params_yaml(repo_root):
    """Code that builds a section directly (tests, benchmarks) gets params.yaml's values."""
    params = load_params(repo_root / "params.yaml")
    differ = []
    for section in dataclasses.fields(Params):
        value = getattr(params, section.name)
        if not dataclasses.is_dataclass(value):
            continue
        for f in dataclasses.fields(value):
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                continue
            if to_dict(default) != to_dict(getattr(value, f.name)):
                differ.append(f"{section.name}.{f.name}: default {default!r} vs {getattr(value, f.name)!r}")
    assert not differ


def test_tracker_settings_come_from_the_pseudo_section(params_dict):
    data = variant(params_dict, "pseudo.min_track_len", 7)
    tracker = params_from_dict(data).pseudo.tracker
    assert tracker.min_track_len == 7 and tracker.method == params_dict["pseudo"]["track_method"]
    assert [f.name for f in dataclasses.fields(tracker)] == ["pseudo"]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("seed", -1, "'seed' = -1 must be >= 0"),
        ("seed", 2**70, f"'seed' = {2**70} must be <= {2**32 - 1}"),
        ("synthetic.seed", 2**32, "'synthetic.seed' = 4294967296 must be <= 4294967295"),
        ("representation.step_ms", 0.0001, "'representation.step_ms' = 0.0001 must be >= 1"),
        ("representation.window_ms", 50.0004, "'representation.window_ms' = 50.0004 must be a whole number"),
        ("pseudo.tflip_offset", 50, "'pseudo.tflip_offset' = 50 must be <= 2"),
        ("pseudo.tflip_offset", -3, "'pseudo.tflip_offset' = -3 must be >= -2"),
    ],
)
def test_bounds_name_the_key(params_dict, key, value, message):
    with pytest.raises(ConfigError) as err:
        params_from_dict(variant(params_dict, key, value))
    assert message in str(err.value)


def test_unknown_round_lists_the_known_ones(repo_root):
    params = load_params(repo_root / "params.yaml")
    with pytest.raises(ConfigError, match=r"round 'r9' is not in params key 'rounds' \(known: r1, r2\)"):
        params.for_round("r9")


def test_round_steps_rounds_own_steps_then_train_steps(params_dict):
    params = params_from_dict(params_dict)
    assert params.train.steps == 1800 and params.selftrain.round_steps == 600
    assert params.for_round("r1").train.steps == params.for_round("r2").train.steps == 600
    d = variant(params_dict, "rounds.r2", {"prev": "r1", "steps": 900})
    assert params_from_dict(d).for_round("r2").train.steps == 900  # one round's own steps first
    d = variant(params_dict, "selftrain.round_steps", None)
    assert params_from_dict(d).for_round("r1").train.steps == 1800  # None: train.steps
    with pytest.raises(ConfigError, match=r"'selftrain.round_steps' = 600 exceeds train.steps = 300"):
        params_from_dict(variant(params_dict, "train.steps", 300))
    with pytest.raises(ConfigError, match=r"'rounds.r1.steps' = 2000 exceeds train.steps = 1800"):
        params_from_dict(variant(params_dict, "rounds.r1", {"prev": "r0", "steps": 2000}))


def test_duplicate_key_is_an_error_naming_key_and_line(tmp_path, repo_root):
    text = (repo_root / "params.yaml").read_text()
    bad = tmp_path / "params.yaml"
    bad.write_text(text.replace("  lr: 0.002\n", "  lr: 0.002\n  lr: 0.2\n"))
    line = bad.read_text().split("\n").index("  lr: 0.2") + 1
    with pytest.raises(ConfigError, match=rf"params.yaml:{line}: params key 'lr' is given twice"):
        load_params(bad)


def test_unreadable_params_files_give_one_line(tmp_path, repo_root):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"seed: 0\ndataset: \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"binary.yaml: not UTF-8 text \(byte 17\)"):
        load_params(binary)
    broken = tmp_path / "broken.yaml"
    broken.write_text("seed: 0\ntrain: {lr: [1, 2}\n")
    with pytest.raises(ConfigError) as err:
        load_params(broken)
    assert re.match(r".*broken\.yaml:2:\d+: not valid YAML \(", str(err.value))
    assert "\n" not in str(err.value)
