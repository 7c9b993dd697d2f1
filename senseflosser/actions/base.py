"""What every action shares: its registry entry, seeds, and copying a model."""

from __future__ import annotations

import math
import numbers
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import keras
import numpy as np

from ..errors import InputError, MagnitudeError, ModelError, RecipeError
from ..parsing import parse_float, parse_int

MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class MagnitudeSpec:
    """What an action's magnitude means and which values it takes.

    Attributes
    ----------
    meaning : str
        One phrase: what the number is ("noise std in weight units").
    min, max : float
        Accepted range, both ends included.
    default : float
        The value a form or command starts from.
    titration : tuple of float
        Default titration: five magnitudes across the action's audible range.
    """

    meaning: str
    min: float
    max: float
    default: float
    titration: tuple[float, ...]

    def validate(self, magnitude: Any, action: str) -> float:
        """Parse ``magnitude`` (number or numeric string) and check it is in range.

        Raises
        ------
        MagnitudeError
        """
        bad = MagnitudeError(
            f"{action} magnitude ({self.meaning}) must be a number from {self.min:g} to {self.max:g}, "
            f"got {magnitude!r}"
        )
        if isinstance(magnitude, bool):
            raise bad
        try:
            m = parse_float(magnitude, field="magnitude")
        except ValueError:
            raise bad from None
        if not math.isfinite(m) or not self.min <= m <= self.max:
            raise bad
        return m


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


@dataclass(frozen=True)
class Param:
    """One extra parameter an action declares (beyond magnitude, seed and layers).

    The CLI flag (``--<name with dashes>``), the web form field (``<name>``),
    ``GET /api/actions``, the page and the README are made from this
    declaration, and :meth:`parse` is the one place its values are checked.

    Attributes
    ----------
    name : str
        The recipe key and the form field.
    type : {"bool", "int", "float", "choice"}
        ``"choice"``: one name out of ``choices`` (a text field).
    default : bool or int or float or str
    help : str
        One line: what it does.
    min, max : float or None
        Accepted range of a number, both ends included.
    aliases : tuple of str
        Older names of the form field and CLI flag that are still accepted
        (``adversarial_on_input`` for ``on_input``).
    slug : str or None
        For a ``bool``: appended to output file names as ``-<slug>`` when true.
    choices : tuple of str, or a callable giving them
        For a ``"choice"``: the names it takes, read when asked (a callable
        follows the registry: dream's ``damage`` takes any other action).
    """

    name: str
    type: Literal["bool", "int", "float", "choice"]
    default: bool | int | float | str
    help: str
    min: float | None = None
    max: float | None = None
    aliases: tuple[str, ...] = ()
    slug: str | None = None
    choices: tuple[str, ...] | Callable[[], Sequence[str]] = field(default=(), compare=False)

    @property
    def options(self) -> tuple[str, ...]:
        """The names a ``"choice"`` takes (empty for other types)."""
        return tuple(self.choices() if callable(self.choices) else self.choices)

    @property
    def flags(self) -> tuple[str, ...]:
        """The CLI flags of this parameter, its own first."""
        return tuple("--" + n.replace("_", "-") for n in (self.name, *self.aliases))

    def parse(self, value: Any, action: str) -> bool | int | float:
        """The value as its declared type, checked against its range.

        Accepts the typed value or its text form (``"1"``/``"yes"`` for a bool,
        ASCII digits for a number).

        Raises
        ------
        RecipeError
            Naming the action, the parameter and the bad value.
        """
        where = f"{action} parameter {self.name}"
        if self.type == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                return value.strip().lower() in _TRUE
            raise RecipeError(f"{where} must be true or false (1 or 0), got {value!r}")
        if self.type == "choice":
            options = self.options
            name = value.strip() if isinstance(value, str) else value
            if not isinstance(name, str) or name not in options:
                shown = value if not isinstance(value, str) or len(value) <= 40 else value[:40] + "…"
                raise RecipeError(f"{where} must be one of: {', '.join(options)}; got {shown!r}")
            return name
        try:
            if self.type == "int":
                return parse_int(value, field=where, minimum=self.min, maximum=self.max, what="a whole number")
            return parse_float(value, field=where, minimum=self.min, maximum=self.max, what="a finite number")
        except InputError as exc:
            raise RecipeError(str(exc)) from None

    def to_dict(self) -> dict[str, Any]:
        """The public description (``GET /api/actions``)."""
        return {"name": self.name, "type": self.type, "default": self.default, "min": self.min, "max": self.max,
                "help": self.help, "aliases": list(self.aliases), "flag": self.flags[0],
                **({"choices": list(self.options)} if self.type == "choice" else {})}


Params = tuple[tuple[str, Any], ...]
"""An action's parameter values: ``(name, value)`` pairs in declaration order, every declared one present."""


KINDS: dict[str, str] = {
    "weights": "damage the weights",
    "activation": "bend the activations",
    "input": "change the audio",
}
"""The kinds of action, in the order the page and the docs list them, with their heading."""


@dataclass(frozen=True)
class ActionSpec:
    """One entry of the action registry: everything the CLI, the web app and the docs say of an action.

    Attributes
    ----------
    name : str
    description : str
        One line: what it does to the network.
    magnitude : MagnitudeSpec
    changes : {"weights", "architecture", "input"}
        ``"weights"``: the pristine architecture runs with new weights (no
        model copy per job). ``"architecture"``: layers are added; a shared
        copy of the damaged architecture runs with the recipe's state.
        ``"input"``: the model is not damaged; the audio is changed (dream),
        by ``prepare`` and ``render``.
    default_layers : {"all", "all but output"}
        Which conv layers it damages when none are named.
    params : tuple of Param
        Extra parameters, passed by name to ``weights``/``state``/``build`` and
        ``prepare`` (see :class:`Param`).
    build : callable or None
        For ``changes="architecture"``: ``build(model, targets, *, magnitude,
        seed, **params) -> keras.Model``, a damaged copy.
    weights : callable or None
        For ``changes="weights"``: ``weights(model, targets, *, magnitude,
        seed, **params)`` -> new weight arrays by layer name (with ``prepared=``
        too when the action has a ``prepare`` hook).
    architecture, state : callable or None
        For ``changes="architecture"``: ``architecture(model, targets)`` builds
        the damaged architecture once; ``state(damaged, *, magnitude, seed,
        **params)`` gives the variable values of one recipe.
    prepare : callable or None
        Per-job work done once before any output is rendered:
        ``prepare(model, audio, recipes, *, source, progress) -> list`` gives
        one prepared value per recipe (adversarial: its direction, stored
        beside the model file ``source`` or searched on ``audio``), passed to
        ``weights`` as ``prepared=``. ``audio`` may be ``None`` outside a job.
    provenance : callable or None
        ``provenance(prepared) -> dict``: what a manifest records of a
        prepared value (adversarial: the direction file's SHA-256).
    compare_with : str or None
        Another action that an evaluation measures this one against at equal
        magnitudes (adversarial against fog: how much worse the worst case is).
    seeded : bool
        ``False`` for a deterministic transform whose output the seed does not
        change (most bends); the seed is still recorded in its recipes.
    render : callable or None
        For ``changes="input"``: ``render(model, audio, recipe, *, prepared)
        -> waveform``, the output of one recipe (at its magnitude) from what
        ``prepare`` gave it; the pipeline writes it in place of a damaged
        model's output.
    check_params : callable or None
        ``check_params(params) -> None``: checks between parameters (raising
        :class:`RecipeError`) after each was parsed on its own.
    nests : bool
        At one seed a larger magnitude damages a superset of what a smaller
        one does (same noise scaled, more channels, more bits, a wider
        blend), so rungs of one seed can be crossfaded (a ladder, see
        :mod:`senseflosser.ladder`). ``False`` (the default, for an action
        that does not declare it) refuses a ladder.
    """

    name: str
    description: str
    magnitude: MagnitudeSpec
    changes: Literal["weights", "architecture", "input"]
    default_layers: Literal["all", "all but output"]
    params: tuple[Param, ...] = ()
    build: Callable[..., keras.Model] | None = field(default=None, repr=False)
    weights: Callable[..., dict[str, list[np.ndarray]]] | None = field(default=None, repr=False)
    architecture: Callable[..., keras.Model] | None = field(default=None, repr=False)
    state: Callable[..., dict[str, np.ndarray]] | None = field(default=None, repr=False)
    prepare: Callable[..., list] | None = field(default=None, repr=False)
    provenance: Callable[[Any], dict] | None = field(default=None, repr=False)
    compare_with: str | None = None
    seeded: bool = True
    render: Callable[..., np.ndarray] | None = field(default=None, repr=False)
    check_params: Callable[[Params], None] | None = field(default=None, repr=False)
    nests: bool = False

    @property
    def kind(self) -> Literal["weights", "activation", "input"]:
        """``weights`` (new weights), ``activation`` (a transform inserted after layers) or ``input``."""
        if self.changes == "input":
            return "input"
        return "weights" if self.changes == "weights" else "activation"

    def param(self, name: str) -> Param:
        """The declared parameter ``name`` (or one of its aliases)."""
        for p in self.params:
            if name == p.name or name in p.aliases:
                return p
        declared = ", ".join(p.name for p in self.params) or "none"
        raise RecipeError(f"{self.name} has no parameter {name!r} (its parameters: {declared})")

    def parse_params(self, values: Mapping[str, Any] | Sequence[tuple[str, Any]] | None) -> Params:
        """Every declared parameter's value (defaults for those not given), checked; unknown names refused."""
        given = dict(values or {})
        out = {}
        for key, value in given.items():
            p = self.param(key)
            if p.name in out:
                raise RecipeError(f"{self.name} parameter {p.name} is given twice")
            out[p.name] = p.parse(value, self.name)
        params = tuple((p.name, out.get(p.name, p.default)) for p in self.params)
        if self.check_params is not None:
            self.check_params(params)
        return params

    def slug_suffix(self, params: Params) -> str:
        """What a recipe's parameters add to its output names (``-input`` for adversarial on input)."""
        values = dict(params)
        return "".join(f"-{p.slug}" for p in self.params if p.slug and p.type == "bool" and values.get(p.name))

    def to_dict(self) -> dict[str, Any]:
        """The public description (``GET /api/actions``)."""
        m = self.magnitude
        return {
            "name": self.name,
            "description": self.description,
            "magnitude": {"min": m.min, "max": m.max, "default": m.default, "meaning": m.meaning,
                          "titration": list(m.titration)},
            "kind": self.kind,
            "seeded": self.seeded,
            "nests": self.nests,
            "changes": self.changes,
            "default_layers": self.default_layers,
            "params": [p.to_dict() for p in self.params],
        }


def validate_seed(seed: Any) -> int:
    """Parse a seed: a whole number (int or numeric string) in [0, 2**32 - 1]."""
    bad = RecipeError(f"seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    if isinstance(seed, bool):
        raise bad
    if isinstance(seed, float):
        if not seed.is_integer():
            raise bad
        value = int(seed)
    elif isinstance(seed, str):
        try:
            value = parse_int(seed, field="seed")
        except ValueError:
            raise bad from None
    elif isinstance(seed, numbers.Integral):
        value = int(seed)
    else:
        raise bad
    if not 0 <= value <= MAX_SEED:
        raise bad
    return value


def draw_seed() -> int:
    """A fresh random seed (recorded in the recipe so the run can be repeated)."""
    return secrets.randbelow(2**31)


def copy_model(model: keras.Model, call_function: Callable | None = None) -> keras.Model:
    """A clone of ``model`` (optionally with layers inserted by ``call_function``) holding its weights."""
    try:
        clone = keras.models.clone_model(model, call_function=call_function)
    except Exception as exc:
        raise ModelError(f"model {model.name!r} cannot be copied for damaging ({exc})") from None
    for layer in model.layers:
        if layer.weights:
            clone.get_layer(layer.name).set_weights(layer.get_weights())
    return clone


def with_weights(model: keras.Model, new: dict[str, list[np.ndarray]]) -> keras.Model:
    """A copy of ``model`` with some layers' weights replaced."""
    clone = copy_model(model)
    for name, weights in new.items():
        clone.get_layer(name).set_weights(weights)
    return clone
