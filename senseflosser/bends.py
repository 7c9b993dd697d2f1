"""Bends: audio-native transforms of a conv layer's feature maps, and the layer that applies them.

A conv layer of a senseflosser model writes feature maps of shape ``(batch, time,
frequency, channels)`` (Conv2D) or ``(batch, time, channels)`` (Conv1D, frequency
bins folded into channels). Each transform here maps such a map to one of the same
shape, at an ``amount`` (the action's magnitude) where ``amount = 0`` returns the map
unchanged, exactly.

Every transform acts on each frame on its own: nothing mixes frames along time. A
bent model therefore reaches exactly as far along time as the source model does, so
the time-chunked pipeline (chunks with context frames, see
:func:`senseflosser.spectral.process`) gives the same samples as one pass, and the
chunks need no more context than for the normal output. Transforms along the
frequency axis (:data:`FREQUENCY`) need a Conv2D map and refuse a Conv1D one.

:class:`Bend` holds the amount and a second value ``aux`` (``bandmask``'s band place,
``freqshift``'s rows, the filter radius of ``dilate`` and ``erode``) as state, not as
constants of its graph, so one compiled function of a bent architecture serves every
magnitude and seed, as for :class:`~senseflosser.layers.Lapse`.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import ops

from .errors import RecipeError
from .layers import only_channels

_PACKAGE = "senseflosser"

MAX_RADIUS = 8
"""The largest radius (in frequency rows) of ``dilate`` and ``erode``."""


def gain(x, amount, aux):
    """Scale by ``1 + amount``.

    Parameters
    ----------
    x : tensor, shape (batch, time, [freq,] channels)
    amount : scalar tensor
        Added gain factor (0: unchanged).
    aux : scalar tensor
        Unused (the second state value: ``bandmask``'s place, ``freqshift``'s rows, a filter's radius).

    Returns
    -------
    tensor, shape of ``x``
    """
    return x * (1.0 + amount)


def invert(x, amount, aux):
    """Blend toward the sign-flipped map: ``x * (1 - 2 amount)`` (0.5 silences, 1 inverts); shapes as :func:`gain`."""
    return x * (1.0 - 2.0 * amount)


def gate(x, amount, aux):
    """Zero every activation whose size is below ``amount`` times its frame's peak.

    The peak is taken over the frequency rows of each frame and channel (Conv2D)
    or over the channels of each frame (Conv1D), so the gate is frame-local.
    Shapes as :func:`gain`; ``amount`` in 0..1 (1 keeps only each frame's peaks).
    """
    size = ops.abs(x)
    axis = 2 if len(x.shape) == 4 else -1
    peak = ops.max(size, axis=axis, keepdims=True)
    return ops.where(size < amount * peak, ops.zeros_like(x), x)


def rectify(x, amount, aux):
    """Blend toward full-wave rectification: ``x + amount * (|x| - x)``; shapes as :func:`gain`."""
    return x + amount * (ops.abs(x) - x)


def drive(x, amount, aux):
    """Soft clipping, ``tanh(amount * x) / amount`` (unity slope at 0; ``amount = 0``: unchanged).

    Shapes as :func:`gain`; ``amount`` is the drive in 1 / activation units.
    """
    safe = ops.maximum(amount, 1e-6)
    return ops.where(amount > 0.0, ops.tanh(safe * x) / safe, x)


def _rows(x, index):
    """``x`` gathered along its frequency axis (2) at integer ``index`` of shape (freq,)."""
    return ops.take(x, index, axis=2)


def freqshift(x, amount, aux):
    """Mix in a copy of the map moved up its frequency rows by ``aux`` rows (fractions interpolated).

    Row ``i`` of the moved copy is row ``i - aux`` of ``x`` (zero below row 0);
    the result is ``(1 - amount) * x + amount * moved``.

    Parameters
    ----------
    x : tensor, shape (batch, time, freq, channels)
    amount : scalar tensor
        Share of the moved copy, 0..1 (0: unchanged, 1: only the moved copy).
    aux : scalar tensor
        The shift in rows (the action's ``shift_rows`` parameter).

    Returns
    -------
    tensor, shape (batch, time, freq, channels)
    """
    return x + amount * (shift_rows(x, aux) - x)


def shift_rows(x, rows):
    """``x`` moved up its frequency rows by ``rows`` (fractions by linear interpolation, zero filled).

    Shapes as :func:`freqshift`.
    """
    n = x.shape[2]
    whole = ops.floor(rows)
    frac = ops.cast(rows - whole, x.dtype)
    index = ops.arange(n, dtype="int32") - ops.cast(whole, "int32")

    def shifted(source):
        valid = ops.cast((source >= 0) & (source < n), x.dtype)[:, None]
        return _rows(x, ops.clip(source, 0, n - 1)) * valid

    return (1.0 - frac) * shifted(index) + frac * shifted(index - 1)


def bandmask(x, amount, aux):
    """Zero a band of frequency rows ``amount`` of the axis wide, at the seeded place ``aux``.

    The band is ``[aux (1 - amount), aux (1 - amount) + amount]`` in units of
    the whole axis: it always lies inside the axis, so its width is the share
    of rows masked, and at one ``aux`` a wider band contains every narrower one
    (its start only falls and its end only rises as ``amount`` grows). Each
    row is silenced by the share of it the band covers, so the band widens
    smoothly.

    Parameters
    ----------
    x : tensor, shape (batch, time, freq, channels)
    amount : scalar tensor
        Width as a share of the rows, 0..1 (1 masks every row).
    aux : scalar tensor
        Where the band sits, 0..1 (0: from the lowest row up, 1: down from the top; drawn from the seed).

    Returns
    -------
    tensor, shape (batch, time, freq, channels)
    """
    n = x.shape[2]
    rows = ops.arange(n, dtype="float32")
    lo = aux * (1.0 - amount) * n
    hi = lo + amount * n
    covered = ops.clip(ops.minimum(rows + 1.0, hi) - ops.maximum(rows, lo), 0.0, 1.0)
    return x * ops.cast(1.0 - covered, x.dtype)[:, None]


def _morph(x, amount, pick):
    """A running max (``pick = ops.maximum``) or min filter along frequency, radius ``amount`` rows.

    Radius ``k + f`` (``f`` a fraction) blends the filters of radii ``k`` and ``k + 1``.
    """
    n = x.shape[2]
    radius = ops.clip(ops.convert_to_tensor(amount, "float32"), 0.0, float(MAX_RADIUS))
    rows = ops.arange(n, dtype="int32")
    filtered = x
    out = x * ops.cast(ops.maximum(0.0, 1.0 - ops.abs(radius)), x.dtype)
    for r in range(1, MAX_RADIUS + 1):
        filtered = pick(filtered, pick(_rows(x, ops.clip(rows - r, 0, n - 1)), _rows(x, ops.clip(rows + r, 0, n - 1))))
        weight = ops.maximum(0.0, 1.0 - ops.abs(radius - float(r)))
        out = out + filtered * ops.cast(weight, x.dtype)
    return out


def dilate(x, amount, aux):
    """Blend toward a max filter along the frequency rows, of radius ``aux`` rows (0..:data:`MAX_RADIUS`).

    ``amount``: share of the filtered map, 0..1. Shapes as :func:`freqshift`.
    """
    return x + amount * (_morph(x, aux, ops.maximum) - x)


def erode(x, amount, aux):
    """Blend toward a min filter along the frequency rows, of radius ``aux`` rows; as :func:`dilate`."""
    return x + amount * (_morph(x, aux, ops.minimum) - x)


TRANSFORMS: dict[str, Callable] = {
    "gain": gain, "invert": invert, "gate": gate, "rectify": rectify, "drive": drive,
    "freqshift": freqshift, "bandmask": bandmask, "dilate": dilate, "erode": erode,
}
"""Every transform by name: ``fn(x, amount, aux) -> same shape``."""

FREQUENCY: frozenset[str] = frozenset({"freqshift", "bandmask", "dilate", "erode"})
"""Transforms along the frequency axis of a Conv2D map (a Conv1D map has none)."""


def check_transform(transform: str) -> str:
    """Return ``transform`` if it names a bend, else raise :class:`RecipeError` listing them."""
    if transform not in TRANSFORMS:
        raise RecipeError(f"unknown bend transform {transform!r}; choose one of: {', '.join(TRANSFORMS)}")
    return transform


def check_layer(transform: str, layer_name: str, output_shape: tuple) -> None:
    """Refuse a transform a layer's output cannot take (a frequency bend on a map with no frequency axis).

    Raises
    ------
    RecipeError
    """
    if transform in FREQUENCY and len(output_shape) != 4:
        raise RecipeError(
            f"{transform} cannot apply to layer {layer_name!r}: its output {tuple(output_shape)} has no "
            "frequency axis (it moves along the frequency rows of a Conv2D map); choose Conv2D layers "
            "or a bend that is not along frequency (gain, invert, gate, rectify, drive)")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Bend(keras.layers.Layer):
    """One bend (see :data:`TRANSFORMS`) of the feature maps it is given, at an amount held as state.

    The configuration holds ``transform``, ``channels`` (indices along the last
    axis that are bent; ``None``: all), and ``amount`` and ``aux`` (the transform's
    second value: ``bandmask``'s place, ``freqshift``'s rows, a filter's radius), which only
    set the state when the layer is made: a saved model reloads bent as it was,
    and a compiled function of the architecture serves every amount and aux
    passed in as state (:data:`STATE_CONFIG` tells the compiled-function cache to
    leave them out of its key).

    Input and output shape: ``(batch, time, freq, channels)`` or ``(batch, time, channels)``.
    """

    STATE_CONFIG = ("amount", "aux")
    """Configuration entries that only set the state (left out of the compiled-function cache's key)."""

    def __init__(self, transform: str, amount: float = 0.0, aux: float = 0.5, channels=None, **kwargs):
        super().__init__(**kwargs)
        self.transform = check_transform(transform)
        self.amount = float(amount)
        self.aux = float(aux)
        self.channels = None if channels is None else [int(c) for c in channels]
        self.amount_state = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.amount),
                                            trainable=False, dtype="float32", name="amount")
        self.aux_state = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.aux),
                                         trainable=False, dtype="float32", name="aux")

    def call(self, x):
        out = TRANSFORMS[self.transform](x, ops.cast(self.amount_state, x.dtype), ops.cast(self.aux_state, x.dtype))
        return only_channels(out, x, self.channels)

    def compute_output_shape(self, input_shape):
        return input_shape

    def save_own_variables(self, store):
        """Nothing to save: the state is set from the configuration."""

    def load_own_variables(self, store):
        """Nothing to load: the state is set from the configuration."""

    def get_config(self):
        return {**super().get_config(), "transform": self.transform, "amount": self.amount, "aux": self.aux,
                "channels": self.channels}
