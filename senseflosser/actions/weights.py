"""Actions that only change weights: fog, ablate, bitflip.

Each has a ``*_weights`` function (source model -> new weight arrays of the
targeted layers, the source untouched) and a model-building wrapper. The
pipeline runs the pristine architecture with the new arrays, so a job of these
actions costs no model copy. Every random choice comes from a stream of its own
per layer (``SeedSequence([seed, layer index])``) or, for fog, one stream over
the layers in a fixed order, so a recipe reproduces bit for bit, and at one
seed a larger magnitude damages a superset of what a smaller one damages.
"""

from __future__ import annotations

import numpy as np
import keras

from ..models import conv_layer_names
from .selection import Resolved, channel_mask


def _layer_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def fog_weights(model: keras.Model, targets: Resolved, *, magnitude: float, seed: int) -> dict[str, list[np.ndarray]]:
    """Gaussian noise (std = ``magnitude``) on a random half of each targeted weight array.

    With channels chosen, the half is taken among those channels' entries
    (their kernel slices and biases) only.

    Returns
    -------
    dict
        Layer name -> its new weight arrays, in ``layer.get_weights()`` order.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {}
    for name in conv_layer_names(model):  # fixed order, so each layer's noise depends only on the seed
        if name not in targets:
            continue
        layer = model.get_layer(name)
        noisy = []
        for i, w in enumerate(layer.get_weights()):
            flat = w.astype(np.float32).ravel()
            mask = channel_mask(layer, i, w, targets[name])
            pool = np.arange(flat.size) if mask is None else np.flatnonzero(mask.ravel())
            # Exactly half; an odd count rounds up or down at random (a 1-element bias: a coin flip).
            half = (pool.size + int(rng.integers(0, 2))) // 2
            chosen = pool[rng.permutation(pool.size)[:half]] if mask is not None else rng.permutation(flat.size)[:half]
            noise = rng.normal(0.0, magnitude, size=chosen.size).astype(np.float32)
            flat[chosen] += noise
            noisy.append(flat.reshape(w.shape))
        out[name] = noisy
    return out


def ablate_weights(model: keras.Model, targets: Resolved, *, magnitude: float, seed: int) -> dict[str, list[np.ndarray]]:
    """Silence a share (= ``magnitude``) of each targeted layer's output channels.

    A silenced channel has its kernel slice and bias set to zero, so it outputs
    the activation of zero (a dead neuron). The share is of the chosen channels
    (all by default), rounded to whole channels; which ones is drawn from the
    seed, and a larger share silences a superset.
    """
    order = {name: i for i, name in enumerate(conv_layer_names(model))}
    out: dict[str, list[np.ndarray]] = {}
    for name, channels in targets.items():
        layer = model.get_layer(name)
        pool = np.arange(int(layer.filters)) if channels is None else np.asarray(channels)
        ranked = pool[_layer_rng(seed, order[name]).permutation(pool.size)]
        silenced = tuple(int(c) for c in ranked[: int(round(magnitude * pool.size))])
        arrays = []
        for i, w in enumerate(layer.get_weights()):
            w = w.astype(np.float32, copy=True)
            if silenced:
                w[channel_mask(layer, i, w, silenced)] = 0.0
            arrays.append(w)
        out[name] = arrays
    return out


def bitflip_weights(model: keras.Model, targets: Resolved, *, magnitude: float, seed: int) -> dict[str, list[np.ndarray]]:
    """Flip one random bit in a share (= ``magnitude``) of the targeted float32 weights.

    Every bit position 0-31 is equally likely, as for a random single-event
    upset: mantissa flips are tiny, sign flips invert a weight, exponent flips
    scale it by a power of two. A flip that would take a weight outside its
    array's original range (or to infinity or NaN; one high exponent bit does
    that to almost any weight) saturates at the range's edge, as a number
    format of bounded range does: otherwise one such flip in a few thousand
    would silence the whole output, and damage could not grow by degrees.
    """
    order = {name: i for i, name in enumerate(conv_layer_names(model))}
    out: dict[str, list[np.ndarray]] = {}
    for name, channels in targets.items():
        layer = model.get_layer(name)
        rng = _layer_rng(seed, order[name])
        arrays = []
        for i, w in enumerate(layer.get_weights()):
            w = np.ascontiguousarray(w, dtype=np.float32).copy()
            mask = channel_mask(layer, i, w, channels)
            pool = np.arange(w.size) if mask is None else np.flatnonzero(mask.ravel())
            ranked = pool[rng.permutation(pool.size)]
            bits = rng.integers(0, 32, size=pool.size, dtype=np.uint32)
            k = int(round(magnitude * pool.size))
            original = w.copy()
            bitsview = w.reshape(-1).view(np.uint32)
            bitsview[ranked[:k]] ^= np.left_shift(np.uint32(1), bits[:k])
            bound = float(np.max(np.abs(original))) if original.size else 0.0
            with np.errstate(invalid="ignore"):
                wild = ~np.isfinite(w) | (np.abs(w) > bound)
            w[wild] = np.copysign(bound, np.where(np.isnan(w[wild]), original[wild], w[wild]))
            arrays.append(w)
        out[name] = arrays
    return out
