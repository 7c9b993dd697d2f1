"""Recipes: everything that determines a flossed output.

A :class:`Recipe` is frozen and has a JSON form. Same recipe + same input gives
the same output, bit for bit, on the same machine.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from .actions import (
    ACTION_NAMES,
    MAX_SEED,
    check,
    draw_seed,
    get,
    parse_layers,
    validate_action,
    validate_magnitude,
    validate_seed,
)
from . import envelope as envelope_mod
from .errors import RecipeError

ACTIONS = ACTION_NAMES
"""The ways a model can be damaged (names from the action registry, :data:`senseflosser.actions.ACTIONS`)."""

DEFAULT_TITRATION = (0.01, 0.05, 0.1, 0.2, 0.5)
"""The original tool's titration (its ``--titrate``), kept for :func:`senseflosser.run_senseflosser`.

``--titrate`` in the CLI and the web app uses each action's own titration,
across its audible range: ``actions.get(name).magnitude.titration``.
"""

MAX_MAGNITUDES = 20
"""Most magnitudes one job may titrate."""

__all__ = [
    "ACTIONS", "DEFAULT_TITRATION", "MAX_MAGNITUDES", "MAX_SEED", "Recipe", "build_recipes", "draw_seed",
    "parse_magnitudes", "recipes_from_json", "validate_action", "validate_layers", "validate_magnitude",
    "validate_seed",
]


def validate_layers(layers: Any) -> tuple[str, ...] | None:
    """Normalise a layer selection (``down:0,5,9,mid``); see :func:`senseflosser.actions.parse_layers`."""
    return parse_layers(layers)


def parse_magnitudes(text: Any, action: str) -> tuple[float, ...]:
    """Parse magnitudes for ``action``: a comma-separated string (``"0.01, 0.1"``) or a sequence.

    Raises
    ------
    RecipeError
        For none, more than :data:`MAX_MAGNITUDES`, a repeated one, or one out of the action's range.
    """
    parts = [p.strip() for p in str(text).split(",") if p.strip()] if isinstance(text, str) else list(text)
    if not parts:
        raise RecipeError("give at least one magnitude")
    if len(parts) > MAX_MAGNITUDES:
        raise RecipeError(f"at most {MAX_MAGNITUDES} magnitudes at once, got {len(parts)}")
    mags = tuple(validate_magnitude(p, action) for p in parts)
    if len(set(mags)) != len(mags):
        raise RecipeError("each magnitude may appear only once")
    return mags


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
    on_input : bool
        ``adversarial`` only: the direction is found on the input audio
        (seeded) instead of the model's stored universal one.
    envelope : tuple of (seconds, magnitude) or None
        The magnitude over the output's time (see :mod:`senseflosser.envelope`);
        ``magnitude`` then records the envelope's peak.
    """

    model: str
    model_sha256: str
    action: str
    magnitude: float
    seed: int
    layers: tuple[str, ...] | None = None
    offset: float = 0.0
    duration: float | None = None
    on_input: bool = False
    envelope: tuple[tuple[float, float], ...] | None = None

    def __post_init__(self) -> None:
        validate_action(self.action)
        object.__setattr__(self, "magnitude", validate_magnitude(self.magnitude, self.action))
        object.__setattr__(self, "seed", validate_seed(self.seed))
        object.__setattr__(self, "layers", parse_layers(self.layers))
        if not isinstance(self.on_input, bool):
            raise RecipeError(f"on_input must be true or false, got {self.on_input!r}")
        if self.envelope is not None:
            points = envelope_mod.parse_points(self.envelope)
            object.__setattr__(self, "envelope", tuple((t, validate_magnitude(m, self.action)) for t, m in points))
        if self.on_input and self.action != "adversarial":
            raise RecipeError(f"on_input (a direction found on the input audio) is for adversarial, not {self.action}")
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
        if self.envelope is not None:
            return f"{self.action}{'-input' if self.on_input else ''}_envelope"
        return f"{self.action}{'-input' if self.on_input else ''}_{self.magnitude:g}"

    def with_magnitude(self, magnitude: float) -> Recipe:
        """The same recipe at another magnitude."""
        return replace(self, magnitude=magnitude)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers) if self.layers is not None else None
        d["envelope"] = [list(p) for p in self.envelope] if self.envelope is not None else None
        return d

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
            on_input=data.get("on_input") or False,
            envelope=data.get("envelope"),
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
    data = _recipe_object(text)
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


def build_recipes(
    *,
    model: str,
    model_sha256: str = "",
    action: Any,
    magnitudes: Any = None,
    titrate: bool = False,
    seed: Any = None,
    layers: Any = None,
    conv_layers: Mapping[str, int] | None = None,
    offset: Any = 0.0,
    duration: Any = None,
    max_duration: float | None = None,
    on_input: bool = False,
    envelope: Any = None,
) -> list[Recipe]:
    """The recipes of one job: every rule of a job's settings, in one place.

    The CLI, the web form and :func:`senseflosser.render.floss_to_dir` all
    call this, so a magnitude range, a duplicate magnitude, a layer name or a
    segment bound is checked once, the same way everywhere.

    Parameters
    ----------
    model, model_sha256 : str, keyword-only
        The model's id and file hash, recorded in each recipe.
    action : str, keyword-only
        A registered action.
    magnitudes : str or sequence or None, keyword-only
        One or more magnitudes (a comma-separated string is split); ignored
        when ``titrate``.
    titrate : bool, keyword-only
        Use the action's default titration.
    seed : int or str or None, keyword-only
        ``None`` draws one (recorded in every recipe).
    layers : selection or None, keyword-only
        ``down:0,5,9,mid`` text or a sequence of entries; ``None``: the action's default.
    conv_layers : mapping or None, keyword-only
        The model's conv layer names -> channel counts; when given, the
        selection is checked against it (unknown layers and channels refused).
    offset, duration : keyword-only
        The audio segment in seconds (``duration=None``: to the end).
    max_duration : float or None, keyword-only
        Refuse a longer ``duration``.
    on_input : bool, keyword-only
        ``adversarial`` only: find the direction on the input audio.
    envelope : points or str or None, keyword-only
        The magnitude over time, as points (``"0:0,30:0.1"`` or pairs); the
        ``ramp:``/``lfo:`` shortcuts must be resolved first
        (:func:`senseflosser.envelope.resolve`). Replaces ``magnitudes``.

    Returns
    -------
    list of Recipe
        One per magnitude, in the order given.

    Raises
    ------
    RecipeError
    """
    action = validate_action(action)
    if envelope is not None:
        if titrate or (magnitudes is not None and not (isinstance(magnitudes, str) and not magnitudes.strip())):
            raise RecipeError("an envelope sets the magnitude over time: give either an envelope or magnitudes "
                              "(or titrate), not both")
        points = tuple((t, validate_magnitude(m, action)) for t, m in envelope_mod.parse_points(envelope))
        magnitudes = [max(m for _, m in points)]
    if titrate:
        mags = get(action).magnitude.titration
    elif magnitudes is None or (isinstance(magnitudes, str) and not magnitudes.strip()):
        spec = get(action).magnitude
        raise RecipeError(f"give a magnitude from {spec.min:g} to {spec.max:g} ({spec.meaning}), or titrate")
    elif isinstance(magnitudes, (str, Sequence)):
        mags = parse_magnitudes(magnitudes, action)
    else:
        mags = parse_magnitudes([magnitudes], action)
    seed = draw_seed() if seed is None or (isinstance(seed, str) and not seed.strip()) else validate_seed(seed)
    entries = parse_layers(layers)
    if entries is not None and conv_layers is not None:
        check(entries, conv_layers, default=(), model_name=model)
    base = Recipe(model=model, model_sha256=model_sha256, action=action, magnitude=mags[0], seed=seed,
                  layers=entries, offset=0.0 if offset is None else offset, duration=duration,
                  on_input=bool(on_input), envelope=points if envelope is not None else None)
    if max_duration is not None and base.duration is not None and base.duration > max_duration:
        raise RecipeError(f"duration may be at most {max_duration:g} seconds here; got {base.duration:g}")
    return [base.with_magnitude(m) for m in mags]
