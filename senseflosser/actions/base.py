"""What every action shares: its registry entry, seeds, and copying a model."""

from __future__ import annotations

import math
import numbers
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import keras
import numpy as np

from ..errors import ModelError, RecipeError
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
        """Parse ``magnitude`` (number or numeric string) and check it is in range."""
        bad = RecipeError(
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


@dataclass(frozen=True)
class ActionSpec:
    """One entry of the action registry: everything the CLI, the web app and the docs say of an action.

    Attributes
    ----------
    name : str
    description : str
        One line: what it does to the network.
    magnitude : MagnitudeSpec
    changes : {"weights", "architecture"}
        ``"weights"``: the pristine architecture runs with new weights (no
        model copy per job). ``"architecture"``: layers are added; a shared
        copy of the damaged architecture runs with the recipe's state.
    default_layers : {"all", "all but output"}
        Which conv layers it damages when none are named.
    build : callable or None
        For ``changes="architecture"``: ``build(model, targets, *, magnitude,
        seed) -> keras.Model``, a damaged copy.
    weights : callable or None
        For ``changes="weights"``: ``weights(model, targets, *, magnitude,
        seed)`` -> new weight arrays by layer name (a copy is built from them).
    architecture, state : callable or None
        For ``changes="architecture"``: ``architecture(model, targets)`` builds
        the damaged architecture once; ``state(damaged, *, magnitude, seed)``
        gives the variable values of one recipe.
    """

    name: str
    description: str
    magnitude: MagnitudeSpec
    changes: Literal["weights", "architecture"]
    default_layers: Literal["all", "all but output"]
    build: Callable[..., keras.Model] | None = field(default=None, repr=False)
    weights: Callable[..., dict[str, list[np.ndarray]]] | None = field(default=None, repr=False)
    architecture: Callable[..., keras.Model] | None = field(default=None, repr=False)
    state: Callable[..., dict[str, np.ndarray]] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The public description (``GET /api/actions``)."""
        m = self.magnitude
        return {
            "name": self.name,
            "description": self.description,
            "magnitude": {"min": m.min, "max": m.max, "default": m.default, "meaning": m.meaning,
                          "titration": list(m.titration)},
            "changes": self.changes,
            "default_layers": self.default_layers,
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
