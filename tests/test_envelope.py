"""Damage that moves over the track: envelopes, ramps and LFOs."""

from __future__ import annotations

import numpy as np
import pytest

from senseflosser import envelope, metrics, spectral
from senseflosser.errors import RecipeError
from senseflosser.pipeline import floss
from senseflosser.runners import KNOT_FRAMES
from senseflosser.jobspec import build_job
from senseflosser.recipe import Recipe
from helpers import SR, tone


def test_points_and_shortcuts():
    assert envelope.parse_points("0:0, 30:0.1,60:0") == ((0.0, 0.0), (30.0, 0.1), (60.0, 0.0))
    assert envelope.resolve("ramp:0,0.2", 20.0) == ((0.0, 0.0), (20.0, 0.2))
    lfo = envelope.resolve("lfo:0,0.1,4", 8.0)
    values = envelope.values_at(lfo, np.array([0.0, 2.0, 4.0, 6.0]))
    np.testing.assert_allclose(values, [0.0, 0.1, 0.0, 0.1], atol=1e-6)
    assert envelope.values_at(((1.0, 0.1), (2.0, 0.3)), np.array([0.0, 1.5, 9.0])).tolist() == pytest.approx(
        [0.1, 0.2, 0.3])


@pytest.mark.parametrize("spec, match", [
    ("0:0,30", "not 'seconds:magnitude'"),
    ("10:0,5:0.1", "must increase"),
    ("-1:0", "negative"),
    ("0:x", "not two numbers"),
    ("", "no points"),
    ("ramp:1", "two magnitudes"),
    ("lfo:0,0.1,0", "period"),
])
def test_bad_envelopes(spec, match):
    with pytest.raises(RecipeError, match=match):
        envelope.resolve(spec, 10.0)


def test_magnitudes_in_the_actions_range_and_not_beside_magnitudes():
    with pytest.raises(RecipeError, match="lapse magnitude"):
        build_job(model="m", action="lapse", envelope="0:0,1:2")
    with pytest.raises(RecipeError, match="either an envelope or magnitudes"):
        build_job(model="m", action="fog", envelope="0:0,1:0.1", magnitudes="0.1")
    with pytest.raises(RecipeError, match="beyond the end of the audio"):
        envelope.check_within(((0.0, 0.0), (90.0, 0.1)), 60.0)


def _renders(model, action, spec, seconds, seed=3):
    y = tone(seconds)
    recipe = build_job(model="tiny", action=action, envelope=spec, seed=seed, seconds=seconds).base
    res = floss(y, model, [recipe])
    return res.normal / res.normal_metrics["gain"], res.flossed[0].audio / res.flossed[0].metrics["gain"], recipe


def test_a_ramp_grows_the_damage(tiny_model):
    normal, out, _ = _renders(tiny_model, "fog", "ramp:0,0.2", 20.0)
    first = metrics.snr_db(normal[: 2 * SR], out[: 2 * SR])
    last = metrics.snr_db(normal[-2 * SR:], out[-2 * SR:])
    assert first > last + 10


@pytest.mark.parametrize("action, spec", [("fog", "ramp:0,0.3"), ("adversarial", "ramp:0,0.02")])
def test_no_seams_at_knots(tiny_model, action, spec):
    # Frame by frame, the damage's level moves across a knot no more than it moves anywhere else
    # (rendering each knot segment at one magnitude, without the blend, fails this: its steps sit
    # at the knots).
    normal, out, _ = _renders(tiny_model, action, spec, 4.0)
    D = spectral.stft(out) - spectral.stft(normal)
    level = 10 * np.log10(np.sum(D.astype(np.float64) ** 2, axis=(1, 2)) + 1e-12)
    steps = np.abs(np.diff(level))[2:-2]
    at_knot = (np.arange(2, 2 + len(steps)) + 1) % KNOT_FRAMES == 0
    assert np.median(steps[at_knot]) < 1.5 * np.median(steps[~at_knot]) + 1.0


def test_an_envelope_recipe_reproduces_bit_for_bit(tiny_model):
    _, out, recipe = _renders(tiny_model, "lapse", "lfo:0,0.4,3", 6.0)
    again = floss(tone(6.0), tiny_model, [Recipe.from_json(recipe.to_json())]).flossed[0]
    assert (again.audio / again.metrics["gain"]).tobytes() == out.tobytes()
    assert recipe.slug == "lapse_envelope"


def test_a_flat_envelope_equals_the_plain_magnitude(tiny_model):
    y = tone(5.0)
    flat = build_job(model="tiny", action="fog", envelope="0:0.1", seed=9).base
    plain = Recipe("tiny", "", "fog", 0.1, 9)
    a, b = floss(y, tiny_model, [flat]).flossed[0].audio, floss(y, tiny_model, [plain]).flossed[0].audio
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_envelope_cli_and_recipe(capsys, models_dir, wav_file, tmp_path):
    import json

    from senseflosser.cli import main

    assert main(["floss", "-i", str(wav_file), "-m", "tiny", "--models-dir", str(models_dir), "-a", "fog",
                 "--ramp", "0,0.2", "--seed", "4", "-o", str(tmp_path / "a")]) == 0
    recipe = json.loads((tmp_path / "a" / "song_fog_envelope.json").read_text())["recipe"]
    assert recipe["envelope"][0] == [0.0, 0.0] and recipe["envelope"][-1][1] == 0.2
    assert main(["floss", "-i", str(wav_file), "--models-dir", str(models_dir), "-m", "tiny",
                 "--recipe", str(tmp_path / "a" / "song_fog_envelope.json"), "-o", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a" / "song_fog_envelope.wav").read_bytes() == (tmp_path / "b" / "song_fog_envelope.wav").read_bytes()
    code = main(["floss", "-i", str(wav_file), "-m", "tiny", "--models-dir", str(models_dir), "-a", "fog",
                 "--envelope", "0:0,90:0.1", "-o", str(tmp_path / "c")])
    assert code == 1 and "beyond the end of the audio" in capsys.readouterr().err
