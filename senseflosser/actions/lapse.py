"""The lapse action: dropout that stays on at inference, after conv layers.

It changes the architecture (a :class:`~senseflosser.layers.Lapse` layer after
each targeted conv layer), but the rate, scale and mask seed are the layer's
state: :func:`lapse_architecture` builds the damaged architecture once and
:func:`lapse_state` gives each recipe's values, so jobs share one copy.
"""

from __future__ import annotations

import keras
import numpy as np

from ..errors import ModelError
from ..layers import Lapse, lapse_rate_and_scale, seed_state
from ..models import conv_layer_names
from .base import copy_model
from .selection import Resolved

SUFFIX = "_lapse"


def layer_seed(seed: int, index: int) -> int:
    """The mask seed of the lapse layer after the ``index``-th conv layer: its own stream of ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def lapse_model(model: keras.Model, targets: Resolved, *, magnitude: float, seed: int,
                rescale: bool = True) -> keras.Model:
    """A copy of ``model`` with a lapse layer (rate = ``magnitude``) after each targeted conv layer."""
    order = {name: i for i, name in enumerate(conv_layer_names(model))}

    def call(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        if layer.name in targets:
            channels = targets[layer.name]
            out = Lapse(magnitude, seed=layer_seed(seed, order[layer.name]), rescale=rescale,
                        channels=None if channels is None else list(channels), name=f"{layer.name}{SUFFIX}")(out)
        return out

    return copy_model(model, call_function=call)


def lapse_architecture(model: keras.Model, targets: Resolved) -> keras.Model:
    """The lapse architecture for ``targets``, for any rate and seed (see :func:`lapse_state`)."""
    return lapse_model(model, targets, magnitude=0.0, seed=0)


def lapse_state(damaged: keras.Model, *, magnitude: float, seed: int, rescale: bool = True) -> dict[str, np.ndarray]:
    """The state that makes a lapse copy behave as :func:`lapse_model` at ``magnitude`` and ``seed`` would.

    Running ``damaged`` (any lapse copy of the same source model and layers)
    with this state in place of its own gives exactly the output of a fresh
    copy built with that magnitude and seed.

    Returns
    -------
    dict
        Variable path -> new value, for every lapse layer's state.
    """
    order = {name: i for i, name in enumerate(conv_layer_names(damaged))}
    rate, scale = lapse_rate_and_scale(magnitude, rescale)
    state: dict[str, np.ndarray] = {}
    for layer in damaged.layers:
        if not isinstance(layer, Lapse):
            continue
        source = layer.name[: -len(SUFFIX)] if layer.name.endswith(SUFFIX) else None
        if source not in order:
            raise ModelError(f"lapse layer {layer.name!r} does not follow a conv layer of {damaged.name!r}")
        generator = layer.seed_generator.state
        state[generator.path] = seed_state(layer_seed(seed, order[source]), generator.dtype)
        state[layer.rate_state.path] = rate
        state[layer.scale_state.path] = scale
    return state
