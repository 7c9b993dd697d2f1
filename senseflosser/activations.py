"""Activation frames: one layer's activations captured during the passes a job already runs.

A runner given a *tap* (a conv layer's name) runs a tapped view of its model: the
same layers and variables, with one more output, the layer's activation pooled
per frame by a :class:`Tap` layer inside the compiled function (so only
``(frames, channels)`` and ``(frames, bands)`` leave it, never the full
``(frames, bins, channels)`` tensor). A :class:`Recorder` keeps the kept frames of
every chunk, as :func:`senseflosser.spectral.process` keeps the audio's, so a
chunked run gives the frames of one pass wherever the chunk's context covers
the layer's reach. No forward pass is added: the tapped function *is* the pass.

For a damaged copy that inserts a transform after the layer (lapse, a bend), the
transform's output is tapped: what the layer passes on, damage included.
How the frames are stored is :mod:`senseflosser.framesfile`'s concern.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from .actions.bend import SUFFIX as BEND_SUFFIX
from .actions.lapse import SUFFIX as LAPSE_SUFFIX
from .errors import RecipeError
from .models import conv_layer_names
from .spectral import Chunk

BANDS = 16
"""Bands of the coarse frequency profile (log-spaced over the layer's frequency axis)."""

_TAPS = "__senseflosser_taps"
"""The attribute of a model holding its tapped views by layer: they live exactly as long as the model
(two underscores: Keras saving skips it, so a saved model holds no view)."""
_tapped_lock = threading.Lock()


@dataclass
class Frames:
    """One output's activation frames (floats, before storage).

    Attributes
    ----------
    layer : str
        The tapped conv layer.
    channels : np.ndarray, shape (frames, channels), float32
        Each channel's activation at each model frame, averaged over frequency.
    profile : np.ndarray, shape (frames, bands), float32
        The activation averaged over channels, in :data:`BANDS` log-spaced
        frequency bands (``bands == 0`` for a layer without a frequency axis).
    """

    layer: str
    channels: np.ndarray
    profile: np.ndarray


def band_matrix(bins: int, bands: int = BANDS) -> np.ndarray:
    """Averaging weights from a layer's ``bins`` frequency rows to ``bands`` log-spaced bands.

    Returns
    -------
    np.ndarray, shape (bins, min(bands, bins)), float32
        Column ``b`` averages bins ``edges[b] .. edges[b + 1] - 1``; every bin
        belongs to exactly one band.
    """
    bands = min(bands, bins)
    edges = np.round(np.geomspace(1, bins + 1, bands + 1)).astype(int) - 1
    edges[0], edges[-1] = 0, bins
    for b in range(1, bands):  # the narrow low bands get one bin at least, and leave one to each band above
        edges[b] = min(max(edges[b], edges[b - 1] + 1), bins - (bands - b))
    matrix = np.zeros((bins, bands), np.float32)
    for b in range(bands):
        lo, hi = edges[b], edges[b + 1]
        matrix[lo:hi, b] = 1.0 / (hi - lo)
    return matrix


@keras.saving.register_keras_serializable(package="senseflosser")
class Tap(keras.layers.Layer):
    """Pools a conv activation per frame: ``(batch, frames, bins, channels) -> (channels, profile)``.

    ``channels``: mean over bins, ``(batch, frames, channels)``; ``profile``:
    mean over channels, averaged into bands, ``(batch, frames, bands)``. A 1-D
    activation ``(batch, frames, channels)`` is its own channels, with an empty profile.
    Only ever part of a tapped view (never saved with a model).
    """

    def __init__(self, bins: int | None = None, bands: int = BANDS, **kwargs):
        super().__init__(**kwargs)
        self.bins, self.bands = bins, int(bands)
        self._matrix = None if bins is None else band_matrix(int(bins), self.bands)

    def call(self, x):
        ops = keras.ops
        if self._matrix is None:
            return x, x[..., :0]
        channels = ops.mean(x, axis=2)
        profile = ops.matmul(ops.mean(x, axis=-1), ops.convert_to_tensor(self._matrix))
        return channels, profile

    def compute_output_shape(self, input_shape):
        if self._matrix is None:
            return tuple(input_shape), tuple(input_shape[:-1]) + (0,)
        return (input_shape[0], input_shape[1], input_shape[3]), (input_shape[0], input_shape[1],
                                                                   self._matrix.shape[1])

    def get_config(self):
        return {**super().get_config(), "bins": self.bins, "bands": self.bands}


def check_layer(layer: str, conv_layers: Mapping[str, Any] | Sequence[str], *, model_name: str) -> str:
    """The layer to take activation frames from, if the model has it.

    Raises
    ------
    RecipeError
        Naming the bad layer and the model's conv layers.
    """
    names = list(conv_layers)
    if layer not in names:
        raise RecipeError(f"model {model_name!r} has no conv layer {layer!r} to take activation frames from; "
                          f"choose one of: {', '.join(names) or 'none'}")
    return layer


def default_layer(model: keras.Model, card: Mapping[str, Any] | None = None) -> str:
    """The layer a job's activation frames come from when none is chosen.

    The most sensitive layer of the card's sensitivity map (its
    ``sensitivity.most_sensitive``, first entry the model has); without a map,
    the middle conv layer (the bottleneck of an autoencoder).

    Raises
    ------
    RecipeError
        If the model has no conv layer.
    """
    names = conv_layer_names(model)
    if not names:
        raise RecipeError(f"model {model.name!r} has no conv layer to take activation frames from")
    section = (card or {}).get("sensitivity") or {}
    ranked = section.get("most_sensitive") if isinstance(section, Mapping) else None
    for entry in ranked if isinstance(ranked, list) else []:
        name = entry.get("layer") if isinstance(entry, Mapping) else entry
        if name in names:
            return name
    return names[len(names) // 2]


def _tap_tensor(model: keras.Model, layer: str):
    """The tensor that carries ``layer``'s output on: its own, or that of the transform a damaged copy put after it."""
    tensor = model.get_layer(layer).output
    for suffix in (LAPSE_SUFFIX, BEND_SUFFIX):
        try:
            tensor = model.get_layer(f"{layer}{suffix}").output
        except ValueError:
            continue
    return tensor


def tapped(model: keras.Model, layer: str) -> keras.Model:
    """``model`` with a second and third output: ``layer``'s activation pooled by a :class:`Tap`.

    Shares ``model``'s layers and variables (built once per model and layer, and kept with the
    model: a kept damaged copy's views go when it goes).

    Raises
    ------
    RecipeError
        If the model has no such conv layer.
    """
    check_layer(layer, conv_layer_names(model), model_name=model.name)
    with _tapped_lock:
        views = model.__dict__.setdefault(_TAPS, {})
        view = views.get(layer)
        if view is None:
            tensor = _tap_tensor(model, layer)
            bins = tensor.shape[2] if len(tensor.shape) == 4 else None
            channels, profile = Tap(bins, name=f"{layer}_tap")(tensor)
            view = keras.Model(model.inputs, [model.outputs[0], channels, profile], name=f"{model.name}_tap_{layer}")
            views[layer] = view
    return view


def at_frames(pooled: np.ndarray, n: int, total: int) -> np.ndarray:
    """A chunk's pooled activation ``(layer_frames, k)`` at its first ``n`` model frames of ``total`` fed.

    A layer at the model's frame rate gives its first ``n`` rows; one with a
    time stride (a fixed-length model's) is read at the nearest earlier row.
    """
    if pooled.shape[0] == total:
        return pooled[:n]
    rows = np.arange(n) * pooled.shape[0] // total
    return pooled[rows]


class Recorder:
    """Keeps each chunk's kept frames of one output's activations (bounded: pooled frames only).

    Parameters
    ----------
    chunks : sequence of Chunk
        The plan :func:`senseflosser.spectral.process` runs (kept ranges tiling ``[0, n)``).
    layer : str
    """

    def __init__(self, chunks: Sequence[Chunk], layer: str) -> None:
        self.chunks, self.layer = list(chunks), layer
        self.n = self.chunks[-1].keep_stop
        self._channels: np.ndarray | None = None
        self._profile: np.ndarray | None = None

    def add(self, index: int, channels: np.ndarray, profile: np.ndarray) -> None:
        """Store chunk ``index``'s frames, ``channels`` (chunk frames, C) and ``profile`` (chunk frames, B)."""
        c = self.chunks[index]
        if self._channels is None:
            self._channels = np.zeros((self.n, channels.shape[1]), np.float32)
            self._profile = np.zeros((self.n, profile.shape[1]), np.float32)
        lo, hi = c.keep_start - c.start, c.keep_stop - c.start
        self._channels[c.keep_start:c.keep_stop] = channels[lo:hi]
        self._profile[c.keep_start:c.keep_stop] = profile[lo:hi]

    def frames(self) -> Frames | None:
        """What was recorded (``None`` if no chunk ran)."""
        if self._channels is None:
            return None
        return Frames(self.layer, self._channels, self._profile)
