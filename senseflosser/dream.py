"""Dreaming: gradient ascent on the input audio to raise what a target of the model responds to.

A dream changes the audio, not the model. Its target is

- a selection of the model's conv layers and channels (whole layers, channel
  sets, clusters resolved to channels at the edge): the ascent raises the mean
  activation of the chosen channels of each chosen layer (each layer's term
  divided by its value on the input, so layers weigh alike), or
- *the damage itself*: another action's damaged copy of the model, and the
  ascent raises the distance between its output and the normal output
  (compressed as training compresses spectra): "the sound this damage hurts most".

What is optimised is what will be heard. The ascent runs on the **waveform**,
through a differentiable STFT made of ``keras.ops`` (the model's own
analysis: n_fft 2048, hop 1024, periodic Hann, centre zero-padding), so the
written audio is exactly what was optimised. (Ascent on a magnitude
spectrogram with the old phase kept raises the target in the spectrogram but
hardly at all once the audio is resynthesised and analysed again: a modified
magnitude with an old phase is not a consistent spectrogram.)

Each step moves the waveform by ``step`` times its RMS along the gradient,
weighted bin by bin by the audio's own STFT magnitude (so the dream grows what
the audio holds instead of filling its quiet bins with noise: the compressed
analysis gives those bins large gradients) and normalised by its RMS, then
re-imposes the RMS it started with, so the level never drifts. The ascent
starts from the input plus one step's worth of seeded noise shaped like the
audio, so each seed dreams its own way. By default the objective also holds
an *onset term* (:func:`keep_onsets`): the correlation of the audio's onset
envelope with the input's, weighed ``keep_onsets`` against the target's
relative gain. Without it a dream adds attacks of its own where the input held
notes (on sparse orchestral music the onset envelope's correlation with the
input's fell to 0.1-0.6); with it the ascent climbs along directions that keep
the music's events (0.6-1.0 on held-out music and speech, most of them 0.9 or more). ``jitter`` shifts the STFT's frame
grid by a random number of samples (up to it) before each step. Measured on
the shipped models, the gain a dream makes is specific to the frame grid the
model analyses the written audio with: a jitter of 4 samples halved it, 16
took it all (the models read phase), so the default is 0, and jitter is the
knob that trades the dream's strength for robustness to re-framing. Octaves
run coarse to fine: at octave ``k`` from the finest the audio is resampled
``octave_scale ** k`` times shorter (the model hears it faster and higher),
dreamed, and the change it gained is resampled back and carried to the next
octave, a Laplacian-style pyramid on the audio.

Long audio is dreamed in chunks (about 10 s, with 1 s overlaps cross-faded by
a sin²/cos² pair), so memory is bounded by the chunk, whatever the length; a
model with a fixed input length gets chunks of that length. Each chunk's
random numbers come from ``(seed, chunk index)``: the same recipe gives the
same samples, bit for bit, on the same machine.

The result is loudness matched to the input (RMS) and passed through a soft
look-ahead limiter whose ceiling is :data:`CEILING` (-1 dBFS): no sample
reaches full scale, and nothing is min-max scaled or hard-clipped.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
from keras import ops
from scipy import ndimage, signal

from . import device
from .audio import SAMPLE_RATE
from .errors import ModelError, RecipeError
from .models import input_frames
from .spectral import HOP, N_FFT, n_frames

CEILING = 10 ** (-1.0 / 20.0)
"""The limiter's ceiling: -1 dBFS. No written sample exceeds it."""
CHUNK_SECONDS = 10.0
"""Length of a dreamed chunk for a model that takes any length (plus the overlap)."""
OVERLAP_SECONDS = 1.0
"""Overlap of consecutive chunks, cross-faded."""
LIMITER_LOOKAHEAD = 256
"""Half-width (samples) of the limiter's gain smoothing: its gain moves over about 46 ms."""
_POWER = 0.3  # the damage target compares spectra compressed to |X|**0.3, as training does
_EPS = 1e-7

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class Settings:
    """How a dream ascends (the dream action's declared parameters)."""

    octaves: int = 1
    octave_scale: float = 1.4
    iterations: int = 20
    step: float = 0.015
    jitter: int = 0
    follow: float = 1.0
    """Power of the audio's own STFT magnitude that weights each step (see :func:`_follow`); 0: the raw gradient."""
    keep_onsets: float = 1.0
    """Weight of the onset term (see :func:`keep_onsets`) against the target's relative gain; 0: no onset term."""


@dataclass
class Stats:
    """What a dream did: gradient passes, audio they covered, and the objective before and after."""

    passes: int = 0
    """Forward-plus-backward passes of the model (one per chunk and step)."""
    pass_seconds: float = 0.0
    """Seconds of audio those passes covered (a chunk's length per pass)."""
    seconds: float = 0.0
    """Wall time of the ascent."""
    start: list[float] = field(default_factory=list)
    """Per chunk, the weighted objective on the input (1.0 per term for a selection: terms are relative)."""
    end: list[float] = field(default_factory=list)
    """Per chunk, the weighted objective at the last step."""
    onsets: list[float] = field(default_factory=list)
    """Per chunk with an onset term, the correlation of its onset envelope with the input's at the last step."""

    def to_dict(self) -> dict[str, Any]:
        start, end = float(np.mean(self.start)) if self.start else 0.0, float(np.mean(self.end)) if self.end else 0.0
        out = {"passes": self.passes, "pass_seconds": round(self.pass_seconds, 3), "chunks": len(self.start),
               "objective_start": start, "objective_end": end}
        if self.onsets:
            out["onset_correlation_end"] = round(float(np.mean(self.onsets)), 4)
        return out


# ---------------------------------------------------------------- the differentiable analysis

def model_tensor(padded):
    """The model tensor ``(1, frames, 1025, 2)`` of an already padded waveform, in ``keras.ops`` (differentiable).

    ``padded`` holds ``(frames - 1) * HOP + N_FFT`` samples; the frames are
    those of :func:`senseflosser.spectral.stft` when the signal sits at offset
    ``N_FFT // 2`` with zeros around it.
    """
    real, imag = ops.stft(padded, sequence_length=N_FFT, sequence_stride=HOP, fft_length=N_FFT, window="hann",
                          center=False)
    return ops.expand_dims(ops.stack([real, imag], axis=-1), 0)


def pad_for_model(x: np.ndarray, shift: int, frames: int | None) -> tuple[np.ndarray, int]:
    """``(padded, offset)``: ``x`` placed at ``N_FFT // 2 - shift`` in zeros covering ``frames`` frames.

    ``frames=None``: as many frames as :func:`senseflosser.spectral.n_frames` gives ``len(x)``.
    """
    f = n_frames(len(x)) if frames is None else frames
    buf = np.zeros((f - 1) * HOP + N_FFT, np.float32)
    off = N_FFT // 2 - shift
    buf[off:off + len(x)] = x
    return buf, off


# ---------------------------------------------------------------- targets

def _compressed(x):
    mag = ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True) + _EPS)
    return x * ops.power(mag, _POWER - 1.0)


def activation_objective(model: keras.Model, targets: dict[str, tuple[int, ...] | None]) -> tuple[Callable, int]:
    """``(objective, terms)``: the mean activation of each target layer's chosen channels, from a padded waveform.

    Raises
    ------
    RecipeError
        If the selection chooses no channel.
    """
    names = list(targets)
    if not names:
        raise RecipeError("the dream's target has no layers: name conv layers (and channels) with --layers")
    for name, channels in targets.items():
        if channels is not None and not channels:
            raise RecipeError(f"the dream's target {name!r} has no channels: name some, e.g. '{name}:0,5'")
    feature = keras.Model(model.inputs, [model.get_layer(n).output for n in names], name=f"{model.name}_dream")
    picks = [None if targets[n] is None else np.asarray(targets[n], np.int32) for n in names]

    def objective(padded, reference=None):
        outs = feature([model_tensor(padded)], training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        terms = [ops.mean(a if p is None else ops.take(a, p, axis=-1)) for a, p in zip(outs, picks)]
        return ops.stack(terms)

    return objective, len(names)


def damage_objective(model: keras.Model, damaged: keras.Model) -> tuple[Callable, int]:
    """``(objective, 1)``: the distance between ``damaged``'s and ``model``'s compressed outputs, from a padded waveform."""

    def objective(padded, reference=None):
        x = model_tensor(padded)
        a = damaged(x, training=False)
        b = model(x, training=False)
        return ops.reshape(ops.mean(ops.square(_compressed(a) - _compressed(b))), (1,))

    return objective, 1


ONSET_HOP = 512
"""Hop of the onset envelope (librosa's onset-strength default), in samples."""
ONSET_MELS = 128
ONSET_TOP_DB = 80.0


@functools.cache
def _mel_matrix() -> np.ndarray:
    """librosa's mel filter bank at the onset envelope's settings, ``(1025, 128)``."""
    import librosa

    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=ONSET_MELS).T.astype(np.float32)


def onset_envelope(padded):
    """The onset-strength envelope of a padded waveform, in ``keras.ops`` (differentiable).

    As :func:`librosa.onset.onset_strength` computes it by default: a
    128-band mel power spectrogram (n_fft 2048, hop 512), in dB floored 80 dB
    under its peak, its rise from frame to frame (negative rises dropped),
    averaged over the bands. Shape ``(frames - 1,)``.
    """
    real, imag = ops.stft(padded, sequence_length=N_FFT, sequence_stride=ONSET_HOP, fft_length=N_FFT,
                          window="hann", center=False)
    mel = ops.matmul(ops.square(real) + ops.square(imag), ops.convert_to_tensor(_mel_matrix()))
    db = 10.0 * ops.log(ops.maximum(mel, 1e-10)) / np.log(10.0)
    db = ops.maximum(db, ops.max(db) - ONSET_TOP_DB)
    return ops.mean(ops.relu(db[1:] - db[:-1]), axis=-1)


def _correlation(a, b):
    a = a - ops.mean(a)
    b = b - ops.mean(b)
    return ops.sum(a * b) / (ops.sqrt(ops.sum(ops.square(a)) * ops.sum(ops.square(b))) + 1e-12)


def keep_onsets(objective: tuple[Callable, int]) -> tuple[Callable, int]:
    """``objective`` with one term more: the correlation of the audio's onset envelope with the reference's.

    What a listener hears as *the same music* is, first, its events in time;
    a dream that raises its target freely adds attacks of its own (on held
    notes above all), so its onset envelope stops following the input's. The
    ascent weighs this term against the target (:func:`dream_chunk`), so it
    climbs toward the target along directions that keep the input's onsets.
    """
    fn, terms = objective

    def with_onsets(padded, reference):  # reference: the input's onset envelope (see dream_chunk)
        kept = _correlation(onset_envelope(padded), reference)
        return ops.concatenate([fn(padded, reference), ops.reshape(kept, (1,))])

    return with_onsets, terms + 1


# ---------------------------------------------------------------- the ascent

def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _resample(x: np.ndarray, n: int) -> np.ndarray:
    if n == len(x):
        return x.astype(np.float32, copy=True)
    return signal.resample(x.astype(np.float64), n).astype(np.float32)


def dream_chunk(x0: np.ndarray, grad: Callable, terms: int, settings: Settings, rng: np.random.Generator, *,
                frames: int | None, stats: Stats, relative: bool = True, onsets: bool = False) -> np.ndarray:
    """Dream one chunk of audio (see the module's description); returns the new samples.

    Parameters
    ----------
    x0 : np.ndarray, shape (n,)
    grad : callable
        From :func:`senseflosser.device.compile_input_gradient` of an objective.
    terms : int
        Number of the objective's terms.
    settings : Settings
    rng : np.random.Generator
        This chunk's random numbers (the frame-grid shifts).
    frames : int or None, keyword-only
        A fixed-length model's frame count.
    stats : Stats
        Updated with the passes run.
    relative : bool, keyword-only
        Divide each term by its value on the input (so layers weigh alike).
    onsets : bool, keyword-only
        The objective's last term is :func:`keep_onsets`' correlation: it is
        weighed ``settings.keep_onsets`` times the number of target terms (each
        target term is then relative, so losing 0.1 of the correlation at
        weight 1 costs what a tenth of the target's gain brings).
    """
    x0 = np.asarray(x0, np.float32)
    n = len(x0)
    if _rms(x0) == 0.0:  # silence stays silent (there is no level to move by)
        stats.start.append(0.0)
        stats.end.append(0.0)
        return x0.copy()
    weights = np.ones(terms, np.float32)
    targets = terms - 1 if onsets else terms
    first = True
    detail = None
    value = 0.0
    last = None
    for k in range(settings.octaves - 1, -1, -1):
        size = n if k == 0 else max(HOP, int(round(n / settings.octave_scale ** k)))
        base = _resample(x0, size)
        x = base + (_resample(detail, size) if detail is not None else 0.0)
        level = _rms(base)
        if detail is None:  # the seeded start: one step's worth of noise, shaped like the audio
            noise = rng.standard_normal(size).astype(np.float32)
            if settings.follow:
                noise = _follow(noise, x, settings.follow)
            x = _step(x, noise, settings.step * level, level)
        references: dict[int, np.ndarray] = {}  # the input's onset envelope at each frame-grid shift, once
        for _ in range(settings.iterations):
            shift = int(rng.integers(0, settings.jitter + 1)) if settings.jitter else 0
            padded, off = pad_for_model(x, shift, frames)
            if shift not in references:
                references[shift] = (np.asarray(ops.convert_to_numpy(onset_envelope(ops.convert_to_tensor(
                    pad_for_model(base, shift, frames)[0]))), np.float32) if onsets else np.zeros(1, np.float32))
            reference = references[shift]
            values, g = grad(ops.convert_to_tensor(padded), ops.convert_to_tensor(reference),
                             ops.convert_to_tensor(weights))
            stats.passes += 1
            stats.pass_seconds += size / SAMPLE_RATE
            values = np.asarray(ops.convert_to_numpy(values), np.float64)
            if first:
                first = False
                if relative or onsets:
                    weights = (1.0 / np.maximum(np.abs(values), 1e-6)).astype(np.float32)
                    if onsets:
                        weights[-1] = np.float32(settings.keep_onsets * targets)
                    if terms > 1:  # the gradient of the reweighted sum (one pass more, once per chunk)
                        values, g = grad(ops.convert_to_tensor(padded), ops.convert_to_tensor(reference),
                                         ops.convert_to_tensor(weights))
                        stats.passes += 1
                        stats.pass_seconds += size / SAMPLE_RATE
                        values = np.asarray(ops.convert_to_numpy(values), np.float64)
                stats.start.append(float(np.sum(values * weights)))
            value = float(np.sum(values * weights))
            last = values
            g = np.asarray(ops.convert_to_numpy(g), np.float32)[off:off + size]
            if settings.follow:
                g = _follow(g, x, settings.follow)
            norm = _rms(g)
            if not np.isfinite(norm) or norm == 0.0:
                break
            x = _step(x, g, settings.step * level, level)
        detail = x - base
    stats.end.append(value)
    if onsets and last is not None:
        stats.onsets.append(float(last[-1]))
    return x.astype(np.float32)


def _step(x: np.ndarray, direction: np.ndarray, size: float, level: float) -> np.ndarray:
    """``x`` moved by ``size`` (RMS) along ``direction``, then brought back to RMS ``level``."""
    norm = _rms(direction)
    if norm == 0.0 or not np.isfinite(norm):
        return x
    x = x + np.float32(size / norm) * direction.astype(np.float32)
    now = _rms(x)
    return (x * np.float32(level / now)).astype(np.float32) if now > 0 else x


def _follow(g: np.ndarray, x: np.ndarray, power: float) -> np.ndarray:
    """The gradient with each STFT bin weighted by the audio's magnitude there (relative, to ``power``).

    A positive per-bin weighting keeps it an ascent direction, and the change
    then grows what the audio already holds instead of filling its quiet bins
    with noise (the compressed analysis makes those bins' gradients large).
    """
    from .spectral import istft, stft

    G = stft(g)
    X = stft(x)
    mag = np.sqrt(X[..., 0] ** 2 + X[..., 1] ** 2)
    w = (mag / max(float(mag.mean()), 1e-12)) ** power
    return istft(G * w[..., None], len(g))


def chunk_plan(n: int, *, chunk: int, overlap: int) -> list[tuple[int, int]]:
    """``(start, stop)`` sample ranges of length ``chunk`` (the last may start earlier), overlapping by ``overlap`` or more."""
    if n <= chunk:
        return [(0, n)]
    out, start = [], 0
    while start + chunk < n:
        out.append((start, start + chunk))
        start += chunk - overlap
    out.append((max(0, n - chunk), n))
    return out


def _fade(length: int) -> np.ndarray:
    """Rising weights of a cross-fade over ``length`` samples (the falling one is ``1 - fade``)."""
    t = (np.arange(length, dtype=np.float64) + 0.5) / max(length, 1)
    return np.sin(0.5 * np.pi * t) ** 2


def dream_audio(
    y: np.ndarray, model: keras.Model, objective: tuple[Callable, int], settings: Settings, *, seed: int,
    relative: bool = True, progress: Progress | None = None,
) -> tuple[np.ndarray, Stats]:
    """Dream a whole waveform chunk by chunk: ``(dreamed samples, stats)``, not yet loudness-matched.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
    model : keras.Model
        The source model (its input length sets the chunks of a fixed-length model).
    objective : (callable, int)
        From :func:`activation_objective` or :func:`damage_objective`.
    settings : Settings
    seed : int, keyword-only
    relative : bool, keyword-only
        See :func:`dream_chunk`.
    progress : callable or None, keyword-only
    """
    t0 = time.perf_counter()
    y = np.asarray(y, np.float32)
    fixed = input_frames(model)
    if fixed is not None:
        chunk = (fixed - 1) * HOP
        overlap = min(chunk // 4, int(OVERLAP_SECONDS * SAMPLE_RATE))
    else:
        chunk = int(CHUNK_SECONDS * SAMPLE_RATE) + int(OVERLAP_SECONDS * SAMPLE_RATE)
        overlap = int(OVERLAP_SECONDS * SAMPLE_RATE)
    onsets = settings.keep_onsets > 0
    fn, terms = keep_onsets(objective) if onsets else objective
    grad = device.compile_input_gradient(fn)
    plan = chunk_plan(len(y), chunk=chunk, overlap=overlap)
    out = np.zeros(len(y), np.float32)
    stats = Stats()
    for i, (a, b) in enumerate(plan):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0xD4EA, i]))
        x = dream_chunk(y[a:b], grad, terms, settings, rng, frames=fixed, stats=stats, relative=relative,
                        onsets=onsets)
        w = np.ones(b - a, np.float64)
        if i > 0:  # fade in over the overlap with the chunk before
            lo = plan[i - 1][1] - a
            w[:lo] = _fade(lo)
        if i + 1 < len(plan):  # fade out over the overlap with the next
            hi = b - plan[i + 1][0]
            w[b - a - hi:] *= 1.0 - _fade(hi)
        out[a:b] += (x * w).astype(np.float32)
        if progress is not None:
            progress((i + 1) / len(plan), f"dreamed chunk {i + 1} of {len(plan)}")
    stats.seconds = time.perf_counter() - t0
    return out, stats


# ---------------------------------------------------------------- loudness and the limiter

def soft_limit(x: np.ndarray, ceiling: float = CEILING, lookahead: int = LIMITER_LOOKAHEAD) -> np.ndarray:
    """A look-ahead limiter: a smooth gain below 1 around peaks, so that no sample exceeds ``ceiling``.

    The gain each sample needs (``ceiling / |x|``, at most 1) is spread to its
    neighbours by a minimum filter of width ``4 * lookahead + 1`` and smoothed
    by two moving averages of width ``2 * lookahead + 1``; every average is
    then at most the gain its centre needs, so the ceiling holds, and the gain
    moves smoothly (no clipping, no distortion of the waveform's shape).
    """
    x = np.asarray(x, np.float32)
    if x.size == 0:
        return x.copy()
    peak = np.abs(x)
    if float(peak.max()) <= ceiling:
        return x.copy()
    # A hair below the ceiling, so that float32 rounding of ``x * gain`` cannot lift a sample over it.
    need = np.minimum(1.0, ceiling * (1.0 - 1e-6) / np.maximum(peak, 1e-12)).astype(np.float32)
    gain = ndimage.minimum_filter1d(need, size=4 * lookahead + 1, mode="nearest")
    for _ in range(2):
        gain = ndimage.uniform_filter1d(gain, size=2 * lookahead + 1, mode="nearest")
    gain = np.minimum(gain, need)  # rounding in the averages never lifts a sample over the ceiling
    return (x * gain).astype(np.float32)


def match_loudness(x: np.ndarray, reference: np.ndarray, *, ceiling: float = CEILING, rounds: int = 6) -> np.ndarray:
    """``x`` scaled to ``reference``'s RMS and soft-limited below ``ceiling`` (a few rounds, as limiting lowers the RMS)."""
    target, now = _rms(np.asarray(reference, np.float32)), _rms(np.asarray(x, np.float32))
    if target == 0.0 or now == 0.0:
        return np.zeros_like(np.asarray(x, np.float32))
    gain = target / now
    out = soft_limit(x * np.float32(gain), ceiling)
    for _ in range(rounds):
        got = _rms(out)
        if got == 0.0 or abs(20 * np.log10(got / target)) < 0.01:
            break
        gain *= target / got
        out = soft_limit(x * np.float32(gain), ceiling)
    return out


def mix(y: np.ndarray, dreamed: np.ndarray, depth: float | np.ndarray) -> np.ndarray:
    """The input moved ``depth`` of the way to the dream (a number, or one per sample), loudness matched and limited."""
    y = np.asarray(y, np.float32)
    d = np.asarray(depth, np.float32)
    return match_loudness(y + d * (np.asarray(dreamed, np.float32) - y), y)


def mean_activations(model: keras.Model, y: np.ndarray, targets: dict[str, tuple[int, ...] | None]) -> dict[str, float]:
    """Per target layer, the mean activation of its chosen channels with the model run on ``y`` (its STFT as a job computes it).

    The measurement of a dream on the written audio (used by the tests and
    ``benchmarks/dream_figures.py``).
    """
    from .spectral import stft

    fixed = input_frames(model)
    S = stft(np.asarray(y, np.float32))
    chunks = [S] if fixed is None else [S[i:i + fixed] for i in range(0, max(1, S.shape[0] - fixed + 1), fixed)]
    feature = keras.Model(model.inputs, [model.get_layer(n).output for n in targets])
    sums = {n: 0.0 for n in targets}
    count = 0
    for c in chunks:
        if fixed is not None and c.shape[0] < fixed:
            continue
        outs = feature([c[None]], training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for n, a in zip(targets, outs):
            a = np.asarray(ops.convert_to_numpy(a))
            ch = targets[n]
            sums[n] += float(np.mean(a if ch is None else a[..., list(ch)]))
        count += 1
    if count == 0:
        raise ModelError(f"the audio is shorter than model {model.name!r}'s {fixed} frames")
    return {n: s / count for n, s in sums.items()}


def settings_of(params: Sequence[tuple[str, Any]] | dict) -> Settings:
    """The :class:`Settings` in a dream recipe's parameters."""
    p = dict(params)
    return Settings(**{k: p[k] for k in Settings.__dataclass_fields__ if k in p})
