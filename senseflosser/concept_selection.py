"""Selections by concept: ``concept:NAME`` in a layer selection, resolved to channels at the edge.

A model card's ``concepts`` section (written by :func:`senseflosser.concepts.locate_model`)
keeps each concept's checked selection and its ranking, so ``concept:bass`` becomes
the card's selection, or the top share or count of each layer's ranked channels,
when a job is built; recipes hold the channel numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .concept_check import entries
from .concepts import _share, select
from .errors import ModelError, RecipeError
from .parsing import parse_int

__all__ = ["card_concepts", "concept_channels", "expand_concepts"]


def card_concepts(card: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The card's ``concepts`` section (``None`` if it has none).

    Raises
    ------
    ModelError
        If the section is not of the form :func:`locate_model` writes.
    """
    section = (card or {}).get("concepts")
    if section is None:
        return None
    if not isinstance(section, Mapping) or not isinstance(section.get("concepts"), Mapping) \
            or not isinstance(section.get("channels"), Mapping):
        raise ModelError("the model card's concepts section is not of the form `senseflosser concepts` writes; "
                         "recompute it")
    return dict(section)


def concept_channels(section: Mapping[str, Any] | None, concept: str, *, model_name: str,
                     share: Any = None, count: Any = None) -> list[str]:
    """The selection entries of one concept: the card's checked selection, or its ranking at ``share`` / ``count``."""
    if not section:
        raise RecipeError(f"model {model_name!r} has no concepts: run `senseflosser concepts -m {model_name} "
                          f"--data-dir AUDIO` first (for a model of the registry), or choose channel numbers")
    known = section["concepts"]
    if concept not in known:
        shown = concept if len(concept) <= 40 else concept[:40] + "…"
        raise RecipeError(f"unknown concept {shown!r}; the concepts of model {model_name!r} are: "
                          f"{', '.join(known)}")
    entry = known[concept]
    if share is not None and count is not None:
        raise RecipeError("give a concept share or a concept count, not both")
    if not entry.get("located"):
        located = ", ".join(c for c, e in known.items() if e.get("located")) or "none"
        raise RecipeError(f"concept {concept!r} was not located in model {model_name!r} (deleting no channel "
                          f"lowers it); located: {located}")
    if share is None and count is None:
        chosen = list(entry.get("selection") or [])
    else:
        if count is not None:
            try:
                n = parse_int(count, field="concept count", minimum=1)
            except ValueError as exc:
                raise RecipeError(str(exc)) from None
            sel = select(entry["ranking"], section["channels"], count=n)
        else:
            sel = select(entry["ranking"], section["channels"], share=_share(share))
        chosen = entries(sel)
    if not chosen:
        raise RecipeError(f"concept {concept!r} of model {model_name!r} has no located channels")
    return chosen


def expand_concepts(layers: Any, section: Mapping[str, Any] | None, *, model_name: str,
                    share: Any = None, count: Any = None) -> Any:
    """Replace every ``concept:NAME`` in a selection by its channels: ``concept:bass,mid`` -> ``["down:3,7", "mid"]``.

    ``layers`` itself is returned when it names no concept. A channel number
    right after a concept is refused (it would join the concept's last layer).

    Raises
    ------
    RecipeError
        Unknown concept, a concept not located, a share out of (0, 1], a count below 1,
        a model without concepts.
    """
    if layers is None:
        return None
    items = [layers] if isinstance(layers, str) else layers
    if not isinstance(items, Iterable) or not any(isinstance(e, str) and "concept:" in e for e in items):
        if share is not None or count is not None:
            raise RecipeError("a concept share or count needs a concept in the layers, e.g. 'concept:brightness'")
        return layers
    out: list[Any] = []
    after_concept = None
    for item in items:
        if not isinstance(item, str):
            out.append(item)
            continue
        tokens: list[str] = []
        for token in (t.strip() for t in item.split(",")):
            head, colon, rest = token.partition(":")
            if colon and head.strip() == "concept" and not rest.strip().isdigit():
                out.extend(concept_channels(section, rest.strip(), model_name=model_name, share=share, count=count))
                after_concept = rest.strip()
                continue
            if token.lstrip("-").isdigit() and after_concept is not None and not tokens:
                raise RecipeError(f"channel {token} follows concept:{after_concept}; name its layer, "
                                  f"e.g. 'down:{token}'")
            after_concept = None if token else after_concept
            tokens.append(token)
        if tokens:
            out.append(",".join(tokens))
    return out
