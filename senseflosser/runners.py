"""How models run over chunks: compiled inference shared per architecture, and damaged runs.

A :class:`Runner` calls one model on the chunk tensors :func:`senseflosser.spectral.process`
hands it, through one compiled function per architecture with the weights and state
passed in, so a warm job compiles nothing and builds no model (:func:`compiled_stats`
says what a process has compiled). :func:`damaged_runner` makes the runner of one
recipe (new weights for the pristine architecture, or a shared damaged copy's state);
an :class:`EnvelopeRunner` renders a recipe whose magnitude follows an envelope, knot by
knot, blended without seams. :func:`senseflosser.pipeline.floss` puts them together.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from . import actions, activations, device
from . import envelope as envelope_mod
from .audio import SAMPLE_RATE
from .errors import ModelError
from .models import input_frames
from .spectral import HOP, N_BINS, Chunk

_COMPILED_MAX = 64
"""Compiled functions kept per process (one per architecture; a lapse copy is one per rate and layers)."""
_compiled: OrderedDict[str, Callable] = OrderedDict()
_compiled_lock = threading.Lock()


def _architecture_key(model: keras.Model) -> str:
    """What a compiled inference function depends on: the architecture, not the weights.

    A layer's configuration entries that only set its state (those its class
    names in ``STATE_CONFIG``: a lapse layer's ``rate``, ``seed`` and
    ``rescale``, a bend's ``amount`` and ``centre``) are left out, since the
    state is passed to the compiled function as an argument: copies of the same
    layers share one function. The variables' paths and shapes are part of the
    key, so weights are only ever passed to a function built for the same
    variables in the same order.
    """
    config = model.get_config()
    stateful = {layer.name: getattr(layer, "STATE_CONFIG", ()) for layer in model.layers}
    for layer in config.get("layers", []):
        for state in stateful.get(layer.get("name"), ()):  # passed in as state (see layers.Lapse, bends.Bend)
            layer.get("config", {}).pop(state, None)
    variables = [(v.path, tuple(v.shape), str(v.dtype)) for v in model.trainable_variables]
    state = [(tuple(v.shape), str(v.dtype)) for v in model.non_trainable_variables]
    return json.dumps([config, variables, state], sort_keys=True, default=str)


def compiled_call(model: keras.Model) -> Callable:
    """The compiled inference function for ``model``'s architecture (built on first use, then shared)."""
    key = _architecture_key(model)
    with _compiled_lock:
        fn = _compiled.get(key)
        if fn is not None:
            _compiled.move_to_end(key)
            return fn
        fn = device.compile_stateless(model)
        _compiled[key] = fn
        while len(_compiled) > _COMPILED_MAX:
            _compiled.popitem(last=False)
        return fn


def compiled_stats() -> dict[str, int]:
    """What this process has compiled: ``functions`` (one per architecture) and ``traces`` (all of them).

    A warm worker's figures stay put from job to job; growth means a job
    builds something it should share.
    """
    with _compiled_lock:
        functions = list(_compiled.values())
    return {"functions": len(functions), "traces": sum(device.trace_count(f) for f in functions)}


class Runner:
    """Calls one model on chunk tensors, padding chunks to a fixed-length model's size.

    The model runs through a compiled function shared by every model of its
    architecture (see :func:`senseflosser.device.compile_stateless`), its
    weights and state passed in: a warm job compiles nothing, whatever the
    damaged weights or the chunk lengths.
    """

    def __init__(
        self,
        model: keras.Model,
        weights: dict[str, list[np.ndarray]] | None = None,
        state: dict[str, np.ndarray] | None = None,
        *,
        tap: str | None = None,
    ) -> None:
        """Run ``model``, optionally with other values for some of its variables (the model is untouched).

        ``weights``: new weight arrays by layer name. ``state``: new values of
        non-trainable variables by variable path (a lapse layer's rate and
        seed, say). A model run with neither is the runner's own: its lapse
        masks restart from their seeds here, and :meth:`finish` leaves its
        state where the run left it. ``tap``: a conv layer whose pooled
        activation each call also computes, in the same pass (see
        :mod:`senseflosser.activations`): kept as ``last_frames`` and handed to
        ``recorder`` (an :class:`~senseflosser.activations.Recorder`, when set).
        """
        self.model = model
        self.frames = input_frames(model)
        self._owns_state = weights is None and state is None
        if self._owns_state:
            # A lapse model's masks restart from its seed, so every run of it is reproducible.
            actions.reset(model)
        self.nonfinite = 0
        self.tap = tap
        self.last_frames: tuple[np.ndarray, np.ndarray] | None = None
        self.recorder: activations.Recorder | None = None
        # A tapped view shares the model's variables (by identity), so the values below serve either.
        self._run = activations.tapped(model, tap) if tap else model
        self._call = compiled_call(self._run)
        replaced = {}
        for name, arrays in (weights or {}).items():
            for variable, array in zip(model.get_layer(name).weights, arrays):
                replaced[id(variable)] = array
        by_path = {v.path: v for v in model.non_trainable_variables}
        if state and len(by_path) != len(model.non_trainable_variables):
            raise ModelError(f"model {model.name!r} has state variables that share a path")
        for path, value in (state or {}).items():
            if path not in by_path:
                raise ModelError(f"model {model.name!r} has no state variable {path!r}")
            replaced[id(by_path[path])] = value

        def values(variables):
            return [keras.ops.convert_to_tensor(replaced.get(id(v), v.value)) for v in variables]

        self._weights = values(self._run.trainable_variables)
        self._state = values(self._run.non_trainable_variables)
        # Random seed generators' states (a lapse layer's masks), for reseed().
        self._seeds = [i for i, v in enumerate(self._run.non_trainable_variables) if v.name == "seed_generator_state"]
        self._seed_starts = [keras.ops.convert_to_numpy(self._state[i]) for i in self._seeds]

    def reseed(self, counter: int) -> None:
        """Point every seed generator at draw ``counter`` of its seed's stream (its seed kept).

        Renders of one chunk at several magnitudes then draw the same random
        numbers (a lapse mask only thresholded differently), while each chunk
        draws its own.
        """
        for i, start in zip(self._seeds, self._seed_starts):
            value = np.array(start, copy=True)
            value[1] = counter
            self._state[i] = keras.ops.convert_to_tensor(value)

    def __call__(self, tensor: np.ndarray, index: int) -> np.ndarray:
        n = tensor.shape[0]
        x = tensor[None]
        if self.frames is not None and n < self.frames:
            x = np.concatenate([x, np.zeros((1, self.frames - n) + tensor.shape[1:], np.float32)], axis=1)
        out, self._state = self._call(self._weights, self._state, x)
        if self.tap:
            out, channels, profile = out
            total = x.shape[1]
            self.last_frames = (activations.at_frames(keras.ops.convert_to_numpy(channels)[0], n, total),
                                activations.at_frames(keras.ops.convert_to_numpy(profile)[0], n, total))
            if self.recorder is not None:
                self.recorder.add(index, *self.last_frames)
        y = keras.ops.convert_to_numpy(out)[0, :n]
        bad = ~np.isfinite(y)
        if bad.any():
            self.nonfinite += int(bad.sum())
            y = np.where(bad, 0.0, y).astype(np.float32)
        return y

    def finish(self) -> None:
        """Leave the model's state (a lapse model's seed generators) where the run left it."""
        if not self._owns_state:
            return
        for variable, value in zip(self._run.non_trainable_variables, self._state):
            variable.assign(value)


_SCRATCH_MAX = 32
"""Damaged architectures kept per process (one per source model, action and layers)."""
_scratch: OrderedDict[tuple, tuple[weakref.ref, keras.Model]] = OrderedDict()
_scratch_lock = threading.Lock()


def scratch_model(model: keras.Model, recipe) -> keras.Model | None:
    """The shared copy of ``model`` with the architecture ``recipe``'s action builds, or ``None`` (weights only).

    Built once per source model, action and layers, then run with each
    recipe's magnitude and seed passed in as state: a job builds no model and
    no variables. (Every new Keras variable name costs TensorFlow memory for
    the rest of the process, so a model built per job leaked.) The copy is
    never mutated, so concurrent jobs can share it.
    """
    key = (id(model), recipe.action, recipe.layers)
    with _scratch_lock:
        hit = _scratch.get(key)
        if hit is not None and hit[0]() is model:
            _scratch.move_to_end(key)
            return hit[1]
    damaged = actions.architecture(model, recipe)
    if damaged is None:
        return None
    with _scratch_lock:
        _scratch[key] = (weakref.ref(model), damaged)
        while len(_scratch) > _SCRATCH_MAX:
            _scratch.popitem(last=False)
    return damaged


def damaged_runner(model: keras.Model, recipe, prepared: Any = None, *, keep: bool = False, tap: str | None = None):
    """``(runner, kept model or None)`` for one (checked) recipe at its (single) magnitude.

    A weight-only action (fog) runs the pristine architecture with new weights;
    one that changes the architecture (lapse) runs a shared damaged copy with
    the recipe's state. A model of its own is built only when it is to be kept.
    ``prepared`` is what the action's ``prepare`` hook gave this recipe;
    ``tap`` a layer whose activation frames the runner also computes (see :class:`Runner`).
    """
    recipe = recipe.derive(envelope=None)
    if keep:
        kept = actions.apply(model, recipe, prepared=prepared)
        return Runner(kept, tap=tap), kept
    scratch = scratch_model(model, recipe)
    if scratch is None:
        return Runner(model, actions.damaged_weights(model, recipe, prepared), tap=tap), None
    return Runner(scratch, state=actions.damaged_state(scratch, recipe), tap=tap), None


KNOT_FRAMES = 16
"""Frames between an envelope's knots (about 0.74 s): the damage is rendered at the envelope's value at
each knot, and every frame between two knots blends the two renders in proportion to its place."""


def envelope_plan(n: int, *, context: int, fixed: int | None) -> tuple[list[Chunk], int]:
    """Chunks whose kept frames run from one envelope knot to the next: ``(chunks, knot spacing)``.

    Each chunk carries ``context`` frames on both sides, so its kept frames
    are what a single pass would give. A fixed-length model gets chunks of
    its input length, and knots as far apart as its length allows.
    """
    knot = KNOT_FRAMES if fixed is None else max(1, min(fixed - 2 * context, fixed))
    chunks = []
    for k0 in range(0, n, knot):
        k1 = min(n, k0 + knot)
        if fixed is None:
            start, stop = max(0, k0 - context), min(n, k1 + context)
        else:
            start = max(0, min(k0 - context, n - fixed))
            stop = min(n, start + fixed)
        chunks.append(Chunk(start, stop, k0, k1))
    return chunks, knot


class EnvelopeRunner:
    """Renders a recipe whose magnitude follows an envelope, chunk by chunk.

    For the kept frames ``[k*h, (k+1)*h)`` of chunk ``k`` it runs the damaged
    model at the envelope's value at knots ``k`` and ``k + 1`` (the damage
    pattern fixed by the seed, only its size changing) and blends the two
    outputs frame by frame, linearly by the frame's place between the knots.
    The output therefore follows the envelope continuously, also within a
    chunk, and meets itself exactly at every knot: no seams.
    """

    def __init__(self, model: keras.Model, recipe, prepared: Any, plan: list[Chunk], knot: int, *,
                 tap: str | None = None) -> None:
        self.model, self.recipe, self.prepared = model, recipe, prepared
        self.plan, self.knot = plan, knot
        self.nonfinite = 0
        self.tap = tap  # activation frames blended as the audio is (see Runner)
        self.recorder: activations.Recorder | None = None
        times = np.arange(0, plan[-1].keep_stop + knot + 1, knot) * HOP / SAMPLE_RATE
        self.knots = envelope_mod.values_at(recipe.envelope, times)
        self._runners: OrderedDict[float, Runner] = OrderedDict()

    def _at(self, magnitude: float) -> Runner:
        magnitude = float(magnitude)
        runner = self._runners.get(magnitude)
        if runner is None:
            runner = damaged_runner(self.model, self.recipe.derive(magnitude=magnitude), self.prepared, tap=self.tap)[0]
            self._runners[magnitude] = runner
            while len(self._runners) > 4:
                self._runners.popitem(last=False)
        self._runners.move_to_end(magnitude)
        return runner

    def __call__(self, tensor: np.ndarray, index: int) -> np.ndarray:
        chunk = self.plan[index]
        k = chunk.keep_start // self.knot
        a, fa = self._render(self.knots[k], tensor, index)
        b, fb = (a, fa) if self.knots[k + 1] == self.knots[k] else self._render(self.knots[k + 1], tensor, index)
        frames = np.arange(chunk.start, chunk.stop, dtype=np.float32)
        alpha = np.clip((frames - k * self.knot) / self.knot, 0.0, 1.0)[:, None, None]
        if self.recorder is not None:
            w = alpha[:, :, 0]
            self.recorder.add(index, *[((1.0 - w) * p + w * q).astype(np.float32) for p, q in zip(fa, fb)])
        return ((1.0 - alpha) * a + alpha * b).astype(np.float32)

    def _render(self, magnitude: float, tensor: np.ndarray, index: int) -> tuple[np.ndarray, Any]:
        runner = self._at(magnitude)
        runner.reseed(index)
        before = runner.nonfinite
        out = runner(tensor, index)
        self.nonfinite += runner.nonfinite - before
        return out, runner.last_frames

    def finish(self) -> None:
        """Nothing to leave behind: every render ran on borrowed weights or state."""


def warm_up(model: keras.Model, *, tap: str | None = None) -> None:
    """Run ``model`` once on a short silence through the path :func:`floss` takes.

    This builds the compiled function that every later run of that
    architecture shares (fogged copies included), so the first real job
    compiles nothing; with ``tap``, also the one that records that layer's
    activation frames (see :class:`Runner`).
    """
    frames = input_frames(model) or 8
    for layer in (None, tap) if tap else (None,):
        runner = Runner(model, tap=layer)
        runner(np.zeros((frames, N_BINS, 2), np.float32), 0)
        runner.finish()
