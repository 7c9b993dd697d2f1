"""Actions: fog and lapse damage a copy, never the source."""

from __future__ import annotations

import numpy as np
import pytest

from senseflosser import actions, bends
from senseflosser.errors import RecipeError
from senseflosser.layers import Lapse
from senseflosser.models import conv_layer_names
from senseflosser.pipeline import floss
from senseflosser.recipe import Recipe
from helpers import tone


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


# ---------------------------------------------------------------- every action's contract

ALL = [name for name, spec in actions.ACTIONS.items() if spec.kind != "input"]
"""Every action that damages the model (an input action, dream, changes the audio: tests/test_dream.py)."""


def _damage(model, action, magnitude=None, seed=1, layers=None):
    spec = actions.get(action)
    magnitude = spec.magnitude.titration[-1] if magnitude is None else magnitude
    return actions.damage(model, action=action, magnitude=magnitude, seed=seed, layers=layers)


def _run(model):
    x = np.random.default_rng(0).standard_normal((1, 6, 1025, 2)).astype(np.float32)
    return np.asarray(model(x, training=False))


@pytest.mark.parametrize("action", ALL)
def test_action_is_pure_seeded_and_damaging(tiny_model, action):
    before = _weights(tiny_model)
    # At the top of its titration bandmask's band covers every row wherever its seeded centre is.
    top = actions.get(action).magnitude.titration[2] if action == "bandmask" else None
    a, b, c = (_damage(tiny_model, action, magnitude=top, seed=s) for s in (5, 5, 6))
    actions.reset(a), actions.reset(b)
    out_a, out_b, out_c = _run(a), _run(b), _run(c)
    np.testing.assert_array_equal(out_a, out_b)
    # The universal adversarial direction is the model's own: the seed only starts an on-input search;
    # a deterministic bend (gain, invert, ...) has no randomness for the seed to change.
    assert np.array_equal(out_a, out_c) == (action == "adversarial" or not actions.get(action).seeded)
    assert not np.array_equal(out_a, _run(tiny_model))
    for name, ws in _weights(tiny_model).items():  # the source is untouched
        for w0, w1 in zip(before[name], ws):
            np.testing.assert_array_equal(w0, w1)


@pytest.mark.parametrize("action", ALL)
def test_recipe_reproduces_bit_for_bit(tiny_model, action):
    y = tone(1.0)
    recipe = Recipe("tiny", "", action, actions.get(action).magnitude.titration[2], 11)
    first = floss(y, tiny_model, [recipe]).flossed[0].audio
    again = floss(y, tiny_model, [Recipe.from_json(recipe.to_json())]).flossed[0].audio
    kept = floss(y, tiny_model, [recipe], keep_models=True).flossed[0].audio
    assert first.tobytes() == again.tobytes() == kept.tobytes()


@pytest.mark.parametrize("action", ALL)
def test_magnitude_zero_changes_nothing(tiny_model, action):
    np.testing.assert_array_equal(_run(_damage(tiny_model, action, magnitude=0.0)), _run(tiny_model))


@pytest.mark.parametrize("action", ALL)
def test_unknown_layer_names_are_refused(tiny_model, action):
    with pytest.raises(RecipeError, match="'nope' is not a conv layer.*conv_a"):
        _damage(tiny_model, action, layers=["nope"])
    with pytest.raises(RecipeError, match="not a conv layer"):
        _damage(tiny_model, action, layers=["expand"])


@pytest.mark.parametrize("action", ALL)
@pytest.mark.parametrize("layers, match", [
    ("conv_a:4", "'conv_a' of model 'tiny' has 4 channels \\(0 to 3\\); channel 4 does not exist"),
    ("conv_a:x", "not a whole number"),
    ("conv_a:-1", "negative"),
    ("3,conv_a", "follows no 'layer:channel'"),
    ("conv_a:", "give channel numbers"),
])
def test_bad_channels_are_refused(tiny_model, action, layers, match):
    with pytest.raises(RecipeError, match=match):
        _damage(tiny_model, action, layers=layers)


@pytest.mark.parametrize("action", ALL)
def test_bad_magnitudes_are_refused(tiny_model, action):
    spec = actions.get(action).magnitude
    for bad in (-0.1, spec.max + 1, float("nan"), "x"):
        with pytest.raises(RecipeError, match=f"{action} magnitude"):
            _damage(tiny_model, action, magnitude=bad)


def test_registry_entries_are_complete():
    for spec in actions.ACTIONS.values():
        assert spec.description and spec.magnitude.meaning
        m = spec.magnitude
        assert m.min <= m.default <= m.max and len(m.titration) == 5
        assert list(m.titration) == sorted(set(m.titration)) and m.min < m.titration[0] and m.titration[-1] <= m.max
        if spec.changes == "weights":
            assert spec.weights is not None and spec.architecture is None
        elif spec.changes == "input":
            assert spec.prepare is not None and spec.render is not None and spec.weights is None
        else:
            assert spec.architecture is not None and spec.state is not None and spec.build is not None


def test_layer_selection_syntax():
    assert actions.parse_layers("down:9,5,0,mid") == ("down:0,5,9", "mid")
    assert actions.parse_layers(["down:1", "down:0", "mid"]) == ("down:0,1", "mid")
    assert actions.parse_layers("mid,mid:3") == ("mid",)  # all channels win
    assert actions.parse_layers("") is None and actions.parse_layers(None) is None


# ---------------------------------------------------------------- channels (neurons)

def _changed_channels(before, after, layer):
    axis = -1  # Conv2D kernels (kh, kw, in, out), biases (out,)
    changed = set()
    for w0, w1 in zip(before, after):
        diff = np.moveaxis(w0 != w1, axis, 0).reshape(w0.shape[axis], -1).any(axis=1)
        changed |= set(np.flatnonzero(diff).tolist())
    return changed


@pytest.mark.parametrize("action", ["fog", "ablate", "bitflip"])
def test_named_channels_only_are_damaged(tiny_model, action):
    damaged = _damage(tiny_model, action, magnitude=1.0 if action != "fog" else 0.5, layers="conv_b:1,3")
    for name in conv_layer_names(tiny_model):
        changed = _changed_channels(tiny_model.get_layer(name).get_weights(), damaged.get_layer(name).get_weights(),
                                    name)
        assert changed <= ({1, 3} if name == "conv_b" else set())
    assert _changed_channels(tiny_model.get_layer("conv_b").get_weights(),
                             damaged.get_layer("conv_b").get_weights(), "conv_b") == {1, 3}


def test_ablate_silences_whole_channels(tiny_model):
    damaged = actions.ablate(tiny_model, magnitude=0.5, seed=2, layers="conv_a")
    kernel, bias = damaged.get_layer("conv_a").get_weights()
    dead = [c for c in range(4) if not kernel[..., c].any() and bias[c] == 0]
    assert len(dead) == 2
    more = actions.ablate(tiny_model, magnitude=0.75, seed=2, layers="conv_a").get_layer("conv_a").get_weights()
    assert set(dead) < {c for c in range(4) if not more[0][..., c].any()}  # larger share: a superset


def test_ablate_default_spares_the_output_layer(tiny_model):
    damaged = actions.ablate(tiny_model, magnitude=1.0, seed=2)
    for name in ("conv_a", "conv_b"):
        assert not damaged.get_layer(name).get_weights()[0].any()
    np.testing.assert_array_equal(damaged.get_layer("conv_out").get_weights()[0],
                                  tiny_model.get_layer("conv_out").get_weights()[0])


def test_bitflip_flips_one_bit_in_the_given_share(tiny_model):
    damaged = actions.bitflip(tiny_model, magnitude=0.25, seed=3, layers="conv_b")
    w0 = tiny_model.get_layer("conv_b").get_weights()[0].ravel().view(np.uint32)
    w1 = damaged.get_layer("conv_b").get_weights()[0].ravel().view(np.uint32)
    flipped = np.bitwise_xor(w0, w1)
    hit = flipped != 0
    assert hit.sum() == round(0.25 * w0.size)
    bound = np.abs(w0.view(np.float32)).max()
    saturated = np.abs(w1.view(np.float32)) == bound
    assert all(bin(int(v)).count("1") == 1 for v in flipped[hit & ~saturated])
    assert np.isfinite(w1.view(np.float32)).all() and (np.abs(w1.view(np.float32)) <= bound).all()


def test_lapse_on_named_channels_only(tiny_model):
    m = actions.lapse(tiny_model, magnitude=1.0, seed=1, layers="conv_a:0,2")
    layer = m.get_layer("conv_a_lapse")
    x = np.ones((1, 4, 5, 4), np.float32)
    y = np.asarray(layer(x))
    assert not y[..., [0, 2]].any() and (y[..., [1, 3]] == 1).all()


@pytest.mark.parametrize("action", ALL)
def test_saved_flossed_model_loads_back_and_sounds_the_same(tiny_model, action, tmp_path):
    import keras

    y = tone(1.0)
    recipe = Recipe("tiny", "", action, actions.get(action).magnitude.titration[2], 4, layers=("conv_a:1,2", "conv_b"))
    kept = floss(y, tiny_model, [recipe], keep_models=True).flossed[0]
    kept.model.save(tmp_path / "f.keras")
    again = keras.models.load_model(tmp_path / "f.keras")
    assert floss(y, again, []).normal.tobytes() == kept.audio.tobytes()


@pytest.mark.parametrize("action", ALL)
def test_conv1d_layers_are_damaged_as_conv2d_ones_are(conv1d_model, action):
    # Frequency bins as channels, 1-D convs over time: every action finds, damages and
    # reproduces these layers as it does 2-D ones, and the source stays untouched.
    assert conv_layer_names(conv1d_model) == ["c1d_a", "c1d_b", "c1d_out"]
    before = _weights(conv1d_model)
    y = tone(1.0)
    spec = actions.get(action)
    recipes = [Recipe("tiny1d", "", action, m, 11) for m in spec.magnitude.titration[-2:]]
    if action in bends.FREQUENCY:  # a bend along frequency rows: a Conv1D map has none, and it says so
        with pytest.raises(RecipeError, match=f"{action} cannot apply to layer 'c1d_a'"):
            floss(y, conv1d_model, recipes)
        return
    first = floss(y, conv1d_model, recipes)
    again = floss(y, conv1d_model, recipes)
    for a, b in zip(first.flossed, again.flossed):
        assert a.audio.tobytes() == b.audio.tobytes()
    low, high = (out.metrics["snr_db"] for out in first.flossed)
    assert high < low < 200  # damaged, and more so at the higher magnitude
    for name, ws in _weights(conv1d_model).items():
        for w0, w1 in zip(before[name], ws):
            np.testing.assert_array_equal(w0, w1)


@pytest.mark.parametrize("action", ["fog", "ablate", "bitflip"])
def test_named_channels_of_a_conv1d_layer_only(conv1d_model, action):
    damaged = _damage(conv1d_model, action, magnitude=1.0 if action != "fog" else 0.5, layers="c1d_b:1,3")
    assert _changed_channels(conv1d_model.get_layer("c1d_b").get_weights(),
                             damaged.get_layer("c1d_b").get_weights(), "c1d_b") == {1, 3}
    for name in ("c1d_a", "c1d_out"):
        assert _changed_channels(conv1d_model.get_layer(name).get_weights(),
                                 damaged.get_layer(name).get_weights(), name) == set()
