"""Recipes: everything that determines a flossed output.

A :class:`Recipe` is frozen and has a JSON form. Same recipe + same input gives
the same output, bit for bit, on the same machine.
"""

from __future__ import annotations

import json
import math
import numbers
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from .errors import RecipeError

ACTIONS = ("fog", "lapse")
"""The ways a model can be damaged."""

DEFAULT_TITRATION = (0.01, 0.05, 0.1, 0.2, 0.5)
"""Magnitudes of a titration, each applied to the pristine model."""

MAX_SEED = 2**32 - 1


def validate_action(action: Any) -> str:
    """Return ``action`` if it is one of :data:`ACTIONS`, else raise :class:`RecipeError`."""
    if not isinstance(action, str) or action not in ACTIONS:
        raise RecipeError(f"unknown action {action!r}; choose one of: {', '.join(ACTIONS)}")
    return action


def validate_magnitude(magnitude: Any) -> float:
    """Parse a magnitude (number or numeric string) in [0, 1].

    Raises
    ------
    RecipeError
        If it is not a finite number in [0, 1].
    """
    if isinstance(magnitude, bool):
        raise RecipeError(f"magnitude must be a number between 0 and 1, got {magnitude!r}")
    try:
        m = float(magnitude)
    except (TypeError, ValueError):
        raise RecipeError(f"magnitude must be a number between 0 and 1, got {magnitude!r}") from None
    if not math.isfinite(m) or not 0.0 <= m <= 1.0:
        raise RecipeError(f"magnitude must be between 0 and 1, got {magnitude!r}")
    return m


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
            value = int(seed.strip())
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


def validate_layers(layers: Any) -> tuple[str, ...] | None:
    """Normalise a layer selection: ``None`` (default layers) or a tuple of names.

    A comma-separated string is split. An empty selection means the default.
    """
    if layers is None:
        return None
    if isinstance(layers, str):
        layers = [part for part in (p.strip() for p in layers.split(",")) if part]
    if not isinstance(layers, Iterable):
        raise RecipeError(f"layers must be a list of layer names, got {layers!r}")
    names = []
    for name in layers:
        if not isinstance(name, str) or not name or len(name) > 200:
            raise RecipeError(f"invalid layer name {name!r}")
        if name not in names:
            names.append(name)
    return tuple(names) or None


def parse_magnitudes(text: str) -> tuple[float, ...]:
    """Parse a comma-separated list of magnitudes (``"0.01, 0.1"``)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise RecipeError("give at least one magnitude")
    if len(parts) > 20:
        raise RecipeError(f"at most 20 magnitudes at once, got {len(parts)}")
    return tuple(validate_magnitude(p) for p in parts)


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
        One of :data:`ACTIONS`.
    magnitude : float
        Strength in [0, 1]: noise std for fog, dropout rate for lapse.
    seed : int
        Seed of the noise or dropout masks.
    layers : tuple of str or None
        Targeted layers; ``None`` means the action's default.
    offset : float
        Start of the audio segment in seconds.
    duration : float or None
        Length of the segment in seconds; ``None`` = to the end.
    """

    model: str
    model_sha256: str
    action: str
    magnitude: float
    seed: int
    layers: tuple[str, ...] | None = None
    offset: float = 0.0
    duration: float | None = None

    def __post_init__(self) -> None:
        validate_action(self.action)
        object.__setattr__(self, "magnitude", validate_magnitude(self.magnitude))
        object.__setattr__(self, "seed", validate_seed(self.seed))
        object.__setattr__(self, "layers", validate_layers(self.layers))
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
        """``<action>_<magnitude>`` as used in output file names."""
        return f"{self.action}_{self.magnitude:g}"

    def with_magnitude(self, magnitude: float) -> Recipe:
        """The same recipe at another magnitude."""
        return replace(self, magnitude=magnitude)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = list(self.layers) if self.layers is not None else None
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
