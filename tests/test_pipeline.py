"""The floss pipeline and the files a job writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from senseflosser import metrics
from senseflosser.errors import AudioError, ModelError, RecipeError
from senseflosser.pipeline import floss
from helpers import floss_into, make_tiny_model, tone
from helpers import tiny_recipe as _r


def test_returns_normal_and_one_output_per_recipe_with_metrics(tiny_model):
    y = tone(2.0)
    res = floss(y, tiny_model, [_r(magnitude=0.05), _r("lapse", 0.2)])
    assert res.normal.shape == y.shape and len(res.flossed) == 2
    for out in res.flossed:
        assert out.audio.shape == y.shape and np.isfinite(out.audio).all()
        assert {"snr_db", "lsd_db", "gain", "peak", "rms_db"} <= set(out.metrics)
        assert out.metrics["snr_db"] == pytest.approx(metrics.snr_db(res.normal, out.audio), abs=0.5)
    assert res.normal_metrics["nonfinite"] == 0


@pytest.mark.parametrize("action", ["fog", "lapse"])
def test_titration_applies_each_magnitude_to_the_pristine_model(tiny_model, action):
    y = tone(1.5)
    recipes = [_r(action, m) for m in (0.01, 0.05, 0.1, 0.2, 0.5)]
    titrated = floss(y, tiny_model, recipes)
    alone = floss(y, tiny_model, [_r(action, 0.1)])
    np.testing.assert_array_equal(titrated.flossed[2].audio, alone.flossed[0].audio)
    np.testing.assert_array_equal(titrated.normal, alone.normal)


@pytest.mark.parametrize("action", ["fog", "lapse"])
def test_same_recipe_same_output_other_seed_other_output(tiny_model, action):
    y = tone(1.5)
    a = floss(y, tiny_model, [_r(action, 0.2, seed=1)]).flossed[0].audio
    b = floss(y, tiny_model, [_r(action, 0.2, seed=1)]).flossed[0].audio
    c = floss(y, tiny_model, [_r(action, 0.2, seed=2)]).flossed[0].audio
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_source_model_is_never_mutated(tiny_model):
    before = [w.copy() for w in tiny_model.get_weights()]
    names = [layer.name for layer in tiny_model.layers]
    floss(tone(1.0), tiny_model, [_r("fog", 0.5), _r("lapse", 0.5)])
    assert [layer.name for layer in tiny_model.layers] == names
    for a, b in zip(before, tiny_model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_more_damage_means_lower_snr(tiny_model):
    y = tone(2.0)
    res = floss(y, tiny_model, [_r("fog", m) for m in (0.01, 0.5)])
    assert res.flossed[0].metrics["snr_db"] > res.flossed[1].metrics["snr_db"]


def test_loud_outputs_are_scaled_not_clipped_and_the_gain_recorded(tiny_model):
    res = floss(tone(1.0, amp=0.9), tiny_model, [_r("fog", 1.0, seed=3)])
    out = res.flossed[0]
    assert np.abs(out.audio).max() <= 1.0
    if out.metrics["peak"] > 1.0:
        assert out.metrics["gain"] < 1.0
        assert np.abs(out.audio).max() == pytest.approx(0.999, rel=1e-3)
    else:
        assert out.metrics["gain"] == 1.0


def test_non_finite_model_output_is_guarded(tiny_model):
    import keras

    inp = keras.Input(shape=(None, 1025, 2))
    out = keras.layers.Lambda(lambda x: x / 0.0)(keras.layers.Conv2D(2, 1, name="c")(inp))
    broken = keras.Model(inp, out)
    res = floss(tone(0.5), broken, [])
    assert np.isfinite(res.normal).all() and res.normal_metrics["nonfinite"] > 0


def test_fixed_length_model_is_chunked_to_its_size():
    fixed = make_tiny_model(frames=24, seed=1)
    free = make_tiny_model(frames=None, seed=1)
    y = tone(3.0)  # 66 frames: three chunks of at most 24
    a = floss(y, fixed, [_r("fog", 0.05)])
    b = floss(y, free, [_r("fog", 0.05)])
    np.testing.assert_allclose(a.normal, b.normal, atol=1e-5 * np.abs(b.normal).max())
    np.testing.assert_allclose(a.flossed[0].audio, b.flossed[0].audio, atol=1e-4 * np.abs(b.normal).max())


def test_progress_rises_to_one(tiny_model):
    seen = []
    floss(tone(3.0), tiny_model, [_r()], progress=lambda f, m: seen.append(f), chunk_frames=30, context=4)
    assert seen[0] == 0.0 and seen[-1] == 1.0
    assert all(a <= b for a, b in zip(seen, seen[1:]))


def test_bad_inputs(tiny_model):
    with pytest.raises(AudioError):
        floss(np.zeros(0, np.float32), tiny_model, [])
    with pytest.raises(AudioError):
        floss(np.zeros((10, 2), np.float32), tiny_model, [])
    with pytest.raises(AudioError, match="NaN"):
        floss(np.full(100, np.nan, np.float32), tiny_model, [])
    with pytest.raises(ModelError):
        floss(tone(0.2), "not a model", [])


# ------------------------------------------------------------------ floss_to_dir


def test_floss_to_dir_writes_named_outputs_and_recipes(registry, wav_file, tmp_path):
    out = tmp_path / "out"
    m = floss_into(wav_file, registry=registry, model="tiny", action="fog", magnitudes=[0.05, 0.1],
                     seed=11, output_dir=out, save_model=True, spectrograms=True, write_original=True)
    names = {p.name for p in out.iterdir()}
    assert {"song_normal.wav", "song_fog_0.05.wav", "song_fog_0.1.wav", "song_fog_0.1.json",
            "tiny_fog_0.1.keras", "song_normal.png", "song_original.wav", "manifest.json",
            "song_recipe.json"} <= names
    recipe = json.loads((out / "song_fog_0.1.json").read_text())["recipe"]
    assert recipe["seed"] == 11 and recipe["model"] == "tiny"
    assert recipe["model_sha256"] == registry.sha256("tiny")
    assert m["flossed"][1]["metrics"]["snr_db"] is not None
    assert json.loads((out / "manifest.json").read_text())["seed"] == 11


def test_same_recipe_gives_bit_identical_wav(registry, wav_file, tmp_path):
    for d in ("a", "b"):
        floss_into(wav_file, registry=registry, model="tiny", action="lapse", magnitudes=[0.2],
                     seed=3, output_dir=tmp_path / d)
    assert (tmp_path / "a/song_lapse_0.2.wav").read_bytes() == (tmp_path / "b/song_lapse_0.2.wav").read_bytes()


def test_seed_is_drawn_and_recorded_when_not_given(registry, wav_file, tmp_path):
    m = floss_into(wav_file, registry=registry, model="tiny", action="fog", magnitudes=[0.1],
                     output_dir=tmp_path / "o")
    assert isinstance(m["seed"], int) and m["flossed"][0]["recipe"]["seed"] == m["seed"]


@pytest.mark.parametrize("kw, err, match", [
    ({"model": "nope"}, ModelError, "unknown model 'nope'"),
    ({"model": "../../etc/passwd"}, ModelError, "unknown model"),
    ({"action": "blur"}, RecipeError, "unknown action"),
    ({"magnitudes": [11]}, RecipeError, "magnitude"),
    ({"magnitudes": []}, RecipeError, "at least one"),
    ({"magnitudes": [0.1, 0.1]}, RecipeError, "only once"),
    ({"seed": -4}, RecipeError, "seed"),
    ({"layers": ["expand"]}, RecipeError, "not a conv layer"),
    ({"offset": 30.0}, AudioError, "past the end"),
    ({"max_duration": 1.0}, AudioError, "at most 1 s"),
])
def test_floss_to_dir_errors(registry, wav_file, tmp_path, kw, err, match):
    opts = dict(registry=registry, model="tiny", action="fog", magnitudes=[0.1], output_dir=tmp_path / "o")
    opts.update(kw)
    with pytest.raises(err, match=match):
        floss_into(wav_file, **opts)
