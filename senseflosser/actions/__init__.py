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
- the bends ``gain``, ``invert``, ``gate``, ``rectify``, ``drive``,
  ``freqshift``, ``bandmask``, ``dilate``, ``erode``: an audio-native
  transform of the feature maps after the targeted conv layers (see
  :mod:`senseflosser.bends` and :mod:`senseflosser.actions.bend`).

A layer selection may name channels (``down:0,5,9,mid``, see
:mod:`senseflosser.actions.selection`); every action then damages only those
channels of that layer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np

from ..errors import ModelError, RecipeError
from ..layers import Lapse
from ..models import conv_layer_names
from ..bends import MAX_RADIUS
from . import bend, worst_case
from .base import KINDS, MAX_SEED, ActionSpec, MagnitudeSpec, Param, Params, draw_seed, validate_seed, with_weights
from .dream import SPEC as _DREAM
from .lapse import lapse_architecture, lapse_model, lapse_state
from .selection import Resolved, canonical, check, conv_channels, expand_clusters, parse_layers, resolve, split_entry
from .weights import ablate_weights, bitflip_weights, fog_weights as _fog_weights

__all__ = [
    "ACTIONS", "ACTION_NAMES", "KINDS", "MAX_SEED", "ActionSpec", "MagnitudeSpec", "Param", "Params", "ablate", "adversarial",
    "all_params", "apply", "bitflip", "check", "conv_channels", "damage", "damaged_state", "damaged_weights",
    "default_layers", "draw_seed", "expand_clusters", "fog", "get", "lapse", "names", "params_from_fields", "parse_layers", "prepare",
    "provenance", "register", "resolve_layers", "split_entry", "targets", "unregister", "validate_action",
    "validate_magnitude", "validate_seed",
]

_BUILT_IN: tuple[ActionSpec, ...] = (
    ActionSpec(
        name="fog",
        description="Gaussian noise on a random half of the weights of each conv layer: a haze of artefacts",
        magnitude=MagnitudeSpec("noise standard deviation, in weight units", 0.0, 10.0, 0.05,
                                (0.003, 0.01, 0.02, 0.05, 0.1)),
        changes="weights", default_layers="all", weights=_fog_weights, nests=True,
    ),
    ActionSpec(
        name="lapse",
        description="dropout kept on at inference after the conv layers: lost detail and holes",
        magnitude=MagnitudeSpec("share of activations dropped (dropout rate)", 0.0, 1.0, 0.1,
                                (0.01, 0.05, 0.1, 0.2, 0.5)),
        changes="architecture", default_layers="all but output",
        architecture=lapse_architecture, state=lapse_state, build=lapse_model, nests=True,
    ),
    ActionSpec(
        name="ablate",
        description="silences a share of each conv layer's channels (neurons): whole features go missing",
        magnitude=MagnitudeSpec("share of output channels silenced", 0.0, 1.0, 0.05,
                                (0.01, 0.02, 0.05, 0.1, 0.2)),
        changes="weights", default_layers="all but output", weights=ablate_weights, nests=True,
    ),
    ActionSpec(
        name="adversarial",
        description="fog-sized damage pointed where it hurts most (projected gradient ascent): the worst case",
        magnitude=MagnitudeSpec("size: the L2 norm of fog's noise at this standard deviation", 0.0, 10.0, 0.001,
                                (0.0001, 0.0003, 0.001, 0.003, 0.01)),
        changes="weights", default_layers="all", weights=worst_case.adversarial_weights,
        params=(Param("on_input", "bool", False,
                      "find the worst-case direction on this audio (a few seconds of search) instead of "
                      "the model's stored universal one", aliases=("adversarial_on_input",), slug="input"),),
        prepare=worst_case.prepare, provenance=worst_case.provenance, compare_with="fog", nests=True,
    ),
    ActionSpec(
        name="bitflip",
        description="flips one random bit in a share of the float32 weights: a hardware fault",
        magnitude=MagnitudeSpec("share of weights with one random bit flipped", 0.0, 1.0, 0.01,
                                (0.0003, 0.001, 0.01, 0.03, 0.1)),
        changes="weights", default_layers="all", weights=bitflip_weights, nests=True,
    ),
    _DREAM,  # an input action: it changes the audio, not the model (see senseflosser.actions.dream)
)


def _bend(name: str, description: str, magnitude: MagnitudeSpec, params: tuple[Param, ...] = (), *,
          check_params: Callable | None = None) -> ActionSpec:
    """The registry entry of one bend (:mod:`senseflosser.bends`): an activation action on every conv layer but the output."""
    build, arch, state = bend.functions(name)
    return ActionSpec(name=name, description=description, magnitude=magnitude, changes="architecture",
                      default_layers="all but output", params=params, build=build, architecture=arch, state=state,
                      seeded=name in bend.SEEDED, nests=True, check_params=check_params)


def _check_place(params) -> None:
    """``bandmask``'s place is -1 (seeded) or from 0 to 1."""
    place = dict(params).get("place", bend.SEEDED_PLACE)
    if place != bend.SEEDED_PLACE and not 0.0 <= place <= 1.0:
        raise RecipeError(f"bandmask parameter place is where the band sits: a number from 0 (lowest rows) to 1 "
                          f"(top rows), or -1 for a place drawn from the seed, got {place:g}")


_RADIUS = Param("radius", "float", 2.0, "radius of dilate's and erode's filter along the feature map's frequency "
                "rows, in rows (fractions blended)", min=0.0, max=float(MAX_RADIUS))

_BUILT_IN += (
    _bend("gain", "feature maps scaled up by 1 + magnitude: louder, harder, overdriven detail",
          MagnitudeSpec("gain added to the activations (factor 1 + magnitude)", 0.0, 10.0, 0.01,
                        (0.001, 0.003, 0.01, 0.03, 0.1))),
    _bend("invert", "feature maps' polarity flipped, blended (0.5 silences them, 1 inverts): hollow, phasey, cancelled",
          MagnitudeSpec("blend toward the sign-flipped map (factor 1 - 2 x magnitude)", 0.0, 1.0, 0.01,
                        (0.002, 0.005, 0.01, 0.03, 1.0))),
    _bend("gate", "activations below a share of their frame's peak zeroed: sparse, whistling, only the loudest partials",
          MagnitudeSpec("threshold as a share of each frame's peak activation", 0.0, 1.0, 0.2,
                        (0.05, 0.1, 0.2, 0.4, 0.8))),
    _bend("rectify", "feature maps blended toward their absolute value: buzzy, octave-doubled distortion",
          MagnitudeSpec("blend toward full-wave rectification", 0.0, 1.0, 0.03, (0.005, 0.01, 0.03, 0.1, 0.5))),
    _bend("drive", "activations soft-clipped by tanh: squashed, saturated, tape-like compression of detail",
          MagnitudeSpec("drive of tanh(drive x) / drive, in 1 / activation units", 0.0, 20.0, 1.0,
                        (0.25, 0.5, 1.0, 2.0, 4.0))),
    _bend("freqshift", "a copy of the feature maps slid up their frequency rows mixed in: inharmonic, "
                       "ring-modulated, detuned ghosts of every partial",
          MagnitudeSpec("share of the shifted copy in the mix (1: only the shifted maps)", 0.0, 1.0, 0.03,
                        (0.005, 0.01, 0.03, 0.1, 1.0)),
          (Param("shift_rows", "float", 2.0, "how far the copy moves up the feature map's frequency rows, in rows "
                 "(fractions interpolated)", min=0.0, max=64.0),)),
    _bend("bandmask", "a band of the feature maps' frequency rows zeroed at a seeded place: a notch, a hole in "
                      "the spectrum the network fills oddly",
          MagnitudeSpec("width of the masked band, as a share of the feature map's frequency rows",
                        0.0, 1.0, 0.2, (0.05, 0.1, 0.2, 0.5, 1.0)),
          (Param("place", "float", bend.SEEDED_PLACE, "where the band sits on every targeted layer: 0 from the "
                 "lowest rows up, 1 down from the top, between: its start at that share of the rows it leaves "
                 "free (-1: a place drawn from the seed for each layer)", min=-1.0, max=1.0),),
          check_params=_check_place),
    _bend("dilate", "feature maps blended toward a max filter along their frequency rows: loud features spread, "
                    "thick, smeared, organ-like",
          MagnitudeSpec("share of the max-filtered maps in the mix (1: only them)", 0.0, 1.0, 0.03,
                        (0.005, 0.01, 0.03, 0.1, 1.0)), (_RADIUS,)),
    _bend("erode", "feature maps blended toward a min filter along their frequency rows: features thinned to their "
                   "cores, hollow, brittle",
          MagnitudeSpec("share of the min-filtered maps in the mix (1: only them)", 0.0, 1.0, 0.03,
                        (0.005, 0.01, 0.03, 0.1, 1.0)), (_RADIUS,)),
)

ACTIONS: dict[str, ActionSpec] = {spec.name: spec for spec in _BUILT_IN}
"""The action registry, in the order forms and tables list it."""

ACTION_NAMES: tuple[str, ...] = tuple(ACTIONS)


def register(spec: ActionSpec) -> ActionSpec:
    """Add an action to the registry (see "Adding an action" in the README); returns it.

    Everything that lists actions (the CLI's choices and flags, the web form,
    ``GET /api/actions``, the page, the README table) reads the registry when
    it is built, so an action registered before the CLI parser or the app is
    made is offered everywhere.

    Raises
    ------
    RecipeError
        If the name is taken or the entry lacks what its kind needs.
    """
    global ACTION_NAMES
    if not isinstance(spec, ActionSpec):
        raise RecipeError(f"an action is registered as an ActionSpec, got {spec!r}")
    if spec.name in ACTIONS:
        raise RecipeError(f"an action named {spec.name!r} is already registered")
    if spec.changes == "weights" and spec.weights is None:
        raise RecipeError(f"weights action {spec.name!r} needs a weights function")
    if spec.changes == "architecture" and (spec.build is None or spec.architecture is None or spec.state is None):
        raise RecipeError(f"architecture action {spec.name!r} needs build, architecture and state functions")
    if spec.changes == "input" and (spec.prepare is None or spec.render is None):
        raise RecipeError(f"input action {spec.name!r} needs prepare and render functions")
    ACTIONS[spec.name] = spec
    ACTION_NAMES = tuple(ACTIONS)
    return spec


def unregister(name: str) -> None:
    """Remove an action added with :func:`register` (the built-in ones stay)."""
    global ACTION_NAMES
    if any(spec.name == name for spec in _BUILT_IN):
        raise RecipeError(f"{name!r} is a built-in action and cannot be removed")
    ACTIONS.pop(name, None)
    ACTION_NAMES = tuple(ACTIONS)


def all_params() -> dict[str, Param]:
    """Every declared parameter of every registered action, by name (the CLI's flags, the form's fields)."""
    out: dict[str, Param] = {}
    for spec in ACTIONS.values():
        for p in spec.params:
            out.setdefault(p.name, p)
    return out


def params_from_fields(action: str, lookup: Callable[[str], Any]) -> dict[str, Any]:
    """The parameter values a form or command line gave for ``action``, unchecked (a recipe checks them).

    ``lookup(name)`` returns a field's value or ``None``; each parameter is
    looked up by its name and its aliases. A parameter that ``action`` does not
    declare is passed on (and refused by the recipe) only when it is set to
    something other than blank or false, so a form that always sends every
    field still works.
    """
    declared = {p.name for p in get(action).params}
    given: dict[str, Any] = {}
    for name, p in all_params().items():
        for key in (p.name, *p.aliases):
            value = lookup(key)
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            if name not in declared and (value is False or (isinstance(value, str)
                                                            and value.strip().lower() in ("0", "false", "no", "off"))):
                continue
            given[name] = value
            break
    return given


def names() -> tuple[str, ...]:
    """The registered actions' names, in registry order (read at call time: see :func:`register`)."""
    return tuple(ACTIONS)


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
    params = [(spec.name, p) for spec in ACTIONS.values() for p in spec.params]
    if params:
        rows += ["", "| action | parameter | type | default | CLI flag / form field | what it does |",
                 "|---|---|---|---|---|---|"]
        for name, p in params:
            rows.append(f"| `{name}` | `{p.name}` | {p.type} | {p.default} | `{p.flags[0]}` / `{p.name}` | {p.help} |")
    return "\n".join(rows) + "\n"


def get(action: Any) -> ActionSpec:
    """The registry entry of ``action``.

    Raises
    ------
    RecipeError
        If it is not an action's name; the message lists them.
    """
    if not isinstance(action, str) or action not in ACTIONS:
        shown = action if not isinstance(action, str) or len(action) <= 40 else action[:40] + "…"
        raise RecipeError(f"unknown action {shown!r}; choose one of: {', '.join(ACTIONS)}")
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
    model: keras.Model, *, action: str, magnitude: float, seed: int, layers: Sequence[str] | str | None = None,
    params: Mapping[str, Any] | None = None, source: str | os.PathLike | None = None,
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
    params : mapping or None, keyword-only
        The action's declared parameters (:attr:`ActionSpec.params`); defaults for those left out.
    source : path or None, keyword-only
        The model's file, beside which an action's per-model data lies (adversarial's direction).

    Returns
    -------
    keras.Model
    """
    spec = get(action)
    recipe = _Checked(spec.name, spec.magnitude.validate(magnitude, spec.name), validate_seed(seed),
                      canonical(targets(model, spec.name, layers)), spec.parse_params(params))
    return apply(model, recipe, source=source)


class _Checked:
    """The fields of a recipe that :func:`apply` reads, checked by :func:`damage` (no model id needed)."""

    def __init__(self, action: str, magnitude: float, seed: int, layers: tuple[str, ...], params: Params) -> None:
        self.action, self.magnitude, self.seed, self.layers, self.params = action, magnitude, seed, layers, params


def _action(name: str):
    def act(model: keras.Model, *, magnitude: float, seed: int, layers: Sequence[str] | str | None = None,
            **params: Any):
        return damage(model, action=name, magnitude=magnitude, seed=seed, layers=layers, params=params)

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
    return _fog_weights(model, targets(model, "fog", layers), magnitude=get("fog").magnitude.validate(magnitude, "fog"),
                        seed=validate_seed(seed))


def prepare(model: keras.Model, audio: np.ndarray | None, recipes: Sequence, *,
            source: str | os.PathLike | None = None,
            progress: Callable[[float, str], None] | None = None) -> list:
    """Each recipe's prepared value (``None`` for an action without a ``prepare`` hook), one hook call per action.

    Parameters
    ----------
    model : keras.Model
    audio : np.ndarray or None, shape (n_samples,)
        The job's input (for work on the input, such as adversarial's search).
    recipes : sequence of Recipe
        Checked recipes.
    source : path or None, keyword-only
        The model's file (where per-model data such as a stored direction lies).
    progress : callable or None, keyword-only
        ``progress(fraction, message)`` over all hooks together.

    Returns
    -------
    list
        Aligned with ``recipes``.
    """
    out: list = [None] * len(recipes)
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(recipes):
        if get(r.action).prepare is not None:
            groups.setdefault(r.action, []).append(i)
    for k, (name, idx) in enumerate(groups.items()):
        lo, hi = k / len(groups), (k + 1) / len(groups)
        sub = None if progress is None else (lambda f, msg, lo=lo, hi=hi: progress(lo + (hi - lo) * f, msg))
        for i, value in zip(idx, get(name).prepare(model, audio, [recipes[i] for i in idx], source=source,
                                                    progress=sub)):
            out[i] = value
    return out


def provenance(recipe, prepared: Any) -> dict:
    """What a manifest records of ``recipe``'s prepared value (its action's ``provenance`` hook; ``{}`` if none)."""
    spec = get(recipe.action)
    return spec.provenance(prepared) if spec.provenance is not None and prepared is not None else {}


def _call_args(spec: ActionSpec, recipe, prepared: Any) -> dict[str, Any]:
    kwargs = dict(recipe.params)
    if spec.prepare is not None:
        kwargs["prepared"] = prepared
    return kwargs


def _prepared_alone(model: keras.Model, recipe, source) -> Any:
    spec = get(recipe.action)
    return spec.prepare(model, None, [recipe], source=source)[0] if spec.prepare is not None else None


def apply(model: keras.Model, recipe, *, prepared: Any = None, source: str | os.PathLike | None = None) -> keras.Model:
    """Damage ``model`` as the (checked) ``recipe`` says and return the new model.

    ``prepared``: the value :func:`prepare` gave this recipe; without it the
    action's ``prepare`` hook runs here with no audio (from ``source``).
    """
    spec = get(recipe.action)
    if spec.kind == "input":
        raise RecipeError(f"{spec.name} changes the audio, not the model: there is no damaged model to build "
                          "(render it on an input with floss)")
    chosen = targets(model, spec.name, recipe.layers)
    if spec.weights is not None:
        if spec.prepare is not None and prepared is None:
            prepared = _prepared_alone(model, recipe, source)
        return with_weights(model, spec.weights(model, chosen, magnitude=recipe.magnitude, seed=recipe.seed,
                                                **_call_args(spec, recipe, prepared)))
    return spec.build(model, chosen, magnitude=recipe.magnitude, seed=recipe.seed, **dict(recipe.params))


def damaged_weights(model: keras.Model, recipe, prepared: Any = None) -> dict[str, list[np.ndarray]] | None:
    """New weights by layer name for a weights-only action; ``None`` for one that changes the architecture.

    Running the source model's architecture with these weights gives what
    :func:`apply`'s copy would, without the cost of copying the model.
    """
    spec = get(recipe.action)
    if spec.weights is None:
        return None
    return spec.weights(model, targets(model, spec.name, recipe.layers), magnitude=recipe.magnitude,
                        seed=recipe.seed, **_call_args(spec, recipe, prepared))


def architecture(model: keras.Model, recipe) -> keras.Model | None:
    """The damaged architecture ``recipe`` needs, for any magnitude and seed; ``None`` for a weights-only action.

    It depends only on ``model``, the action and the layers, so one copy serves
    every magnitude and seed (see :func:`damaged_state`).
    """
    spec = get(recipe.action)
    if spec.architecture is None:
        return None
    return spec.architecture(model, targets(model, spec.name, recipe.layers))


def damaged_state(damaged: keras.Model, recipe) -> dict[str, np.ndarray]:
    """The state that turns :func:`architecture`'s copy into what :func:`apply` would build for ``recipe``."""
    spec = get(recipe.action)
    if spec.state is None:
        return {}
    return spec.state(damaged, magnitude=recipe.magnitude, seed=recipe.seed, **dict(recipe.params))


def reset(model: keras.Model) -> None:
    """Restart the dropout masks of every lapse layer from their seeds."""
    for layer in model.layers:
        if isinstance(layer, Lapse):
            layer.reset_seed()
