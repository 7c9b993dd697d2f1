"""The dream action's registry glue: its parameters, its per-job dream and its per-recipe output.

A dream is an *input* action: it changes the audio, not the model (the ascent
itself is :mod:`senseflosser.dream`). Its target is the recipe's layer
selection (layers, channels, clusters resolved to channels), or, with
``damage`` naming another action, the damage that action does at
``damage_magnitude`` to the selected layers (the selection is then that
action's). Its magnitude is the *depth*: how far the written audio moves from
the input toward its dream (1 = all the way), so a titration costs one dream.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from .. import dream as dreaming
from .. import envelope as envelope_mod
from ..audio import SAMPLE_RATE
from ..errors import RecipeError
from .base import ActionSpec, MagnitudeSpec, Param, Params
from .selection import resolve

NO_DAMAGE = "none"
"""``damage``'s value for a dream toward the selected layers' activation."""


def damage_choices() -> tuple[str, ...]:
    """What ``damage`` takes: ``none``, or any registered action that damages the model (read when asked)."""
    from . import ACTIONS

    return (NO_DAMAGE,) + tuple(name for name, spec in ACTIONS.items() if spec.kind != "input")


DEFAULTS = dreaming.Settings()

PARAMS: tuple[Param, ...] = (
    Param("iterations", "int", DEFAULTS.iterations, "gradient-ascent steps per octave (one forward-plus-backward "
          "pass of the model over the audio each)", min=1, max=200),
    Param("step", "float", DEFAULTS.step, "each step's size: the RMS of the change, as a share of the audio's RMS "
          "(the gradient is normalised by its own RMS)", min=0.001, max=0.5),
    Param("octaves", "int", DEFAULTS.octaves, "octaves of the pyramid, coarse to fine: at each coarser one the "
          "audio is resampled octave_scale times shorter (1: dream at the audio's own scale only)", min=1, max=6),
    Param("octave_scale", "float", DEFAULTS.octave_scale, "length ratio between neighbouring octaves", min=1.1,
          max=3.0),
    Param("jitter", "int", DEFAULTS.jitter, "random shift of the STFT frame grid before each step, up to this many "
          "samples (seeded): a dream robust to re-framing but much weaker (the models read phase; 0: dream in "
          "the frame grid the model hears the written audio with)", min=0, max=1023),
    Param("keep_onsets", "float", DEFAULTS.keep_onsets, "how much the dream keeps the input's onsets (its events "
          "in time): the weight of the correlation of the onset envelopes against the target's relative gain "
          "(0: raise the target freely, which adds attacks of its own on sustained music)", min=0.0, max=50.0),
    Param("damage", "choice", NO_DAMAGE, "dream toward another action's damage instead of an activation: the "
          "audio that action (on the chosen layers, at damage_magnitude) hurts most; none: raise the chosen "
          "layers' activation", choices=damage_choices),
    Param("damage_magnitude", "float", 0.0, "magnitude of that damage, in its action's range (0: its default)",
          min=0.0, max=10.0),
)

MAGNITUDE = ("depth: how far the audio moves from the input toward its dream (1 = all the way)", 0.0, 1.0, 1.0,
             (0.2, 0.4, 0.6, 0.8, 1.0))


def check_params(params: Params) -> None:
    """The damage magnitude must lie in the damaging action's range (the registry's ``check_params`` hook)."""
    values = dict(params)
    if values.get("damage", NO_DAMAGE) == NO_DAMAGE:
        return
    from . import get

    spec = get(values["damage"])
    magnitude = values.get("damage_magnitude", 0.0)
    m = spec.magnitude
    if magnitude != 0.0 and not m.min <= magnitude <= m.max:
        raise RecipeError(f"dream parameter damage_magnitude is {spec.name}'s magnitude ({m.meaning}): a number "
                          f"from {m.min:g} to {m.max:g} (0 for its default, {m.default:g}), got {magnitude:g}")


def settings(params: Params) -> dreaming.Settings:
    """The ascent's settings in a recipe's parameters."""
    return dreaming.settings_of(params)


@dataclass(frozen=True)
class Dreamed:
    """One dream of a job's audio (shared by every depth of a titration)."""

    audio: np.ndarray = field(repr=False)
    """The dreamed samples, before loudness matching."""
    target: str
    """What was raised: ``activation of conv_in:0,3`` or ``damage of fog at 0.05 on down``."""
    stats: dict


def _objective(model: keras.Model, recipe, source) -> tuple[tuple[Callable, int], str, bool]:
    params = dict(recipe.params)
    if params["damage"] != NO_DAMAGE:
        from . import damage as damage_model, get

        spec = get(params["damage"])
        magnitude = params["damage_magnitude"] or spec.magnitude.default
        damaged = damage_model(model, action=spec.name, magnitude=magnitude, seed=recipe.seed, layers=recipe.layers,
                               source=source)
        where = ",".join(recipe.layers) if recipe.layers else "its default layers"
        return dreaming.damage_objective(model, damaged), f"damage of {spec.name} at {magnitude:g} on {where}", False
    from . import default_layers

    targets = resolve(model, recipe.layers, default=default_layers(model, recipe.action))
    shown = ",".join(n if c is None else f"{n}:{','.join(map(str, c))}" for n, c in targets.items())
    return dreaming.activation_objective(model, targets), f"activation of {shown}", True


def prepare(model: keras.Model, audio: np.ndarray | None, recipes: Sequence, *,
            source: str | os.PathLike | None = None,
            progress: Callable[[float, str], None] | None = None) -> list[Dreamed]:
    """The registry's ``prepare`` hook: one dream per layer selection, seed and parameters (not per depth)."""
    if audio is None:
        raise RecipeError("a dream changes the input audio: render it with an input (senseflosser floss -i FILE)")
    keys = []
    for r in recipes:
        key = (r.layers, r.seed, r.params)
        if key not in keys:
            keys.append(key)
    found: dict[Any, Dreamed] = {}
    for k, key in enumerate(keys):
        recipe = next(r for r in recipes if (r.layers, r.seed, r.params) == key)
        objective, target, relative = _objective(model, recipe, source)
        lo, hi = k / len(keys), (k + 1) / len(keys)
        sub = None if progress is None else (lambda f, msg, lo=lo, hi=hi: progress(lo + (hi - lo) * f, msg))
        samples, stats = dreaming.dream_audio(audio, model, objective, settings(recipe.params), seed=recipe.seed,
                                              relative=relative, progress=sub)
        found[key] = Dreamed(samples, target, stats.to_dict())
    return [found[(r.layers, r.seed, r.params)] for r in recipes]


def render(model: keras.Model, audio: np.ndarray, recipe, *, prepared: Dreamed) -> np.ndarray:
    """The registry's ``render`` hook: the input moved ``magnitude`` (or the envelope's value) toward its dream,
    loudness matched to the input and soft-limited."""
    depth: float | np.ndarray = recipe.magnitude
    if recipe.envelope is not None:
        depth = envelope_mod.values_at(recipe.envelope, np.arange(len(audio)) / SAMPLE_RATE).astype(np.float32)
    return dreaming.mix(audio, prepared.audio, depth)


def provenance(prepared: Dreamed) -> dict:
    """The registry's ``provenance`` hook: what a manifest records of a dream."""
    return {"dream": {"target": prepared.target, **prepared.stats}}


SPEC = ActionSpec(
        name="dream",
        description="gradient ascent on the audio itself (the waveform, through the model's STFT) to raise what the "
                    "chosen layers or channels respond to, or the damage another action does: the sound the "
                    "network wants to hear",
        magnitude=MagnitudeSpec(*MAGNITUDE),
        changes="input", default_layers="all but output", params=PARAMS,
        prepare=prepare, render=render, provenance=provenance, check_params=check_params,
)
"""The registry entry of ``dream``."""
