"""Activation frames: captured in the job's own passes, right, chunk-proof, deterministic, stored compactly."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import soundfile as sf

from helpers import SR, make_tiny_model, tiny_recipe, tone
from senseflosser import activations, framesfile
from senseflosser.actions import apply
from senseflosser.errors import InputError, RecipeError
from senseflosser.jobspec import Outputs, build_job
from senseflosser.models import time_receptive_field
from senseflosser.normal_cache import NormalCache
from senseflosser.pipeline import floss
from senseflosser.render import floss_to_dir
from senseflosser.spectral import DEFAULT_CHUNK_FRAMES, stft


def _probe(model: keras.Model, layer: str, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What a separate probe model (input to ``layer``) gives over the whole STFT, pooled as the frames are."""
    probe = keras.Model(model.inputs, model.get_layer(layer).output)
    act = keras.ops.convert_to_numpy(probe([stft(y)[None]]))[0]  # (frames, bins, channels)
    return act.mean(axis=1), act.mean(axis=2) @ activations.band_matrix(act.shape[1])


def test_frames_equal_a_separate_probe_model_for_normal_and_damaged(tiny_model):
    y = tone(3.0)
    recipe = tiny_recipe("fog", 0.2)
    res = floss(y, tiny_model, [recipe], activation_layer="conv_b")
    assert len(res.activations) == 2 and res.activations[0].layer == "conv_b"
    channels, profile = _probe(tiny_model, "conv_b", y)
    np.testing.assert_allclose(res.activations[0].channels, channels, atol=1e-5)
    np.testing.assert_allclose(res.activations[0].profile, profile, atol=1e-5)
    fogged = apply(tiny_model, recipe)
    channels, profile = _probe(fogged, "conv_b", y)
    np.testing.assert_allclose(res.activations[1].channels, channels, atol=1e-5)
    np.testing.assert_allclose(res.activations[1].profile, profile, atol=1e-5)
    assert not np.allclose(res.activations[0].channels, res.activations[1].channels, atol=1e-3)  # damage shows


def test_a_lapse_copy_is_tapped_after_its_lapse_layer():
    model = make_tiny_model()
    view = activations.tapped(apply(model, tiny_recipe("lapse", 0.5, layers=("conv_a",))), "conv_a")
    assert view.get_layer("conv_a_tap").input.name == view.get_layer("conv_a_lapse").output.name


def test_chunked_frames_equal_one_pass(tiny_model):
    y = tone(6.0)  # 131 frames
    recipes = [tiny_recipe("fog", 0.1), tiny_recipe("ablate", 0.5)]
    whole = floss(y, tiny_model, recipes, activation_layer="conv_a", chunk_frames=4096)
    context = time_receptive_field(tiny_model)
    chunked = floss(y, tiny_model, recipes, activation_layer="conv_a", chunk_frames=24, context=context)
    for a, b in zip(whole.activations, chunked.activations):
        np.testing.assert_allclose(a.channels, b.channels, atol=1e-6)
        np.testing.assert_allclose(a.profile, b.profile, atol=1e-6)


def test_an_envelope_and_a_fixed_length_model_record_every_frame(tiny_model):
    y = tone(4.0)
    n = stft(y).shape[0]
    env = floss(y, tiny_model, [tiny_recipe("fog", 0.2, envelope=((0.0, 0.0), (4.0, 0.2)))],
                activation_layer="conv_b")
    assert [f.channels.shape for f in env.activations] == [(n, 4), (n, 4)]
    # the envelope starts at 0: its first frame is the normal's, then the damage grows
    np.testing.assert_allclose(env.activations[1].channels[0], env.activations[0].channels[0], atol=1e-5)
    gap = np.abs(env.activations[1].channels - env.activations[0].channels).mean(axis=1)
    assert gap[-20:].mean() > 5 * gap[:5].mean()
    fixed = floss(y, make_tiny_model(frames=24, name="tinyfixed"), [tiny_recipe("fog", 0.1)], activation_layer="conv_a")
    assert fixed.activations[1].channels.shape == (n, 4) and np.isfinite(fixed.activations[1].channels).all()


def test_a_bad_layer_is_refused_with_a_sentence(tiny_model):
    with pytest.raises(RecipeError, match=r"model 'tiny' has no conv layer 'nope' to take activation frames from; "
                                          r"choose one of: conv_a, conv_b, conv_out"):
        floss(tone(1.0), tiny_model, [], activation_layer="nope")
    with pytest.raises(RecipeError, match="'compress'"):
        build_job(model="tiny", action="fog", magnitudes="0.1", conv_layers={"conv_a": 4, "conv_b": 4},
                  outputs=Outputs(activations=True, activation_layer="compress"))
    spec = build_job(model="tiny", action="fog", magnitudes="0.1", outputs=Outputs(activation_layer="down"))
    with pytest.raises(RecipeError, match="no conv layer 'down'"):
        spec.for_model("tiny", "", {"conv_a": 4})


def test_the_default_layer_is_the_cards_most_sensitive(tiny_model):
    assert activations.default_layer(tiny_model, {"sensitivity": {"most_sensitive": ["gone", "conv_out", "conv_a"]}}) \
        == "conv_out"
    assert activations.default_layer(tiny_model, None) == "conv_b"  # no map: the middle conv layer


def test_format_round_trip_and_header(tmp_path, tiny_model):
    res = floss(tone(2.0), tiny_model, [tiny_recipe("fog", 0.2)], activation_layer="conv_b")
    basis = framesfile.pca_basis(res.activations[0])
    path = framesfile.write(res.activations[1], tmp_path / "x.frames", basis=basis)
    data = path.read_bytes()
    assert data[:4] == b"SFAF" and int.from_bytes(data[4:6], "little") == 1
    size = int.from_bytes(data[6:10], "little")
    header = json.loads(data[10:10 + size])
    n = res.activations[1].channels.shape[0]
    assert [(b["name"], b["columns"]) for b in header["blocks"]] == [("channels", 4), ("profile", 16), ("components", 3)]
    assert len(data) == 10 + size + n * (4 + 16 + 3)  # one byte per value
    back = framesfile.read(path)
    assert back.layer == "conv_b" and back.frames == n and back.frame_rate == pytest.approx(SR / 1024)
    for name, values in (("channels", res.activations[1].channels), ("profile", res.activations[1].profile)):
        step = (values.max(axis=0) - values.min(axis=0)) / 255
        assert np.all(np.abs(back.blocks[name] - values) <= step / 2 + 1e-6)
    np.testing.assert_array_equal(back.basis.components, basis.components)
    np.testing.assert_allclose(back.blocks["components"], basis.project(framesfile.stored_channels(res.activations[1])),
                               atol=float(np.ptp(back.blocks["components"])) / 255 + 1e-6)
    (tmp_path / "bad.frames").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    with pytest.raises(InputError, match="bad.frames: not an activation frames file"):
        framesfile.read(tmp_path / "bad.frames")


def test_job_files_are_listed_deterministic_and_the_same_from_a_cached_normal(tmp_path, tiny_model):
    src = tmp_path / "in.wav"
    sf.write(src, tone(3.0), SR)
    spec = build_job(model="tiny", action="fog", magnitudes="0.1,0.3", seed=5,
                     outputs=Outputs(activations=True, activation_layer="conv_a"))
    cache = NormalCache(tmp_path / "cache")
    runs = [floss_to_dir(spec, src, net=tiny_model, output_dir=tmp_path / f"o{k}", normal_cache=cache)
            for k in range(2)]
    assert [r["normal_cached"] for r in runs] == [False, True]
    assert runs[0]["activations"]["layer"] == "conv_a"
    for k, run in enumerate(runs):
        entries = [run["normal"], *run["flossed"]]
        assert [e["activations"] for e in entries] == ["in_normal.frames", "in_fog_0.1.frames", "in_fog_0.3.frames"]
        assert all((tmp_path / f"o{k}" / e["activations"]).is_file() for e in entries)
    for name in ("in_normal.frames", "in_fog_0.1.frames", "in_fog_0.3.frames"):
        assert (tmp_path / "o0" / name).read_bytes() == (tmp_path / "o1" / name).read_bytes()
    fresh = floss_to_dir(spec, src, net=tiny_model, output_dir=tmp_path / "o2")  # no cache at all
    assert (tmp_path / "o2" / "in_fog_0.3.frames").read_bytes() == (tmp_path / "o0" / "in_fog_0.3.frames").read_bytes()
    plain = floss_to_dir(spec.with_outputs(activations=False, activation_layer=None), src, net=tiny_model,
                         output_dir=tmp_path / "o3")
    assert "activations" not in plain["normal"] and not list((tmp_path / "o3").glob("*.frames"))


def test_a_warm_tapped_job_compiles_and_builds_nothing(tiny_model):
    from senseflosser import runners

    runners.warm_up(tiny_model, tap="conv_out")
    before = runners.compiled_stats()
    for k, action in enumerate(("fog", "fog", "ablate")):
        floss(tone(0.7 + 0.3 * k), tiny_model, [tiny_recipe(action, 0.1 + 0.1 * k, seed=k)], activation_layer="conv_out")
    assert runners.compiled_stats() == before


def test_a_kept_model_is_saved_without_its_tapped_views(tmp_path, tiny_model):
    src = tmp_path / "in.wav"
    sf.write(src, tone(1.0), SR)
    for frames in (False, True):
        spec = build_job(model="tiny", action="lapse", magnitudes="0.2", seed=1,
                         outputs=Outputs(save_model=True, activations=frames, activation_layer="conv_a"))
        man = floss_to_dir(spec, src, net=tiny_model, output_dir=tmp_path / str(frames))
        saved = keras.models.load_model(tmp_path / str(frames) / man["flossed"][0]["model"])
        assert [layer.name for layer in saved.layers] == [layer.name for layer in apply(tiny_model, spec.base).layers]
    plain, tapped_ = ((tmp_path / str(f) / man["flossed"][0]["model"]).stat().st_size for f in (False, True))
    assert abs(plain - tapped_) < 200  # the same archive but for its timestamps


def test_long_audio_keeps_only_pooled_frames(tiny_model):
    """Recording adds the pooled frames' bytes, never a chunk's full activation (numpy's allocations traced)."""
    import tracemalloc

    y = tone(120.0)
    peaks = {}
    for layer in (None, "conv_b", None, "conv_b"):  # the first two warm up
        tracemalloc.start()
        res = floss(y, tiny_model, [tiny_recipe("fog", 0.1)], activation_layer=layer)
        peaks[layer] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    n = res.activations[0].channels.shape[0]
    pooled = 2 * n * (4 + 16) * 4  # two outputs, (channels + bands) float32
    full_chunk = DEFAULT_CHUNK_FRAMES * 1025 * 4 * 4  # one chunk's whole activation of conv_b, float32
    assert peaks["conv_b"] - peaks[None] < pooled + full_chunk / 4, (peaks, pooled)
