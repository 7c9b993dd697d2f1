"""The flossing pipeline: one input, the normal output and one output per recipe.

:func:`floss` damages a fresh copy of the pristine model for every recipe (so a
titration never compounds), runs all of them chunk by chunk over the audio
(one STFT per chunk, shared), and measures each flossed output against the
normal one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import keras
import numpy as np

from . import actions, device, metrics
from .actions import worst_case
from .actions.base import with_weights
from .errors import AudioError, ModelError
from .models import check_model, input_frames, time_receptive_field
from . import envelope as envelope_mod
from .audio import SAMPLE_RATE
from .recipe import Recipe
from .spectral import DEFAULT_CHUNK_FRAMES, DEFAULT_CONTEXT_FRAMES, HOP, N_BINS, Chunk, n_frames, process

log = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
"""``progress(fraction, message)`` with ``fraction`` in [0, 1]."""

_HEADROOM = 0.999


@dataclass
class FlossedOutput:
    """One damaged output.

    Attributes
    ----------
    recipe : Recipe
    audio : np.ndarray, shape (n_samples,), float32
        Waveform at 22050 Hz, scaled down only if it would clip (see ``metrics["gain"]``).
    metrics : dict
        ``snr_db`` and ``lsd_db`` against the normal output, ``gain`` applied
        to avoid clipping (1.0 = none), ``peak`` and ``rms_db`` before that
        gain, ``nonfinite`` bins replaced by zero.
    model : keras.Model or None
        The damaged model, when asked for.
    """

    recipe: Recipe
    audio: np.ndarray
    metrics: dict
    model: keras.Model | None = None


@dataclass
class FlossResult:
    """Result of :func:`floss`.

    Attributes
    ----------
    normal : np.ndarray, shape (n_samples,), float32
        Output of the undamaged model.
    normal_metrics : dict
        ``gain``, ``peak``, ``rms_db`` of the normal output, and ``snr_db`` /
        ``lsd_db`` against the input.
    flossed : list of FlossedOutput
        One per recipe, in order.
    seconds : float
        Wall time of the run.
    """

    normal: np.ndarray
    normal_metrics: dict
    flossed: list[FlossedOutput] = field(default_factory=list)
    seconds: float = 0.0
    normal_raw: np.ndarray | None = None
    """The normal output before any clipping gain: what ``floss(..., normal=)`` takes back."""


_COMPILED_MAX = 64
"""Compiled functions kept per process (one per architecture; a lapse copy is one per rate and layers)."""
_compiled: OrderedDict[str, Callable] = OrderedDict()
_compiled_lock = threading.Lock()


def _architecture_key(model: keras.Model) -> str:
    """What a compiled inference function depends on: the architecture, not the weights.

    A lapse layer's ``rate``, ``seed`` and ``rescale`` only set its state,
    which is passed to the compiled function as an argument, so they are left
    out: lapse copies of the same layers share one function. The variables' paths
    and shapes are part of the key, so weights are only ever passed to a
    function built for the same variables in the same order.
    """
    config = model.get_config()
    for layer in config.get("layers", []):
        if layer.get("class_name") == "Lapse":
            for state in ("rate", "seed", "rescale"):  # passed in as state (see layers.Lapse)
                layer.get("config", {}).pop(state, None)
    variables = [(v.path, tuple(v.shape), str(v.dtype)) for v in model.trainable_variables]
    state = [(tuple(v.shape), str(v.dtype)) for v in model.non_trainable_variables]
    return json.dumps([config, variables, state], sort_keys=True, default=str)


def _compiled_call(model: keras.Model) -> Callable:
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


class _Runner:
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
    ) -> None:
        """Run ``model``, optionally with other values for some of its variables (the model is untouched).

        ``weights``: new weight arrays by layer name. ``state``: new values of
        non-trainable variables by variable path (a lapse layer's rate and
        seed, say). A model run with neither is the runner's own: its lapse
        masks restart from their seeds here, and :meth:`finish` leaves its
        state where the run left it.
        """
        self.model = model
        self.frames = input_frames(model)
        self._owns_state = weights is None and state is None
        if self._owns_state:
            # A lapse model's masks restart from its seed, so every run of it is reproducible.
            actions.reset(model)
        self.nonfinite = 0
        self._call = _compiled_call(model)
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

        self._weights = values(model.trainable_variables)
        self._state = values(model.non_trainable_variables)
        # Random seed generators' states (a lapse layer's masks), for reseed().
        self._seeds = [i for i, v in enumerate(model.non_trainable_variables) if v.name == "seed_generator_state"]
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
        for variable, value in zip(self.model.non_trainable_variables, self._state):
            variable.assign(value)


_SCRATCH_MAX = 32
"""Damaged architectures kept per process (one per source model, action and layers)."""
_scratch: OrderedDict[tuple, tuple[weakref.ref, keras.Model]] = OrderedDict()
_scratch_lock = threading.Lock()


def _scratch_model(model: keras.Model, recipe: Recipe) -> keras.Model | None:
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


def _damaged(model: keras.Model, recipe: Recipe, directions: dict, *, keep: bool = False):
    """``(runner, kept model or None)`` for one recipe at its (single) magnitude.

    A weight-only action (fog) runs the pristine architecture with new weights;
    one that changes the architecture (lapse) runs a shared damaged copy with
    the recipe's state. A model of its own is built only when it is to be kept.
    """
    recipe = replace(recipe, envelope=None)
    if recipe.on_input:
        weights = worst_case.apply_direction(
            model, actions.targets(model, recipe.action, recipe.layers),
            directions[(recipe.layers or (), recipe.seed)], magnitude=recipe.magnitude)
        if keep:
            kept = with_weights(model, weights)
            return _Runner(kept), kept
        return _Runner(model, weights), None
    if keep:
        kept = actions.apply(model, recipe)
        return _Runner(kept), kept
    scratch = _scratch_model(model, recipe)
    if scratch is None:
        return _Runner(model, actions.damaged_weights(model, recipe)), None
    return _Runner(scratch, state=actions.damaged_state(scratch, recipe)), None


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


class _EnvelopeRunner:
    """Renders a recipe whose magnitude follows an envelope, chunk by chunk.

    For the kept frames ``[k*h, (k+1)*h)`` of chunk ``k`` it runs the damaged
    model at the envelope's value at knots ``k`` and ``k + 1`` (the damage
    pattern fixed by the seed, only its size changing) and blends the two
    outputs frame by frame, linearly by the frame's place between the knots.
    The output therefore follows the envelope continuously, also within a
    chunk, and meets itself exactly at every knot: no seams.
    """

    def __init__(self, model: keras.Model, recipe: Recipe, directions: dict, plan: list[Chunk], knot: int) -> None:
        self.model, self.recipe, self.directions = model, recipe, directions
        self.plan, self.knot = plan, knot
        self.nonfinite = 0
        times = np.arange(0, plan[-1].keep_stop + knot + 1, knot) * HOP / SAMPLE_RATE
        self.knots = envelope_mod.values_at(recipe.envelope, times)
        self._runners: OrderedDict[float, _Runner] = OrderedDict()

    def _at(self, magnitude: float) -> _Runner:
        magnitude = float(magnitude)
        runner = self._runners.get(magnitude)
        if runner is None:
            runner = _damaged(self.model, replace(self.recipe, magnitude=magnitude), self.directions)[0]
            self._runners[magnitude] = runner
            while len(self._runners) > 4:
                self._runners.popitem(last=False)
        self._runners.move_to_end(magnitude)
        return runner

    def __call__(self, tensor: np.ndarray, index: int) -> np.ndarray:
        chunk = self.plan[index]
        k = chunk.keep_start // self.knot
        a = self._render(self.knots[k], tensor, index)
        b = a if self.knots[k + 1] == self.knots[k] else self._render(self.knots[k + 1], tensor, index)
        frames = np.arange(chunk.start, chunk.stop, dtype=np.float32)
        alpha = np.clip((frames - k * self.knot) / self.knot, 0.0, 1.0)[:, None, None]
        return ((1.0 - alpha) * a + alpha * b).astype(np.float32)

    def _render(self, magnitude: float, tensor: np.ndarray, index: int) -> np.ndarray:
        runner = self._at(magnitude)
        runner.reseed(index)
        before = runner.nonfinite
        out = runner(tensor, index)
        self.nonfinite += runner.nonfinite - before
        return out

    def finish(self) -> None:
        """Nothing to leave behind: every render ran on borrowed weights or state."""


def warm_up(model: keras.Model) -> None:
    """Run ``model`` once on a short silence through the path :func:`floss` takes.

    This builds the compiled function that every later run of that
    architecture shares (fogged copies included), so the first real job
    compiles nothing.
    """
    frames = input_frames(model) or 8
    runner = _Runner(model)
    runner(np.zeros((frames, N_BINS, 2), np.float32), 0)
    runner.finish()


def _fit_to_scale(y: np.ndarray) -> tuple[np.ndarray, dict]:
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    gain = 1.0 if peak <= _HEADROOM else _HEADROOM / peak
    out = y if gain == 1.0 else (y * gain).astype(np.float32)
    return out, {"gain": gain, "peak": peak, "rms_db": metrics.rms_db(y)}


def floss(
    audio: np.ndarray,
    model: keras.Model,
    recipes: Sequence[Recipe],
    *,
    progress: Progress | None = None,
    keep_models: bool = False,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    context: int | None = None,
    normal: tuple[np.ndarray, dict] | None = None,
) -> FlossResult:
    """Run the undamaged model and one damaged copy per recipe over a waveform.

    Parameters
    ----------
    audio : np.ndarray, shape (n_samples,)
        Mono waveform at 22050 Hz.
    model : keras.Model
        The pristine model, ``(batch, frames, 1025, 2)`` in and out. Never mutated.
    recipes : sequence of Recipe
        What to do to each copy (titrating = several magnitudes). May be empty.
        A recipe with ``on_input`` first searches its adversarial direction on
        this audio (once per layer selection and seed); one with an
        ``envelope`` is rendered knot by knot (see :class:`_EnvelopeRunner`),
        and then every output is computed on that plan.
    progress : callable or None, keyword-only
        Called as ``progress(fraction, message)`` while the work advances.
    keep_models : bool, keyword-only
        Keep each damaged model in its :class:`FlossedOutput` (to save it).
    chunk_frames, context : int, keyword-only
        Chunking of long audio (see :func:`senseflosser.spectral.plan_chunks`).
        For a fixed-length model the chunk is its input length. ``context=None``
        (the default) gives each chunk edge as many frames as the model can
        see (:func:`senseflosser.models.time_receptive_field`), at most
        :data:`~senseflosser.spectral.DEFAULT_CONTEXT_FRAMES`, and that many
        when the model's reach is unknown: enough for seamless output, no
        frames computed in vain.
    normal : (np.ndarray, dict) or None, keyword-only
        The normal output of this very waveform, model and chunking, as an
        earlier result's ``(normal_raw, normal_metrics)``: the undamaged pass
        is skipped and these are used instead (a re-run costs only the damaged
        passes). Same inputs give the same outputs, bit for bit, either way.

    Returns
    -------
    FlossResult

    Raises
    ------
    AudioError
        If the waveform is empty, not mono or not finite.
    ModelError
        If the model does not have the expected shape.
    """
    t0 = time.perf_counter()
    y = np.asarray(audio, dtype=np.float32)
    if y.ndim != 1 or y.size == 0:
        raise AudioError(f"expected a non-empty mono waveform, got shape {y.shape}")
    if not np.isfinite(y).all():
        raise AudioError("the waveform contains NaN or infinite samples")
    check_model(model, getattr(model, "name", "model"))
    if context is None:
        reach = time_receptive_field(model)
        context = DEFAULT_CONTEXT_FRAMES if reach is None else min(DEFAULT_CONTEXT_FRAMES, reach)
    fixed = input_frames(model)
    if fixed is not None:
        chunk_frames = fixed
        context = min(context, max(0, (fixed - 1) // 4))

    last = [0.0]

    def report(fraction: float, message: str) -> None:
        # Never step backwards, whatever rounding the stage arithmetic does.
        last[0] = min(1.0, max(last[0], fraction))
        if progress is not None:
            progress(last[0], message)

    report(0.0, "preparing damaged models")
    # Adversarial directions found on this input: one search per layer selection and seed, shared by
    # every magnitude of a titration.
    searches = sorted({(r.layers or (), r.seed) for r in recipes if r.on_input})
    directions = {}
    for k, (layers, seed) in enumerate(searches):
        lo, hi = 0.3 * k / len(searches), 0.3 * (k + 1) / len(searches)
        directions[(layers, seed)] = worst_case.direction_on_input(
            model, y, actions.targets(model, "adversarial", layers or None), seed=seed,
            progress=lambda f, msg, lo=lo, hi=hi: report(lo + (hi - lo) * f, msg),
        )
    start = 0.3 if searches else 0.0
    damaged: list[keras.Model | None] = []
    if normal is not None:
        normal_given = np.asarray(normal[0], dtype=np.float32)
        if normal_given.shape != y.shape:
            raise AudioError(f"the precomputed normal output has shape {normal_given.shape}, "
                             f"the waveform {y.shape}")
    runners: list = [] if normal is not None else [_Runner(model)]
    enveloped = any(r.envelope is not None for r in recipes)
    plan = None
    if enveloped:
        n = n_frames(len(y))
        plan, knot = envelope_plan(n, context=context, fixed=fixed)
    for i, recipe in enumerate(recipes):
        if recipe.envelope is not None:
            damaged.append(_damaged(model, recipe, directions)[1] if keep_models else None)
            runners.append(_EnvelopeRunner(model, recipe, directions, plan, knot))
        else:
            runner, dmg = _damaged(model, recipe, directions, keep=keep_models)
            runners.append(runner)
            damaged.append(dmg)
        report(start + 0.05 * (i + 1) / max(1, len(recipes)), f"damaged model {i + 1} of {len(recipes)}")

    def on_chunk(done: int, total: int) -> None:
        report(start + 0.05 + (0.9 - start) * done / total, f"processed chunk {done} of {total}")

    outputs = process(
        y, runners, chunk_frames=chunk_frames, context=context, exact=fixed is not None, on_chunk=on_chunk,
        chunks=plan,
    ) if runners else []
    for runner in runners:
        runner.finish()
    report(0.95, "measuring")
    if normal is not None:
        outputs.insert(0, normal_given)
        runners.insert(0, None)
        normal_raw = normal_given
        normal_out, normal_metrics = _fit_to_scale(normal_raw)
        normal_metrics = {**normal_metrics, **{k: v for k, v in dict(normal[1]).items()
                                              if k in ("snr_db", "lsd_db", "nonfinite")}}
    else:
        normal_raw = outputs[0]
        normal_out, normal_metrics = _fit_to_scale(normal_raw)
        normal_metrics.update(
            snr_db=metrics.snr_db(y, normal_raw),
            lsd_db=metrics.log_spectral_distance(y, normal_raw),
            nonfinite=runners[0].nonfinite,
        )
    result = FlossResult(normal=normal_out, normal_metrics=normal_metrics, normal_raw=normal_raw)
    # One spectrum of the normal output serves every flossed output's distance.
    lsds = metrics.log_spectral_distances(normal_raw, outputs[1:])
    for recipe, raw, lsd, runner, dmg in zip(recipes, outputs[1:], lsds, runners[1:], damaged):
        out, m = _fit_to_scale(raw)
        m.update(
            snr_db=metrics.snr_db(normal_raw, raw),
            lsd_db=lsd,
            nonfinite=runner.nonfinite,
        )
        result.flossed.append(FlossedOutput(recipe, out, m, dmg if keep_models else None))
    result.seconds = time.perf_counter() - t0
    report(1.0, "done")
    return result

