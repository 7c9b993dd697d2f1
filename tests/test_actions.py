"""Actions: fog and lapse damage a copy, never the source."""

from __future__ import annotations

import numpy as np
import pytest

from senseflosser import actions
from senseflosser.errors import RecipeError
from senseflosser.layers import Lapse
from senseflosser.models import conv_layer_names


def _weights(model):
    return {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}


def test_fog_noises_half_of_each_conv_weight_array(tiny_model):
    before = _weights(tiny_model)
    fogged = actions.fog(tiny_model, magnitude=0.3, seed=1)
    for name in conv_layer_names(tiny_model):
        for w0, w1 in zip(before[name], fogged.get_layer(name).get_weights()):
            changed = w0 != w1
            assert abs(changed.sum() - w0.size / 2) <= 0.5  # kernel and bias: exactly half
            if changed.sum() > 20:
                assert np.std((w1 - w0)[changed]) == pytest.approx(0.3, rel=0.35)
    # The source model is untouched.
    for name, ws in _weights(tiny_model).items():
        for a, b in zip(before[name], ws):
            np.testing.assert_array_equal(a, b)


def test_fog_is_reproducible_and_seed_dependent(tiny_model):
    a = actions.fog(tiny_model, magnitude=0.1, seed=5).get_weights()
    b = actions.fog(tiny_model, magnitude=0.1, seed=5).get_weights()
    c = actions.fog(tiny_model, magnitude=0.1, seed=6).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_fog_on_chosen_layers_only(tiny_model):
    fogged = actions.fog(tiny_model, magnitude=0.2, seed=1, layers=["conv_b"])
    for name in conv_layer_names(tiny_model):
        same = all(np.array_equal(x, y) for x, y in zip(
            tiny_model.get_layer(name).get_weights(), fogged.get_layer(name).get_weights()))
        assert same == (name != "conv_b")


def test_magnitude_zero_is_the_identity(tiny_model):
    x = np.random.default_rng(0).standard_normal((1, 6, 1025, 2)).astype(np.float32)
    for fn in (actions.fog, actions.lapse):
        m = fn(tiny_model, magnitude=0.0, seed=3)
        np.testing.assert_allclose(np.asarray(m(x)), np.asarray(tiny_model(x)), rtol=1e-5, atol=1e-6)


def test_lapse_default_skips_the_output_layer(tiny_model):
    m = actions.lapse(tiny_model, magnitude=0.2, seed=1)
    lapses = [layer for layer in m.layers if isinstance(layer, Lapse)]
    assert [layer.name for layer in lapses] == ["conv_a_lapse", "conv_b_lapse"]
    assert all(layer.rate == 0.2 for layer in lapses)
    assert len({layer.seed for layer in lapses}) == 2  # each layer its own mask stream
    assert not any(isinstance(layer, Lapse) for layer in tiny_model.layers)


def test_lapse_on_every_layer_when_named(tiny_model):
    m = actions.lapse(tiny_model, magnitude=0.2, seed=1, layers="conv_a,conv_b,conv_out")
    assert sum(isinstance(layer, Lapse) for layer in m.layers) == 3


def test_lapse_drops_the_expected_share_and_rescales():
    layer = Lapse(0.3, seed=4)
    x = np.ones((1, 100, 100, 4), np.float32)
    y = np.asarray(layer(x))
    assert (y == 0).mean() == pytest.approx(0.3, abs=0.02)
    np.testing.assert_allclose(y[y != 0], 1 / 0.7, rtol=1e-6)
    assert np.all(np.asarray(Lapse(0.3, seed=4, rescale=False)(x))[y != 0] == 1)
    assert not np.any(np.asarray(Lapse(1.0)(x)))


def test_lapse_masks_restart_from_the_seed():
    layer = Lapse(0.5, seed=9)
    x = np.ones((1, 8, 8, 2), np.float32)
    first = np.asarray(layer(x))
    assert not np.array_equal(first, np.asarray(layer(x)))
    layer.reset_seed()
    np.testing.assert_array_equal(first, np.asarray(layer(x)))


@pytest.mark.parametrize("fn", [actions.fog, actions.lapse])
def test_unknown_layer_names_are_refused(tiny_model, fn):
    with pytest.raises(RecipeError, match="'nope' is not a conv layer.*conv_a"):
        fn(tiny_model, magnitude=0.1, seed=1, layers=["nope"])
    with pytest.raises(RecipeError, match="not a conv layer"):
        fn(tiny_model, magnitude=0.1, seed=1, layers=["expand"])


@pytest.mark.parametrize("fn", [actions.fog, actions.lapse])
@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "x"])
def test_bad_magnitude(tiny_model, fn, bad):
    with pytest.raises(RecipeError, match="magnitude"):
        fn(tiny_model, magnitude=bad, seed=1)
