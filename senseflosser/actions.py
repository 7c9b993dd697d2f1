"""Actions: ways to damage a model. Each is a pure function ``model -> new model``.

The source model is never mutated: every action works on a clone that gets
the source's weights first.

- :func:`fog` adds Gaussian noise (std = magnitude) to a random half of every
  weight array (kernels and biases) of the targeted conv layers.
- :func:`lapse` inserts dropout that stays on at inference (rate = magnitude)
  after the targeted conv layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np

from .errors import ModelError, RecipeError
from .layers import Lapse, lapse_rate_and_scale, seed_state
from .models import conv_layer_names
from .recipe import ACTIONS, Recipe, validate_action, validate_layers, validate_magnitude, validate_seed


def default_layers(model: keras.Model, action: str) -> tuple[str, ...]:
    """The layers an action targets when the user names none.

    ``fog``: every conv layer. ``lapse``: every conv layer but the last, which
    writes the output spectrogram: dropping its outputs would only punch holes
    in the spectrum, not damage what the network has learnt. (The original
    tool meant to skip some layers but, through an operator-precedence bug,
    put dropout after every conv layer; name all layers to get that.)
    """
    convs = conv_layer_names(model)
    if not convs:
        raise ModelError(f"model {model.name!r} has no Conv2D / Conv2DTranspose layers to damage")
    if validate_action(action) == "lapse" and len(convs) > 1:
        return tuple(convs[:-1])
    return tuple(convs)


def resolve_layers(
    model: keras.Model, layers: Sequence[str] | str | None, *, action: str
) -> tuple[str, ...]:
    """Check a layer selection against a model; ``None`` gives the action's default.

    Raises
    ------
    RecipeError
        If a name is not a conv layer of the model.
    """
    chosen = validate_layers(layers)
    if chosen is None:
        return default_layers(model, action)
    convs = conv_layer_names(model)
    unknown = [n for n in chosen if n not in convs]
    if unknown:
        raise RecipeError(
            f"layer {unknown[0]!r} is not a conv layer of model {model.name!r}; "
            f"choose from: {', '.join(convs)}"
        )
    return chosen


def _copy(model: keras.Model, call_function: Callable | None = None) -> keras.Model:
    try:
        clone = keras.models.clone_model(model, call_function=call_function)
    except Exception as exc:
        raise ModelError(f"model {model.name!r} cannot be copied for damaging ({exc})") from None
    for layer in model.layers:
        if layer.weights:
            clone.get_layer(layer.name).set_weights(layer.get_weights())
    return clone


def fog_weights(
    model: keras.Model,
    *,
    magnitude: float,
    seed: int,
    layers: Sequence[str] | str | None = None,
) -> dict[str, list[np.ndarray]]:
    """The weights :func:`fog` gives each targeted layer, without building a model.

    Parameters
    ----------
    model, magnitude, seed, layers
        As for :func:`fog`.

    Returns
    -------
    dict
        Layer name -> its new weight arrays, in ``layer.get_weights()`` order.
    """
    magnitude = validate_magnitude(magnitude)
    seed = validate_seed(seed)
    targets = resolve_layers(model, layers, action="fog")
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {}
    for name in conv_layer_names(model):  # fixed order, so each layer's noise depends only on the seed
        if name not in targets:
            continue
        noisy = []
        for w in model.get_layer(name).get_weights():
            flat = w.astype(np.float32).ravel()
            # Exactly half; an odd count rounds up or down at random (a 1-element bias: a coin flip).
            half = (flat.size + int(rng.integers(0, 2))) // 2
            chosen = rng.permutation(flat.size)[:half]
            noise = rng.normal(0.0, magnitude, size=chosen.size).astype(np.float32)
            flat[chosen] += noise
            noisy.append(flat.reshape(w.shape))
        out[name] = noisy
    return out


def fog(
    model: keras.Model,
    *,
    magnitude: float,
    seed: int,
    layers: Sequence[str] | str | None = None,
) -> keras.Model:
    """Cloud a model's senses: Gaussian noise on half of each conv weight array.

    Parameters
    ----------
    model : keras.Model
        Source model (left untouched).
    magnitude : float, keyword-only
        Standard deviation of the noise, in [0, 1] (in weight units).
    seed : int, keyword-only
        Seed of the choice of weights and of the noise.
    layers : sequence of str or None, keyword-only
        Conv layers to fog (default: all of them).

    Returns
    -------
    keras.Model
        A new model with noisy weights.
    """
    noisy = fog_weights(model, magnitude=magnitude, seed=seed, layers=layers)
    clone = _copy(model)
    for name, weights in noisy.items():
        clone.get_layer(name).set_weights(weights)
    return clone


def lapse(
    model: keras.Model,
    *,
    magnitude: float,
    seed: int,
    layers: Sequence[str] | str | None = None,
    rescale: bool = True,
) -> keras.Model:
    """Make a model's neurons lapse: dropout kept on at inference after conv layers.

    Parameters
    ----------
    model : keras.Model
        Source model (left untouched; its weights are copied).
    magnitude : float, keyword-only
        Dropout rate in [0, 1]: the share of each layer's activations zeroed.
    seed : int, keyword-only
        Seed of the dropout masks; each targeted layer gets its own stream.
    layers : sequence of str or None, keyword-only
        Conv layers followed by dropout (default: all but the output layer,
        see :func:`default_layers`).
    rescale : bool, keyword-only
        Scale survivors by ``1 / (1 - rate)`` as Keras' dropout does (default),
        so the expected activation is unchanged; ``False`` leaves survivors as
        they are and the output also loses level.

    Returns
    -------
    keras.Model
        A new model with :class:`~senseflosser.layers.Lapse` layers inserted.
    """
    magnitude = validate_magnitude(magnitude)
    seed = validate_seed(seed)
    targets = resolve_layers(model, layers, action="lapse")
    order = {name: i for i, name in enumerate(conv_layer_names(model))}

    def call(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        if layer.name in targets:
            layer_seed = _lapse_layer_seed(seed, order[layer.name])
            out = Lapse(magnitude, seed=layer_seed, rescale=rescale, name=f"{layer.name}{_LAPSE_SUFFIX}")(out)
        return out

    return _copy(model, call_function=call)


_LAPSE_SUFFIX = "_lapse"


def _lapse_layer_seed(seed: int, index: int) -> int:
    """The mask seed of the lapse layer after the ``index``-th conv layer: its own stream of ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def lapse_state(
    damaged: keras.Model, *, magnitude: float, seed: int, rescale: bool = True
) -> dict[str, np.ndarray]:
    """The state that makes a lapse model behave as :func:`lapse` at ``magnitude`` and ``seed`` would.

    A lapse layer's rate, scale and mask seed are state, not architecture (see
    :class:`~senseflosser.layers.Lapse`): running ``damaged`` (any lapse copy
    of the same source model and layers) with this state in place of its own
    gives exactly the output of a fresh ``lapse(source, magnitude=magnitude,
    seed=seed, layers=...)``, with no model built.

    Returns
    -------
    dict
        Variable path -> new value, for every lapse layer's state.
    """
    magnitude = validate_magnitude(magnitude)
    seed = validate_seed(seed)
    order = {name: i for i, name in enumerate(conv_layer_names(damaged))}
    rate, scale = lapse_rate_and_scale(magnitude, rescale)
    state: dict[str, np.ndarray] = {}
    for layer in damaged.layers:
        if not isinstance(layer, Lapse):
            continue
        source = layer.name[: -len(_LAPSE_SUFFIX)] if layer.name.endswith(_LAPSE_SUFFIX) else None
        if source not in order:
            raise ModelError(f"lapse layer {layer.name!r} does not follow a conv layer of {damaged.name!r}")
        generator = layer.seed_generator.state
        state[generator.path] = seed_state(_lapse_layer_seed(seed, order[source]), generator.dtype)
        state[layer.rate_state.path] = rate
        state[layer.scale_state.path] = scale
    return state


ACTION_FUNCTIONS: dict[str, Callable[..., keras.Model]] = {"fog": fog, "lapse": lapse}
assert set(ACTION_FUNCTIONS) == set(ACTIONS)


def apply(model: keras.Model, recipe: Recipe) -> keras.Model:
    """Damage ``model`` as ``recipe`` says and return the new model."""
    return ACTION_FUNCTIONS[recipe.action](
        model, magnitude=recipe.magnitude, seed=recipe.seed, layers=recipe.layers
    )


def damaged_weights(model: keras.Model, recipe: Recipe) -> dict[str, list[np.ndarray]] | None:
    """What ``recipe`` does to ``model`` when it only changes weights: new weights by layer name.

    Running the source model's architecture with these weights gives what
    :func:`apply`'s copy would, without the cost of copying the model.
    ``None`` for an action that changes the architecture (``lapse``).
    """
    if recipe.action == "fog":
        return fog_weights(model, magnitude=recipe.magnitude, seed=recipe.seed, layers=recipe.layers)
    return None


def architecture(model: keras.Model, recipe: Recipe) -> keras.Model | None:
    """The damaged architecture ``recipe`` needs, with any magnitude and seed, or ``None`` for a weights-only action.

    Its result depends only on ``model``, the action and the layers, so one
    copy serves every magnitude and seed (see :func:`damaged_state`).
    """
    if recipe.action == "lapse":
        return lapse(model, magnitude=0.0, seed=0, layers=recipe.layers)
    return None


def damaged_state(damaged: keras.Model, recipe: Recipe) -> dict[str, np.ndarray]:
    """The state that turns :func:`architecture`'s copy into what :func:`apply` would build for ``recipe``."""
    if recipe.action == "lapse":
        return lapse_state(damaged, magnitude=recipe.magnitude, seed=recipe.seed)
    return {}


def reset(model: keras.Model) -> None:
    """Restart the dropout masks of every lapse layer from their seeds."""
    for layer in model.layers:
        if isinstance(layer, Lapse):
            layer.reset_seed()
