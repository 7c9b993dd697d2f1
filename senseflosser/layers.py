"""Custom Keras layers stored inside senseflosser models.

They are registered as serializable, so a saved ``.keras`` file loads with
``keras.models.load_model`` once ``senseflosser`` has been imported.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

_PACKAGE = "senseflosser"
_EPS = 1e-7


def only_channels(changed, x, channels):
    """``changed`` on the chosen ``channels`` (indices along the last axis; ``None``: all), ``x`` on the others."""
    if channels is None:
        return changed
    chosen = np.zeros(x.shape[-1], bool)
    chosen[list(channels)] = True
    return ops.where(ops.convert_to_tensor(chosen), changed, x)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SpectralCompress(keras.layers.Layer):
    """Power-law compression of complex STFT bins, phase kept.

    Maps each bin ``X`` (last axis = real, imaginary) to ``X * |X|**(power - 1)``,
    so magnitudes become ``|X|**power``. Raw STFT values span many decades; a
    network (and its loss) on compressed values hears quiet bins as well as loud
    ones.

    Input and output shape: ``(batch, frames, bins, 2)``.
    """

    def __init__(self, power: float = 0.3, **kwargs):
        super().__init__(**kwargs)
        self.power = float(power)

    def call(self, x):
        mag = ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True) + _EPS)
        return x * ops.power(mag, self.power - 1.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "power": self.power}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SpectralExpand(keras.layers.Layer):
    """Inverse of :class:`SpectralCompress`: magnitudes raised to ``1 / power``.

    Compressed magnitudes are capped at ``limit`` first, so a heavily damaged
    network cannot overflow float32 on the way back out.

    Input and output shape: ``(batch, frames, bins, 2)``.
    """

    def __init__(self, power: float = 0.3, limit: float = 1e3, **kwargs):
        super().__init__(**kwargs)
        self.power = float(power)
        self.limit = float(limit)

    def call(self, x):
        mag = ops.sqrt(ops.sum(ops.square(x), axis=-1, keepdims=True) + _EPS)
        capped = ops.minimum(mag, self.limit)
        return x * (ops.power(capped, 1.0 / self.power) / mag)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "power": self.power, "limit": self.limit}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Lapse(keras.layers.Layer):
    """Dropout that stays on at inference: the *lapse* action.

    Each activation is zeroed with probability ``rate``, in training and at
    inference alike. Survivors are scaled by ``1 / (1 - rate)`` (inverted
    dropout, as Keras' ``Dropout`` does) when ``rescale`` is true, so the
    damage sounds like lost detail and noise rather than a fall in level; with
    ``rescale=False`` survivors pass unchanged and the signal also gets
    quieter. ``rate >= 1`` silences the layer.

    The rate, the survivors' scale and the mask seed are the layer's *state*
    (non-trainable variables), not constants of its graph: a compiled function
    of the architecture serves every rate and seed, which are passed in as
    state (see :func:`lapse_state`). That is what lets a worker run lapse job
    after lapse job on one scratch copy of the damaged architecture without
    building (and leaking) a model, variables or a traced function per job.

    The configuration holds ``rate``, ``seed`` and ``rescale``; the state is
    set from it when the layer is made, so a saved model reloads with its rate
    and seed, and its first call after loading draws the same masks as the
    model that was saved did on its first call. The state itself is not saved
    (files written before it existed load unchanged).

    ``channels``: indices along the last axis that lapse (``None``: all).

    Input and output shape: any.
    """

    STATE_CONFIG = ("rate", "seed", "rescale")
    """Configuration entries that only set the state (left out of the compiled-function cache's key)."""

    def __init__(self, rate: float, seed: int = 0, rescale: bool = True, channels=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed = int(seed)
        self.rescale = bool(rescale)
        self.channels = None if channels is None else [int(c) for c in channels]
        # Named after the layer: an auto-numbered name would be new for every copy, and TensorFlow
        # keeps per-name kernels for the process's lifetime; the layer's name keeps the state's
        # path unique within the model.
        self.seed_generator = keras.random.SeedGenerator(self.seed, name=f"{self.name}_seed")
        rate_value, scale_value = lapse_rate_and_scale(self.rate, self.rescale)
        self.rate_state = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(rate_value), trainable=False,
            dtype="float32", name="rate",
        )
        self.scale_state = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(scale_value), trainable=False,
            dtype="float32", name="scale",
        )

    def reset_seed(self) -> None:
        """Restart the mask sequence from ``seed``."""
        self.seed_generator.state.assign(seed_state(self.seed, self.seed_generator.state.dtype))

    def call(self, x, training=None):
        keep = ops.cast(keras.random.uniform(ops.shape(x), seed=self.seed_generator) >= self.rate_state, x.dtype)
        out = x * keep * ops.cast(self.scale_state, x.dtype)
        return only_channels(out, x, self.channels)  # only the chosen channels lapse

    def compute_output_shape(self, input_shape):
        return input_shape

    def save_own_variables(self, store):
        """Nothing to save: the state is set from the configuration."""

    def load_own_variables(self, store):
        """Nothing to load: the state is set from the configuration."""

    def get_config(self):
        return {
            **super().get_config(),
            "rate": self.rate,
            "seed": self.seed,
            "rescale": self.rescale,
            "channels": self.channels,
        }


def lapse_rate_and_scale(rate: float, rescale: bool = True) -> tuple[np.float32, np.float32]:
    """A lapse layer's state for ``rate``: the threshold masks are compared with, and the survivors' scale.

    ``rate <= 0`` keeps everything (threshold 0, scale 1); ``rate >= 1`` keeps
    nothing (threshold above any uniform draw, scale 0). The scale is
    computed in float64 and rounded once to float32.
    """
    rate = float(rate)
    if rate <= 0.0:
        return np.float32(0.0), np.float32(1.0)
    if rate >= 1.0:
        return np.float32(2.0), np.float32(0.0)
    return np.float32(rate), np.float32(1.0 / (1.0 - rate) if rescale else 1.0)


def seed_state(seed: int, dtype: str) -> np.ndarray:
    """The state a :class:`keras.random.SeedGenerator` started at ``seed`` has before its first draw.

    ``dtype``: the generator's state variable's (the backend's seed dtype).
    """
    return np.array([int(seed), 0], dtype=dtype)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ChannelGate(keras.layers.Layer):
    """A trainable factor per channel (last axis), 1 at the start.

    Put after a conv layer, the gradient of a loss with respect to a gate is
    how much that channel's output matters to it (see
    :func:`senseflosser.sensitivity.channel_ranking`). Input and output shape: any.
    """

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.gate = self.add_weight(shape=(self.channels,), initializer="ones", name="gate")

    def call(self, x):
        return x * ops.cast(self.gate, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}
