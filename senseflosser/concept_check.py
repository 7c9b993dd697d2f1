"""The causal check of a channel set: delete it and random sets of its sizes, and judge how far each moves.

Shared by :mod:`senseflosser.concepts` (a concept's channels, and each channel
alone) and :mod:`senseflosser.concept_bands` (a band mask against bands as
wide): :func:`render_levels` measures each descriptor of each deletion's output
over the excerpts' active frames, and :func:`judge` credits a deletion only for
its movement beyond the common level effect every deletion has (the
least-squares line of the random ones' changes on their loudness changes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .descriptors import DESCRIPTORS, active_frames, frame_descriptors
from .errors import RecipeError

__all__ = ["RANDOM_SETS", "RATIO_GOAL", "causal_check", "entries", "judge", "random_sets", "render_levels"]

RANDOM_SETS = 50
"""Random channel sets of the causal check."""
RATIO_GOAL = 3.0
"""A deletion is confirmed when its own descriptor moves this many times the random median (and beyond all)."""
ABLATE = "ablate"
"""The action of the causal check (at magnitude 1 with explicit channels it silences all of them)."""
GROUP = 24
"""Damaged models run together over one excerpt (bounds the outputs held at once)."""

Progress = Callable[[float, str], None]


def entries(selection: Mapping[str, Sequence[int]]) -> list[str]:
    """``{"down": [3, 7]}`` -> ``["down:3,7"]`` (the text a recipe holds)."""
    return [f"{layer}:{','.join(str(c) for c in chs)}" for layer, chs in selection.items() if chs]


def random_sets(sizes: Mapping[str, int], channels: Mapping[str, int], n: int, *, seed: int
                ) -> list[dict[str, list[int]]]:
    """``n`` random channel sets with ``sizes[layer]`` channels of each layer; set j depends on (seed, j) only."""
    out = []
    for j in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([seed, j]))
        out.append({layer: sorted(int(c) for c in rng.choice(int(channels[layer]), int(k), replace=False))
                    for layer, k in sizes.items() if k})
    return out


class _Levels:
    """Running sums of each descriptor over the active frames of every check excerpt (one per output)."""

    def __init__(self) -> None:
        self.sums = {d: 0.0 for d in DESCRIPTORS}
        self.frames = 0

    def add(self, y: np.ndarray, active: np.ndarray) -> None:
        d = frame_descriptors(y)
        n = min(active.size, d["loudness"].size)
        mask = active[:n]
        for name, v in d.items():
            v = v[:n][mask]
            self.sums[name] += float((10.0 ** (v / 10.0)).sum() if name == "loudness" else v.sum())
        self.frames += int(mask.sum())

    def levels(self) -> dict[str, float]:
        f = max(1, self.frames)
        return {d: (10.0 * math.log10(max(self.sums[d] / f, 1e-30)) if d == "loudness" else self.sums[d] / f)
                for d in DESCRIPTORS}


def render_levels(model, waves: Sequence[np.ndarray], selections: Sequence[Mapping[str, Sequence[int]]], *,
            model_name: str, progress: Progress | None, recipes: Sequence | None = None
            ) -> tuple[dict[str, float], list[dict[str, float]], int]:
    """Descriptor levels of the normal output and of each selection ablated (or each of ``recipes``), over ``waves``.

    Returns the normal's levels, each deletion's levels and the forward passes run.
    """
    from .pipeline import floss
    from .recipe import Recipe

    if recipes is None:
        recipes = [Recipe(model=model_name, model_sha256="", action=ABLATE, magnitude=1.0, seed=0,
                          layers=tuple(entries(s))) for s in selections]
    normal = _Levels()
    damaged = [_Levels() for _ in recipes]
    passes = 0
    steps = len(waves) * max(1, math.ceil(len(recipes) / GROUP))
    done = 0
    for y in waves:
        ref = frame_descriptors(y, names=("loudness",))["loudness"]
        active = active_frames(ref)
        first = None
        for g in range(0, len(recipes), GROUP):
            group = recipes[g:g + GROUP]
            result = floss(y, model, group, normal=first)
            passes += len(group) + (first is None)
            if first is None:
                first = (result.normal_raw, result.normal_metrics)
                normal.add(result.normal_raw, active)
            for k, out in enumerate(result.flossed):
                gain = float(out.metrics.get("gain", 1.0)) or 1.0
                damaged[g + k].add(out.audio / gain, active)
            done += 1
            if progress is not None:
                progress(done / steps, f"checked {done} of {steps} groups")
    return normal.levels(), [d.levels() for d in damaged], passes


def _movement(target: float, target_level: float, random: np.ndarray, random_level: np.ndarray | None
              ) -> tuple[float, np.ndarray]:
    """The target's and the random sets' movement of one descriptor.

    With ``random_level`` (loudness changes), net of the line fitted across the
    random sets on them (leave-one-out for the random sets themselves);
    without, the plain absolute change.
    """
    if random_level is None:
        return abs(target), np.abs(random)
    X = np.stack([np.ones_like(random_level), random_level], axis=1)
    coef, *_ = np.linalg.lstsq(X, random, rcond=None)
    resid = random - X @ coef
    hat = np.einsum("ij,jk,ik->i", X, np.linalg.pinv(X.T @ X), X)
    loo = resid / np.maximum(1.0 - hat, 1e-9)
    return abs(target - (coef[0] + coef[1] * target_level)), np.abs(loo)


def judge(target: Mapping[str, float], random: Sequence[Mapping[str, float]]) -> dict[str, dict[str, Any]]:
    """Each descriptor's movement by a targeted deletion against random ones (changes from normal).

    Returns
    -------
    dict
        Descriptor -> ``ratio`` (level-adjusted movement over the random median), ``p``, ``beats_all``,
        ``ratio_raw``, ``p_raw``, ``beats_all_raw``, ``change`` (the target's), ``random_median_change``.
        Loudness has only the raw figures (it is what the others are adjusted for).
    """
    n = len(random)
    dl = np.array([r["loudness"] for r in random])
    out: dict[str, dict[str, Any]] = {}
    for name in DESCRIPTORS:
        rv = np.array([r[name] for r in random])
        row: dict[str, Any] = {"change": target[name], "random_median_change": float(np.median(rv))}
        for suffix, level in (("", None if name == "loudness" else dl), ("_raw", None)):
            if suffix == "" and level is None:
                continue
            m_t, m_r = _movement(target[name], target["loudness"], rv, level)
            med = float(np.median(m_r))
            row["ratio" + suffix] = float(m_t / med) if med > 0 else float("inf")
            row["p" + suffix] = float((1 + int((m_r >= m_t).sum())) / (1 + n))
            row["beats_all" + suffix] = bool(m_t > float(m_r.max()))
        if name == "loudness":
            row.update(ratio=row["ratio_raw"], p=row["p_raw"], beats_all=row["beats_all_raw"])
        out[name] = row
    return out


def causal_check(model, waves: Sequence[np.ndarray], selections: Mapping[str, Mapping[str, Sequence[int]]], *,
                 channels: Mapping[str, int], model_name: str, n_random: int = RANDOM_SETS, seed: int = 0,
                 progress: Progress | None = None) -> tuple[dict[str, dict[str, Any]], int]:
    """Ablate each concept's selection and random sets of the same per-layer sizes; judge each descriptor.

    Concepts whose selections have the same sizes share their random sets.

    Returns
    -------
    results : dict
        Concept -> ``{"sizes", "descriptors": judge(...), "confirmed", "level_change_db",
        "random_level_change_db": [min, max]}``.
    passes : int
        Forward passes of the check excerpts run.
    """
    if n_random < 1:
        raise RecipeError(f"the causal check needs at least one random set, got {n_random}")
    by_sizes: dict[tuple, list[str]] = {}
    for concept, sel in selections.items():
        by_sizes.setdefault(tuple((layer, len(sel.get(layer, ()))) for layer in channels), []).append(concept)
    plan: list[dict[str, Sequence[int]]] = []
    owners: list[tuple[str, Any]] = []
    for sizes, concepts in by_sizes.items():
        for concept in concepts:
            plan.append(selections[concept])
            owners.append(("target", concept))
        for s in random_sets(dict(sizes), channels, n_random, seed=seed):
            plan.append(s)
            owners.append(("random", sizes))
    normal, levels, passes = render_levels(model, waves, plan, model_name=model_name, progress=progress)
    changes = [{d: lv[d] - normal[d] for d in DESCRIPTORS} for lv in levels]
    rand: dict[tuple, list[dict[str, float]]] = {}
    for (kind, key), ch in zip(owners, changes):
        if kind == "random":
            rand.setdefault(key, []).append(ch)
    results: dict[str, dict[str, Any]] = {}
    for (kind, key), ch in zip(owners, changes):
        if kind != "target":
            continue
        sizes = next(s for s, cs in by_sizes.items() if key in cs)
        verdict = judge(ch, rand[sizes])
        own = verdict[key]
        dl = [r["loudness"] for r in rand[sizes]]
        results[key] = {
            "sizes": {layer: k for layer, k in sizes if k},
            "confirmed": bool(own["ratio"] >= RATIO_GOAL and own["beats_all"]),
            "level_change_db": round(ch["loudness"], 3),
            "random_level_change_db": [round(min(dl), 3), round(max(dl), 3)],
            "descriptors": verdict,
        }
    return results, passes
