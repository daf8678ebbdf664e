"""Recipes (src/leod/recipes): one params key switches a whole published setup."""

from __future__ import annotations

import copy
import re

import pytest
import yaml

from leod.config import Params, load_params, params_from_dict
from leod.plumbing.errors import ConfigError
from leod.recipes import DEFAULT_RECIPE, RECIPES_DIR, apply_recipe, load_recipe, recipe_names
from leod.schema import from_dict, to_dict

#: the recipes the issue asks for; each must exist
REQUIRED = ["synthetic-nano", "gen1-rvt-s", "1mpx-rvt-s", "etram-rvt-b"]


def with_recipe(params_dict: dict, name: str, **top: object) -> dict:
    """params.yaml's data switched to recipe ``name`` (and the dataset it is for)."""
    data = copy.deepcopy(params_dict)
    data["recipe"] = name
    dataset = load_recipe(name).dataset
    if dataset is not None:
        data["dataset"] = dataset
    data.update(top)
    return data


def test_required_recipes_exist():
    assert set(REQUIRED) <= set(recipe_names())


def test_params_yaml_is_the_default_recipe_and_it_sets_nothing(repo_root, params_dict):
    assert params_dict["recipe"] == DEFAULT_RECIPE
    recipe = load_recipe(DEFAULT_RECIPE)
    assert recipe.values == {} and recipe.dataset is None
    assert apply_recipe(params_dict, Params) == params_dict
    # the loaded params are params.yaml's, validated without any recipe step
    assert to_dict(load_params(repo_root / "params.yaml")) == to_dict(from_dict(Params, params_dict))


@pytest.mark.parametrize("name", sorted(set(recipe_names()) - {DEFAULT_RECIPE}))
def test_recipe_builds_valid_params_for_its_dataset(params_dict, name):
    recipe = load_recipe(name)
    assert recipe.dataset in params_dict["datasets"]
    params = params_from_dict(with_recipe(params_dict, name))  # the typed config validates
    assert params.recipe == name and params.dataset == recipe.dataset
    flat = {}
    for key, value in recipe.values.items():
        if key.startswith("rounds.*."):
            for rnd in params.rounds.values():
                flat[key] = getattr(rnd, key.rsplit(".", 1)[1])
                assert flat[key] == value, key
            continue
        node = params
        for part in key.split("."):
            node = getattr(node, part)
        assert to_dict(node) == value or list(node) == value, key
    # every per-class list matches the dataset's classes, and a round fits in train.steps
    n = len(params.preset.classes)
    assert len(params.pseudo.obj_thresh) == len(params.selftrain.soft_thresh) == n
    for rnd in params.rounds:
        params.for_round(rnd)
    # a real-data recipe leaves none of the synthetic CPU settings behind
    assert params.model.preset != "nano" and params.train.steps >= 100_000


def test_values_follow_leod_and_rvt(params_dict):
    """Spot checks against the facts file (/work/shared/reference/facts-leod-rvt.md)."""
    gen1 = params_from_dict(with_recipe(params_dict, "gen1-rvt-s"))
    assert (gen1.model.preset, gen1.model.partition_split) == ("small", 1)
    assert (gen1.loader.batch_size, gen1.loader.sequence_length, gen1.train.lr) == (8, 21, 2e-4)
    assert gen1.pseudo.obj_thresh == [0.6, 0.3] and gen1.selftrain.soft_thresh == [0.7, 0.35]
    assert gen1.pseudo.min_track_len == 6 and gen1.for_round("r1").train.lr == 5e-4
    mpx = params_from_dict(with_recipe(params_dict, "1mpx-rvt-s"))
    assert (mpx.model.partition_split, mpx.loader.sequence_length, mpx.pseudo.tflip_offset) == (2, 10, -2)
    # LEOD's (car, pedestrian) thresholds mapped onto gen4's (pedestrian, two-wheeler, car)
    assert mpx.pseudo.cls_thresh == [0.5, 0.5, 0.6] and mpx.selftrain.soft_thresh == [0.55, 0.55, 0.7]
    assert params_from_dict(with_recipe(params_dict, "etram-rvt-b")).model.preset == "base"


def test_every_recipe_value_names_its_source():
    """Each line of a recipe's ``set`` says where the value comes from (L/R file:line or ours)."""
    for path in RECIPES_DIR.glob("*.yaml"):
        for line in path.read_text().splitlines():
            if re.match(r"^  [a-z_*.]+: ", line):
                assert re.search(r"# (L|R) \S+\.(yaml|py|md):\d|# ours", line), f"{path.name}: {line}"


def test_wildcard_reaches_every_round(params_dict):
    data = with_recipe(params_dict, "gen1-rvt-s")
    data["rounds"]["r3"] = {"prev": "r2"}
    assert params_from_dict(data).rounds["r3"].steps == 150_000


def test_override_of_a_recipe_key_is_an_error_naming_it(params_dict):
    data = with_recipe(params_dict, "gen1-rvt-s")
    data["train"]["steps"] = 1000
    with pytest.raises(ConfigError, match=r"params key 'train.steps' = 1000 overrides recipe 'gen1-rvt-s'"):
        params_from_dict(data)
    data["train"]["steps"] = 200_000  # the recipe's own value is no conflict
    assert params_from_dict(data).train.steps == 200_000
    data["rounds"]["r1"]["lr"] = 0.001  # nor is an unset optional key, but a set one is
    with pytest.raises(ConfigError, match=r"'rounds.r1.lr' = 0.001 overrides recipe"):
        params_from_dict(data)
    # keys the recipe leaves alone keep params.yaml's value
    data = with_recipe(params_dict, "gen1-rvt-s")
    data["seed"] = 7
    assert params_from_dict(data).seed == 7


def test_recipe_needs_its_dataset_in_params_yaml(params_dict):
    data = copy.deepcopy(params_dict)
    data["recipe"] = "gen1-rvt-s"
    with pytest.raises(ConfigError, match=r"params key 'dataset' = 'synthetic' but recipe 'gen1-rvt-s'"):
        params_from_dict(data)


def test_unknown_recipe_is_one_error_line_exit_2(tmp_path, params_dict, run_stage):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(dict(params_dict, recipe="gen2-rvt-z")))
    out = tmp_path / "split.json"
    proc = run_stage(
        "subsample", "--params", bad, "--data", tmp_path / "x", "--out", out, "--metrics", tmp_path / "m.json"
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert "params key 'recipe' = 'gen2-rvt-z'" in proc.stderr and "gen1-rvt-s" in proc.stderr
    assert not out.exists()


def test_every_stage_tracks_the_recipe(repo_root):
    """DVC reruns a stage when the recipe switches or a recipe file changes."""
    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        body = stage.get("do", stage)
        assert "recipe" in body.get("params", []), name
        assert "src/leod/recipes" in body["deps"], name


def test_a_custom_recipe_extends_and_bad_keys_are_named(tmp_path, monkeypatch, params_dict):
    """A user's recipe beside the shipped ones: ``extends`` one, change a few keys."""
    import leod.recipes as recipes

    for path in RECIPES_DIR.glob("*.yaml"):
        (tmp_path / path.name).write_text(path.read_text())
    monkeypatch.setattr(recipes, "RECIPES_DIR", tmp_path)
    (tmp_path / "gen1-short.yaml").write_text(
        "extends: gen1-rvt-s\nset:\n  train.steps: 2000\n  rounds.*.steps: 1000\n"
    )
    params = params_from_dict(with_recipe(params_dict, "gen1-short"))
    assert params.train.steps == 2000 and params.rounds["r2"].steps == 1000
    assert params.model.preset == "small" and params.dataset == "gen1"  # from gen1-rvt-s
    (tmp_path / "typo.yaml").write_text("dataset: gen1\nset:\n  trian.steps: 5\n")
    with pytest.raises(ConfigError, match=r"typo.yaml .*key 'trian.steps' is not a params key"):
        params_from_dict(with_recipe(params_dict, "typo"))
    (tmp_path / "loop.yaml").write_text("extends: loop\n")
    with pytest.raises(ConfigError, match=r"'extends' loops back to itself \(loop -> loop\)"):
        load_recipe("loop")
    (tmp_path / "orphan.yaml").write_text("extends: nowhere\n")
    with pytest.raises(ConfigError, match=r"recipe 'orphan' key 'extends' = 'nowhere' names no recipe"):
        load_recipe("orphan")
