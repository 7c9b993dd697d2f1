"""Long-running workers must not grow: a warm job builds no model, no variable and no trace.

The lapse leak (about 400 kB per job in a gunicorn worker) came from a damaged
model built for every job: each new Keras variable name costs TensorFlow memory
for the rest of the process. These tests count what a warm job creates.
"""

from __future__ import annotations

import gc
import weakref

import keras
import pytest

from senseflosser import pipeline, runners
from senseflosser.recipe import Recipe
from helpers import tone

JOBS = 50


def _live_models() -> int:
    gc.collect()
    # A dead weak proxy (scipy and numba keep some) raises on isinstance: look at its type only.
    return sum(type(o) not in weakref.ProxyTypes and isinstance(o, keras.Model) for o in gc.get_objects())


@pytest.fixture
def count_variables(monkeypatch):
    """Count every Keras variable created from now on."""
    created = [0]
    original = keras.Variable.__init__

    def counting(self, *args, **kwargs):
        created[0] += 1
        original(self, *args, **kwargs)

    monkeypatch.setattr(keras.Variable, "__init__", counting)
    return created


@pytest.mark.parametrize("action", ["fog", "lapse"])
def test_warm_jobs_build_nothing(tiny_model, count_variables, action):
    y = tone(0.5)
    selections = (None, ("conv_a",))
    for layers in selections:  # warm-up: one job per layer selection
        pipeline.floss(y, tiny_model, [Recipe("tiny", "", action, 0.1, 0, layers=layers)])
    models_before = _live_models()
    compiled_before = runners.compiled_stats()
    count_variables[0] = 0
    for i in range(JOBS):
        recipe = Recipe("tiny", "", action, 0.01 + 0.5 * i / JOBS, seed=1000 + i, layers=selections[i % 2])
        pipeline.floss(y, tiny_model, [recipe])
    assert count_variables[0] == 0, f"{JOBS} warm {action} jobs created {count_variables[0]} Keras variables"
    assert _live_models() <= models_before
    assert runners.compiled_stats() == compiled_before


def test_titration_shares_one_damaged_architecture(tiny_model, count_variables):
    y = tone(0.5)
    pipeline.floss(y, tiny_model, [Recipe("tiny", "", "lapse", 0.1, 0)])
    count_variables[0] = 0
    recipes = [Recipe("tiny", "", "lapse", m, 5) for m in (0.01, 0.05, 0.1, 0.2, 0.5)]
    result = pipeline.floss(y, tiny_model, recipes)
    assert count_variables[0] == 0
    assert len({o.audio.tobytes() for o in result.flossed}) == len(recipes)


def test_kept_models_still_come_out_whole(tiny_model):
    # keep_models builds a model per recipe (to be saved); it must equal the shared-architecture run.
    y = tone(0.5)
    recipe = Recipe("tiny", "", "lapse", 0.3, 9)
    kept = pipeline.floss(y, tiny_model, [recipe], keep_models=True).flossed[0]
    shared = pipeline.floss(y, tiny_model, [recipe]).flossed[0]
    assert kept.model is not None
    assert kept.audio.tobytes() == shared.audio.tobytes()
