"""The typed params view: the repository's params.yaml loads, bad values fail naming the key."""

from __future__ import annotations

import copy

import pytest
import yaml

from leod.config import load_params, params_from_dict
from leod.errors import ConfigError
from leod.schema import flatten


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
    assert flat["subsample.ratio"] == 0.05
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
