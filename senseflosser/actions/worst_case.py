"""The adversarial action: fog-sized damage pointed where it hurts most.

At magnitude ``m`` each targeted weight array ``w`` (kernel, bias) moves by
``m * sqrt(n / 2) * d``, where ``n`` is the number of entries targeted and
``d`` a unit-norm *direction*: the same L2 size as fog's noise at ``m``
(std ``m`` on half of the entries), but chosen by projected gradient ascent on
the model's reconstruction loss instead of at random. The difference between
the two at equal size is how much worse worst-case damage is than random
damage.

Directions come from one of two places:

- *universal*: found once per model on excerpts of its training or
  evaluation audio (:func:`find_direction`), saved beside the model as
  ``<name>.adversarial.npz`` (:func:`save_direction`) and read by the
  registry's ``prepare`` hook (:func:`prepare`); a job then costs what fog costs.
- *on input* (``--adversarial-on-input``): found on the job's own audio,
  a few steps on a short excerpt (:func:`direction_on_input`).

The search is seeded (its random start) and deterministic, so a recipe
reproduces its direction and its output bit for bit on the same machine. A
universal direction is the model's own: a recipe's seed changes nothing there;
on input it seeds the search.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from .. import audio, device
from ..errors import ModelError, RecipeError
from ..models import conv_layer_names, input_frames
from ..spectral import stft
from .selection import Resolved, channel_mask, resolve

Direction = dict[str, list[np.ndarray]]
"""Layer name -> one unit-norm array per weight array (``layer.get_weights()`` order)."""

REFERENCE_MAGNITUDE = 1e-3
"""Size (in fog's units) at which directions are searched: inside the range where damage is audible."""
UNIVERSAL_STEPS = 8
ON_INPUT_STEPS = 4
ON_INPUT_SECONDS = 4.0
_STEP = 0.5  # each ascent step moves by this share of the radius
_POWER = 0.3  # the loss compares spectra compressed to |X|**0.3, as training does

SUFFIX = ".adversarial.npz"

_attached: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def fog_radius(n: int, magnitude: float) -> float:
    """Expected L2 norm of fog's noise on an array of ``n`` entries: std ``magnitude`` on half of them."""
    return float(magnitude) * float(np.sqrt(n / 2.0))


def _compressed(x):
    mag = ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True) + 1e-7)
    return x * ops.power(mag, _POWER - 1.0)


def _loss(y, target):
    return ops.mean(ops.square(_compressed(y) - _compressed(target)))


def _excerpt_tensors(model: keras.Model, excerpts: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Model inputs ``(1, frames, 1025, 2)`` of each excerpt (cut to a fixed-length model's size)."""
    fixed = input_frames(model)
    out = []
    for y in excerpts:
        S = stft(np.asarray(y, np.float32))
        if fixed is not None:
            if S.shape[0] < fixed:
                S = np.concatenate([S, np.zeros((fixed - S.shape[0],) + S.shape[1:], np.float32)])
            S = S[:fixed]
        out.append(S[None])
    if not out:
        raise RecipeError("the adversarial search needs at least one excerpt of audio")
    return out


def find_direction(
    model: keras.Model,
    excerpts: Sequence[np.ndarray],
    targets: Resolved,
    *,
    seed: int,
    steps: int = UNIVERSAL_STEPS,
    progress: Callable[[float, str], None] | None = None,
    losses: list[float] | None = None,
) -> Direction:
    """Projected gradient ascent on the reconstruction loss, over the targeted weights.

    Starting from a seeded random direction, each step moves every targeted
    array along its normalised loss gradient and projects it back onto the
    sphere of fog's radius at :data:`REFERENCE_MAGNITUDE`. The loss is the
    mean squared distance between the compressed spectra of the damaged and
    the undamaged output, summed over the excerpts.

    Parameters
    ----------
    model : keras.Model
        The source model (untouched).
    excerpts : sequence of np.ndarray, each shape (n_samples,)
        Audio at 22050 Hz (a few seconds each).
    targets : dict
        Layer -> channels (``None``: all), as :func:`senseflosser.actions.targets` gives.
    seed : int, keyword-only
        Seed of the random start.
    steps : int, keyword-only
    progress : callable or None, keyword-only
    losses : list or None, keyword-only
        If given, the loss summed over the excerpts at each step is appended
        (and once more at the end).

    Returns
    -------
    Direction
    """
    inputs = _excerpt_tensors(model, excerpts)
    trainable = [v.value for v in model.trainable_variables]
    state = [v.value for v in model.non_trainable_variables]
    index = {id(v): i for i, v in enumerate(model.trainable_variables)}
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xAD]))
    slots = []  # (layer, weight index, variable index, base value, mask, radius, delta)
    for name in conv_layer_names(model):
        if name not in targets:
            continue
        layer = model.get_layer(name)
        for j, (variable, w) in enumerate(zip(layer.weights, layer.get_weights())):
            if id(variable) not in index:
                continue
            mask = channel_mask(layer, j, w, targets[name])
            m = np.ones(w.shape, bool) if mask is None else np.asarray(mask)
            radius = fog_radius(int(m.sum()), REFERENCE_MAGNITUDE)
            delta = np.where(m, rng.standard_normal(w.shape), 0.0)
            delta *= radius / max(np.linalg.norm(delta), 1e-30)
            slots.append([name, j, index[id(variable)], w.astype(np.float32), m, radius, delta])
    if not slots:
        raise ModelError(f"model {model.name!r}: no weights to perturb in the chosen layers")
    step_fn = device.compile_loss_gradient(model, _loss)
    targets_out = [np.asarray(model(x, training=False)) for x in inputs]
    for k in range(steps):
        weights = list(trainable)
        for _, _, i, base, _, _, delta in slots:
            weights[i] = ops.convert_to_tensor((base + delta).astype(np.float32))
        grads = [np.zeros_like(s[3], np.float64) for s in slots]
        total = 0.0
        for x, target in zip(inputs, targets_out):
            value, g = step_fn(weights, state, x, target)
            total += float(ops.convert_to_numpy(value))
            for n, s in enumerate(slots):
                grads[n] += np.asarray(ops.convert_to_numpy(g[s[2]]), np.float64)
        for s, g in zip(slots, grads):
            _, _, _, _, m, radius, delta = s
            g = np.where(m, g, 0.0)
            norm = np.linalg.norm(g)
            if norm > 0 and np.isfinite(norm):
                delta = delta + _STEP * radius * g / norm
            s[6] = delta * (radius / max(np.linalg.norm(delta), 1e-30))
        if losses is not None:
            losses.append(total)
        if progress is not None:
            progress((k + 1) / steps, f"adversarial search: step {k + 1} of {steps}")
    if losses is not None:
        weights = list(trainable)
        for _, _, i, base, _, _, delta in slots:
            weights[i] = ops.convert_to_tensor((base + delta).astype(np.float32))
        losses.append(sum(float(ops.convert_to_numpy(step_fn(weights, state, x, t)[0]))
                          for x, t in zip(inputs, targets_out)))
    direction: Direction = {}
    for name, j, _, base, _, radius, delta in slots:
        direction.setdefault(name, [None] * len(model.get_layer(name).weights))
        direction[name][j] = (delta / radius).astype(np.float32)
    for name, arrays in direction.items():
        for j, a in enumerate(arrays):
            if a is None:
                arrays[j] = np.zeros_like(model.get_layer(name).weights[j].numpy(), np.float32)
    return direction


def direction_on_input(
    model: keras.Model, y: np.ndarray, targets: Resolved, *, seed: int,
    progress: Callable[[float, str], None] | None = None,
) -> Direction:
    """A direction found on a job's own audio: :data:`ON_INPUT_STEPS` steps on its middle :data:`ON_INPUT_SECONDS`."""
    n = int(ON_INPUT_SECONDS * 22050)
    start = max(0, (len(y) - n) // 2)
    return find_direction(model, [y[start:start + n]], targets, seed=seed, steps=ON_INPUT_STEPS, progress=progress)


def apply_direction(model: keras.Model, targets: Resolved, direction: Direction, *, magnitude: float) -> dict:
    """New weights: each targeted array moved by fog's radius at ``magnitude`` along ``direction``."""
    out: dict[str, list[np.ndarray]] = {}
    for name, channels in targets.items():
        if name not in direction:
            raise ModelError(f"the adversarial direction has no entry for layer {name!r}")
        layer = model.get_layer(name)
        arrays = []
        for j, (w, d) in enumerate(zip(layer.get_weights(), direction[name])):
            mask = channel_mask(layer, j, w, channels)
            d = np.asarray(d, np.float32)
            if d.shape != w.shape:
                raise ModelError(f"the adversarial direction of {name!r} has shape {d.shape}, the weights {w.shape}")
            if mask is not None:  # keep only the chosen channels' part, at full size
                d = np.where(mask, d, 0.0)
                norm = np.linalg.norm(d)
                d = d / norm if norm > 0 else d
                n = int(np.asarray(mask).sum())
            else:
                n = w.size
            arrays.append((w + fog_radius(n, magnitude) * d).astype(np.float32))
        out[name] = arrays
    return out


# ---------------------------------------------------------------- stored (universal) directions

def direction_file(model_path: str | os.PathLike) -> Path:
    """Where the universal direction of the model file ``model_path`` is stored."""
    p = Path(model_path)
    return p.with_name(p.stem + SUFFIX)


def save_direction(path: str | os.PathLike, direction: Direction, meta: dict) -> str:
    """Write a direction (and what it was found on) as ``.npz``; returns the file's SHA-256."""
    arrays = {f"{name}/{j}": a for name, ws in direction.items() for j, a in enumerate(ws)}
    buf = io.BytesIO()
    np.savez(buf, __meta__=np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8), **arrays)
    data = buf.getvalue()
    tmp = Path(str(path) + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def load_direction(path: str | os.PathLike) -> tuple[Direction, dict, str]:
    """Read a direction file: ``(direction, meta, sha256)``."""
    data = Path(path).read_bytes()
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(bytes(z["__meta__"]).decode())
            direction: Direction = {}
            for key in z.files:
                if key == "__meta__":
                    continue
                name, _, j = key.rpartition("/")
                ws = direction.setdefault(name, [])
                while len(ws) <= int(j):
                    ws.append(None)
                ws[int(j)] = z[key].astype(np.float32)
    except (ValueError, KeyError, OSError) as exc:
        raise ModelError(f"{Path(path).name}: not a readable adversarial direction ({exc})") from None
    return direction, meta, hashlib.sha256(data).hexdigest()


def attach(model: keras.Model, direction: Direction, sha256: str) -> None:
    """Give an in-memory ``model`` (one with no file beside which a direction could lie) its universal direction."""
    with _lock:
        _attached[model] = (direction, sha256)


def attached(model: keras.Model) -> tuple[Direction, str] | None:
    """The universal direction given to ``model`` with :func:`attach` and its SHA-256, or ``None``."""
    with _lock:
        return _attached.get(model)


@functools.lru_cache(maxsize=16)
def _load_cached(path: str, mtime_ns: int, size: int) -> tuple[Direction, str]:
    direction, _, sha = load_direction(path)
    return direction, sha


def stored_direction(model: keras.Model, source: str | os.PathLike | None) -> tuple[Direction, str] | None:
    """The universal direction of ``model``: stored beside its file ``source``, else given by :func:`attach`.

    A file is read once per process while it is unchanged (keyed by its path, size and time).
    """
    if source is not None:
        path = direction_file(source)
        try:
            st = path.stat()
        except OSError:
            st = None
        if st is not None:
            return _load_cached(str(path), st.st_mtime_ns, st.st_size)
    return attached(model)


@dataclass(frozen=True)
class Prepared:
    """What one adversarial recipe runs with: its unit direction and where it came from."""

    direction: Direction = field(repr=False)
    sha256: str | None
    """SHA-256 of the stored universal direction's file; ``None`` for one found on the input."""


def prepare(model: keras.Model, audio: np.ndarray | None, recipes: Sequence, *,
            source: str | os.PathLike | None = None,
            progress: Callable[[float, str], None] | None = None) -> list[Prepared]:
    """The registry's ``prepare`` hook: each recipe's direction, found once per job.

    A recipe with ``on_input`` searches its direction on ``audio`` (once per
    layer selection and seed, shared by every magnitude of a titration); the
    others use the model's stored universal direction.

    Raises
    ------
    RecipeError
        If a universal direction is needed and the model has none, or a
        search is needed and there is no audio.
    """
    searches = sorted({(r.layers or (), r.seed) for r in recipes if dict(r.params).get("on_input")})
    universal = None
    if any(not dict(r.params).get("on_input") for r in recipes):
        universal = stored_direction(model, source)
        if universal is None:
            raise RecipeError(
                f"model {model.name!r} has no stored adversarial direction; compute one with "
                f"`senseflosser adversarial --model {model.name} --data-dir AUDIO`, or use --on-input"
            )
    if searches and audio is None:
        raise RecipeError("an adversarial direction on the input needs the input audio")
    found = {}
    for k, (layers, seed) in enumerate(searches):
        lo, hi = k / len(searches), (k + 1) / len(searches)
        found[(layers, seed)] = direction_on_input(
            model, audio, resolve(model, layers or None, default=tuple(conv_layer_names(model))), seed=seed,
            progress=None if progress is None else (lambda f, msg, lo=lo, hi=hi: progress(lo + (hi - lo) * f, msg)),
        )
    return [Prepared(found[(r.layers or (), r.seed)], None) if dict(r.params).get("on_input")
            else Prepared(universal[0], universal[1]) for r in recipes]


def provenance(prepared: Prepared) -> dict:
    """The registry's ``provenance`` hook: what a manifest records of a direction."""
    return {"adversarial_direction_sha256": prepared.sha256}


def adversarial_weights(model: keras.Model, targets: Resolved, *, magnitude: float, seed: int,
                        on_input: bool = False, prepared: Prepared) -> dict:
    """The registry's ``weights`` function: the prepared direction at fog's size for ``magnitude``.

    At one direction a larger magnitude moves the same weights farther along
    the same line (nesting holds); ``seed`` and ``on_input`` acted when the
    direction was prepared.
    """
    return apply_direction(model, targets, prepared.direction, magnitude=magnitude)


# ---------------------------------------------------------------- finding a model's universal direction

def find_universal(
    registry,
    name: str,
    data_dir: str | os.PathLike,
    *,
    excerpts: int = 12,
    seconds: float = 5.0,
    steps: int = UNIVERSAL_STEPS,
    seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Find a model's universal adversarial direction, store it beside the model and record it in its card.

    Parameters
    ----------
    registry : senseflosser.models.ModelRegistry
        Where the model is, and the owner of its card.
    name : str
        Model name.
    data_dir : str or os.PathLike
        Audio the model was trained on (or evaluation audio not used to
        measure the adversarial figures).
    excerpts, seconds : keyword-only
        Number and length of excerpts, spread over the files.
    steps, seed : keyword-only
        Gradient ascent steps and the seed of the random start.
    progress : callable or None, keyword-only

    Returns
    -------
    path : pathlib.Path
        The ``<name>.adversarial.npz`` file written.
    info : dict
        What the card's ``adversarial`` entry records.
    """
    model = registry.load(name)
    clips = audio.spread_excerpts(audio.find_audio(data_dir), seconds, excerpts)
    audio_excerpts = [audio.load(p, offset=o, duration=seconds) for p, o in clips]
    losses: list[float] = []
    direction = find_direction(
        model, audio_excerpts, resolve(model, None, default=tuple(conv_layer_names(model))), seed=seed, steps=steps,
        progress=progress, losses=losses,
    )
    path = direction_file(registry.path(name))
    meta = {"model_sha256": registry.sha256(name), "seed": seed, "steps": steps,
            "reference_magnitude": REFERENCE_MAGNITUDE,
            "excerpts": [{"file": p.name, "offset": round(o, 2), "seconds": seconds} for p, o in clips]}
    sha = save_direction(path, direction, meta)
    info = {**meta, "file": path.name, "sha256": sha, "excerpts": len(clips),
            "excerpt_files": sorted({p.name for p, _ in clips}),
            "loss_start": losses[0], "loss_end": losses[-1]}
    registry.update_card(name, adversarial=info)
    return path, info
