"""The model registry and the flossed-model round trip."""

from __future__ import annotations

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from senseflosser import actions
from senseflosser.errors import ModelError
from senseflosser.models import ModelRegistry, load_model_file
from senseflosser.pipeline import floss
from senseflosser.recipe import Recipe
from helpers import make_tiny_model, tone


def test_registry_discovers_models_and_cards(registry):
    assert registry.names() == ["tiny", "tinyfixed"]
    card = registry.card("tiny")
    assert card["summary"] == "tiny test model" and card["file"] == "tiny.keras"
    assert [c["name"] for c in registry.cards()] == ["tiny", "tinyfixed"]


def test_models_are_loaded_once_and_cached(registry):
    assert registry.load("tiny") is registry.load("tiny")
    assert registry.loaded() == ["tiny"]
    assert registry.card("tiny")["conv_layers"] == ["conv_a", "conv_b", "conv_out"]


@pytest.mark.parametrize("name", ["nope", "../tiny", "/etc/passwd", "", "tiny.keras"])
def test_unknown_names_are_refused(registry, name):
    with pytest.raises(ModelError, match="unknown model"):
        registry.load(name)


def test_unreadable_model_file(tmp_path):
    (tmp_path / "broken.keras").write_bytes(b"not a zip at all")
    reg = ModelRegistry(tmp_path)
    assert reg.names() == ["broken"]
    with pytest.raises(ModelError, match="broken.keras: the model file could not be loaded"):
        reg.load("broken")


def test_model_of_the_wrong_shape(tmp_path):
    inp = keras.Input(shape=(None, 513, 2))
    keras.Model(inp, keras.layers.Conv2D(2, 3, padding="same")(inp)).save(tmp_path / "wrong.keras")
    with pytest.raises(ModelError, match="input shape"):
        load_model_file(tmp_path / "wrong.keras")


def test_missing_or_broken_card_gives_a_minimal_card(tmp_path):
    make_tiny_model().save(tmp_path / "a.keras")
    make_tiny_model().save(tmp_path / "b.keras")
    (tmp_path / "b.json").write_text("{broken")
    reg = ModelRegistry(tmp_path)
    assert reg.card("a")["summary"] == "no model card"
    assert reg.card("b")["name"] == "b"


def test_legacy_h5_models_load(tmp_path):
    inp = keras.Input(shape=(None, 1025, 2))
    model = keras.Model(inp, keras.layers.Conv2D(2, 3, padding="same", name="c")(inp))
    model.save(tmp_path / "old.h5")
    reg = ModelRegistry(tmp_path)
    assert reg.names() == ["old"]
    loaded = reg.load("old")
    x = np.random.default_rng(0).standard_normal((1, 3, 1025, 2)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-5, atol=1e-6)


def test_saved_fog_model_gives_the_same_output(tiny_model, tmp_path):
    y = tone(1.0)
    fogged = actions.fog(tiny_model, magnitude=0.05, seed=2)
    fogged.save(tmp_path / "f.keras")
    again = keras.models.load_model(tmp_path / "f.keras")
    np.testing.assert_array_equal(floss(y, fogged, []).normal, floss(y, again, []).normal)


def test_saved_lapse_model_keeps_rate_and_seed(tiny_model, tmp_path):
    y = tone(1.0)
    lapsed = actions.lapse(tiny_model, magnitude=0.3, seed=8)
    expected = floss(y, tiny_model, [Recipe("tiny", "", "lapse", 0.3, 8)]).flossed[0].audio
    lapsed.save(tmp_path / "l.keras")
    again = keras.models.load_model(tmp_path / "l.keras")
    rates = {layer.name: (layer.rate, layer.seed) for layer in again.layers if hasattr(layer, "rate")}
    assert rates == {layer.name: (layer.rate, layer.seed) for layer in lapsed.layers if hasattr(layer, "rate")}
    np.testing.assert_array_equal(floss(y, again, []).normal, expected)
    # and through the registry, by path
    name, model, sha = ModelRegistry(tmp_path / "none").resolve(str(tmp_path / "l.keras"), allow_paths=True)
    assert name == "l" and len(sha) == 64


def test_flossed_model_loads_in_a_fresh_process_after_import(tiny_model, tmp_path):
    actions.lapse(tiny_model, magnitude=0.3, seed=8).save(tmp_path / "l.keras")
    code = ("import senseflosser, keras, sys; m = keras.models.load_model(sys.argv[1]); "
            "print(sum(type(l).__name__ == 'Lapse' for l in m.layers))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "l.keras")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "2"


def test_card_json_is_read_as_written(models_dir):
    reg = ModelRegistry(models_dir)
    assert reg.card("tinyfixed")["summary"] == json.loads((models_dir / "tinyfixed.json").read_text())["summary"]
