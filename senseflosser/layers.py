"""Custom Keras layers stored inside senseflosser models.

They are registered as serializable, so a saved ``.keras`` file loads with
``keras.models.load_model`` once ``senseflosser`` has been imported.
"""

from __future__ import annotations

import keras
from keras import ops

_PACKAGE = "senseflosser"
_EPS = 1e-7


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

    The masks come from a seed generator started at ``seed``: a saved model
    reloads with its rate and seed, and its first call after loading draws the
    same masks as the model that was saved did on its first call.

    Input and output shape: any.
    """

    def __init__(self, rate: float, seed: int = 0, rescale: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)
        self.seed = int(seed)
        self.rescale = bool(rescale)
        self.seed_generator = keras.random.SeedGenerator(self.seed)

    def reset_seed(self) -> None:
        """Restart the mask sequence from ``seed``."""
        self.seed_generator.state.assign(
            keras.random.SeedGenerator(self.seed).state.value
        )

    def call(self, x, training=None):
        if self.rate <= 0.0:
            return x
        if self.rate >= 1.0:
            return ops.zeros_like(x)
        keep = ops.cast(
            keras.random.uniform(ops.shape(x), seed=self.seed_generator) >= self.rate, x.dtype
        )
        scale = 1.0 / (1.0 - self.rate) if self.rescale else 1.0
        return x * keep * scale

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "rate": self.rate,
            "seed": self.seed,
            "rescale": self.rescale,
        }
