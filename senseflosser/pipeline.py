"""The flossing pipeline: one input, the normal output and one output per recipe.

:func:`floss` damages a fresh copy of the pristine model for every recipe (so a
titration never compounds), runs all of them chunk by chunk over the audio
(one STFT per chunk, shared), and measures each flossed output against the
normal one. How each model runs over the chunks is :mod:`senseflosser.runners`'s
concern.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from . import actions, activations, metrics
from .errors import AudioError
from .models import check_model, input_frames, time_receptive_field
from .recipe import Recipe
from .runners import EnvelopeRunner, Runner, damaged_runner, envelope_plan
from .spectral import DEFAULT_CHUNK_FRAMES, DEFAULT_CONTEXT_FRAMES, n_frames, plan_chunks, process

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

    @property
    def raw(self) -> np.ndarray:
        """The output before the gain that keeps it from clipping, shape (n_samples,)."""
        gain = self.metrics.get("gain") or 1.0
        return self.audio if gain == 1.0 else self.audio / gain


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
    provenance: list[dict] = field(default_factory=list)
    """Per recipe, what its action's prepared data records (adversarial: the direction's SHA-256)."""
    activations: list[activations.Frames | None] = field(default_factory=list)
    """With ``floss(..., activation_layer=)``: the normal output's activation frames, then each recipe's
    (``None`` where no model ran: a precomputed normal, an input action's output)."""
    pending: tuple | None = field(default=None, repr=False)
    """With ``floss(..., measure=False)``: what :func:`measure_distances` needs; ``None`` once they are in."""


def fit_to_scale(y: np.ndarray) -> tuple[np.ndarray, dict]:
    """``y`` scaled down only if it would clip, and its ``gain``, ``peak`` and ``rms_db`` (before the gain)."""
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    gain = 1.0 if peak <= _HEADROOM else _HEADROOM / peak
    out = y if gain == 1.0 else (y * gain).astype(np.float32)
    return out, {"gain": gain, "peak": peak, "rms_db": metrics.rms_db(y)}


class _Unchanged:
    """Stands in for the runner of an input action's output: no model ran, so no bin was replaced."""

    nonfinite = 0


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
    source: str | os.PathLike | None = None,
    activation_layer: str | None = None,
    measure: bool = True,
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
        An action with a ``prepare`` hook does its per-job work first (for
        adversarial on the input: its direction search on this audio, once per
        layer selection and seed); a recipe with an ``envelope`` is rendered
        knot by knot (see :class:`EnvelopeRunner`), and then every output is
        computed on that plan.
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
    source : path or None, keyword-only
        The model's file, beside which per-model data of an action lies
        (adversarial's stored direction).
    activation_layer : str or None, keyword-only
        A conv layer whose activation frames every model pass also records
        (see :mod:`senseflosser.activations`), in ``result.activations``.
    measure : bool, keyword-only
        Measure the distances (``snr_db``, ``lsd_db``) now. ``False`` returns
        the audio as soon as it is made and leaves them to :func:`measure_distances`
        (a job writes its audio first, so a listener does not wait for them);
        the figures are the same either way.

    Returns
    -------
    FlossResult

    Raises
    ------
    AudioError
        If the waveform is empty, not mono or not finite.
    ModelError
        If the model does not have the expected shape.
    RecipeError
        If ``activation_layer`` is not one of the model's conv layers.
    """
    t0 = time.perf_counter()
    y = np.asarray(audio, dtype=np.float32)
    if y.ndim != 1 or y.size == 0:
        raise AudioError(f"expected a non-empty mono waveform, got shape {y.shape}")
    if not np.isfinite(y).all():
        raise AudioError("the waveform contains NaN or infinite samples")
    check_model(model, getattr(model, "name", "model"))
    tap = None
    if activation_layer is not None:
        from .models import conv_layer_names

        tap = activations.check_layer(activation_layer, conv_layer_names(model), model_name=model.name)
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
    hooked = any(actions.get(r.action).prepare is not None for r in recipes)
    # An input action (dream) does most of a job's work in its hook; other hooks take a short search at most.
    changed = [actions.get(r.action).kind == "input" for r in recipes]
    share = 0.85 if any(changed) else 0.3
    prepared = actions.prepare(model, y, recipes, source=source,
                               progress=lambda f, msg: report(share * f, msg)) if hooked else [None] * len(recipes)
    start = share if hooked else 0.0
    damaged: list[keras.Model | None] = []
    if normal is not None:
        normal_given = np.asarray(normal[0], dtype=np.float32)
        if normal_given.shape != y.shape:
            raise AudioError(f"the precomputed normal output has shape {normal_given.shape}, "
                             f"the waveform {y.shape}")
    runners: list = [] if normal is not None else [Runner(model, tap=tap)]
    enveloped = any(r.envelope is not None for r in recipes)
    plan = None
    if enveloped:
        n = n_frames(len(y))
        plan, knot = envelope_plan(n, context=context, fixed=fixed)
    for i, (recipe, ready) in enumerate(zip(recipes, prepared)):
        if changed[i]:  # the audio itself changes (rendered below); no model is damaged
            damaged.append(None)
            continue
        if recipe.envelope is not None:
            damaged.append(damaged_runner(model, recipe, ready, keep=True)[1] if keep_models else None)
            runners.append(EnvelopeRunner(model, recipe, ready, plan, knot, tap=tap))
        else:
            runner, dmg = damaged_runner(model, recipe, ready, keep=keep_models, tap=tap)
            runners.append(runner)
            damaged.append(dmg)
        report(start + 0.05 * (i + 1) / max(1, len(recipes)), f"damaged model {i + 1} of {len(recipes)}")

    def on_chunk(done: int, total: int) -> None:
        report(start + 0.05 + (0.9 - start) * done / total, f"processed chunk {done} of {total}")

    if tap is not None and runners:
        if plan is None:  # the plan process() would make, so that each recorder knows the kept frames
            plan = plan_chunks(n_frames(len(y)), chunk_frames=chunk_frames, context=context, exact=fixed is not None)
        for runner in runners:
            runner.recorder = activations.Recorder(plan, tap)
    outputs = process(
        y, runners, chunk_frames=chunk_frames, context=context, exact=fixed is not None, on_chunk=on_chunk,
        chunks=plan,
    ) if runners else []
    for runner in runners:
        runner.finish()
    if any(changed):  # put each input action's output where a damaged model's would be
        lead = 0 if normal is not None else 1
        spectral_outputs, spectral_runners = iter(outputs[lead:]), iter(runners[lead:])
        outputs, runners = outputs[:lead], runners[:lead]
        for recipe, ready, own in zip(recipes, prepared, changed):
            if own:
                outputs.append(actions.get(recipe.action).render(model, y, recipe, prepared=ready))
                runners.append(_Unchanged())
            else:
                outputs.append(next(spectral_outputs))
                runners.append(next(spectral_runners))
    frames = [getattr(r, "recorder", None) for r in runners]
    frames = ([None] if normal is not None else []) + [rec.frames() if rec is not None else None for rec in frames]
    report(0.95, "measuring")
    if normal is not None:
        outputs.insert(0, normal_given)
        runners.insert(0, None)
        normal_raw = normal_given
        normal_out, normal_metrics = fit_to_scale(normal_raw)
        normal_metrics = {**normal_metrics, **{k: v for k, v in dict(normal[1]).items()
                                              if k in ("snr_db", "lsd_db", "nonfinite")}}
    else:
        normal_raw = outputs[0]
        normal_out, normal_metrics = fit_to_scale(normal_raw)
    result = FlossResult(normal=normal_out, normal_metrics=normal_metrics, normal_raw=normal_raw)
    for recipe, raw, dmg in zip(recipes, outputs[1:], damaged):
        out, m = fit_to_scale(raw)
        result.flossed.append(FlossedOutput(recipe, out, m, dmg if keep_models else None))
    result.pending = (y, outputs[1:], normal is not None,
                      None if normal is not None else runners[0].nonfinite, [r.nonfinite for r in runners[1:]])
    result.provenance = [actions.provenance(r, p) for r, p in zip(recipes, prepared)]
    if tap is not None:
        result.activations = frames
    if measure:
        measure_distances(result)
    result.seconds = time.perf_counter() - t0
    report(1.0, "done")
    return result


def measure_distances(result: FlossResult) -> FlossResult:
    """Put in the distances ``floss(..., measure=False)`` left out; returns ``result`` (a no-op once measured).

    In one sweep, one spectrum per signal: the normal output against the
    input (unless it came from the cache, with its figures), every damaged
    output against the normal one (``snr_db``, ``lsd_db``, and each output's
    ``nonfinite`` count beside them, in the order :func:`floss` gives them).
    """
    if result.pending is None:
        return result
    y, raws, cached, normal_nonfinite, nonfinite = result.pending
    normal_raw = result.normal_raw
    flossed_pairs = [(1, k + 2) for k in range(len(raws))]
    lsds = metrics.log_spectral_distance_table(
        [y, normal_raw, *raws], flossed_pairs if cached else [(0, 1), *flossed_pairs])
    if not cached:
        result.normal_metrics.update(snr_db=metrics.snr_db(y, normal_raw), lsd_db=lsds.pop(0),
                                     nonfinite=normal_nonfinite)
    for out, raw, lsd, bad in zip(result.flossed, raws, lsds, nonfinite):
        out.metrics.update(snr_db=metrics.snr_db(normal_raw, raw), lsd_db=lsd, nonfinite=bad)
    result.pending = None
    return result

