"""Actions: the ways a model is damaged, and the registry that is the only list of them.

Every action is a pure, seeded function of the source model (never mutated)
plus one :class:`ActionSpec` entry in :data:`ACTIONS`. The CLI's choices and
help, the web form's validation, the page's action list, ``GET /api/actions``
and the README's table all read the registry.

- ``fog``: Gaussian noise (std = magnitude) on a random half of each targeted
  weight array (kernels and biases).
- ``lapse``: dropout kept on at inference (rate = magnitude) after the
  targeted conv layers.
- ``ablate``: a share (= magnitude) of the output channels of each targeted
  layer silenced (kernel slice and bias zeroed).
- ``bitflip``: one random bit flipped in a share (= magnitude) of the targeted
  float32 weights.
- ``adversarial``: fog's size, pointed along the direction that hurts the
  reconstruction most (see :mod:`senseflosser.actions.worst_case`); its
  audible range is about a hundred times below fog's.

A layer selection may name channels (``down:0,5,9,mid``, see
:mod:`senseflosser.actions.selection`); every action then damages only those
channels of that layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from ..errors import ModelError, RecipeError
from ..layers import Lapse
from ..models import conv_layer_names
from .worst_case import universal_weights
from .base import MAX_SEED, ActionSpec, MagnitudeSpec, draw_seed, validate_seed, with_weights
from .lapse import lapse_architecture, lapse_model, lapse_state
from .selection import Resolved, canonical, check, conv_channels, parse_layers, resolve, split_entry
from .weights import ablate_weights, bitflip_weights, fog_weights as _fog_weights

if TYPE_CHECKING:
    from ..recipe import Recipe

__all__ = [
    "ACTIONS", "ACTION_NAMES", "MAX_SEED", "ActionSpec", "MagnitudeSpec", "ablate", "adversarial", "apply", "bitflip",
    "damage", "damaged_state", "damaged_weights", "default_layers", "draw_seed", "fog", "get", "lapse",
    "check", "conv_channels", "parse_layers", "resolve_layers", "split_entry", "targets", "validate_action", "validate_magnitude",
    "validate_seed",
]

ACTIONS: dict[str, ActionSpec] = {
    spec.name: spec
    for spec in (
        ActionSpec(
            name="fog",
            description="Gaussian noise on a random half of the weights of each conv layer: a haze of artefacts",
            magnitude=MagnitudeSpec("noise standard deviation, in weight units", 0.0, 10.0, 0.05,
                                    (0.003, 0.01, 0.02, 0.05, 0.1)),
            changes="weights", default_layers="all", weights=_fog_weights,
        ),
        ActionSpec(
            name="lapse",
            description="dropout kept on at inference after the conv layers: lost detail and holes",
            magnitude=MagnitudeSpec("share of activations dropped (dropout rate)", 0.0, 1.0, 0.1,
                                    (0.01, 0.05, 0.1, 0.2, 0.5)),
            changes="architecture", default_layers="all but output",
            architecture=lapse_architecture, state=lapse_state, build=lapse_model,
        ),
        ActionSpec(
            name="ablate",
            description="silences a share of each conv layer's channels (neurons): whole features go missing",
            magnitude=MagnitudeSpec("share of output channels silenced", 0.0, 1.0, 0.05,
                                    (0.01, 0.02, 0.05, 0.1, 0.2)),
            changes="weights", default_layers="all but output", weights=ablate_weights,
        ),
        ActionSpec(
            name="adversarial",
            description="fog-sized damage pointed where it hurts most (projected gradient ascent): the worst case",
            magnitude=MagnitudeSpec("size: the L2 norm of fog's noise at this standard deviation", 0.0, 10.0, 0.001,
                                    (0.0001, 0.0003, 0.001, 0.003, 0.01)),
            changes="weights", default_layers="all", weights=universal_weights,
        ),
        ActionSpec(
            name="bitflip",
            description="flips one random bit in a share of the float32 weights: a hardware fault",
            magnitude=MagnitudeSpec("share of weights with one random bit flipped", 0.0, 1.0, 0.01,
                                    (0.0003, 0.001, 0.01, 0.03, 0.1)),
            changes="weights", default_layers="all", weights=bitflip_weights,
        ),
    )
}
"""The action registry, in the order forms and tables list it."""

ACTION_NAMES: tuple[str, ...] = tuple(ACTIONS)


def markdown_table() -> str:
    """The README's table of actions, made from the registry (a test keeps the README equal to it)."""
    rows = ["| action | what it does | magnitude | range | default titration | changes |",
            "|---|---|---|---|---|---|"]
    for spec in ACTIONS.values():
        m = spec.magnitude
        rows.append(
            f"| `{spec.name}` | {spec.description} | {m.meaning} | {m.min:g} to {m.max:g} | "
            f"{', '.join(f'{v:g}' for v in m.titration)} | {spec.changes} |"
        )
    return "\n".join(rows) + "\n"


def get(action: Any) -> ActionSpec:
    """The registry entry of ``action``.

    Raises
    ------
    RecipeError
        If it is not an action's name; the message lists them.
    """
    if not isinstance(action, str) or action not in ACTIONS:
        raise RecipeError(f"unknown action {action!r}; choose one of: {', '.join(ACTION_NAMES)}")
    return ACTIONS[action]


def validate_action(action: Any) -> str:
    """Return ``action`` if it names a registered action, else raise :class:`RecipeError`."""
    return get(action).name


def validate_magnitude(magnitude: Any, action: str) -> float:
    """Parse a magnitude and check it against ``action``'s range (from the registry)."""
    spec = get(action)
    return spec.magnitude.validate(magnitude, spec.name)


def default_layers(model: keras.Model, action: str) -> tuple[str, ...]:
    """The layers an action targets when the user names none.

    ``"all"``: every conv layer. ``"all but output"``: every conv layer but the
    last, which writes the output spectrogram: dropping or silencing its
    outputs would only punch holes in the spectrum, not damage what the network
    has learnt. (The original tool meant to skip some layers for lapse but,
    through an operator-precedence bug, put dropout after every conv layer;
    name all layers to get that.)
    """
    convs = conv_layer_names(model)
    if not convs:
        raise ModelError(f"model {model.name!r} has no conv layers to damage")
    if get(action).default_layers == "all but output" and len(convs) > 1:
        return tuple(convs[:-1])
    return tuple(convs)


def targets(model: keras.Model, action: str, layers: Sequence[str] | str | None) -> Resolved:
    """What ``action`` damages in ``model``: layer name -> channels (``None``: all), checked."""
    return resolve(model, layers, default=default_layers(model, action))


def resolve_layers(model: keras.Model, layers: Sequence[str] | str | None, *, action: str) -> tuple[str, ...]:
    """A selection checked against ``model``, as canonical entries; ``None`` gives the action's default."""
    return canonical(targets(model, action, layers))


def damage(
    model: keras.Model, *, action: str, magnitude: float, seed: int, layers: Sequence[str] | str | None = None
) -> keras.Model:
    """A damaged copy of ``model`` (the source is never mutated).

    Parameters
    ----------
    model : keras.Model
    action : str, keyword-only
        A name from :data:`ACTIONS`.
    magnitude : float, keyword-only
        In the action's range (:attr:`ActionSpec.magnitude`).
    seed : int, keyword-only
    layers : selection or None, keyword-only
        Conv layers (and channels) to damage; ``None``: the action's default.

    Returns
    -------
    keras.Model
    """
    spec = get(action)
    magnitude = validate_magnitude(magnitude, spec.name)
    seed = validate_seed(seed)
    chosen = targets(model, spec.name, layers)
    if spec.weights is not None:
        return with_weights(model, spec.weights(model, chosen, magnitude=magnitude, seed=seed))
    return spec.build(model, chosen, magnitude=magnitude, seed=seed)


def _action(name: str):
    def act(model: keras.Model, *, magnitude: float, seed: int, layers: Sequence[str] | str | None = None):
        return damage(model, action=name, magnitude=magnitude, seed=seed, layers=layers)

    act.__name__ = name
    act.__doc__ = f"Damage a copy of ``model`` with {name}: {ACTIONS[name].description} (see :func:`damage`)."
    return act


adversarial = _action("adversarial")
fog = _action("fog")
lapse = _action("lapse")
ablate = _action("ablate")
bitflip = _action("bitflip")


def fog_weights(model: keras.Model, *, magnitude: float, seed: int,
                layers: Sequence[str] | str | None = None) -> dict[str, list[np.ndarray]]:
    """The weights :func:`fog` gives each targeted layer, without building a model."""
    return _fog_weights(model, targets(model, "fog", layers), magnitude=validate_magnitude(magnitude, "fog"),
                        seed=validate_seed(seed))


def apply(model: keras.Model, recipe: Recipe) -> keras.Model:
    """Damage ``model`` as ``recipe`` says and return the new model."""
    return damage(model, action=recipe.action, magnitude=recipe.magnitude, seed=recipe.seed, layers=recipe.layers)


def damaged_weights(model: keras.Model, recipe: Recipe) -> dict[str, list[np.ndarray]] | None:
    """New weights by layer name for a weights-only action; ``None`` for one that changes the architecture.

    Running the source model's architecture with these weights gives what
    :func:`apply`'s copy would, without the cost of copying the model.
    """
    spec = get(recipe.action)
    if spec.weights is None:
        return None
    return spec.weights(model, targets(model, spec.name, recipe.layers), magnitude=recipe.magnitude,
                        seed=recipe.seed)


def architecture(model: keras.Model, recipe: Recipe) -> keras.Model | None:
    """The damaged architecture ``recipe`` needs, for any magnitude and seed; ``None`` for a weights-only action.

    It depends only on ``model``, the action and the layers, so one copy serves
    every magnitude and seed (see :func:`damaged_state`).
    """
    spec = get(recipe.action)
    if spec.architecture is None:
        return None
    return spec.architecture(model, targets(model, spec.name, recipe.layers))


def damaged_state(damaged: keras.Model, recipe: Recipe) -> dict[str, np.ndarray]:
    """The state that turns :func:`architecture`'s copy into what :func:`apply` would build for ``recipe``."""
    spec = get(recipe.action)
    if spec.state is None:
        return {}
    return spec.state(damaged, magnitude=recipe.magnitude, seed=recipe.seed)


def reset(model: keras.Model) -> None:
    """Restart the dropout masks of every lapse layer from their seeds."""
    for layer in model.layers:
        if isinstance(layer, Lapse):
            layer.reset_seed()
