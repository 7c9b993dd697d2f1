"""The adversarial action: fog's size, worst-case direction, stored or found on the input."""

from __future__ import annotations

import numpy as np
import pytest

from senseflosser import actions
from senseflosser.actions import worst_case as adversarial
from senseflosser.errors import RecipeError
from senseflosser.pipeline import floss
from senseflosser.recipe import Recipe
from helpers import make_tiny_model, tone


@pytest.fixture(scope="module")
def model_with_direction():
    model = make_tiny_model(seed=3, name="tinyadv")
    targets = actions.targets(model, "adversarial", None)
    direction = adversarial.find_direction(model, [tone(1.0, seed=1), tone(1.0, seed=2, freqs=(330.0, 990.0))],
                                           targets, seed=0, steps=4)
    adversarial.attach(model, direction, "test")
    return model, direction


def test_direction_has_unit_norm_and_fogs_size(model_with_direction):
    model, direction = model_with_direction
    for name, arrays in direction.items():
        for d, w in zip(arrays, model.get_layer(name).get_weights()):
            assert d.shape == w.shape and np.linalg.norm(d) == pytest.approx(1.0, rel=1e-4)
    damaged = actions.adversarial(model, magnitude=0.01, seed=0)
    for name in direction:
        for w0, w1 in zip(model.get_layer(name).get_weights(), damaged.get_layer(name).get_weights()):
            assert np.linalg.norm(w1 - w0) == pytest.approx(adversarial.fog_radius(w0.size, 0.01), rel=1e-3)


def test_the_search_raises_the_loss():
    model = make_tiny_model(seed=4, name="tinyadv2")
    losses: list[float] = []
    adversarial.find_direction(model, [tone(1.0)], actions.targets(model, "adversarial", None), seed=1, steps=4,
                               losses=losses)
    assert len(losses) == 5 and losses[-1] > losses[0]


def test_worse_than_fog_of_the_same_size(model_with_direction):
    model, _ = model_with_direction
    y = tone(1.0, seed=5, freqs=(250.0, 700.0))  # audio the search did not see
    m = adversarial.REFERENCE_MAGNITUDE
    res = floss(y, model, [Recipe("tinyadv", "", "fog", m, s) for s in range(3)]
                + [Recipe("tinyadv", "", "adversarial", m, 0)])
    fog = np.median([o.metrics["snr_db"] for o in res.flossed[:3]])
    assert res.flossed[3].metrics["snr_db"] < fog - 3


def test_without_a_stored_direction_the_error_says_what_to_do():
    with pytest.raises(RecipeError, match="no stored adversarial direction.*senseflosser adversarial"):
        floss(tone(0.5), make_tiny_model(name="nodir"), [Recipe("nodir", "", "adversarial", 0.001, 1)])


def test_on_input_is_seeded_and_reproducible(tiny_model):
    y = tone(1.0)
    recipes = [Recipe("tiny", "", "adversarial", m, 7, params={"on_input": True}) for m in (0.001, 0.01)]
    a = floss(y, tiny_model, recipes)
    b = floss(y, tiny_model, [Recipe.from_json(recipes[1].to_json())])
    assert a.flossed[1].audio.tobytes() == b.flossed[0].audio.tobytes()
    assert a.flossed[0].metrics["snr_db"] > a.flossed[1].metrics["snr_db"]
    c = floss(y, tiny_model, [Recipe("tiny", "", "adversarial", 0.01, 8, params={"on_input": True})])
    assert c.flossed[0].audio.tobytes() != b.flossed[0].audio.tobytes()
    assert recipes[0].slug == "adversarial-input_0.001"


def test_on_input_is_only_for_adversarial():
    with pytest.raises(RecipeError, match="fog has no parameter 'on_input'"):
        Recipe("tiny", "", "fog", 0.1, 1, params={"on_input": True})


def test_a_stored_direction_is_read_from_beside_the_model_file(model_with_direction, tmp_path):
    model, direction = model_with_direction
    source = tmp_path / "other.keras"
    adversarial.save_direction(adversarial.direction_file(source), direction, {"seed": 0})
    fresh = make_tiny_model(seed=3, name="tinyadv")  # the same weights, with nothing attached
    y = tone(1.0, seed=5)
    recipe = Recipe("tinyadv", "", "adversarial", 0.01, 0)
    from_file = floss(y, fresh, [recipe], source=source)
    attached = floss(y, model, [recipe])
    assert from_file.flossed[0].audio.tobytes() == attached.flossed[0].audio.tobytes()
    assert from_file.provenance[0]["adversarial_direction_sha256"] != "test"


def test_direction_file_roundtrip(model_with_direction, tmp_path):
    _, direction = model_with_direction
    path = tmp_path / "m.adversarial.npz"
    sha = adversarial.save_direction(path, direction, {"seed": 0})
    again, meta, sha2 = adversarial.load_direction(path)
    assert sha == sha2 and meta == {"seed": 0}
    for name in direction:
        for a, b in zip(direction[name], again[name]):
            np.testing.assert_array_equal(a, b)
    (tmp_path / "bad.adversarial.npz").write_bytes(b"not a zip")
    with pytest.raises(Exception, match="not a readable adversarial direction"):
        adversarial.load_direction(tmp_path / "bad.adversarial.npz")


def test_channels_of_a_direction(model_with_direction):
    model, _ = model_with_direction
    damaged = actions.adversarial(model, magnitude=0.01, seed=0, layers="conv_b:1")
    k0, b0 = model.get_layer("conv_b").get_weights()
    k1, b1 = damaged.get_layer("conv_b").get_weights()
    changed = {c for c in range(4) if not (np.array_equal(k0[..., c], k1[..., c]) and b0[c] == b1[c])}
    assert changed == {1}
    assert np.sqrt(np.sum((k1 - k0) ** 2)) == pytest.approx(adversarial.fog_radius(k0[..., 1].size, 0.01), rel=1e-3)
