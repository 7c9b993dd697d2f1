"""Adding an action takes one function and one registry entry (README, "Adding an action").

A throwaway weights action and a throwaway architecture action are registered the
documented way only; the CLI, ``GET /api/actions``, the web form, the page's list and the
README generator then all offer them, and a job runs with each.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from senseflosser import actions
from senseflosser.actions import ActionSpec, MagnitudeSpec, Param
from senseflosser.actions.base import copy_model
from senseflosser.cli import main
from senseflosser.models import conv_layer_names


# ---------------------------------------------------------------- a weights action: one function

def nudge_weights(model, targets, *, magnitude, seed, sign=1.0):
    """Every targeted kernel moved by ``sign * magnitude`` (nesting: a larger magnitude moves it farther)."""
    out = {}
    for name, channels in targets.items():
        kernel, *rest = model.get_layer(name).get_weights()
        moved = kernel.copy()
        index = (Ellipsis,) if channels is None else (Ellipsis, list(channels))
        moved[index] += np.float32(sign * magnitude)
        out[name] = [moved, *rest]
    return out


# ---------------------------------------------------------------- an architecture action: a layer and three functions

class Hush(keras.layers.Layer):
    """Multiplies its input by a gain held as state (so one copy serves every magnitude)."""

    def build(self, input_shape):
        self.gain = self.add_weight(shape=(), initializer="ones", trainable=False, name="gain")

    def call(self, x):
        return x * self.gain


def hush_model(model, targets, *, magnitude, seed):
    def call(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        return Hush(name=f"{layer.name}_hush")(out) if layer.name in targets else out

    damaged = copy_model(model, call_function=call)
    for state in hush_state(damaged, magnitude=magnitude, seed=seed).items():
        next(v for v in damaged.non_trainable_variables if v.path == state[0]).assign(state[1])
    return damaged


def hush_architecture(model, targets):
    return hush_model(model, targets, magnitude=0.0, seed=0)


def hush_state(damaged, *, magnitude, seed):
    return {layer.gain.path: np.float32(1.0 - magnitude) for layer in damaged.layers if isinstance(layer, Hush)}


NUDGE = ActionSpec(
    name="nudge", description="moves every kernel weight by the magnitude: a test action",
    magnitude=MagnitudeSpec("offset added to each kernel weight", 0.0, 1.0, 0.01, (0.001, 0.003, 0.01, 0.03, 0.1)),
    changes="weights", default_layers="all", weights=nudge_weights,
    params=(Param("sign", "float", 1.0, "which way the kernels move", min=-1.0, max=1.0),),
)
HUSH = ActionSpec(
    name="hush", description="turns the targeted layers' outputs down: a test action",
    magnitude=MagnitudeSpec("share of the level taken away", 0.0, 1.0, 0.1, (0.05, 0.1, 0.2, 0.4, 0.8)),
    changes="architecture", default_layers="all but output",
    build=hush_model, architecture=hush_architecture, state=hush_state,
)


@pytest.fixture
def added():
    for spec in (NUDGE, HUSH):
        actions.register(spec)
    yield
    for spec in (NUDGE, HUSH):
        actions.unregister(spec.name)


def test_the_cli_lists_and_runs_them(added, capsys, models_dir, wav_file, tmp_path):
    assert main(["actions", "--json"]) == 0
    listed = {a["name"]: a for a in json.loads(capsys.readouterr().out)}
    assert listed["nudge"]["kind"] == "weights" and listed["hush"]["kind"] == "activation"
    assert listed["nudge"]["params"][0]["flag"] == "--sign"
    for action, extra in (("nudge", ["--sign", "-1"]), ("hush", [])):
        out = tmp_path / action
        code = main(["floss", "-i", str(wav_file), "--models-dir", str(models_dir), "-m", "tiny", "-a", action,
                     "-g", "0.2", "-s", "3", "-o", str(out), *extra])
        assert code == 0, capsys.readouterr().err
        recipe = json.loads((out / f"song_{action}_0.2.json").read_text())["recipe"]
        assert recipe["action"] == action
        if action == "nudge":
            assert recipe["params"] == {"sign": -1.0}
        again = tmp_path / f"{action}-again"
        assert main(["floss", "-i", str(wav_file), "--models-dir", str(models_dir),
                     "--recipe", str(out / f"song_{action}_0.2.json"), "-o", str(again)]) == 0
        assert (out / f"song_{action}_0.2.wav").read_bytes() == (again / f"song_{action}_0.2.wav").read_bytes()
    capsys.readouterr()
    assert main(["floss", "-i", str(wav_file), "--models-dir", str(models_dir), "-m", "tiny", "-a", "nudge",
                 "--sign", "5", "-o", str(tmp_path / "bad")]) == 1
    assert "nudge parameter sign must be a finite number from -1 to 1" in capsys.readouterr().err


def test_the_api_the_form_and_the_page_offer_them(added, web_client, web_submit, web_wait):
    listed = {a["name"]: a for a in web_client.get("/api/actions").get_json()}
    assert {"nudge", "hush"} <= set(listed) and listed["hush"]["changes"] == "architecture"
    page = web_client.get("/").get_data(as_text=True)
    assert "nudge" in page and "hush" in page
    assert 'data-action="nudge"' in page and 'name="sign"' in page  # its declared parameter is a field
    for action, fields in (("nudge", {"sign": "-0.5"}), ("hush", {})):
        r = web_submit(web_client, action=action, magnitude="0.3", seed="4", **fields)
        assert r.status_code == 202, r.get_json()
        view = web_wait(web_client, r.get_json()["id"])
        assert view["state"] == "done", view["error"]
        assert view["outputs"]["flossed"][0]["magnitude"] == 0.3
        if action == "nudge":
            assert view["recipe"]["params"] == {"sign": -0.5} and "--sign -0.5" in view["cli"]
    r = web_submit(web_client, action="hush", magnitude="0.3", sign="0.5")
    assert r.status_code == 400 and "hush has no parameter 'sign'" in r.get_json()["error"]


def test_the_readme_generator_and_the_damage_follow_the_registry(added, tiny_model):
    table = actions.markdown_table()
    assert "| `nudge` |" in table and "| `hush` |" in table and "`--sign` / `sign`" in table
    quiet = actions.damage(tiny_model, action="hush", magnitude=0.5, seed=0)
    assert sum(isinstance(layer, Hush) for layer in quiet.layers) == len(conv_layer_names(tiny_model)) - 1
    moved = actions.damage(tiny_model, action="nudge", magnitude=0.1, seed=0, layers="conv_a:1")
    k0, k1 = tiny_model.get_layer("conv_a").get_weights()[0], moved.get_layer("conv_a").get_weights()[0]
    np.testing.assert_allclose(k1[..., 1] - k0[..., 1], 0.1, atol=1e-6)
    np.testing.assert_array_equal(k1[..., 0], k0[..., 0])


def test_registering_refuses_a_taken_name_and_an_incomplete_entry():
    from senseflosser.errors import RecipeError

    with pytest.raises(RecipeError, match="already registered"):
        actions.register(ActionSpec(name="fog", description="", magnitude=NUDGE.magnitude, changes="weights",
                                    default_layers="all", weights=nudge_weights))
    with pytest.raises(RecipeError, match="needs build, architecture and state"):
        actions.register(ActionSpec(name="half", description="", magnitude=NUDGE.magnitude,
                                    changes="architecture", default_layers="all", build=hush_model))
    assert "half" not in actions.names()
