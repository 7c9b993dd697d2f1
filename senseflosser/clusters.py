"""Channel clusters: each conv layer's channels grouped by what they do over time.

As Broad et al.'s Network Bending groups feature maps, a layer's channels are
grouped by a seeded k-means on their activation time-courses over the model's
own reference audio. A cluster is then a layer selection: ``down:cluster2`` is
the channels of cluster 2 of layer ``down`` (see
:func:`senseflosser.actions.selection.expand_clusters`). The clusters are
computed once per model (``senseflosser clusters``) and stored in its card's
``clusters`` section with their provenance; recipes record the resolved
channels, so a bend reproduces whatever the clusters become later.

A channel's time-course is the layer's output averaged over frequency (every
axis but time and channels), frame by frame, over every excerpt in turn
(concatenated), then z-scored. A channel that never changes has a zero
course: such channels join the cluster nearest the origin together.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np

from . import audio
from .errors import ModelError, RecipeError
from .models import conv_layer_names, input_frames
from .spectral import stft

log = logging.getLogger(__name__)

MAX_ITERATIONS = 100
"""Lloyd iterations of one k-means run at most."""
TOLERANCE = 1e-6
"""A run stops once no centre moves further than this (squared, in z-score units per frame)."""
DEFAULT_K = 4
DEFAULT_EXCERPTS = 8
DEFAULT_SECONDS = 5.0

__all__ = ["DEFAULT_K", "card_clusters", "cluster_model", "compute_clusters", "kmeans", "time_courses"]


def _blocks(model: keras.Model, y: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """Model inputs ``(1, frames, 1025, 2)`` of one waveform, with the real (unpadded) frames of each.

    A model of any length takes the excerpt whole; a fixed-length one takes
    it in consecutive blocks of its size, the last zero-padded.
    """
    S = stft(np.asarray(y, np.float32))
    fixed = input_frames(model)
    if fixed is None:
        return [(S[None], S.shape[0])]
    out = []
    for start in range(0, S.shape[0], fixed):
        block = S[start:start + fixed]
        real = block.shape[0]
        if real < fixed:
            block = np.concatenate([block, np.zeros((fixed - real,) + block.shape[1:], np.float32)])
        out.append((block[None], real))
    return out


def time_courses(
    model: keras.Model,
    excerpts: Sequence[np.ndarray],
    *,
    layers: Sequence[str] | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, np.ndarray]:
    """Each conv layer's channel activations over time, averaged over frequency.

    Parameters
    ----------
    model : keras.Model
        Takes ``(batch, frames, 1025, 2)`` STFT tensors.
    excerpts : sequence of np.ndarray, each shape (n_samples,)
        Mono waveforms at 22050 Hz (a few seconds each bound the memory: one
        excerpt's activations are held at a time).
    layers : sequence of str or None, keyword-only
        Conv layers to probe (default: all of them, in graph order).
    progress : callable or None, keyword-only
        ``progress(fraction, message)`` after each excerpt.

    Returns
    -------
    dict
        Layer name -> array of shape ``(total frames, channels)``, float64:
        the excerpts' frames one after the other (a layer that strides along
        time has fewer frames than the input).

    Raises
    ------
    RecipeError
        If no excerpt is given.
    ModelError
        If the model has no conv layers.
    """
    names = list(layers) if layers is not None else conv_layer_names(model)
    if not names:
        raise ModelError(f"model {model.name!r} has no conv layers to cluster")
    if not excerpts:
        raise RecipeError("computing clusters needs at least one excerpt of audio")
    probe = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    first_axis = {n: model.get_layer(n).data_format == "channels_first" for n in names}
    courses: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i, y in enumerate(excerpts):
        for x, real in _blocks(model, y):
            outputs = probe(keras.ops.convert_to_tensor(x), training=False)
            if not isinstance(outputs, (list, tuple)):
                outputs = [outputs]
            for name, out in zip(names, outputs):
                a = np.asarray(keras.ops.convert_to_numpy(out), np.float64)[0]
                if first_axis[name]:
                    a = np.moveaxis(a, 0, -1)  # channels last: (time, ..., channels)
                course = a.reshape(a.shape[0], -1, a.shape[-1]).mean(axis=1)  # (frames, channels)
                keep = -(-real * course.shape[0] // x.shape[1])  # the frames of real audio
                courses[name].append(course[:keep])
        if progress is not None:
            progress((i + 1) / len(excerpts), f"excerpt {i + 1} of {len(excerpts)}")
    return {n: np.concatenate(c, axis=0) for n, c in courses.items()}


def _zscore(course: np.ndarray) -> np.ndarray:
    """``(frames, channels)`` -> ``(channels, frames)``, each channel z-scored (a constant one: zeros)."""
    x = course.T.astype(np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    std = x.std(axis=1, keepdims=True)
    flat = std[:, 0] <= 1e-12 * max(1.0, float(np.abs(course).max(initial=0.0)))
    return np.where(flat[:, None], 0.0, x / np.where(std > 0, std, 1.0))


def _distances(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared distances, shape ``(points, centres)``."""
    return ((x[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)  # exact: a row's distance to itself is 0


def kmeans(x: np.ndarray, k: int, *, seed: int = 0) -> np.ndarray:
    """Seeded k-means (k-means++ start, Lloyd iterations) of the rows of ``x``.

    Parameters
    ----------
    x : np.ndarray, shape (points, features)
    k : int
        Clusters wanted; capped at the number of distinct rows (and at least 1).
    seed : int, keyword-only
        Seeds ``np.random.default_rng`` for the k-means++ start.

    Returns
    -------
    labels : np.ndarray, shape (points,), int
        Each row's cluster, ``0 .. k' - 1``, every cluster non-empty (``k'``
        the capped k). The same ``x``, ``k`` and ``seed`` give the same labels.
    """
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    if n == 0:
        raise ValueError("nothing to cluster")
    distinct = np.unique(x, axis=0).shape[0]
    k = max(1, min(int(k), distinct))
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(n))]
    closest = _distances(x, x[chosen])[:, 0]
    for _ in range(1, k):
        total = closest.sum()
        # Distinct rows outnumber the centres, so some row lies away from all of them.
        pick = int(rng.choice(n, p=closest / total))
        chosen.append(pick)
        closest = np.minimum(closest, _distances(x, x[[pick]])[:, 0])
    centres = x[chosen].copy()
    labels = np.zeros(n, int)
    for _ in range(MAX_ITERATIONS):
        d = _distances(x, centres)
        labels = d.argmin(axis=1)
        for c in range(k):
            if not np.any(labels == c):  # an empty cluster takes the row furthest from its centre
                sizes = np.bincount(labels, minlength=k)
                far = d[np.arange(n), labels] * (sizes[labels] > 1)
                labels[int(far.argmax())] = c
        new = np.stack([x[labels == c].mean(axis=0) for c in range(k)])
        shift = float(((new - centres) ** 2).sum(axis=1).max())
        centres = new
        if shift <= TOLERANCE:
            break
    return labels


def _groups(labels: np.ndarray) -> list[list[int]]:
    """Channel lists per label, sorted by their smallest channel (so numbering is stable)."""
    groups = [sorted(int(c) for c in np.flatnonzero(labels == label)) for label in np.unique(labels)]
    return sorted(groups, key=lambda g: g[0])


def compute_clusters(
    model: keras.Model,
    excerpts: Sequence[np.ndarray],
    *,
    k: int = DEFAULT_K,
    seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, list[list[int]]]:
    """Group each conv layer's channels by k-means on their activation time-courses.

    Parameters
    ----------
    model : keras.Model
    excerpts : sequence of np.ndarray, each shape (n_samples,)
        Mono waveforms at 22050 Hz, a few seconds each (see :func:`time_courses`).
    k : int, keyword-only
        Clusters per layer, capped at the layer's channel count (and at its
        number of distinct time-courses).
    seed : int, keyword-only
        Seed of the k-means++ start (each layer's run uses the same seed).
    progress : callable or None, keyword-only

    Returns
    -------
    dict
        Conv layer name -> its clusters, each a sorted list of channel numbers;
        every channel in exactly one cluster, none empty, clusters ordered by
        their smallest channel.

    Raises
    ------
    RecipeError
        If ``k`` is below 1, or no excerpt is given.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise RecipeError(f"k (clusters per layer) must be a whole number of at least 1, got {k!r}")
    courses = time_courses(model, excerpts, progress=progress)
    return {name: _groups(kmeans(_zscore(course), int(k), seed=seed)) for name, course in courses.items()}


def card_clusters(card: Mapping[str, Any] | None) -> dict[str, list[list[int]]] | None:
    """The clusters a model card stores (layer -> channel lists), or ``None`` if it has none.

    Raises
    ------
    ModelError
        If the card's ``clusters`` section is not of the form :func:`cluster_model` writes.
    """
    section = (card or {}).get("clusters")
    if section is None:
        return None
    layers = section.get("layers") if isinstance(section, Mapping) else None
    if not isinstance(layers, Mapping):
        raise ModelError("the model card's clusters section has no 'layers' mapping; "
                         "recompute it with `senseflosser clusters`")
    try:
        return {str(name): [[int(c) for c in group] for group in groups] for name, groups in layers.items()}
    except (TypeError, ValueError):
        raise ModelError("the model card's clusters are not lists of channel numbers; "
                         "recompute them with `senseflosser clusters`") from None


def cluster_model(
    registry,
    name: str,
    data_dir: str | os.PathLike,
    *,
    k: int = DEFAULT_K,
    seed: int = 0,
    excerpts: int = DEFAULT_EXCERPTS,
    seconds: float = DEFAULT_SECONDS,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, Any]:
    """Compute a registry model's clusters from a folder of audio and store them in its card.

    Parameters
    ----------
    registry : senseflosser.models.ModelRegistry
        Where the model is, and the owner of its card.
    name : str
        Model name.
    data_dir : str or os.PathLike
        The model's own reference audio (held-out or training), searched recursively.
    k, seed : keyword-only
        See :func:`compute_clusters`.
    excerpts, seconds : keyword-only
        Number and length of the excerpts, spread over the files
        (:func:`senseflosser.audio.spread_excerpts`).
    progress : callable or None, keyword-only

    Returns
    -------
    dict
        The card's new ``clusters`` section: ``k``, ``seed``, ``model_sha256``,
        ``excerpts`` (file, offset, seconds each) and ``layers`` (layer ->
        channel lists).
    """
    model = registry.load(name)
    clips = audio.spread_excerpts(audio.find_audio(data_dir), seconds, excerpts)
    waves = [audio.load(p, offset=o, duration=seconds) for p, o in clips]
    layers = compute_clusters(model, waves, k=k, seed=seed, progress=progress)
    section = {"k": int(k), "seed": int(seed), "model_sha256": registry.sha256(name),
               "excerpts": [{"file": p.name, "offset": round(o, 2), "seconds": seconds} for p, o in clips],
               "layers": layers}
    registry.update_card(name, clusters=section)
    log.info("clusters of %s: %s", name, {n: len(g) for n, g in layers.items()})
    return section
