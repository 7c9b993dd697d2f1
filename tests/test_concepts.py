"""Concepts: descriptors, following them (partial rho, block-shift p), the causal judgement, and concept:NAME.

A ``concept:NAME`` selection is resolved to channel numbers once, in build_job,
from the card's ``concepts`` section, so recipes record channels.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from helpers import CONCEPTS_SECTION as SECTION
from helpers import SR, tone

from senseflosser.cli import main
from senseflosser.concept_selection import card_concepts
from senseflosser.concept_check import judge
from senseflosser.concepts import deletion_effects, follow, ranking, select
from senseflosser.descriptors import CONCEPTS, DESCRIPTORS, frame_descriptors
from senseflosser.errors import ModelError, RecipeError
from senseflosser.jobspec import build_job
from senseflosser.models import ModelRegistry

CHANNELS = {"conv_a": 4, "conv_b": 4, "conv_out": 2}




def _sines(*freqs: float, seconds: float = 2.0, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * sum(np.sin(2 * np.pi * f * t) for f in freqs) / len(freqs)).astype(np.float32)


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- descriptors


def test_descriptors_measure_what_they_say():
    low = frame_descriptors(_sines(80.0, 120.0))
    high = frame_descriptors(_sines(6000.0, 7000.0))
    noise = frame_descriptors(_noise(2.0))
    mid = slice(3, -3)
    assert np.median(low["bass"][mid]) > 0.9 and np.median(high["bass"][mid]) < 0.05
    assert np.median(high["air"][mid]) > 0.9 and np.median(low["air"][mid]) < 0.05
    assert 6000 < np.median(high["brightness"][mid]) < 7000 and np.median(low["brightness"][mid]) < 400
    assert np.median(noise["noisiness"][mid]) > 0.3 > 0.01 > np.median(low["noisiness"][mid])
    clicks = np.zeros(2 * SR, np.float32)
    clicks[:: SR // 8] = 0.9
    struck = frame_descriptors(clicks)
    sounding = struck["loudness"] > -100
    assert np.mean(struck["percussive"][sounding]) > 0.6 > 0.3 > np.median(low["percussive"][mid])
    quiet = frame_descriptors(0.5 * _sines(80.0, 120.0))
    assert np.allclose(quiet["loudness"][mid] - low["loudness"][mid], -6.02, atol=0.2)
    assert set(low) == set(DESCRIPTORS) and all(v.shape == low["loudness"].shape for v in low.values())


# ---------------------------------------------------------------- following and ranking


def _series(frames: int = 1200, seed: int = 0):
    """A slow random descriptor and loudness, and courses: follows it, follows loudness only, noise."""
    rng = np.random.default_rng(seed)
    smooth = lambda: np.convolve(rng.standard_normal(frames + 40), np.ones(40) / 40, "valid")[:frames]  # noqa: E731
    loud, bright = smooth(), smooth()
    course = np.stack([bright + 0.05 * rng.standard_normal(frames), loud + 0.01 * rng.standard_normal(frames),
                       rng.standard_normal(frames)], axis=1)
    descs = {d: smooth() for d in DESCRIPTORS}
    descs["brightness"], descs["loudness"] = bright, loud
    return {"conv_a": course}, {"conv_a": descs}


def test_follow_finds_the_channel_that_follows_and_removes_loudness():
    courses, descs = _series()
    stats = follow(courses, descs, shifts=199, seed=1)
    rho, p = stats["brightness"]["conv_a"]["rho"], stats["brightness"]["conv_a"]["p"]
    assert rho[0] > 0.5 and p[0] <= 0.01
    assert p[2] > 0.01  # noise does not follow
    assert stats["loudness"]["conv_a"]["rho"][1] > 0.9  # loudness is followed plainly
    again = follow(courses, descs, shifts=199, seed=1)
    assert np.array_equal(again["brightness"]["conv_a"]["p"], p)  # seeded


def test_ranking_takes_the_channels_whose_deletion_lowers_the_concept_most_first():
    courses, descs = _series()
    stats = follow(courses, descs, shifts=199, seed=1)
    effects = {c: {"conv_a": np.array([0.5, -0.1, -3.0])} for c in CONCEPTS}
    ranked = ranking(effects, stats)
    rows = ranked["brightness"]["conv_a"]
    assert [r[0] for r in rows] == [2, 1]  # channel 0 raises it when deleted: never chosen
    assert rows[0][1] == -3.0 and rows[1][2] == round(float(stats["brightness"]["conv_a"]["rho"][1]), 4)
    assert select(ranked["brightness"], {"conv_a": 3}, share=0.3) == {"conv_a": [2]}
    assert select(ranked["brightness"], {"conv_a": 3}, count=3) == {"conv_a": [1, 2]}
    assert ranking({"bass": {"conv_a": np.array([0.0, 1.0])}})["bass"]["conv_a"] == []  # not located


def test_deletion_effects_are_net_of_the_level_effect(tiny_model):
    from senseflosser.models import conv_channels

    convs = conv_channels(tiny_model)
    channels = {layer: convs[layer] for layer in list(convs)[:2]}
    waves = [tone(1.5, freqs=(220.0,)), tone(1.5, freqs=(1760.0, 3520.0))]
    effects, passes = deletion_effects(tiny_model, waves, channels, model_name="tiny")
    total = sum(channels.values())
    assert passes == len(waves) * (total + 1)
    assert set(effects) == set(CONCEPTS)
    for concept in CONCEPTS:
        net = np.concatenate([effects[concept][layer] for layer in channels])
        assert net.shape == (total,) and np.all(np.isfinite(net))
        assert abs(net.sum()) < 1e-6 * max(1.0, np.abs(net).max())  # residuals of a line with an intercept


def test_too_little_audio_for_the_shifts_is_refused():
    courses, descs = _series(frames=150)
    with pytest.raises(Exception, match="more than 10 s of audio"):
        follow(courses, descs, shifts=9)


# ---------------------------------------------------------------- the causal judgement


def _changes(level: float, **moves) -> dict:
    base = {d: 0.0 for d in DESCRIPTORS}
    base.update(loudness=level, brightness=20.0 * level)  # every deletion: darker with the level drop
    base.update(moves)
    return base


def test_judge_removes_the_common_level_effect():
    rng = np.random.default_rng(0)
    random = []
    for _ in range(50):
        level = float(rng.uniform(-9, -5))
        random.append(_changes(level, brightness=20.0 * level + rng.normal(0, 2.0),
                               bass=float(rng.normal(0, 0.01))))
    # Only the level effect: a big raw change, no movement net of the line.
    plain = judge(_changes(-12.0, brightness=-240.0), random)["brightness"]
    assert plain["ratio_raw"] > 1.5 and plain["ratio"] < 2.0 and not plain["beats_all"]
    # A specific movement of bass at a typical level change.
    moved = judge(_changes(-7.0, bass=0.2), random)["bass"]
    assert moved["ratio"] > 3 and moved["beats_all"] and moved["p"] == pytest.approx(1 / 51)


# ---------------------------------------------------------------- concept:NAME selections


def _job(layers, **kw):
    return build_job(model="tiny", action="fog", magnitudes="0.1", seed=1, layers=layers, conv_layers=CHANNELS,
                     **kw)


def test_a_concept_resolves_to_its_channels_in_build_job():
    assert _job("concept:bass,conv_out", concepts=SECTION).base.layers == ("conv_a:2", "conv_b:1", "conv_out")
    assert _job("concept:bass", concepts=SECTION, concept_share="0.5").base.layers == ("conv_a:0,2", "conv_b:1")
    assert _job(["concept:bass"], concepts=SECTION, concept_count="3").base.layers == ("conv_a:0,2,3", "conv_b:1")
    assert _job("conv_a:1", concepts=None).base.layers == ("conv_a:1",)  # no concept named: none needed
    ablate = build_job(model="tiny", action="ablate", magnitudes="1", seed=0, layers="concept:bass",
                       conv_layers=CHANNELS, concepts=SECTION)
    assert ablate.base.to_dict()["layers"] == ["conv_a:2", "conv_b:1"]  # the recipe records channels


@pytest.mark.parametrize("layers, kw, message", [
    ("concept:treble", {"concepts": SECTION}, "unknown concept 'treble'; the concepts of model 'tiny' are: bass, air"),
    ("concept:air", {"concepts": SECTION}, "concept 'air' was not located in model 'tiny'"),
    ("concept:bass", {"concepts": None}, "model 'tiny' has no concepts: run `senseflosser concepts -m tiny"),
    ("concept:bass", {"concepts": SECTION, "concept_share": "1.5"}, "1.5"),
    ("concept:bass", {"concepts": SECTION, "concept_share": "0"}, "above 0 and at most 1, got '0'"),
    ("concept:bass", {"concepts": SECTION, "concept_share": "lots"}, "lots"),
    ("concept:bass", {"concepts": SECTION, "concept_count": "0"}, "concept count"),
    ("concept:bass", {"concepts": SECTION, "concept_count": "2", "concept_share": "0.5"}, "not both"),
    ("conv_a", {"concepts": SECTION, "concept_share": "0.5"}, "needs a concept in the layers"),
    ("concept:bass,3", {"concepts": SECTION}, "channel 3 follows concept:bass; name its layer"),
])
def test_bad_concept_selections_get_a_sentence(layers, kw, message):
    with pytest.raises(RecipeError) as exc:
        _job(layers, **kw)
    assert message in str(exc.value)


def test_a_concept_with_no_channels_left_is_refused():
    section = json.loads(json.dumps(SECTION))
    section["concepts"]["bass"]["selection"] = []
    with pytest.raises(RecipeError, match="concept 'bass' of model 'tiny' has no located channels"):
        _job("concept:bass", concepts=section)


def test_a_malformed_card_section_is_refused():
    with pytest.raises(ModelError, match="concepts section"):
        card_concepts({"concepts": {"bass": [1, 2]}})
    assert card_concepts({"name": "x"}) is None


# ---------------------------------------------------------------- the command


@pytest.fixture
def concept_audio(tmp_path):
    d = tmp_path / "audio"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):  # a bass line and a bright part that come and go, at changing levels
        t = np.arange(int(14 * SR)) / SR
        env_a = 0.5 + 0.5 * np.sin(2 * np.pi * t / (3.1 + i))
        env_b = 0.5 + 0.5 * np.sin(2 * np.pi * t / (4.7 - i))
        y = 0.3 * env_a * np.sin(2 * np.pi * 90 * t) + 0.2 * env_b * np.sin(2 * np.pi * 5200 * t)
        sf.write(d / f"clip{i}.wav", (y + 0.01 * rng.standard_normal(t.size)).astype(np.float32), SR)
    return d


def test_the_concepts_command_writes_the_card_and_its_files(capsys, models_dir, tmp_path, concept_audio):
    d = tmp_path / "models"
    shutil.copytree(models_dir, d)
    out_dir = tmp_path / "report"
    code, out, err = _run(capsys, "concepts", "-m", "tiny", "--data-dir", str(concept_audio), "--models-dir", str(d),
                          "--excerpts", "3", "--check-excerpts", "2", "--seconds", "6", "--random-sets", "4",
                          "-o", str(out_dir))
    assert code == 0, err
    assert "forward passes" in out and "bass:" in out
    reg = ModelRegistry(d)
    section = reg.read_card("tiny")["concepts"]
    assert section["model_sha256"] == reg.sha256("tiny")
    assert section["channels"] == {"conv_a": 4, "conv_b": 4}
    assert len(section["excerpts"]["locate"]) == 3 and len(section["excerpts"]["check"]) == 2
    assert set(section["concepts"]) == {"brightness", "noisiness", "percussive", "bass", "air"}
    for name, entry in section["concepts"].items():
        assert entry["located"] == bool(entry["selection"]), name
        if entry["located"]:
            assert set(entry["check"]["descriptors"]) == set(DESCRIPTORS)
        else:
            assert "not located" in entry["note"]
    # every channel deleted alone on the locating excerpts (8 channels x 3), the checks on the others
    assert section["cost"]["forward_passes"] >= 3 + 3 * 9 + 2 * 5
    for concept in ("bass", "air"):  # spectral concepts: a band mask too, against bands as wide
        band = section["concepts"][concept]["band"]
        assert band["layer"] == section["method"]["layers"][0] and band["null"]["bands"] >= 1
        assert set(band["descriptors"]) == set(DESCRIPTORS) and f"-a bandmask -g {band['width']:g}" in band["command"]
        assert f"a band mask over {concept}'s band" in out
    assert reg.read_card("tiny")["conv_channels"] == CHANNELS  # other sections kept
    assert {p.name for p in out_dir.iterdir()} == {"concepts.json", "concepts.csv", "concepts.png"}
    header = (out_dir / "concepts.csv").read_text().splitlines()[0]
    assert header.startswith("model,concept,located,confirmed,channels,descriptor,ratio,p,beats_all")


def test_an_empty_data_folder_gets_a_sentence(capsys, models_dir, tmp_path):
    empty = tmp_path / "nothing"
    empty.mkdir()
    code, out, err = _run(capsys, "concepts", "-m", "tiny", "--data-dir", str(empty), "--models-dir", str(models_dir),
                          "--no-write", "-o", str(tmp_path / "r"))
    assert code == 1 and err.startswith("senseflosser: error: no audio files under") and err.count("\n") == 1


def test_a_share_out_of_range_gets_a_sentence(capsys, models_dir, tmp_path, concept_audio):
    code, out, err = _run(capsys, "concepts", "-m", "tiny", "--data-dir", str(concept_audio), "--models-dir",
                          str(models_dir), "--share", "2", "--no-write", "-o", str(tmp_path / "r"))
    assert code == 1 and "concept share" in err and "2" in err


def _floss(capsys, out_dir, wav_file, models_dir, *args):
    code, _, err = _run(capsys, "floss", "-i", str(wav_file), "--models-dir", str(models_dir), "-m", "tiny",
                        "-a", "ablate", "-g", "1", "--seed", "3", "-o", str(out_dir), *args)
    assert code == 0, err
    return json.loads((out_dir / "song_ablate_1.json").read_text())["recipe"], (out_dir / "song_ablate_1.wav")


def test_cli_records_a_concepts_channels_and_reproduces_them(capsys, concept_dir, wav_file, tmp_path):
    recipe, wav = _floss(capsys, tmp_path / "c", wav_file, concept_dir, "--layers", "concept:bass")
    assert recipe["layers"] == ["conv_a:2", "conv_b:1"]
    plain, wav_plain = _floss(capsys, tmp_path / "p", wav_file, concept_dir, "--layers", "conv_a:2,conv_b:1")
    assert wav_plain.read_bytes() == wav.read_bytes()  # deleting the concept = ablating its channels
    wider, _ = _floss(capsys, tmp_path / "w", wav_file, concept_dir, "--layers", "concept:bass",
                      "--concept-count", "2")
    assert wider["layers"] == ["conv_a:0,2", "conv_b:1"]
    code, _, err = _run(capsys, "floss", "-i", str(wav_file), "--models-dir", str(concept_dir), "-m", "tiny",
                        "-a", "ablate", "-g", "1", "--layers", "concept:air", "-o", str(tmp_path / "o"))
    assert code == 1 and "concept 'air' was not located" in err and err.strip().count("\n") == 0


def test_api_resolves_concepts_as_the_cli_does(make_web_app, concept_dir, web_submit, web_wait):
    client = make_web_app(MODELS_DIR=str(concept_dir)).test_client()
    r = web_submit(client, action="ablate", magnitude="1", seed="3", layers="concept:bass", concept_share="0.5")
    assert r.status_code == 202, r.get_json()
    view = web_wait(client, r.get_json()["id"])
    assert view["state"] == "done", view
    assert view["recipe"]["layers"] == ["conv_a:0,2", "conv_b:1"]
    bad = web_submit(client, action="ablate", magnitude="1", layers="concept:treble")
    assert bad.status_code == 400 and "unknown concept 'treble'" in bad.get_json()["error"]


# ---------------------------------------------------------------- explanations


def test_solo_mute_and_difference_of_a_channel_set(tiny_model):
    from senseflosser.explanations import explain, explanation_recipes
    from senseflosser.pipeline import floss
    from senseflosser.recipe import Recipe

    y = tone(1.5, freqs=(110.0, 900.0))
    out = explain(y, tiny_model, "conv_a:2,conv_b:1", model_name="tiny")
    assert list(out) == ["normal", "solo", "mute", "difference"]
    assert out["mute"]["recipe"].layers == ("conv_a:2", "conv_b:1")
    assert out["solo"]["recipe"].layers == ("conv_a:0,1,3", "conv_b:0,2,3")
    ablated = floss(y, tiny_model, [Recipe(model="tiny", model_sha256="", action="ablate", magnitude=1.0, seed=0,
                                           layers=("conv_a:2", "conv_b:1"))])
    raw = ablated.flossed[0].audio / ablated.flossed[0].metrics["gain"]
    assert np.array_equal(out["mute"]["audio"], raw.astype(np.float32))  # mute = ablate at 1 of the set
    assert np.array_equal(out["difference"]["audio"], (out["normal"]["audio"] - out["mute"]["audio"]))
    again = explain(y, tiny_model, "conv_a:2,conv_b:1", model_name="tiny", which="solo")
    assert list(again) == ["normal", "solo"] and np.array_equal(again["solo"]["audio"], out["solo"]["audio"])
    with pytest.raises(RecipeError, match="needs channels, not all of layer 'conv_a'"):
        explanation_recipes(tiny_model, "conv_a", model_name="tiny")
    with pytest.raises(RecipeError, match="unknown explanation 'loud'"):
        explain(y, tiny_model, "conv_a:2", model_name="tiny", which="solo,loud")


def test_a_job_writes_its_explanations_beside_its_outputs_from_the_same_pass(capsys, models_dir, wav_file,
                                                                               tmp_path):
    out = tmp_path / "x"
    code, printed, err = _run(capsys, "floss", "-i", str(wav_file), "--models-dir", str(models_dir), "-m", "tiny",
                              "-a", "fog", "-g", "0.1", "--seed", "3", "--layers", "conv_a:2,conv_b:1",
                              "--explain", "difference,solo,mute", "-o", str(out))
    assert code == 0, err
    for name in ("solo", "mute", "difference"):
        assert f"song_{name}.wav" in printed and f"{name} of the channel set" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e["explanation"] for e in manifest["explanations"]] == ["solo", "mute", "difference"]
    assert len(manifest["flossed"]) == 1 and manifest["flossed"][0]["recipe"]["action"] == "fog"
    by = {e["explanation"]: e for e in manifest["explanations"]}
    assert by["mute"]["recipe"]["layers"] == ["conv_a:2", "conv_b:1"]
    assert by["solo"]["recipe"]["layers"] == ["conv_a:0,1,3", "conv_b:0,2,3"]
    # mute is the deletion itself: the same bytes as a job that ablates the set at 1
    _, ablated = _floss(capsys, tmp_path / "a", wav_file, models_dir, "--layers", "conv_a:2,conv_b:1")
    assert (out / by["mute"]["file"]).read_bytes()[44:] == ablated.read_bytes()[44:]
    # difference is normal minus mute, within one 16-bit step of each file written
    normal, _ = sf.read(out / manifest["normal"]["file"], dtype="float64")
    mute, _ = sf.read(out / by["mute"]["file"], dtype="float64")
    difference, _ = sf.read(out / by["difference"]["file"], dtype="float64")
    assert np.max(np.abs(difference * by["difference"]["metrics"]["gain"] - (normal - mute))) <= 3 / 32768
    # the mute recipe file reproduces the mute output
    code, _, err = _run(capsys, "floss", "-i", str(wav_file), "--models-dir", str(models_dir),
                        "--recipe", str(out / by["mute"]["recipe_file"]), "-o", str(tmp_path / "r"))
    assert code == 0, err
    assert (tmp_path / "r" / "song_ablate_1.wav").read_bytes()[44:] == (out / by["mute"]["file"]).read_bytes()[44:]


@pytest.mark.parametrize("layers, explain, message", [
    ("conv_a", "mute", "needs channels in the layer selection"),
    (None, "solo", "needs channels in the layer selection"),
    ("conv_a:1", "solo,loud", "unknown explanation 'loud'"),
])
def test_bad_explanations_get_a_sentence(capsys, models_dir, wav_file, tmp_path, layers, explain, message):
    code, _, err = _run(capsys, "floss", "-i", str(wav_file), "--models-dir", str(models_dir), "-m", "tiny",
                        "-a", "fog", "-g", "0.1", *(["--layers", layers] if layers else []),
                        "--explain", explain, "-o", str(tmp_path / "o"))
    assert code == 1 and message in err and err.strip().count("\n") == 0, err


def test_the_api_serves_explanations_and_their_command_line(web_client, web_submit, web_wait):
    r = web_submit(web_client, layers="conv_a:1,2", explain="solo,mute", seed="5")
    assert r.status_code == 202, r.get_json()
    view = web_wait(web_client, r.get_json()["id"])
    assert view["state"] == "done", view
    assert view["request"]["explain"] == ["solo", "mute"]
    assert "--explain solo,mute" in view["cli"]
    got = view["outputs"]["explanations"]
    assert [e["explanation"] for e in got] == ["solo", "mute"]
    for e in got:
        assert web_client.get(e["url"]).status_code == 200
        assert web_client.get(e["spectrogram"]).status_code == 200
        assert web_client.get(e["recipe_url"]).get_json()["recipe"]["action"] == "ablate"
    bad = web_submit(web_client, layers="conv_a", explain="mute")
    assert bad.status_code == 400 and "needs channels" in bad.get_json()["error"]
    bad = web_submit(web_client, layers="conv_a:1", explain="louder")
    assert bad.status_code == 400 and "unknown explanation 'louder'" in bad.get_json()["error"]


# ---------------------------------------------------------------- band masks


def test_a_spectral_concepts_band_is_the_same_share_of_every_frequency_axis():
    from senseflosser.concept_bands import band_of

    width, place = band_of("bass")
    assert width == round(250 / 11025, 4) and place == 0.0
    width, place = band_of("air")
    assert width == round(1 - 4000 / 11025, 4) and place == 1.0


def test_the_null_bands_are_as_wide_barely_overlap_and_match_the_energy():
    from senseflosser.concept_bands import _covered, null_places

    energy = np.linspace(2.0, 0.0, 100)
    energy /= energy.sum()
    width, place = 0.1, 0.0  # the ten loudest rows
    places = null_places(energy, width, place, 5)
    target = _covered(100, width, place)
    assert len(places) == 5
    for q in places:
        band = _covered(100, width, q)
        assert band.sum() == pytest.approx(10) and np.minimum(band, target).sum() <= 5.0
    # the nearest energies: the bands just above the half-overlapping limit, not the quiet top
    assert max(places) < 0.2

