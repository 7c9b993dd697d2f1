"""The dream action (issue 24): gradient ascent on the audio, judged on the written audio."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import soundfile as sf

from helpers import SR, floss_into, post_job, tone, web_wav_bytes
from senseflosser import actions, audio, dream, pipeline
from senseflosser.errors import RecipeError
from senseflosser.jobspec import build_job

FEW = {"iterations": 4, "step": 0.03}
"""Few, larger steps: enough to move a tiny model, quick to run."""


def _dream(model, y, layers="conv_b:0,1", *, seed=3, magnitudes="1", **params):
    job = build_job(model="tiny", action="dream", magnitudes=magnitudes, seed=seed, layers=layers,
                    params={**FEW, **params})
    return pipeline.floss(y, model, job.recipes)


def _written(samples, tmp_path, name="out.wav"):
    """What a job writes (16-bit WAV), read back."""
    return audio.load(audio.write_wav(tmp_path / name, samples))


def _plucks(seconds: float) -> np.ndarray:
    """Sparse music: a decaying pluck every 0.6 s over a quiet held tone (onsets to keep)."""
    t = np.arange(int(seconds * SR)) / SR
    phase = np.mod(t, 0.6)
    y = 0.3 * np.exp(-phase * 8.0) * np.sin(2 * np.pi * 330.0 * t) + 0.05 * np.sin(2 * np.pi * 110.0 * t)
    return y.astype(np.float32)


def _rms_db(y):
    return 20 * np.log10(np.sqrt(np.mean(np.square(y, dtype=np.float64))))


def test_dream_is_an_input_action_with_declared_parameters():
    spec = actions.get("dream")
    assert spec.kind == "input" and spec.to_dict()["kind"] == "input"
    params = {p["name"]: p for p in spec.to_dict()["params"]}
    assert {"iterations", "step", "octaves", "octave_scale", "jitter", "damage", "damage_magnitude"} <= set(params)
    assert params["damage"]["type"] == "choice"
    assert params["damage"]["choices"][0] == "none" and "fog" in params["damage"]["choices"]
    assert "dream" not in params["damage"]["choices"]  # a dream of a dream is not a damage


def test_a_dream_raises_its_targets_activation_on_the_written_audio(tiny_model, tmp_path):
    y = tone(2.0)
    target = {"conv_b": (0, 1)}
    result = _dream(tiny_model, y)
    out = _written(result.flossed[0].audio, tmp_path)
    before = dream.mean_activations(tiny_model, y, target)["conv_b"]
    after = dream.mean_activations(tiny_model, out, target)["conv_b"]
    assert after > 1.2 * before, (before, after)
    stats = result.provenance[0]["dream"]
    # one pass more per chunk: the gradient of the reweighted sum (target and onset term) at the start
    assert stats["target"] == "activation of conv_b:0,1" and stats["passes"] == FEW["iterations"] + 1
    assert 0.5 < stats["onset_correlation_end"] <= 1.0


def test_the_onset_envelope_is_librosas(tiny_model):
    import librosa
    from keras import ops

    y = _plucks(3.0)
    padded, _ = dream.pad_for_model(y, 0, None)
    ours = np.asarray(ops.convert_to_numpy(dream.onset_envelope(ops.convert_to_tensor(padded))))
    theirs = librosa.onset.onset_strength(y=y, sr=SR)
    n = min(ours.size, theirs.size - 1)
    # librosa centres its frames and prepends a zero; ours starts at the first rise of the padded audio
    best = max(np.corrcoef(ours[:n - 2], theirs[1 + k:1 + k + n - 2])[0, 1] for k in range(3))
    assert best > 0.95, best


def test_keeping_onsets_keeps_the_inputs_events(tiny_model, tmp_path):
    import librosa

    y = _plucks(3.0)
    corr = {}
    for keep in (0.0, 4.0):
        out = _written(_dream(tiny_model, y, iterations=12, step=0.05, keep_onsets=keep).flossed[0].audio, tmp_path)
        corr[keep] = np.corrcoef(librosa.onset.onset_strength(y=y, sr=SR),
                                 librosa.onset.onset_strength(y=out, sr=SR))[0, 1]
    assert corr[4.0] > corr[0.0], corr


def test_a_dream_never_clips_and_keeps_the_inputs_loudness(tiny_model, tmp_path):
    y = tone(2.0)
    y = (y * (0.95 / np.max(np.abs(y)))).astype(np.float32)  # peaks near full scale: the limiter has work to do
    for magnitude in ("0.5", "1"):
        out = _dream(tiny_model, y, magnitudes=magnitude, step=0.1).flossed[0].audio
        assert np.max(np.abs(out)) <= dream.CEILING < 1.0
        assert abs(_rms_db(out) - _rms_db(y)) < 1.0
        assert np.isfinite(out).all()


def test_the_limiter_is_soft_and_loudness_is_matched():
    t = np.arange(SR) / SR
    x = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    x[SR // 2: SR // 2 + 40] += 2.5  # a spike far above full scale
    out = dream.soft_limit(x)
    assert np.max(np.abs(out)) <= dream.CEILING
    assert np.array_equal(out[:SR // 4], x[:SR // 4])  # far from the spike nothing changes
    assert np.sum(np.isclose(np.abs(out), dream.CEILING, atol=1e-4)) < 5  # no flat (hard-clipped) top
    matched = dream.match_loudness(x * 3.0, x)
    assert np.max(np.abs(matched)) <= dream.CEILING
    assert abs(_rms_db(matched) - _rms_db(x)) < 0.1
    assert not np.any(dream.match_loudness(np.zeros(100, np.float32), x))


def test_the_same_recipe_gives_the_same_bytes_and_another_seed_other_audio(registry, tmp_path):
    p = tmp_path / "in.wav"
    sf.write(p, tone(2.0), SR, subtype="PCM_16")
    runs = {}
    for key, seed in (("a", 5), ("b", 5), ("c", 6)):
        floss_into(p, registry=registry, output_dir=tmp_path / key, action="dream", magnitudes="1", seed=seed,
                   layers="conv_a", params=FEW)
        runs[key] = (tmp_path / key / "in_dream_1.wav").read_bytes()
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]
    recipe = json.loads((tmp_path / "a" / "in_dream_1.json").read_text())
    assert recipe["recipe"]["params"]["iterations"] == 4 and recipe["dream"]["target"] == "activation of conv_a"


def test_a_titration_is_one_dream_at_several_depths(tiny_model):
    y = tone(1.0)
    result = _dream(tiny_model, y, magnitudes="0,0.5,1")
    zero, half, full = (o.audio for o in result.flossed)
    assert np.max(np.abs(zero - y)) < 1e-3  # depth 0: the input (loudness matched)
    d_half, d_full = np.sqrt(np.mean((half - y) ** 2)), np.sqrt(np.mean((full - y) ** 2))
    assert 0 < d_half < d_full
    assert result.provenance[0] == result.provenance[2]  # one dream shared


def test_a_dream_toward_the_damage_raises_the_damage(tiny_model, tmp_path):
    y = tone(2.0)
    recipe = build_job(model="tiny", action="fog", magnitudes="0.05", seed=3, layers="conv_a").base
    damaged = actions.apply(tiny_model, recipe)

    def hurt(z):
        from senseflosser.spectral import stft
        from senseflosser.layers import SpectralCompress

        S = stft(z)[None]
        squash = SpectralCompress(0.3)
        return float(np.mean((np.asarray(squash(damaged(S))) - np.asarray(squash(tiny_model(S)))) ** 2))

    result = _dream(tiny_model, y, layers="conv_a", damage="fog", damage_magnitude=0.05)
    out = _written(result.flossed[0].audio, tmp_path)
    assert hurt(out) > 1.1 * hurt(y)
    assert result.provenance[0]["dream"]["target"] == "damage of fog at 0.05 on conv_a"


def test_long_audio_is_dreamed_in_chunks_that_meet_without_gaps(tiny_model, monkeypatch):
    monkeypatch.setattr(dream, "CHUNK_SECONDS", 1.0)
    monkeypatch.setattr(dream, "OVERLAP_SECONDS", 0.25)
    y = tone(3.2)
    out, stats = dream.dream_audio(y, tiny_model, dream.activation_objective(tiny_model, {"conv_a": None}),
                                   dream.Settings(iterations=2), seed=1)
    # three chunks of 1.25 s cover 3.2 s; each: 2 steps and the reweighted gradient of target and onset term
    assert len(stats.start) == 3 and stats.passes == 9
    assert out.shape == y.shape and np.isfinite(out).all()
    # the cross-fades add up to one: where the dream barely moved the audio, the output is the input
    still, _ = dream.dream_audio(y, tiny_model, dream.activation_objective(tiny_model, {"conv_a": None}),
                                 dream.Settings(iterations=1, step=0.001), seed=1)
    assert np.max(np.abs(still - y)) < 0.01


def test_plan_chunks_tile_the_audio():
    plan = dream.chunk_plan(100, chunk=30, overlap=5)
    assert plan[0][0] == 0 and plan[-1][1] == 100
    assert all(b - a == 30 for a, b in plan)
    assert all(plan[i + 1][0] < plan[i][1] for i in range(len(plan) - 1))
    assert dream.chunk_plan(10, chunk=30, overlap=5) == [(0, 10)]


def test_a_fixed_length_model_dreams_in_its_own_length(registry, tmp_path):
    p = tmp_path / "in.wav"
    sf.write(p, tone(1.5), SR, subtype="PCM_16")
    manifest = floss_into(p, registry=registry, output_dir=tmp_path / "o", model="tinyfixed", action="dream",
                          magnitudes="1", seed=1, layers="conv_b", params={"iterations": 2})
    out, _ = sf.read(tmp_path / "o" / manifest["flossed"][0]["file"])
    assert len(out) == int(1.5 * SR) and np.max(np.abs(out)) < 1.0


def test_the_differentiable_analysis_is_the_models_own():
    y = tone(1.0)
    padded, _ = dream.pad_for_model(y, 0, None)
    import keras

    from senseflosser.spectral import stft

    mine = keras.ops.convert_to_numpy(dream.model_tensor(keras.ops.convert_to_tensor(padded)))[0]
    assert mine.shape == stft(y).shape
    assert np.max(np.abs(mine - stft(y))) < 1e-3 * np.max(np.abs(stft(y)))


@pytest.mark.parametrize("fields, words", [
    ({"layers": "nowhere"}, "'nowhere' is not a conv layer"),
    ({"layers": "conv_b:"}, "give channel numbers after the colon"),
    ({"layers": "conv_b:9"}, "channel 9 does not exist"),
    ({"params": {"octaves": 0}}, "octaves must be a whole number from 1 to 6"),
    ({"params": {"octaves": 7}}, "octaves must be a whole number from 1 to 6"),
    ({"params": {"iterations": 500}}, "iterations must be a whole number from 1 to 200"),
    ({"params": {"step": "big"}}, "step must be a finite number"),
    ({"params": {"damage": "dream"}}, "damage must be one of: none, fog"),
    ({"params": {"damage": "lapse", "damage_magnitude": 3}}, "lapse's magnitude"),
])
def test_bad_dream_settings_are_refused_in_a_sentence(fields, words):
    with pytest.raises(RecipeError) as err:
        build_job(model="tiny", action="dream", magnitudes="1", seed=1,
                  conv_layers={"conv_a": 4, "conv_b": 4, "conv_out": 2}, **fields)
    message = str(err.value)
    assert words in message and "\n" not in message


def test_a_target_with_no_channels_is_refused(tiny_model):
    with pytest.raises(RecipeError, match="has no channels"):
        dream.activation_objective(tiny_model, {"conv_b": ()})


def test_the_cli_dreams_and_refuses_bad_settings(capsys, models_dir, tmp_path):
    from senseflosser.cli import main

    p = tmp_path / "in.wav"
    sf.write(p, tone(1.0), SR, subtype="PCM_16")
    code = main(["floss", "-i", str(p), "--models-dir", str(models_dir), "-m", "tiny", "-a", "dream", "-g", "1",
                 "-s", "2", "-l", "conv_b:0", "--iterations", "2", "--octaves", "2", "-o", str(tmp_path / "o")])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert (tmp_path / "o" / "in_dream_1.wav").is_file()
    code = main(["floss", "-i", str(p), "--models-dir", str(models_dir), "-m", "tiny", "-a", "dream", "-g", "1",
                 "--octaves", "9", "-o", str(tmp_path / "o")])
    _, err = capsys.readouterr()
    assert code == 1 and err.count("\n") == 1 and "octaves must be a whole number from 1 to 6" in err
    code = main(["floss", "-i", str(p), "--models-dir", str(models_dir), "-m", "tiny", "-a", "dream", "-g", "1",
                 "-l", "nowhere", "-o", str(tmp_path / "o")])
    _, err = capsys.readouterr()
    assert code == 1 and "'nowhere' is not a conv layer" in err


def test_a_dream_is_no_damaged_model():
    recipe = build_job(model="tiny", action="dream", magnitudes="1", seed=1).base
    with pytest.raises(RecipeError, match="changes the audio, not the model"):
        actions.apply(None, recipe)


def _wait(client, job_id, timeout=240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.get(f"/api/jobs/{job_id}").get_json()
        if view["state"] in ("done", "failed"):
            return view
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


@pytest.mark.parametrize("web_runner", ["local", "rq"], indirect=True)
def test_a_dream_job_on_the_web(web_client, web_runner):
    r = post_job(web_client, web_wav_bytes(1.0), action="dream", magnitude="1", seed="4", layers="conv_b:0,1",
                 iterations="2", octaves="1", damage="none")
    assert r.status_code == 202, r.get_json()
    view = _wait(web_client, r.get_json()["id"])
    assert view["state"] == "done", view.get("error")
    assert view["recipe"]["params"]["iterations"] == 2 if "params" in view["recipe"] else True
    flossed = view["outputs"]["flossed"]
    assert len(flossed) == 1 and flossed[0]["magnitude"] == 1.0
    assert "--iterations 2" in view["cli"] and "-a dream" in view["cli"]
    wav = web_client.get(flossed[0]["url"]).data
    assert wav[:4] == b"RIFF"


@pytest.mark.parametrize("fields, words", [
    ({"octaves": "12"}, "octaves must be a whole number from 1 to 6"),
    ({"layers": "nowhere"}, "not a conv layer"),
    ({"damage": "nothing"}, "damage must be one of"),
])
def test_bad_dream_fields_get_a_400_sentence(web_client, fields, words):
    r = post_job(web_client, web_wav_bytes(1.0), action="dream", magnitude="1", **fields)
    assert r.status_code == 400 and words in r.get_json()["error"]


def test_the_page_offers_the_dream_fields(web_client):
    html = web_client.get("/").get_data(as_text=True)
    for name in ("iterations", "step", "octaves", "octave_scale", "jitter", "damage_magnitude"):
        assert f'id="param-dream-{name}"' in html
    assert '<select id="param-dream-damage" name="damage"' in html
    actions_list = web_client.get("/api/actions").get_json()
    entries = actions_list["actions"] if isinstance(actions_list, dict) else actions_list
    dream_entry = next(a for a in entries if a["name"] == "dream")
    assert dream_entry["kind"] == "input"


def test_a_map_of_a_dream_is_refused_in_a_sentence(tiny_model, web_client):
    from senseflosser.sensitivity import sensitivity_map

    with pytest.raises(RecipeError, match="changes the audio, not the model"):
        sensitivity_map(tone(1.0), tiny_model, model_name="tiny", action="dream")
    r = web_client.post("/api/maps", data={"audio": (__import__("io").BytesIO(web_wav_bytes(1.0)), "a.wav"),
                                           "model": "tiny", "action": "dream"}, content_type="multipart/form-data")
    assert r.status_code == 400 and "changes the audio, not the model" in r.get_json()["error"]
