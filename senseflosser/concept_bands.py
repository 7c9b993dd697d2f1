"""Band masks: delete a spectral concept (bass, air) by its frequencies, and check it against bands as wide.

Bass and air are shares of the power in a fixed band (:mod:`senseflosser.descriptors`).
A feature map's frequency rows span 0 Hz to Nyquist as the STFT's bins do, so
``bandmask`` at the band's width and place (its ``place`` parameter) masks that
band on any layer. :func:`band_check` deletes it on one layer and judges the
deletion, as :mod:`senseflosser.concepts` judges channel sets, against a null of
bands as wide at other places whose share of the layer's activation energy is
nearest the band's own (:func:`null_places`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .concept_check import RANDOM_SETS, RATIO_GOAL, Progress, judge, render_levels
from .descriptors import AIR_HZ, BASS_HZ, DESCRIPTORS, SAMPLE_RATE
from .errors import AudioError, RecipeError

__all__ = ["BANDS", "band_check", "band_of", "null_places", "row_energy"]

DIGITS = 4
"""Decimals of a band's width and place (in the card, its command and the check alike)."""

BANDS: dict[str, tuple[float, float]] = {"bass": (0.0, BASS_HZ), "air": (AIR_HZ, SAMPLE_RATE / 2.0)}
"""The spectral concepts a band mask deletes: their band in Hz (as the descriptors define them)."""
BAND_CANDIDATES = 200
"""Places on a grid from which the null's bands are matched on energy."""


def band_of(concept: str) -> tuple[float, float]:
    """``(width, place)`` of ``bandmask`` that masks a concept's band on any frequency axis (to :data:`DIGITS`).

    A feature map's frequency rows span 0 Hz to Nyquist as the STFT's bins do
    (a stride along frequency halves the rows, not the span), so the band is
    the same share of the rows on every layer. Rounded as the card and the
    command it gives write them, so that command masks exactly what was checked.
    """
    lo, hi = BANDS[concept]
    nyquist = SAMPLE_RATE / 2.0
    width = (hi - lo) / nyquist
    place = 0.0 if width >= 1.0 else min(1.0, lo / nyquist / (1.0 - width))
    return round(width, DIGITS), round(place, DIGITS)


def _covered(rows: int, width: float, place: float) -> np.ndarray:
    """Share of each row a band covers (as :func:`senseflosser.bends.bandmask` masks it)."""
    r = np.arange(rows, dtype=np.float64)
    lo = place * (1.0 - width) * rows
    return np.clip(np.minimum(r + 1.0, lo + width * rows) - np.maximum(r, lo), 0.0, 1.0)


def row_energy(model, waves: Iterable[np.ndarray], layer: str) -> np.ndarray:
    """Each frequency row's share of a layer's activation energy (summed over time and channels), ``(rows,)``."""
    import keras

    from .spectral import stft

    feature = keras.Model(model.inputs, model.get_layer(layer).output)
    total = None
    for y in waves:
        a = np.asarray(keras.ops.convert_to_numpy(feature([stft(np.asarray(y, np.float32))[None]], training=False)))
        if a.ndim != 4:
            raise RecipeError(f"layer {layer!r} has no frequency axis: a band mask needs a Conv2D layer")
        e = np.square(a.astype(np.float64)).sum(axis=(0, 1, 3))
        total = e if total is None else total + e
    if total is None:
        raise AudioError("a band check needs at least one excerpt of audio")
    return total / max(float(total.sum()), 1e-30)


def null_places(energy: np.ndarray, width: float, place: float, n: int) -> list[float]:
    """``n`` places of bands as wide as the target's, matched on energy: the null of a band check.

    From :data:`BAND_CANDIDATES` places evenly spread from 0 to 1, those
    whose band overlaps the target's by at most half its width, the ``n``
    whose share of the layer's energy is nearest the target band's (ties: the
    lower place). Fewer if fewer are allowed.
    """
    rows = energy.size
    target = _covered(rows, width, place)
    own = float(target @ energy)
    scored = []
    for q in np.linspace(0.0, 1.0, BAND_CANDIDATES):
        band = _covered(rows, width, float(q))
        if float(np.minimum(band, target).sum()) > 0.5 * width * rows:
            continue
        scored.append((abs(float(band @ energy) - own), float(q)))
    return [q for _, q in sorted(scored)[:n]]


def band_check(model, locate: Sequence[np.ndarray], check: Sequence[np.ndarray], concept: str, *, layer: str,
               model_name: str, n_random: int = RANDOM_SETS, progress: Progress | None = None
               ) -> tuple[dict[str, Any], int]:
    """Delete a spectral concept with a band mask on one layer, against bands as wide matched on energy.

    The target is ``bandmask`` at the concept's band (:func:`band_of`) on
    ``layer``; the null, up to ``n_random`` bands of the same width at other
    places whose share of the layer's activation energy (on ``locate``) is
    nearest the target band's (:func:`null_places`). Each is rendered on
    ``check`` and judged as channel sets are (:func:`judge`).

    Returns
    -------
    result : dict
        ``{"layer", "width", "place", "energy_share", "null": {"bands", "places", "energy_share": [min, max]},
        "descriptors": judge(...), "confirmed", "level_change_db", "random_level_change_db"}``.
    passes : int
    """
    from .recipe import Recipe

    width, place = band_of(concept)
    energy = row_energy(model, locate, layer)
    places = null_places(energy, width, place, n_random)
    if not places:
        raise RecipeError(f"no band as wide as {concept}'s ({width:.3f} of the rows) fits beside it on {layer!r}")

    def recipe(q: float) -> Recipe:
        return Recipe(model=model_name, model_sha256="", action="bandmask", magnitude=float(width), seed=0,
                      layers=(layer,), params={"place": float(q)})

    normal, levels, passes = render_levels(model, check, [], model_name=model_name, progress=progress,
                                     recipes=[recipe(place)] + [recipe(q) for q in places])
    changes = [{d: lv[d] - normal[d] for d in DESCRIPTORS} for lv in levels]
    verdict = judge(changes[0], changes[1:])
    shares = [float(_covered(energy.size, width, q) @ energy) for q in places]
    dl = [c["loudness"] for c in changes[1:]]
    own = verdict[concept]
    return {
        "layer": layer, "width": width, "place": place,
        "energy_share": round(float(_covered(energy.size, width, place) @ energy), 4),
        "null": {"bands": len(places), "places": [round(q, 4) for q in places],
                 "energy_share": [round(min(shares), 4), round(max(shares), 4)]},
        "confirmed": bool(own["ratio"] >= RATIO_GOAL and own["beats_all"] and len(places) >= n_random),
        "level_change_db": round(changes[0]["loudness"], 3),
        "random_level_change_db": [round(min(dl), 3), round(max(dl), 3)],
        "descriptors": verdict,
    }, passes + len(locate)
