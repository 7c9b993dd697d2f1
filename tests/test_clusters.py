"""Channel clusters: computing them, storing them in the card, and ``LAYER:clusterN`` selections.

A cluster selection is resolved to channel numbers once, in build_job: the CLI,
the API and build_job itself record the same channels, and a recipe reproduces
whatever the card's clusters become later.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from helpers import SR, tone

from senseflosser.cli import main
from senseflosser.clusters import card_clusters, compute_clusters, kmeans
from senseflosser.errors import ModelError, RecipeError
from senseflosser.jobspec import build_job
from senseflosser.models import ModelRegistry

CLUSTERS = {"conv_a": [[0, 1], [2, 3]], "conv_b": [[0], [1, 2, 3]]}
"""Clusters given by hand to the tiny model (conv_out has none)."""
CHANNELS = {"conv_a": 4, "conv_b": 4, "conv_out": 2}


def _excerpts(n: int = 3, seconds: float = 1.5) -> list[np.ndarray]:
    return [tone(seconds, freqs=(110.0 * (i + 1), 700.0 + 300 * i), seed=i) for i in range(n)]


@pytest.fixture
def clustered_dir(models_dir, tmp_path):
    """A copy of the tiny models' folder whose ``tiny`` card has :data:`CLUSTERS`."""
    d = tmp_path / "models"
    shutil.copytree(models_dir, d)
    ModelRegistry(d).update_card("tiny", clusters={"k": 2, "seed": 0, "model_sha256": "", "excerpts": [],
                                                   "layers": CLUSTERS})
    return d


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- computing clusters


def test_compute_clusters_is_deterministic_and_covers_every_channel(tiny_model):
    excerpts = _excerpts()
    first = compute_clusters(tiny_model, excerpts, k=2, seed=3)
    assert first == compute_clusters(tiny_model, excerpts, k=2, seed=3)
    assert list(first) == ["conv_a", "conv_b", "conv_out"]
    for layer, groups in first.items():
        channels = sorted(c for g in groups for c in g)
        assert channels == list(range(CHANNELS[layer])), (layer, groups)  # each channel exactly once
        assert all(groups) and len(groups) <= 2
        assert [g[0] for g in groups] == sorted(g[0] for g in groups)  # numbered by their smallest channel
        assert all(g == sorted(g) for g in groups)


def test_k_is_capped_at_the_channels(tiny_model):
    groups = compute_clusters(tiny_model, _excerpts(2), k=50, seed=0)
    assert len(groups["conv_out"]) <= 2 and len(groups["conv_a"]) <= 4
    assert sorted(c for g in groups["conv_a"] for c in g) == [0, 1, 2, 3]


def test_a_fixed_length_model_is_probed_block_by_block(models_dir):
    model = ModelRegistry(models_dir).load("tinyfixed")  # 24 frames; a 2 s excerpt is 45 frames
    groups = compute_clusters(model, [tone(2.0)], k=3, seed=1)
    assert sorted(c for g in groups["conv_b"] for c in g) == [0, 1, 2, 3]


def test_kmeans_finds_obvious_groups_and_keeps_flat_channels_together():
    rng = np.random.default_rng(0)
    t = np.linspace(0, 6, 200)
    rising, falling = np.sin(t), -np.sin(t)
    x = np.stack([rising + 0.01 * rng.standard_normal(200) for _ in range(3)]
                 + [falling + 0.01 * rng.standard_normal(200) for _ in range(3)] + [np.zeros(200)] * 2)
    labels = kmeans(x, 3, seed=5)
    assert len(set(labels[:3])) == 1 and len(set(labels[3:6])) == 1 and labels[6] == labels[7]
    assert len({labels[0], labels[3], labels[6]}) == 3
    assert np.array_equal(labels, kmeans(x, 3, seed=5))
    assert len(set(kmeans(x, 8, seed=0))) == 7  # capped at the distinct rows: no empty cluster


def test_k_below_one_is_refused(tiny_model):
    with pytest.raises(RecipeError, match="k .* at least 1, got 0"):
        compute_clusters(tiny_model, _excerpts(1), k=0)


def test_the_clusters_command_writes_the_card_section(capsys, models_dir, tmp_path):
    d = tmp_path / "models"
    shutil.copytree(models_dir, d)
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    for i in range(2):
        sf.write(audio_dir / f"clip{i}.wav", tone(3.0, freqs=(200.0 + 150 * i, 900.0), seed=i), SR)
    code, out, err = _run(capsys, "clusters", "-m", "tiny", "--data-dir", str(audio_dir), "--models-dir", str(d),
                          "-k", "2", "--seed", "4", "--excerpts", "3", "--seconds", "1.5")
    assert code == 0, err
    assert "conv_a: cluster0 = " in out
    reg = ModelRegistry(d)
    section = reg.read_card("tiny")["clusters"]
    assert section["k"] == 2 and section["seed"] == 4 and section["model_sha256"] == reg.sha256("tiny")
    assert len(section["excerpts"]) == 3 and {e["file"] for e in section["excerpts"]} <= {"clip0.wav", "clip1.wav"}
    assert all(e["seconds"] == 1.5 for e in section["excerpts"])
    layers = section["layers"]
    assert set(layers) == {"conv_a", "conv_b", "conv_out"}
    assert sorted(c for g in layers["conv_b"] for c in g) == [0, 1, 2, 3]
    assert reg.read_card("tiny")["conv_channels"] == CHANNELS  # the other sections kept
    assert card_clusters(reg.read_card("tiny")) == layers


# ---------------------------------------------------------------- cluster selections


def test_build_job_resolves_clusters_before_the_layer_check():
    spec = build_job(model="tiny", action="fog", magnitudes="0.1", seed=1, layers="conv_a:cluster1,conv_b,conv_out:1",
                     conv_layers=CHANNELS, clusters=CLUSTERS)
    assert spec.base.layers == ("conv_a:2,3", "conv_b", "conv_out:1")
    mixed = build_job(model="tiny", action="fog", magnitudes="0.1", seed=1, layers=["conv_b:0,cluster1"],
                      conv_layers=CHANNELS, clusters=CLUSTERS)
    assert mixed.base.layers == ("conv_b:0,1,2,3",)
    plain = build_job(model="tiny", action="fog", magnitudes="0.1", seed=1, layers="conv_a:2,3",
                      conv_layers=CHANNELS, clusters=None)
    assert plain.base.layers == ("conv_a:2,3",)  # no cluster named: clusters are not needed


@pytest.mark.parametrize("layers, clusters, message", [
    ("conv_a:cluster2", CLUSTERS, "conv_a has clusters 0 to 1 on model 'tiny'; cluster2 does not exist"),
    ("conv_a:cluster1", None, "model 'tiny' has no clusters: run `senseflosser clusters -m tiny"),
    ("conv_out:cluster0", CLUSTERS, "layer 'conv_out' of model 'tiny' has no clusters; layers with clusters: "
                                    "conv_a, conv_b"),
    ("conv_a:clusterx", CLUSTERS, "clusterx is not a cluster; write cluster0 to cluster1"),
    ("cluster1", CLUSTERS, "'cluster1' follows no layer"),
    ("conv_a,cluster1", CLUSTERS, "'cluster1' follows no layer"),
])
def test_bad_cluster_selections_get_a_sentence(layers, clusters, message):
    with pytest.raises(RecipeError) as exc:
        build_job(model="tiny", action="fog", magnitudes="0.1", seed=1, layers=layers, conv_layers=CHANNELS,
                  clusters=clusters)
    assert message in str(exc.value)


def test_a_malformed_card_section_is_refused():
    with pytest.raises(ModelError, match="no 'layers' mapping"):
        card_clusters({"clusters": {"k": 2}})
    assert card_clusters({"summary": "x"}) is None


def _floss(capsys, out_dir, wav_file, models_dir, *args):
    code, _, err = _run(capsys, "floss", "-i", str(wav_file), "--models-dir", str(models_dir), "-m", "tiny",
                        "-a", "fog", "-g", "0.5", "--seed", "11", "-o", str(out_dir), *args)
    assert code == 0, err
    return json.loads((out_dir / "song_fog_0.5.json").read_text())["recipe"], (out_dir / "song_fog_0.5.wav")


def test_cli_records_the_channels_and_two_clusters_sound_different(capsys, clustered_dir, wav_file, tmp_path):
    recipe0, wav0 = _floss(capsys, tmp_path / "c0", wav_file, clustered_dir, "--layers", "conv_a:cluster0")
    recipe1, wav1 = _floss(capsys, tmp_path / "c1", wav_file, clustered_dir, "--layers", "conv_a:cluster1,conv_b")
    assert recipe0["layers"] == ["conv_a:0,1"] and recipe1["layers"] == ["conv_a:2,3", "conv_b"]
    plain, wav_plain = _floss(capsys, tmp_path / "p", wav_file, clustered_dir, "--layers", "conv_a:0,1")
    assert plain["layers"] == recipe0["layers"] and wav_plain.read_bytes() == wav0.read_bytes()
    a, _ = sf.read(wav0)
    _, b = _floss(capsys, tmp_path / "c1b", wav_file, clustered_dir, "--layers", "conv_a:cluster1")
    assert np.max(np.abs(a - sf.read(b)[0])) > 1e-3  # two clusters of one layer: different outputs


def test_a_recipe_reproduces_after_the_clusters_change(capsys, clustered_dir, wav_file, tmp_path):
    recipe, wav = _floss(capsys, tmp_path / "a", wav_file, clustered_dir, "--layers", "conv_b:cluster1")
    assert recipe["layers"] == ["conv_b:1,2,3"]
    ModelRegistry(clustered_dir).update_card("tiny", clusters={"k": 2, "seed": 9, "model_sha256": "", "excerpts": [],
                                                               "layers": {"conv_b": [[0, 1], [2, 3]]}})
    code, _, err = _run(capsys, "floss", "-i", str(wav_file), "--models-dir", str(clustered_dir),
                        "--recipe", str(tmp_path / "a" / "song_fog_0.5.json"), "-o", str(tmp_path / "b"))
    assert code == 0, err
    assert (tmp_path / "b" / "song_fog_0.5.wav").read_bytes() == wav.read_bytes()
    again, _ = _floss(capsys, tmp_path / "c", wav_file, clustered_dir, "--layers", "conv_b:cluster1")
    assert again["layers"] == ["conv_b:2,3"]  # the same words now name the new cluster


@pytest.mark.parametrize("model, layers, message", [
    ("tiny", "conv_a:cluster5", "conv_a has clusters 0 to 1"),
    ("tinyfixed", "conv_a:cluster0", "model 'tinyfixed' has no clusters: run `senseflosser clusters"),
])
def test_cli_bad_clusters_exit_1_with_a_sentence(capsys, clustered_dir, wav_file, tmp_path, model, layers, message):
    code, _, err = _run(capsys, "floss", "-i", str(wav_file), "--models-dir", str(clustered_dir), "-m", model,
                        "-a", "fog", "-g", "0.1", "--layers", layers, "-o", str(tmp_path / "o"))
    assert code == 1 and message in err
    assert err.strip().count("\n") == 0 and "Traceback" not in err


def test_a_model_by_path_has_no_clusters(capsys, clustered_dir, wav_file, tmp_path):
    code, _, err = _run(capsys, "floss", "-i", str(wav_file), "-m", str(clustered_dir / "tiny.keras"), "-a", "fog",
                        "-g", "0.1", "--layers", "conv_a:cluster0", "-o", str(tmp_path / "o"))
    assert code == 1 and f"model {str(clustered_dir / 'tiny.keras')!r} has no clusters" in err  # no card for a file


def test_api_lists_and_resolves_clusters_as_the_cli_does(capsys, make_web_app, clustered_dir, wav_file, tmp_path,
                                                        web_submit, web_wait):
    client = make_web_app(MODELS_DIR=str(clustered_dir)).test_client()
    cards = {c["name"]: c for c in client.get("/api/models").get_json()["models"]}
    assert cards["tiny"]["clusters"]["layers"] == CLUSTERS and "clusters" not in cards["tinyfixed"]
    r = web_submit(client, layers=["conv_a:cluster1", "conv_b"], seed="11", magnitude="0.5")
    assert r.status_code == 202, r.get_json()
    view = web_wait(client, r.get_json()["id"])
    assert view["state"] == "done", view
    cli_recipe, _ = _floss(capsys, tmp_path / "cli", wav_file, clustered_dir, "--layers", "conv_a:cluster1,conv_b")
    direct = build_job(model="tiny", action="fog", magnitudes="0.5", seed=11, layers="conv_a:cluster1,conv_b",
                       conv_layers=CHANNELS, clusters=card_clusters(ModelRegistry(clustered_dir).read_card("tiny")))
    assert view["recipe"]["layers"] == cli_recipe["layers"] == list(direct.base.layers) == ["conv_a:2,3", "conv_b"]
    assert "--layers conv_a:2,3,conv_b" in view["cli"]


@pytest.mark.parametrize("model, layers, message", [
    ("tiny", "conv_a:cluster2", "conv_a has clusters 0 to 1"),
    ("tiny", "conv_out:cluster0", "layer 'conv_out' of model 'tiny' has no clusters"),
    ("tinyfixed", "conv_b:cluster0", "model 'tinyfixed' has no clusters"),
])
def test_api_bad_clusters_are_400_with_a_sentence(make_web_app, clustered_dir, web_submit, model, layers, message):
    client = make_web_app(MODELS_DIR=str(clustered_dir)).test_client()
    r = web_submit(client, model=model, layers=layers)
    assert r.status_code == 400
    body = r.get_json()
    assert set(body) == {"error"} and message in body["error"]
