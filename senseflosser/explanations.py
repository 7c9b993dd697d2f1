"""Listenable explanations of a channel set: ``solo``, ``mute`` and ``difference``.

For a selection (channels, a cluster or a concept, resolved to channel numbers):

- ``mute``: the set silenced (``ablate`` at magnitude 1 with the set's channels:
  the same recipe, so the same output bit for bit as that deletion);
- ``solo``: only the set kept in its layers (every other channel of each layer
  the selection names silenced: ``ablate`` at magnitude 1 of the complement);
- ``difference``: the normal output minus ``mute`` (what the set contributes).

Each is rendered from a recipe (``difference`` from ``mute``'s), so it
reproduces from it. A job renders them in the same pass as its other outputs
(``explain=`` in :func:`senseflosser.jobspec.build_job`, the CLI's
``--explain``, the API's ``explain`` field); :func:`explain` renders them alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .actions import conv_channels, parse_layers, split_entry
from .errors import RecipeError

EXPLANATIONS: tuple[str, ...] = ("solo", "mute", "difference")
NOTES: dict[str, str] = {
    "solo": "only the channel set kept in its layers: ablate at 1 of every other channel of those layers",
    "mute": "the channel set silenced: ablate at 1 of the set",
    "difference": "the normal output minus mute's (this recipe's) output: what the channel set contributes",
}
"""What each explanation is, as its recipe file and the page say it."""
ABLATE = "ablate"

__all__ = ["EXPLANATIONS", "assemble", "explain", "explanation_recipes", "parse_explain", "to_render"]


def parse_explain(value: Any) -> tuple[str, ...]:
    """``"solo,mute"`` -> ``("solo", "mute")`` in :data:`EXPLANATIONS` order; refuses anything else with a sentence."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    names = {str(v).strip() for v in items if str(v).strip()}
    unknown = sorted(names - set(EXPLANATIONS))
    if unknown:
        raise RecipeError(f"unknown explanation {unknown[0]!r}; choose from: {', '.join(EXPLANATIONS)}")
    if not names:
        raise RecipeError(f"give at least one explanation: {', '.join(EXPLANATIONS)}")
    return tuple(n for n in EXPLANATIONS if n in names)


def explanation_recipes(model, layers: Any, *, model_name: str, model_sha256: str = "", seed: int = 0,
                        offset: float = 0.0, duration: float | None = None) -> dict[str, Any]:
    """The ``mute`` and ``solo`` recipes of a selection of explicit channels (``difference`` uses ``mute``'s).

    Raises
    ------
    RecipeError
        If the selection names a whole layer (solo and mute need channels), or channels the model lacks.
    """
    from .recipe import Recipe

    entries = parse_layers(layers)
    if not entries:
        raise RecipeError("an explanation needs a channel set, e.g. 'down:3,7' or 'concept:bass'")
    convs = conv_channels(model)
    solo: list[str] = []
    for entry in entries:
        name, chans = split_entry(entry)
        if chans is None:
            raise RecipeError(f"an explanation needs channels, not all of layer {name!r}: write e.g. '{name}:0,3'")
        if name not in convs:
            raise RecipeError(f"layer {name!r} is not a conv layer of model {model_name!r}; "
                              f"choose from: {', '.join(convs)}")
        rest = [c for c in range(convs[name]) if c not in set(chans)]
        if rest:
            solo.append(f"{name}:{','.join(map(str, rest))}")
    common = dict(model=model_name, model_sha256=model_sha256, action=ABLATE, magnitude=1.0, seed=seed,
                  offset=offset, duration=duration)
    out = {"mute": Recipe(layers=entries, **common)}
    out["solo"] = Recipe(layers=tuple(solo), **common) if solo else None  # the whole layer chosen: solo = normal
    return out


def to_render(which: Sequence[str], recipes: dict[str, Any]) -> list[str]:
    """Which of ``mute`` and ``solo`` must be rendered for the explanations ``which`` (``difference`` needs mute)."""
    return [n for n in ("mute", "solo") if (n in which or (n == "mute" and "difference" in which))
            and recipes[n] is not None]


def assemble(which: Sequence[str], recipes: dict[str, Any], normal: np.ndarray,
             rendered: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """The explanations ``which`` from the normal output and the rendered ones (see :func:`to_render`).

    Parameters
    ----------
    which : sequence of str
    recipes : dict
        :func:`explanation_recipes`'s answer.
    normal : np.ndarray, shape (n_samples,)
        The normal output, raw (before any clipping gain).
    rendered : dict
        ``"mute"`` / ``"solo"`` -> raw output (before any clipping gain), shape (n_samples,).

    Returns
    -------
    dict
        Each of ``which`` -> ``{"audio": waveform (float32, raw), "recipe": Recipe or None}``.
    """
    out: dict[str, dict[str, Any]] = {}
    for n in which:
        if n == "difference":
            out[n] = {"audio": (normal - rendered["mute"]).astype(np.float32), "recipe": recipes["mute"]}
        elif n == "solo" and recipes["solo"] is None:  # the whole layer chosen: solo is the normal output
            out[n] = {"audio": np.asarray(normal, np.float32), "recipe": None}
        else:
            out[n] = {"audio": np.asarray(rendered[n], np.float32), "recipe": recipes[n]}
    return out


def explain(audio: np.ndarray, model, layers: Any, *, model_name: str, which: Sequence[str] = EXPLANATIONS,
            seed: int = 0) -> dict[str, dict[str, Any]]:
    """Render the explanations of a channel set over ``audio``.

    Returns
    -------
    dict
        ``"normal"`` and each of ``which`` -> ``{"audio": waveform (float32), "recipe": Recipe or None}``;
        ``difference`` is ``normal - mute`` (raw, before any clipping gain), its recipe ``mute``'s.
    """
    from .pipeline import floss

    which = parse_explain(which)
    recipes = explanation_recipes(model, layers, model_name=model_name, seed=seed)
    wanted = to_render(which, recipes)
    result = floss(np.asarray(audio, np.float32), model, [recipes[n] for n in wanted])
    raw = {n: out.raw for n, out in zip(wanted, result.flossed)}
    return {"normal": {"audio": result.normal_raw, "recipe": None}, **assemble(which, recipes, result.normal_raw, raw)}
