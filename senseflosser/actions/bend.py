"""The bend actions: an audio-native transform of the feature maps after each targeted conv layer.

Each bend (see :mod:`senseflosser.bends`) is an architecture action, like lapse:
:func:`architecture` inserts a :class:`~senseflosser.bends.Bend` layer after each
targeted conv layer once, and :func:`state` gives each recipe's amount (the
magnitude) and second value (``bandmask``'s band place: its ``place`` parameter, or
drawn from the seed, one stream per layer; ``freqshift``'s ``shift_rows`` and the filters' ``radius`` parameter), so a shared copy serves
every magnitude, seed and parameter value. :func:`functions` gives one transform's
``(build, architecture, state)`` triple for its registry entry.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from ..bends import Bend, check_layer, check_transform
from ..errors import ModelError
from ..models import conv_layer_names
from .base import copy_model
from .selection import Resolved

SUFFIX = "_bend"
SEEDED = frozenset({"bandmask"})
"""The bends whose output depends on the seed (bandmask's band place); the others are deterministic."""
SEEDED_PLACE = -1.0
"""``bandmask``'s ``place`` that draws each layer's band place from the seed (the default)."""
ARCHITECTURE_PARAMS = {"shift_rows": 0.0, "radius": 0.0, "place": SEEDED_PLACE}
"""Parameter values the shared architecture is built with (its state replaces them per recipe)."""


def layer_place(seed: int, index: int) -> np.float32:
    """Where the band sits (0 to 1: its start is this share of the rows it leaves free) of the bend after the ``index``-th conv layer at ``seed``."""
    word = int(np.random.SeedSequence([seed, index, 0xBE4D]).generate_state(1)[0])
    return np.float32(word / 2.0**32)


def layer_aux(transform: str, seed: int, index: int, params: dict) -> np.float32:
    """The second state value of the bend after the ``index``-th conv layer (0 for a transform without one)."""
    if transform == "bandmask":
        place = float(params.get("place", SEEDED_PLACE))
        return layer_place(seed, index) if place == SEEDED_PLACE else np.float32(place)
    if transform == "freqshift":
        return np.float32(params["shift_rows"])
    if transform in ("dilate", "erode"):
        return np.float32(params["radius"])
    return np.float32(0.0)


def build(model: keras.Model, targets: Resolved, *, transform: str, magnitude: float, seed: int,
          **params) -> keras.Model:
    """A copy of ``model`` with a ``transform`` bend at ``magnitude`` after each targeted conv layer.

    Raises
    ------
    RecipeError
        If a targeted layer's output cannot take the transform (a frequency bend on a Conv1D layer).
    """
    check_transform(transform)
    order = {name: i for i, name in enumerate(conv_layer_names(model))}
    for name in targets:
        check_layer(transform, name, tuple(model.get_layer(name).output.shape))

    def call(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        if layer.name in targets:
            channels = targets[layer.name]
            out = Bend(transform, amount=magnitude, aux=float(layer_aux(transform, seed, order[layer.name], params)),
                       channels=None if channels is None else list(channels), name=f"{layer.name}{SUFFIX}")(out)
        return out

    return copy_model(model, call_function=call)


def state(damaged: keras.Model, *, magnitude: float, seed: int, **params) -> dict[str, np.ndarray]:
    """The state that makes a bent copy behave as :func:`build` at ``magnitude``, ``seed`` and ``params`` would.

    Returns
    -------
    dict
        Variable path -> new value, for every bend layer's amount and second value.
    """
    order = {name: i for i, name in enumerate(conv_layer_names(damaged))}
    out: dict[str, np.ndarray] = {}
    for layer in damaged.layers:
        if not isinstance(layer, Bend):
            continue
        source = layer.name[: -len(SUFFIX)] if layer.name.endswith(SUFFIX) else None
        if source not in order:
            raise ModelError(f"bend layer {layer.name!r} does not follow a conv layer of {damaged.name!r}")
        out[layer.amount_state.path] = np.float32(magnitude)
        out[layer.aux_state.path] = layer_aux(layer.transform, seed, order[source], params)
    return out


def functions(transform: str) -> tuple[Callable, Callable, Callable]:
    """``(build, architecture, state)`` of one transform, as its :class:`ActionSpec` takes them."""
    check_transform(transform)

    def build_one(model: keras.Model, targets: Resolved, *, magnitude: float, seed: int, **params) -> keras.Model:
        return build(model, targets, transform=transform, magnitude=magnitude, seed=seed, **params)

    def architecture_one(model: keras.Model, targets: Resolved) -> keras.Model:
        return build(model, targets, transform=transform, magnitude=0.0, seed=0, **ARCHITECTURE_PARAMS)

    def state_one(damaged: keras.Model, *, magnitude: float, seed: int, **params) -> dict[str, np.ndarray]:
        return state(damaged, magnitude=magnitude, seed=seed, **params)

    for fn, what in ((build_one, "build"), (architecture_one, "architecture"), (state_one, "state")):
        fn.__name__ = f"{transform}_{what}"
        fn.__qualname__ = fn.__name__
    return build_one, architecture_one, state_one
