"""Recipes: everything that determines a flossed output.

A :class:`Recipe` is frozen and has a JSON form. Same recipe + same input gives
the same output, bit for bit, on the same machine.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from . import actions
from . import envelope as envelope_mod
from .actions import MAX_SEED, draw_seed, get, parse_layers, validate_action, validate_magnitude, validate_seed
from .actions.base import Params
from .errors import RecipeError

ACTIONS = actions.ACTION_NAMES
"""The built-in ways a model can be damaged (the registry, :data:`senseflosser.actions.ACTIONS`, may hold more)."""

DEFAULT_TITRATION = (0.01, 0.05, 0.1, 0.2, 0.5)
"""The original tool's titration (its ``--titrate``), kept for :func:`senseflosser.run_senseflosser`.

``--titrate`` in the CLI and the web app uses each action's own titration,
across its audible range: ``actions.get(name).magnitude.titration``.
"""

__all__ = [
    "ACTIONS", "DEFAULT_TITRATION", "MAX_SEED", "Recipe", "draw_seed", "recipe_document", "recipes_from_dict",
    "recipes_from_json",
    "validate_action", "validate_layers", "validate_magnitude", "validate_seed",
]


def validate_layers(layers: Any) -> tuple[str, ...] | None:
    """Normalise a layer selection (``down:0,5,9,mid``); see :func:`senseflosser.actions.parse_layers`."""
    return parse_layers(layers)


@dataclass(frozen=True)
class Recipe:
    """Everything that determines one flossed output.

    Attributes
    ----------
    model : str
        Model id (registry name, or file stem for a model given by path).
    model_sha256 : str
        SHA-256 of the model file ("" for an in-memory model).
    action : str
        A name from the action registry (:data:`senseflosser.actions.ACTIONS`).
    magnitude : float
        Strength, in the action's range (noise std for fog, dropout rate for lapse, ...).
    seed : int
        Seed of the noise, masks or choices.
    layers : tuple of str or None
        Targeted layers, each optionally with channels (``"down:0,5"``);
        ``None`` means the action's default.
    offset : float
        Start of the audio segment in seconds.
    duration : float or None
        Length of the segment in seconds; ``None`` = to the end.
    envelope : tuple of (seconds, magnitude) or None
        The magnitude over the output's time (see :mod:`senseflosser.envelope`);
        ``magnitude`` then records the envelope's peak.
    params : mapping or tuple of (name, value)
        The action's declared parameters (:attr:`senseflosser.actions.ActionSpec.params`),
        stored as ``(name, value)`` pairs with every declared one present
        (defaults filled in), e.g. adversarial's ``on_input``.

    Constructing a recipe checks every field (this is where a magnitude's
    range, a seed or a parameter is checked); a recipe that exists is valid,
    and :meth:`derive` and :meth:`from_checked` make others from checked values
    without checking again.
    """

    model: str
    model_sha256: str
    action: str
    magnitude: float
    seed: int
    layers: tuple[str, ...] | None = None
    offset: float = 0.0
    duration: float | None = None
    envelope: tuple[tuple[float, float], ...] | None = None
    params: Params = ()

    def __post_init__(self) -> None:
        spec = get(self.action)
        object.__setattr__(self, "magnitude", spec.magnitude.validate(self.magnitude, spec.name))
        object.__setattr__(self, "seed", validate_seed(self.seed))
        object.__setattr__(self, "layers", parse_layers(self.layers))
        if self.envelope is not None:
            points = envelope_mod.parse_points(self.envelope)
            object.__setattr__(self, "envelope", tuple((t, spec.magnitude.validate(m, spec.name)) for t, m in points))
        object.__setattr__(self, "params", spec.parse_params(self.params))
        if not isinstance(self.model, str) or not self.model:
            raise RecipeError(f"model id must be a non-empty string, got {self.model!r}")
        for what, v, zero_ok in (("offset", self.offset, True), ("duration", self.duration, False)):
            if v is None and what == "duration":
                continue
            try:
                fv = float(v)
            except (TypeError, ValueError):
                raise RecipeError(f"{what} must be a number of seconds, got {v!r}") from None
            if not math.isfinite(fv) or fv < 0 or (fv == 0 and not zero_ok):
                raise RecipeError(f"{what} must be a finite number of seconds {'>= 0' if zero_ok else '> 0'}, got {v!r}")
            object.__setattr__(self, what, fv)

    @property
    def slug(self) -> str:
        """``<action>_<magnitude>`` as used in output file names (``adversarial-input_...`` on input,
        ``<action>_envelope`` with an envelope)."""
        base = f"{self.action}{get(self.action).slug_suffix(self.params)}"
        if self.envelope is not None:
            return f"{base}_envelope"
        return f"{base}_{self.magnitude:g}"

    def with_magnitude(self, magnitude: float) -> Recipe:
        """The same recipe at another magnitude (checked)."""
        return replace(self, magnitude=magnitude)

    def derive(self, **changes: Any) -> Recipe:
        """The same recipe with some fields replaced by values that are already checked (not checked again).

        For the pipeline's own copies: a magnitude read off a checked envelope,
        the envelope dropped, points fixed from a checked envelope shape.
        """
        fields = {**self.__dict__, **changes}
        new = object.__new__(Recipe)
        for key, value in fields.items():
            object.__setattr__(new, key, value)
        return new

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers) if self.layers is not None else None
        d["envelope"] = [list(p) for p in self.envelope] if self.envelope is not None else None
        d["params"] = dict(self.params)
        return d

    @classmethod
    def from_checked(cls, data: Mapping[str, Any]) -> Recipe:
        """A recipe from the dict :meth:`to_dict` wrote for a recipe that was checked (a job spec off the queue).

        Only the types JSON loses are restored; nothing is checked again.
        """
        fields = {f: data[f] for f in cls.__dataclass_fields__ if f in data}
        fields["layers"] = tuple(fields["layers"]) if fields.get("layers") is not None else None
        fields["envelope"] = (tuple((float(t), float(m)) for t, m in fields["envelope"])
                              if fields.get("envelope") is not None else None)
        fields["params"] = tuple((k, v) for k, v in (fields.get("params") or {}).items())
        new = object.__new__(cls)
        for f in cls.__dataclass_fields__:
            object.__setattr__(new, f, fields.get(f, cls.__dataclass_fields__[f].default))
        return new

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """Build a recipe from its dict form; unknown keys are ignored (metrics may sit beside it)."""
        if not isinstance(data, Mapping):
            raise RecipeError("a recipe must be a JSON object")
        missing = [k for k in ("model", "action", "magnitude", "seed") if k not in data]
        if missing:
            raise RecipeError(f"the recipe lacks {', '.join(missing)}")
        return cls(
            model=data["model"],
            model_sha256=data.get("model_sha256", "") or "",
            action=data["action"],
            magnitude=data["magnitude"],
            seed=data["seed"],
            layers=data.get("layers"),
            offset=data.get("offset", 0.0) or 0.0,
            duration=data.get("duration"),
            envelope=data.get("envelope"),
            params=_params_of(data),
        )

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        """Parse one recipe (also accepts a per-output file's ``{"recipe": ..., "metrics": ...}``)."""
        return cls.from_dict(_recipe_object(text))


def recipes_from_json(text: str) -> list[Recipe]:
    """Parse a recipe file: one recipe, or a titration (``"magnitudes": [...]``) as one per magnitude.

    Accepts the per-output recipe files and the job-wide ``<stem>_recipe.json``
    that :func:`senseflosser.render.floss_to_dir` writes.
    """
    return recipes_from_dict(recipe_document(text))


def recipe_document(text: str) -> Any:
    """The recipe object of a recipe file's text (a per-output file's ``recipe`` member), parsed once."""
    return _recipe_object(text)


def recipes_from_dict(data: Any) -> list[Recipe]:
    """The recipes of a recipe object (see :func:`recipes_from_json`)."""
    if not isinstance(data, Mapping):
        raise RecipeError("a recipe must be a JSON object")
    mags = data.get("magnitudes")
    if mags is None:
        return [Recipe.from_dict(data)]
    if not isinstance(mags, list) or not mags:
        raise RecipeError("the recipe's magnitudes must be a non-empty list")
    return [Recipe.from_dict({**data, "magnitude": m}) for m in mags]


def _recipe_object(text: str) -> Any:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecipeError(f"the recipe is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(data, Mapping) and "recipe" in data:
        data = data["recipe"]
    return data


def _params_of(data: Mapping[str, Any]) -> dict[str, Any]:
    """A recipe dict's parameters (recipes written before parameters were declared kept them at the top level)."""
    params = data.get("params") or {}
    if not isinstance(params, Mapping):
        raise RecipeError(f"the recipe's params must be a JSON object, got {params!r}")
    params = dict(params)
    declared = get(data["action"]).params if isinstance(data.get("action"), str) else ()
    for p in declared:
        if p.name in data and data[p.name] is not None:
            params.setdefault(p.name, data[p.name])
    return params
