"""Recipes: validation and JSON form."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from senseflosser.errors import RecipeError
from senseflosser import actions
from senseflosser.recipe import (
    ACTIONS,
    MAX_SEED, Recipe, validate_action, validate_layers, validate_magnitude, validate_seed,
)


@given(
    magnitude=st.floats(0, 1),
    seed=st.integers(0, MAX_SEED),
    action=st.sampled_from(["fog", "lapse"]),
    layers=st.one_of(st.none(), st.lists(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), min_size=1, max_size=4, unique=True)),
    offset=st.floats(0, 1e4),
    duration=st.one_of(st.none(), st.floats(0.01, 1e4)),
)
def test_json_roundtrip(magnitude, seed, action, layers, offset, duration):
    r = Recipe("m", "abc", action, magnitude, seed, layers, offset, duration)
    assert Recipe.from_json(r.to_json()) == r


def test_recipe_is_frozen():
    r = Recipe("m", "", "fog", 0.1, 1)
    with pytest.raises(AttributeError):
        r.magnitude = 0.2  # type: ignore[misc]
    assert r.with_magnitude(0.2).magnitude == 0.2 and r.magnitude == 0.1
    assert r.slug == "fog_0.1"


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("bad", ["abc", -1, math.nan, math.inf, None, True, "", [0.1], "above"])
def test_bad_magnitudes(action, bad):
    spec = actions.get(action).magnitude
    if bad == "above":
        bad = spec.max * 1.01 + 0.01
    with pytest.raises(RecipeError, match=f"{action} magnitude.*from {spec.min:g} to {spec.max:g}"):
        validate_magnitude(bad, action)
    with pytest.raises(RecipeError, match="magnitude"):
        Recipe("m", "", action, bad, 1)


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("good, value", [("0.5", 0.5), (0, 0.0), (1, 1.0), (" 0.05 ", 0.05)])
def test_good_magnitudes(action, good, value):
    assert validate_magnitude(good, action) == value


def test_fog_takes_large_magnitudes_as_the_original_did():
    assert validate_magnitude(2, "fog") == 2.0
    with pytest.raises(RecipeError, match="from 0 to 1"):
        validate_magnitude(2, "lapse")


@pytest.mark.parametrize("bad", [-1, MAX_SEED + 1, 1.5, "x", "1e3", None, True, math.nan])
def test_bad_seeds(bad):
    with pytest.raises(RecipeError, match="seed"):
        validate_seed(bad)


def test_good_seeds():
    assert validate_seed("42") == 42 and validate_seed(7.0) == 7 and validate_seed(MAX_SEED) == MAX_SEED


@pytest.mark.parametrize("bad", ["blur", "", None, "FOG", 3])
def test_unknown_action(bad):
    with pytest.raises(RecipeError, match="unknown action"):
        validate_action(bad)


def test_layers_parsing():
    assert validate_layers("a, b,,a") == ("a", "b")
    assert validate_layers("") is None and validate_layers([]) is None and validate_layers(None) is None
    with pytest.raises(RecipeError):
        validate_layers([1, 2])


def test_a_recipe_from_before_declared_parameters_reads_them_from_the_top_level():
    old = '{"model": "m", "action": "adversarial", "magnitude": 0.001, "seed": 1, "on_input": true}'
    r = Recipe.from_json(old)
    assert dict(r.params) == {"on_input": True} and r.slug == "adversarial-input_0.001"
    assert Recipe.from_json(r.to_json()) == r


def test_a_parameter_the_action_does_not_declare_is_refused():
    with pytest.raises(RecipeError, match="fog has no parameter 'on_input'"):
        Recipe("m", "", "fog", 0.1, 1, params={"on_input": True})
    with pytest.raises(RecipeError, match="on_input must be true or false"):
        Recipe("m", "", "adversarial", 0.1, 1, params={"on_input": "maybe"})


@pytest.mark.parametrize("text, match", [
    ("not json", "not valid JSON"), ("[]", "JSON object"), ('{"model": "m"}', "lacks"),
    ('{"model": "m", "action": "fog", "magnitude": 0.1, "seed": 1, "offset": -3}', "offset"),
])
def test_bad_recipe_json(text, match):
    with pytest.raises(RecipeError, match=match):
        Recipe.from_json(text)
