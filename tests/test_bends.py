"""The bends: audio-native activation transforms (issue 23).

Each is checked on the tiny models: magnitude 0 is exactly normal, a recipe reproduces bit
for bit, the SNR against normal never rises across the default titration, a channel
selection bends only the chosen channels, a frequency bend refuses a Conv1D layer, a
bad magnitude gets a sentence, and chunked processing equals one pass.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from helpers import tone, tiny_recipe

from senseflosser import actions, bends
from senseflosser.actions import bend as bend_action
from senseflosser.errors import MagnitudeError, RecipeError
from senseflosser.pipeline import floss
from senseflosser.runners import Runner, _architecture_key, damaged_runner

BENDS = tuple(bends.TRANSFORMS)
AUDIO = tone(1.5)


@pytest.fixture(scope="module")
def normal(tiny_model):
    return floss(AUDIO, tiny_model, []).normal


def _flossed(model, recipes, **kw):
    return [o.audio for o in floss(AUDIO, model, recipes, **kw).flossed]


def test_at_least_eight_bends_are_registered_activation_actions():
    listed = {name: actions.get(name) for name in BENDS}
    assert len(listed) >= 8
    for spec in listed.values():
        assert spec.kind == "activation" and spec.changes == "architecture"
        assert len(spec.magnitude.titration) == 5 and spec.magnitude.min == 0.0
        assert all(0 < m <= spec.magnitude.max for m in spec.magnitude.titration)


@pytest.mark.parametrize("name", BENDS)
def test_magnitude_zero_is_normal(name, tiny_model, normal):
    out, = _flossed(tiny_model, [tiny_recipe(name, 0.0, seed=3)])
    assert np.max(np.abs(out - normal)) < 1e-6


@pytest.mark.parametrize("name", BENDS)
def test_the_titration_never_raises_the_snr_and_reproduces_bit_for_bit(name, tiny_model, normal):
    recipes = [tiny_recipe(name, m, seed=5) for m in actions.get(name).magnitude.titration]
    result = floss(AUDIO, tiny_model, recipes)
    outs = [o.audio for o in result.flossed]
    snrs = [o.metrics["snr_db"] for o in result.flossed]
    assert all(b <= a + 1e-6 for a, b in zip(snrs, snrs[1:])), (name, snrs)
    assert snrs[-1] < snrs[0] or snrs[0] < 60, (name, snrs)  # it does something audible
    again = _flossed(tiny_model, recipes[-1:])[0]
    assert again.tobytes() == outs[-1].tobytes()


@pytest.mark.parametrize("name", BENDS)
def test_the_shared_copy_with_state_equals_a_built_copy(name, tiny_model):
    recipe = tiny_recipe(name, actions.get(name).magnitude.titration[2], seed=11)
    tensor = np.random.default_rng(0).standard_normal((12, 1025, 2)).astype(np.float32) * 0.1
    shared = damaged_runner(tiny_model, recipe)[0](tensor, 0)
    built = Runner(actions.apply(tiny_model, recipe))(tensor, 0)
    np.testing.assert_array_equal(shared, built)


def test_one_compiled_function_serves_every_magnitude_and_seed(tiny_model):
    a = actions.apply(tiny_model, tiny_recipe("bandmask", 0.1, seed=1))
    b = actions.apply(tiny_model, tiny_recipe("bandmask", 0.4, seed=2))
    assert _architecture_key(a) == _architecture_key(b)
    c = actions.apply(tiny_model, tiny_recipe("dilate", 0.4, seed=2, params={"radius": 3.0}))
    assert _architecture_key(a) != _architecture_key(c)


@pytest.mark.parametrize("name", BENDS)
def test_a_channel_selection_bends_only_its_channels(name, tiny_model):
    recipe = tiny_recipe(name, actions.get(name).magnitude.titration[-1], seed=2, layers=("conv_a:1,2",))
    damaged = actions.apply(tiny_model, recipe)
    probe = keras.Model(damaged.input, [damaged.get_layer("conv_a").output,
                                        damaged.get_layer("conv_a_bend").output])
    tensor = np.random.default_rng(1).standard_normal((1, 10, 1025, 2)).astype(np.float32)
    before, after = (keras.ops.convert_to_numpy(t) for t in probe(tensor))
    np.testing.assert_array_equal(after[..., [0, 3]], before[..., [0, 3]])
    assert np.max(np.abs(after[..., [1, 2]] - before[..., [1, 2]])) > 1e-4


def test_chunks_give_the_same_samples_as_one_pass(tiny_model):
    long = tone(8.0, seed=4)
    for name in BENDS:
        recipe = tiny_recipe(name, actions.get(name).magnitude.titration[3], seed=9)
        whole = floss(long, tiny_model, [recipe], chunk_frames=512).flossed[0].audio
        chunked = floss(long, tiny_model, [recipe], chunk_frames=40).flossed[0].audio
        assert np.max(np.abs(whole - chunked)) < 1e-5, name


def test_bandmask_nests_and_its_seed_moves_the_band():
    x = keras.ops.ones((1, 2, 64, 3))
    narrow = keras.ops.convert_to_numpy(bends.bandmask(x, 0.05, 0.3))
    wide = keras.ops.convert_to_numpy(bends.bandmask(x, 0.2, 0.3))
    assert np.all(wide <= narrow + 1e-7) and (wide < narrow - 1e-3).any()  # the wide band covers the narrow one
    for place in (0.0, 0.3, 1.0):  # the width is the share of rows masked, wherever the band sits
        assert keras.ops.convert_to_numpy(bends.bandmask(x, 0.25, place))[0, 0, :, 0].sum() == pytest.approx(48)
    assert np.all(keras.ops.convert_to_numpy(bends.bandmask(x, 1.0, 0.7)) == 0)
    assert bend_action.layer_place(1, 0) != bend_action.layer_place(2, 0)
    assert bend_action.layer_place(1, 0) == bend_action.layer_place(1, 0)


def test_freqshift_interpolates_fractional_rows():
    x = keras.ops.convert_to_tensor(np.arange(8, dtype=np.float32).reshape(1, 1, 8, 1))
    half = keras.ops.convert_to_numpy(bends.shift_rows(x, 0.5))[0, 0, :, 0]
    np.testing.assert_allclose(half, [0.0, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5])
    two = keras.ops.convert_to_numpy(bends.shift_rows(x, 2.0))[0, 0, :, 0]
    np.testing.assert_allclose(two, [0, 0, 0, 1, 2, 3, 4, 5])
    mixed = keras.ops.convert_to_numpy(bends.freqshift(x, 0.25, 2.0))[0, 0, :, 0]
    np.testing.assert_allclose(mixed, 0.75 * np.arange(8) + 0.25 * two)


def test_freqshift_rows_is_a_declared_parameter_passed_as_state(tiny_model):
    a = actions.apply(tiny_model, tiny_recipe("freqshift", 0.5, params={"shift_rows": 1.0}))
    b = actions.apply(tiny_model, tiny_recipe("freqshift", 0.5, params={"shift_rows": 6.5}))
    assert _architecture_key(a) == _architecture_key(b)
    tensor = np.random.default_rng(3).standard_normal((8, 1025, 2)).astype(np.float32)
    recipe = tiny_recipe("freqshift", 0.5, params={"shift_rows": 6.5})
    np.testing.assert_array_equal(damaged_runner(tiny_model, recipe)[0](tensor, 0), Runner(b)(tensor, 0))
    assert np.max(np.abs(Runner(a)(tensor, 0) - Runner(b)(tensor, 0))) > 1e-4
    with pytest.raises(RecipeError, match="freqshift parameter shift_rows must be a finite number from 0 to 64"):
        tiny_recipe("freqshift", 0.5, params={"shift_rows": 100})


def test_dilate_and_erode_are_max_and_min_filters():
    x = np.zeros((1, 1, 9, 1), np.float32)
    x[0, 0, 4, 0] = 1.0
    d = keras.ops.convert_to_numpy(bends.dilate(keras.ops.convert_to_tensor(x), 1.0, 2.0))[0, 0, :, 0]
    np.testing.assert_array_equal(d, [0, 0, 1, 1, 1, 1, 1, 0, 0])
    e = keras.ops.convert_to_numpy(bends.erode(keras.ops.convert_to_tensor(1.0 - x), 1.0, 1.5))[0, 0, :, 0]
    np.testing.assert_allclose(e, [1, 1, 0.5, 0, 0, 0, 0.5, 1, 1])
    half = keras.ops.convert_to_numpy(bends.dilate(keras.ops.convert_to_tensor(x), 0.5, 2.0))[0, 0, :, 0]
    np.testing.assert_allclose(half, [0, 0, 0.5, 0.5, 1, 0.5, 0.5, 0, 0])


def test_frequency_bends_refuse_a_conv1d_layer_and_the_others_apply(conv1d_model):
    with pytest.raises(RecipeError, match="freqshift cannot apply to layer 'c1d_a'"):
        actions.damage(conv1d_model, action="freqshift", magnitude=0.5, seed=0)
    y = floss(tone(0.5), conv1d_model, [tiny_recipe("gate", 0.3)]).flossed[0].audio
    assert np.isfinite(y).all()


def test_a_bad_magnitude_gets_a_sentence(tiny_model):
    with pytest.raises(MagnitudeError, match=r"freqshift magnitude \(share of the shifted copy.*from 0 to 1, got 1.5"):
        actions.damage(tiny_model, action="freqshift", magnitude=1.5, seed=0)
    with pytest.raises(MagnitudeError, match="gate magnitude .* got -0.1"):
        actions.validate_magnitude(-0.1, "gate")
    with pytest.raises(RecipeError, match="unknown bend transform 'smear'"):
        bends.Bend("smear")


def test_a_saved_bent_model_reloads_bent(tiny_model, tmp_path):
    recipe = tiny_recipe("freqshift", 0.7, seed=1, params={"shift_rows": 3.0})
    damaged = actions.apply(tiny_model, recipe)
    damaged.save(tmp_path / "bent.keras")
    again = keras.models.load_model(tmp_path / "bent.keras")
    tensor = np.random.default_rng(2).standard_normal((1, 6, 1025, 2)).astype(np.float32)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(damaged(tensor)), keras.ops.convert_to_numpy(again(tensor)))


@pytest.mark.parametrize("name", ["gate", "bandmask"])
def test_an_envelope_renders_a_bend_at_its_knots(name, tiny_model):
    top = actions.get(name).magnitude.titration[2]
    steady = _flossed(tiny_model, [tiny_recipe(name, top, seed=4)])[0]
    held = _flossed(tiny_model, [tiny_recipe(name, top, seed=4, envelope=((0.0, top), (1.5, top)))])[0]
    np.testing.assert_allclose(held, steady, atol=1e-5)
    ramp = _flossed(tiny_model, [tiny_recipe(name, top, seed=4, envelope=((0.0, 0.0), (1.5, top)))])[0]
    assert 1e-5 < np.max(np.abs(ramp - steady))


def test_the_api_lists_the_bends_with_their_kind_and_parameters(make_web_app):
    listed = {a["name"]: a for a in make_web_app().test_client().get("/api/actions").get_json()}
    bent = [a for a in listed.values() if a["kind"] == "activation" and a["name"] in BENDS]
    assert len(bent) >= 8
    assert [p["name"] for p in listed["freqshift"]["params"]] == ["shift_rows"]
    assert listed["dilate"]["params"][0] | {"help": ""} == {
        "name": "radius", "type": "float", "default": 2.0, "min": 0.0, "max": float(bends.MAX_RADIUS), "help": "",
        "aliases": [], "flag": "--radius"}


def test_a_bend_job_on_the_web_records_its_parameter(make_web_app, web_submit, web_wait):
    client = make_web_app().test_client()
    r = web_submit(client, action="freqshift", magnitude="0.5", shift_rows="3.5", seed="4")
    assert r.status_code == 202, r.get_json()
    view = web_wait(client, r.get_json()["id"])
    assert view["state"] == "done", view
    assert view["recipe"]["action"] == "freqshift" and view["recipe"]["params"] == {"shift_rows": 3.5}
    assert "--shift-rows 3.5" in view["cli"]


@pytest.mark.parametrize("fields, message", [
    ({"action": "freqshift", "shift_rows": "99"}, "freqshift parameter shift_rows must be a finite number from 0 to 64, got '99'"),
    ({"action": "dilate", "radius": "-1"}, "dilate parameter radius must be a finite number from 0 to"),
    ({"action": "gate", "magnitude": "2"}, "gate magnitude"),
])
def test_a_bend_out_of_its_declared_range_is_a_400_sentence(make_web_app, web_submit, fields, message):
    r = web_submit(make_web_app().test_client(), **fields)
    assert r.status_code == 400 and message in r.get_json()["error"], r.get_json()


def test_the_cli_refuses_a_frequency_bend_on_a_conv1d_layer(capsys, conv1d_model, wav_file, tmp_path):
    from senseflosser.cli import main

    conv1d_model.save(tmp_path / "c1d.keras")
    code = main(["floss", "-i", str(wav_file), "-m", str(tmp_path / "c1d.keras"), "-a", "bandmask", "-g", "0.2",
                 "-o", str(tmp_path / "out")])
    assert code == 1 and "bandmask cannot apply to layer 'c1d_a'" in capsys.readouterr().err


def test_a_bandmask_placed_by_hand_masks_that_band_on_every_layer(tiny_model):
    recipe = tiny_recipe("bandmask", 0.25, seed=5, layers=("conv_a", "conv_b"), params={"place": 0.0})
    damaged = actions.apply(tiny_model, recipe)
    probe = keras.Model(damaged.input, [damaged.get_layer("conv_a_bend").output, damaged.get_layer("conv_b_bend").output])
    tensor = np.random.default_rng(1).standard_normal((1, 10, 1025, 2)).astype(np.float32)
    for out in (keras.ops.convert_to_numpy(t) for t in probe(tensor)):
        rows = out.shape[2]
        masked = int(np.floor(0.25 * rows))
        assert np.all(out[:, :, :masked] == 0) and np.any(out[:, :, masked + 1:] != 0)
    # the seed no longer moves a band placed by hand; -1 (the default) draws it from the seed again
    other = tiny_recipe("bandmask", 0.25, seed=6, layers=("conv_a", "conv_b"), params={"place": 0.0})
    x = np.random.default_rng(2).standard_normal((12, 1025, 2)).astype(np.float32) * 0.1
    np.testing.assert_array_equal(damaged_runner(tiny_model, recipe)[0](x, 0), damaged_runner(tiny_model, other)[0](x, 0))
    seeded = [tiny_recipe("bandmask", 0.25, seed=s, layers=("conv_a",)) for s in (5, 6)]
    assert not np.array_equal(*(damaged_runner(tiny_model, r)[0](x, 0) for r in seeded))


@pytest.mark.parametrize("place", [-0.5, 1.5])
def test_a_bandmask_place_out_of_range_gets_a_sentence(place):
    with pytest.raises(RecipeError, match="place"):
        tiny_recipe("bandmask", 0.25, params={"place": place})
