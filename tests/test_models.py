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


# ------------------------------------------------------------------ card owner

def _card_folder(tmp_path, card: dict | None) -> ModelRegistry:
    make_tiny_model().save(tmp_path / "a.keras")
    if card is not None:
        (tmp_path / "a.json").write_text(json.dumps(card, indent=2) + "\n")
    return ModelRegistry(tmp_path)


def test_update_card_sets_sections_in_place_and_keeps_the_rest(tmp_path):
    stored = {"name": "a", "summary": "s", "evaluation": None, "corpus": {"licence": "CC0"}}
    reg = _card_folder(tmp_path, stored)
    path = reg.update_card("a", evaluation={"snr_db": float("inf"), "n": 3}, sensitivity={"plot": "a.map.png"})
    assert path == tmp_path / "a.json" == reg.card_path("a")
    # Sections keep their places, a new one goes last, an infinite SNR is stored as null; written as write_card does.
    expected = {**stored, "evaluation": {"snr_db": None, "n": 3}, "sensitivity": {"plot": "a.map.png"}}
    assert path.read_text() == json.dumps(expected, indent=2) + "\n"
    assert reg.read_card("a") == expected and list(reg.read_card("a")) == list(expected)
    assert reg.card("a")["file"] == "a.keras"
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_update_card_gives_a_model_without_one_a_card(tmp_path):
    reg = _card_folder(tmp_path, None)
    assert reg.read_card("a") == {}
    reg.update_card("a", adversarial={"sha256": "0" * 64})
    assert json.loads((tmp_path / "a.json").read_text()) == {"name": "a", "adversarial": {"sha256": "0" * 64}}


def test_update_card_refuses_what_it_cannot_do(tmp_path):
    reg = _card_folder(tmp_path, {"name": "a"})
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        reg.update_card("nope", evaluation={})
    with pytest.raises(ModelError, match="no card section given"):
        reg.update_card("a")
    for derived in ("name", "file"):
        with pytest.raises(ModelError, match=f"card section '{derived}' of model 'a' is derived"):
            reg.update_card("a", **{derived: "b"})
    (tmp_path / "a.json").write_text("{broken")
    with pytest.raises(ModelError, match="a.json' is unreadable"):
        reg.update_card("a", evaluation={})
    assert (tmp_path / "a.json").read_text() == "{broken"  # a broken card is left for a person to look at
    (tmp_path / "a.json").write_text("[1, 2]")
    with pytest.raises(ModelError, match="holds a JSON list, not an object"):
        reg.read_card("a")
    assert reg.card("a")["summary"] == "no model card"  # reading for display stays lenient


def test_concurrent_card_updates_lose_nothing(tmp_path):
    import threading

    _card_folder(tmp_path, {"name": "a"})
    # Two registries of one folder (as two processes would be) share no thread lock: the folder lock orders them.
    registries = [ModelRegistry(tmp_path), ModelRegistry(tmp_path)]

    def update(k: int) -> None:
        for i in range(15):
            registries[k % 2].update_card("a", **{f"s{k}_{i}": i})

    threads = [threading.Thread(target=update, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(ModelRegistry(tmp_path).read_card("a")) == {"name"} | {f"s{k}_{i}" for k in range(4) for i in range(15)}


def test_write_card_writes_beside_a_model_file_only(tmp_path):
    from senseflosser.models import write_card

    path = write_card(tmp_path / "m.keras", {"name": "m", "evaluation": None})
    assert path == tmp_path / "m.json" and json.loads(path.read_text()) == {"name": "m", "evaluation": None}
    with pytest.raises(ModelError, match="m.txt' is not a model file"):
        write_card(tmp_path / "m.txt", {"name": "m"})


def test_only_the_registry_knows_where_cards_live():
    # Card files are found and written by senseflosser/models.py alone; training writes a new card with its write_card.
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sources = [p for d in ("senseflosser", "app", "benchmarks", "scripts") for p in (root / d).rglob("*.py")]
    assert sources
    for p in sources:
        text = p.read_text()
        rel = p.relative_to(root).as_posix()
        if rel != "senseflosser/models.py":
            assert 'with_suffix(".json")' not in text, rel
        if rel not in ("senseflosser/models.py", "senseflosser/training.py"):
            assert "write_card(" not in text, rel


def test_the_best_model_is_chosen_by_measured_quality_then_cost(tmp_path, models_dir):
    """Not by name: the highest held-out SI-SNR first, the cheaper of two equals first, no figures last."""
    import shutil

    from senseflosser.models import ModelRegistry, rank_key

    folder = tmp_path / "m"
    folder.mkdir()
    figures = {"aaa": None, "bbb": (20.0, 2.0), "ccc": (28.0, 2.0), "ddd": (28.0, 0.5)}
    for name, fig in figures.items():
        shutil.copy(models_dir / "tiny.keras", folder / f"{name}.keras")
        card = {"summary": name}
        if fig:
            card["evaluation"] = {"normal": {"si_snr_db_median": fig[0]}}
            card["forward"] = {"gflop_per_s_audio": fig[1]}
        (folder / f"{name}.json").write_text(json.dumps(card))
    (folder / "eee.keras").write_bytes((models_dir / "tiny.keras").read_bytes())
    (folder / "eee.json").write_text("{broken")
    reg = ModelRegistry(folder)
    assert reg.ranked() == ["ddd", "ccc", "bbb", "aaa", "eee"] and reg.best() == "ddd"
    assert [c["name"] for c in reg.cards()] == reg.ranked()
    assert rank_key({}, "x") > rank_key({"evaluation": {"normal": {"si_snr_db_median": -50}}}, "y")
    # The cards are parsed once while unchanged; a new figure (by update_card, or a file written anew) counts.
    reg.update_card("bbb", evaluation={"normal": {"si_snr_db_median": 29.0}})
    assert reg.best() == "bbb" and reg.card("bbb")["evaluation"]["normal"]["si_snr_db_median"] == 29.0
    (folder / "ccc.json").write_text(json.dumps({"evaluation": {"normal": {"si_snr_db_median": 31.0}}}))
    assert reg.best() == "ccc"
    with pytest.raises(ModelError, match="there is no model"):
        ModelRegistry(tmp_path / "empty").best()


def test_the_shipped_default_is_the_best_shipped_model():
    from senseflosser.models import ModelRegistry

    reg = ModelRegistry()
    best = reg.card(reg.best())
    for name in reg.names():
        other = reg.card(name)["evaluation"]["normal"]["si_snr_db_median"]
        assert best["evaluation"]["normal"]["si_snr_db_median"] >= other
