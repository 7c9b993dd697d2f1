"""Concepts: find the channels that carry a sense, then check that deleting them deletes it.

A *concept* is a descriptor of :mod:`senseflosser.descriptors` (brightness,
noisiness, percussive, bass, air). Locating one in a model takes three steps,
the same for every concept and every model (the rule is fixed in advance; the
README states it):

1. **Follow.** Over excerpts of the model's own audio (held out), each conv
   layer's channel time-courses (the layer's output averaged over frequency,
   frame by frame, as :func:`senseflosser.clusters.time_courses` computes
   them) are set against the descriptor's frame values of the input. The
   statistic is a *partial Spearman correlation with loudness removed*: the
   ranks of the channel and of the descriptor are each regressed on the ranks
   of the input's loudness, and the residuals correlated. Its p-value comes
   from a *circular block-shift null*: the descriptor's series is shifted
   circularly against the activations by :data:`SHIFTS` random offsets of at
   least :data:`MIN_SHIFT_S` seconds (which keeps the autocorrelation of both
   series and breaks only their alignment); p = (1 + shifts with |rho| at
   least as large) / (1 + shifts).
2. **Rank and select by deletion.** On the same excerpts, every channel of
   those layers is deleted alone (``ablate`` at magnitude 1 of that one
   channel) and each descriptor's change from the normal output is measured
   over the input's active frames. Any deletion lowers the level and moves
   every descriptor with it, so a channel's *effect* on a concept is its
   change net of that common effect: the distance of its change from the
   least-squares line of all the single deletions' changes on their
   loudness changes. The channels whose effect lowers the concept (effect
   below 0), most first, are its ranking in each layer; the top
   ``ceil(share * channels)`` of each layer (share :data:`DEFAULT_SHARE`)
   form the concept's selection. A concept no single deletion lowers is
   *not located*, and the card says so. (Ranking by the correlation of
   step 1, as a first version did, never reached the check's bar: channels
   that follow a concept are not the ones that make it. The correlation
   stays in the card beside each ranked channel.)
3. **Check causally.** On other excerpts of the same audio (never the ones
   the channels were ranked on), the selection is ablated (every selected
   channel silenced: ``ablate`` at magnitude 1 with explicit channels), and
   so are :data:`RANDOM_SETS` random channel sets of the same per-layer
   sizes. Each deletion's change of each descriptor (damaged minus normal,
   over the active frames) is taken *net of the common level effect*: across
   the random sets, the change is regressed on the loudness change (an
   ordinary least-squares line), and a deletion's movement is the distance
   of its change from that line at its own loudness change (the random sets'
   own distances are leave-one-out). The ratio is the target's movement over
   the random sets' median; the empirical p-value is (1 + random sets that
   move it as far) / (1 + sets). A concept is *confirmed* when its own
   descriptor moves at least :data:`RATIO_GOAL` times the random median and
   farther than every random set. The raw change (no level adjustment) is
   reported beside it.

The card's ``concepts`` section keeps each concept's ranking, so a selection
``concept:NAME`` (:func:`senseflosser.concept_selection.expand_concepts`)
resolves to channels at the edge at any share or count; recipes hold the
resolved channels. Spectral concepts can also be deleted by their band
(:mod:`senseflosser.concept_bands`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import audio
from .descriptors import CONCEPTS, DESCRIPTORS, frame_descriptors
from .concept_bands import BANDS, band_check
from .concept_check import RANDOM_SETS, RATIO_GOAL, Progress, causal_check, entries, render_levels
from .errors import AudioError, RecipeError
from .parsing import parse_float, parse_int

log = logging.getLogger(__name__)

DEFAULT_SHARE = 0.125
"""Share of each layer's channels a concept's selection takes (at most; fewer if fewer follow it)."""
ALPHA = 0.01
"""A channel follows a concept when its block-shift p-value is below this."""
SHIFTS = 499
"""Circular shifts of the block-shift null."""
MIN_SHIFT_S = 5.0
"""Shortest shift of the null, in seconds (longer than the beats and notes whose autocorrelation it keeps)."""
DEFAULT_EXCERPTS = 8
DEFAULT_CHECK_EXCERPTS = 6
DEFAULT_SECONDS = 5.0
_FRAME_RATE = 22050 / 1024

__all__ = ["ALPHA", "DEFAULT_SHARE", "deletion_effects", "follow", "following", "locate_model", "markdown_table",
           "ranking", "select"]


# ---------------------------------------------------------------- 1. follow


def _align(values: np.ndarray, frames: int) -> np.ndarray:
    """A descriptor's frames averaged onto a layer's (fewer, if the layer strides along time)."""
    if values.shape[0] == frames:
        return values
    edges = np.linspace(0, values.shape[0], frames + 1).round().astype(int)
    return np.array([values[a:max(b, a + 1)].mean() for a, b in zip(edges[:-1], edges[1:])])


def activity(model, waves: Iterable[np.ndarray], *, layers: Sequence[str],
             progress: Progress | None = None, total: int | None = None
             ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    """Channel time-courses and the input's descriptors on the same frames, excerpt by excerpt.

    Returns
    -------
    courses : dict
        Layer -> ``(frames, channels)``, float64 (the excerpts one after the other).
    descriptors : dict
        Layer -> descriptor name -> ``(frames,)`` aligned with that layer's frames.
    """
    from .clusters import time_courses

    courses: dict[str, list[np.ndarray]] = {n: [] for n in layers}
    descs: dict[str, dict[str, list[np.ndarray]]] = {n: {d: [] for d in DESCRIPTORS} for n in layers}
    count = 0
    for y in waves:
        c = time_courses(model, [y], layers=layers)
        d = frame_descriptors(y)
        for n in layers:
            courses[n].append(c[n])
            for name, v in d.items():
                descs[n][name].append(_align(v, c[n].shape[0]))
        count += 1
        if progress is not None:
            progress(count / total if total else 0.0, f"followed excerpt {count}" + (f" of {total}" if total else ""))
    if count == 0:
        raise AudioError("locating concepts needs at least one excerpt of audio")
    return ({n: np.concatenate(v) for n, v in courses.items()},
            {n: {d: np.concatenate(v) for d, v in dd.items()} for n, dd in descs.items()})


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x, axis=0).astype(np.float64)


def _residual(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``y`` (frames, ...) less its least-squares line on ``z`` (frames,), centred."""
    zc = z - z.mean()
    yc = y - y.mean(axis=0)
    denom = float(zc @ zc)
    if denom <= 0:
        return yc
    beta = np.tensordot(zc, yc, axes=(0, 0)) / denom
    return yc - np.multiply.outer(zc, beta)


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=0)
    return np.where(norm > 1e-12, x / np.where(norm > 1e-12, norm, 1.0), 0.0)


def follow(courses: Mapping[str, np.ndarray], descriptors: Mapping[str, Mapping[str, np.ndarray]], *,
           shifts: int = SHIFTS, min_shift_s: float = MIN_SHIFT_S, seed: int = 0
           ) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """How each channel follows each descriptor: partial Spearman rho (loudness removed) and block-shift p.

    Loudness itself gets the plain Spearman rho (it is what the others are controlled for).

    Returns
    -------
    dict
        Descriptor -> layer -> ``{"rho": (channels,), "p": (channels,)}``.

    Raises
    ------
    AudioError
        If there are too few frames for shifts of ``min_shift_s`` seconds.
    """
    out: dict[str, dict[str, dict[str, np.ndarray]]] = {d: {} for d in DESCRIPTORS}
    for layer, course in courses.items():
        frames = course.shape[0]
        lo = max(1, int(math.ceil(min_shift_s * _FRAME_RATE)))
        if frames - lo <= lo:
            raise AudioError(f"locating concepts needs more than {2 * min_shift_s:g} s of audio in all "
                             f"(layer {layer!r} has {frames} frames); give more or longer excerpts")
        rng = np.random.default_rng(np.random.SeedSequence([seed, frames]))
        offsets = rng.integers(lo, frames - lo + 1, size=shifts)
        loud = _ranks(descriptors[layer]["loudness"])
        a_plain = _unit(_ranks(course) - _ranks(course).mean(axis=0))
        a_part = _unit(_residual(_ranks(course), loud))
        for name in DESCRIPTORS:
            d = _ranks(descriptors[layer][name])
            shifted = np.stack([np.roll(d, int(s)) for s in offsets], axis=1)  # (frames, shifts)
            if name == "loudness":
                a, dd, null = a_plain, _unit(d - d.mean()), _unit(shifted - shifted.mean(axis=0))
            else:
                a, dd, null = a_part, _unit(_residual(d, loud)), _unit(_residual(shifted, loud))
            rho = a.T @ dd
            null_rho = a.T @ null  # (channels, shifts)
            p = (1.0 + (np.abs(null_rho) >= np.abs(rho)[:, None] - 1e-12).sum(axis=1)) / (1.0 + shifts)
            out[name][layer] = {"rho": rho, "p": p}
    return out


# ---------------------------------------------------------------- 2. rank and select


def deletion_effects(model, waves: Sequence[np.ndarray], channels: Mapping[str, int], *, model_name: str,
                     progress: Progress | None = None) -> tuple[dict[str, dict[str, np.ndarray]], int]:
    """Each channel's effect on each concept when it alone is deleted, net of the common level effect.

    Every channel of ``channels`` is ablated alone over ``waves``; a
    deletion's change of a descriptor (damaged - normal over the active
    frames) less the least-squares line of all the deletions' changes on
    their loudness changes is its effect.

    Returns
    -------
    effects : dict
        Concept -> layer -> ``(channels,)`` float64 (below 0: deleting the channel lowers the concept).
    passes : int
        Forward passes run (one per channel and excerpt, and the normal's).
    """
    singles = [(layer, c) for layer, n in channels.items() for c in range(int(n))]
    normal, levels, passes = render_levels(model, waves, [{layer: [c]} for layer, c in singles], model_name=model_name,
                                     progress=progress)
    change = {d: np.array([lv[d] - normal[d] for lv in levels]) for d in DESCRIPTORS}
    X = np.stack([np.ones(len(singles)), change["loudness"]], axis=1)
    out: dict[str, dict[str, np.ndarray]] = {}
    for name in CONCEPTS:
        coef, *_ = np.linalg.lstsq(X, change[name], rcond=None)
        net = change[name] - X @ coef
        out[name] = {layer: np.array([net[i] for i, (ll, _) in enumerate(singles) if ll == layer])
                     for layer in channels}
    return out, passes


def ranking(effects: Mapping[str, Mapping[str, np.ndarray]],
            stats: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]] | None = None
            ) -> dict[str, dict[str, list[list[float]]]]:
    """Per concept and layer, the channels whose deletion lowers it (effect below 0), the most first.

    Returns
    -------
    dict
        Concept -> layer -> ``[[channel, effect, rho, p], ...]`` (rounded for the card; rho and p of
        :func:`follow` when ``stats`` are given, else ``None``).
    """
    out: dict[str, dict[str, list[list[float]]]] = {}
    for name, layers in effects.items():
        out[name] = {}
        for layer, eff in layers.items():
            eff = np.asarray(eff, np.float64)
            s = (stats or {}).get(name, {}).get(layer)
            rows = []
            for c in np.argsort(eff, kind="stable"):
                if not eff[c] < 0:
                    break
                rho = None if s is None else round(float(s["rho"][c]), 4)
                p = None if s is None else round(float(s["p"][c]), 4)
                rows.append([int(c), float(f"{eff[c]:.4g}"), rho, p])
            out[name][layer] = rows
    return out


def following(stats: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]], *, alpha: float = ALPHA
              ) -> dict[str, dict[str, int]]:
    """Per descriptor and layer, how many channels follow it (block-shift p below ``alpha``)."""
    return {name: {layer: int((np.asarray(s["p"]) < alpha).sum()) for layer, s in layers.items()}
            for name, layers in stats.items()}


def select(ranked: Mapping[str, Sequence[Sequence[float]]], channels: Mapping[str, int], *,
           share: float | None = DEFAULT_SHARE, count: int | None = None) -> dict[str, list[int]]:
    """A concept's selection from its ranking: the top ``ceil(share * channels)`` (or ``count``) per layer.

    Layers in ``channels`` order; a layer none of whose channels follow the concept is left out.
    """
    out: dict[str, list[int]] = {}
    for layer, total in channels.items():
        rows = ranked.get(layer) or []
        k = int(count) if count is not None else int(math.ceil(float(share) * int(total)))
        chosen = sorted(int(r[0]) for r in rows[:k])
        if chosen:
            out[layer] = chosen
    return out


# ---------------------------------------------------------------- the whole job


class _Excerpts(Sequence):
    """Excerpts ``(path, offset)`` of ``seconds``, read one at a time each time they are iterated (bounded memory)."""

    def __init__(self, clips: Sequence[tuple[Path, float]], seconds: float) -> None:
        self.clips, self.seconds = list(clips), seconds

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i):
        p, o = self.clips[i]
        return audio.load(p, offset=o, duration=self.seconds)


def _rounded(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, 5) if math.isfinite(x) else x
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_rounded(v) for v in x]
    return x


def locate_model(
    registry,
    name: str,
    data_dir: str | os.PathLike,
    *,
    share: float = DEFAULT_SHARE,
    excerpts: int = DEFAULT_EXCERPTS,
    check_excerpts: int = DEFAULT_CHECK_EXCERPTS,
    seconds: float = DEFAULT_SECONDS,
    random: int = RANDOM_SETS,
    seed: int = 0,
    output_dir: str | os.PathLike | None = None,
    update_card: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Locate every concept in a registry model, check each causally, store the card's ``concepts`` section.

    The excerpts (``excerpts + check_excerpts`` of ``seconds``, spread over
    the files by :func:`senseflosser.audio.spread_excerpts`) alternate: even
    ones locate, odd ones check, until the check's are used up. Audio is read
    one excerpt at a time, so memory is bounded by an excerpt (and the
    activations' time-courses) however much audio is used.

    Returns
    -------
    dict
        The card section (see the README); ``files`` lists what was written to ``output_dir``.

    Raises
    ------
    AudioError
        For an empty or missing data folder, or too little audio.
    RecipeError
        For a share out of (0, 1] or counts below 1.
    """
    from .models import conv_channels

    share = _share(share)
    excerpts = parse_int(excerpts, field="excerpts", minimum=1)
    check_excerpts = parse_int(check_excerpts, field="check excerpts", minimum=1)
    random = parse_int(random, field="random sets", minimum=1)
    t0 = time.perf_counter()
    files = audio.find_audio(data_dir)
    clips = audio.spread_excerpts(files, seconds, excerpts + check_excerpts)
    locate_clips, check_clips = [], []
    for i, clip in enumerate(clips):
        (check_clips if i % 2 == 1 and len(check_clips) < check_excerpts else locate_clips).append(clip)
    if not check_clips:
        raise AudioError(f"the audio under {str(data_dir)!r} gives only {len(clips)} excerpt(s) of {seconds:g} s: "
                         "too few to locate concepts on some and check them on others")
    model = registry.load(name)
    convs = conv_channels(model)
    probed = list(convs)[:-1] if len(convs) > 1 else list(convs)
    channels = {layer: convs[layer] for layer in probed}

    def stage(lo: float, hi: float) -> Progress | None:
        return None if progress is None else (lambda f, m: progress(lo + (hi - lo) * f, m))

    locate_waves = _Excerpts(locate_clips, seconds)
    courses, descs = activity(model, locate_waves, layers=probed, progress=stage(0.0, 0.05),
                              total=len(locate_clips))
    stats = follow(courses, descs, seed=seed)
    del courses, descs
    effects, effect_passes = deletion_effects(model, locate_waves, channels, model_name=name,
                                              progress=stage(0.05, 0.6))
    ranked = ranking(effects, stats)
    follows = following(stats)
    selections: dict[str, dict[str, list[int]]] = {}
    for concept in CONCEPTS:
        sel = select(ranked[concept], channels, share=share)
        if sel:
            selections[concept] = sel
    check_waves = _Excerpts(check_clips, seconds)
    results, passes = causal_check(model, check_waves, selections, channels=channels, model_name=name,
                                   n_random=random, seed=seed, progress=stage(0.6, 0.9)) if selections else ({}, 0)
    band_layer = probed[0]
    bands: dict[str, dict[str, Any]] = {}
    for k, concept in enumerate(BANDS):
        try:
            bands[concept], used = band_check(
                model, locate_waves, check_waves, concept, layer=band_layer, model_name=name, n_random=random,
                progress=stage(0.9 + 0.1 * k / len(BANDS), 0.9 + 0.1 * (k + 1) / len(BANDS)))
        except RecipeError as exc:
            bands[concept], used = {"layer": band_layer, "confirmed": False, "note": str(exc)}, 0
        passes += used
    seconds_used = time.perf_counter() - t0
    concepts: dict[str, Any] = {}
    for concept in CONCEPTS:
        entry: dict[str, Any] = {"ranking": ranked[concept], "following": follows[concept]}
        if concept not in selections:
            entry.update(located=False, confirmed=False, selection=[],
                         note=f"not located: deleting no single channel of {', '.join(probed)} lowers {concept} "
                              "beyond the level effect every deletion has")
        else:
            check = results[concept]
            own = check["descriptors"][concept]
            entry.update(located=True, confirmed=check["confirmed"], selection=entries(selections[concept]),
                         check=check)
            entry["note"] = (f"ablating its {sum(check['sizes'].values())} channels moves {concept} "
                             f"{own['ratio']:.2f}x the median of {random} random sets of the same sizes "
                             f"(p = {own['p']:.3f}; raw {own['ratio_raw']:.2f}x)"
                             + ("" if check["confirmed"] else
                                f"; not confirmed (needs {RATIO_GOAL:g}x and farther than every random set)"))
        if concept in bands:
            band = bands[concept]
            if "descriptors" in band:
                moved = band["descriptors"][concept]
                band["note"] = (f"a band mask over {concept}'s band on {band['layer']} moves {concept} "
                                f"{moved['ratio']:.2f}x the median of {band['null']['bands']} bands as wide "
                                f"matched on energy (p = {moved['p']:.3f}; level {band['level_change_db']:+.1f} dB)"
                                + ("" if band["confirmed"] else "; not confirmed"))
                band["command"] = (f"-a bandmask -g {band['width']:g} --place {band['place']:g} "
                                   f"-l {band['layer']}")
            entry["band"] = band
        concepts[concept] = entry
    locate_s = len(locate_clips) * seconds
    check_s = len(check_clips) * seconds
    section: dict[str, Any] = {
        "method": {
            "statistic": "partial Spearman correlation with the input's loudness removed (plain for loudness)",
            "null": f"circular block shift, {SHIFTS} shifts of at least {MIN_SHIFT_S:g} s",
            "alpha": ALPHA, "share": share,
            "effect": "each channel deleted alone on the locating excerpts: the descriptor's change net of the "
                      "least-squares line of all single deletions' changes on their loudness changes",
            "rule": f"per layer, the top ceil({share:g} x channels) whose deletion lowers the concept "
                    "(effect below 0), the most first",
            "ranking_rows": ["channel", "effect", "rho", "p"],
            "band": f"for {', '.join(BANDS)}: bandmask over the concept's band on {band_layer} (the first layer, "
                    f"what the network hears first), against up to {random} bands as wide at other places (overlapping "
                    f"it by at most half) whose share of that layer's activation energy is nearest its own",
            "layers": probed, "random_sets": random, "seed": int(seed), "ratio_goal": RATIO_GOAL,
            "movement": "change of the descriptor (damaged - normal, over the input's active frames) net of the "
                        "least-squares line of the random sets' changes on their loudness changes",
        },
        "model_sha256": registry.sha256(name),
        "channels": channels,
        "excerpts": {
            "locate": [{"file": p.name, "offset": round(o, 2), "seconds": seconds} for p, o in locate_clips],
            "check": [{"file": p.name, "offset": round(o, 2), "seconds": seconds} for p, o in check_clips],
        },
        "cost": {
            "forward_passes": len(locate_clips) + effect_passes + passes,
            "audio_seconds_through_the_model": round((len(locate_clips) + effect_passes + passes) * seconds, 1),
            "in_units_of_the_located_audio": round((len(locate_clips) + effect_passes + passes) * seconds
                                                   / max(locate_s + check_s, 1e-9), 1),
            "seconds": round(seconds_used, 1),
            "threads": os.environ.get("SENSEFLOSSER_THREADS"),
        },
        "located": [c for c in CONCEPTS if concepts[c]["located"]],
        "confirmed": [c for c in CONCEPTS if concepts[c]["confirmed"]],
        "confirmed_bands": [c for c in BANDS if bands[c].get("confirmed")],
        "not_located": [c for c in CONCEPTS if not concepts[c]["located"]],
        "concepts": concepts,
        "loudness": {"note": "reported, not located: every deletion lowers the level",
                     "channels_following": follows["loudness"]},
    }
    section = _rounded(section)
    if output_dir is not None:
        section["files"] = write_report(section, name, output_dir)
    if update_card:
        card = {k: v for k, v in section.items() if k != "files"}
        if output_dir is not None:
            import shutil

            target = registry.path(name).with_name(f"{name}.concepts.png")
            shutil.copyfile(Path(output_dir) / section["files"]["png"], target)
            card["plot"] = target.name
        registry.update_card(name, concepts=card)
    return section


def _share(value: Any) -> float:
    try:
        share = parse_float(value, field="concept share", minimum=0.0, maximum=1.0)
    except ValueError as exc:
        raise RecipeError(str(exc)) from None
    if share <= 0:
        raise RecipeError(f"a concept share must be above 0 and at most 1, got {value!r}")
    return share


# ---------------------------------------------------------------- JSON, CSV, PNG


def write_report(section: Mapping[str, Any], name: str, output_dir: str | os.PathLike) -> dict[str, str]:
    """``concepts.json``, ``concepts.csv`` (one row per concept and descriptor) and ``concepts.png``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "concepts.json").write_text(json.dumps({"model": name, **section}, indent=2))
    with open(out / "concepts.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "concept", "located", "confirmed", "channels", "descriptor", "ratio", "p", "beats_all",
                    "ratio_raw", "p_raw", "change", "random_median_change", "level_change_db"])
        for concept, entry in section["concepts"].items():
            if not entry["located"]:
                w.writerow([name, concept, False, False, 0] + [""] * 9)
                continue
            check = entry["check"]
            for d, row in check["descriptors"].items():
                w.writerow([name, concept, True, entry["confirmed"], sum(check["sizes"].values()), d,
                            row.get("ratio"), row.get("p"), row.get("beats_all"), row.get("ratio_raw"),
                            row.get("p_raw"), row.get("change"), row.get("random_median_change"),
                            check["level_change_db"]])
    plot(section, name, out / "concepts.png")
    return {"json": "concepts.json", "csv": "concepts.csv", "png": "concepts.png"}


def plot(section: Mapping[str, Any], name: str, path: str | os.PathLike) -> None:
    """The figure: each concept's deletion against each descriptor (ratio to the random median)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    located = [c for c in CONCEPTS if section["concepts"][c]["located"]]
    fig, ax = plt.subplots(figsize=(1.3 * len(DESCRIPTORS) + 2.5, 0.6 * max(1, len(located)) + 1.8))
    if located:
        M = np.array([[section["concepts"][c]["check"]["descriptors"][d]["ratio"] for d in DESCRIPTORS]
                      for c in located], float)
        im = ax.imshow(np.log10(np.clip(M, 0.1, 100)), cmap="magma", vmin=-1, vmax=2, aspect="auto")
        for i, c in enumerate(located):
            for j, d in enumerate(DESCRIPTORS):
                row = section["concepts"][c]["check"]["descriptors"][d]
                mark = "*" if row["beats_all"] and row["ratio"] >= RATIO_GOAL else ""
                ax.text(j, i, f"{row['ratio']:.1f}{mark}", ha="center", va="center",
                        color="white" if M[i, j] < 10 else "black", fontsize=9,
                        fontweight="bold" if d == c else "normal")
        ax.set_yticks(range(len(located)), [f"delete {c}" for c in located])
        cb = fig.colorbar(im, ax=ax, fraction=0.04)
        cb.set_ticks([-1, 0, np.log10(3), 1, 2], labels=["0.1", "1", "3", "10", "100"])
        cb.set_label("x random median")
    ax.set_xticks(range(len(DESCRIPTORS)), DESCRIPTORS, rotation=30)
    missing = [c for c in CONCEPTS if c not in located]
    ax.set_title(f"{name}: concept deletions vs {section['method']['random_sets']} random sets"
                 + (f"\n(not located: {', '.join(missing)})" if missing else ""), fontsize=10)
    ax.set_xlabel("descriptor moved (level-adjusted; loudness raw); * = 3x and beyond every random set")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def markdown_table(cards: Sequence[Mapping[str, Any]]) -> str:
    """The README's table of every card's concepts (own descriptor's figures, and the largest side effect)."""
    rows = ["| model | concept | channels | moves its descriptor (x random median) | p | beyond all 50 | raw | "
            "level change (random range), dB | largest side effect | verdict |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for card in cards:
        section = card.get("concepts")
        if not section:
            continue
        for concept, e in section["concepts"].items():
            if not e["located"]:
                rows.append(f"| {card['name']} | {concept} | 0 | | | | | | | not located |")
                continue
            c = e["check"]
            own = c["descriptors"][concept]
            side = max(((d, r["ratio"]) for d, r in c["descriptors"].items() if d != concept), key=lambda t: t[1])
            lo, hi = c["random_level_change_db"]
            rows.append(f"| {card['name']} | {concept} | {sum(c['sizes'].values())} | {own['ratio']:.2f} | "
                        f"{own['p']:.3f} | {'yes' if own['beats_all'] else 'no'} | {own['ratio_raw']:.2f} | "
                        f"{c['level_change_db']:.1f} ({lo:.1f} to {hi:.1f}) | {side[0]} {side[1]:.2f} | "
                        f"{'confirmed' if e['confirmed'] else 'located, not confirmed'} |")
            band = e.get("band") or {}
            if "descriptors" in band:
                own = band["descriptors"][concept]
                side = max(((d, r["ratio"]) for d, r in band["descriptors"].items() if d != concept),
                           key=lambda t: t[1])
                lo, hi = band["random_level_change_db"]
                rows.append(f"| {card['name']} | {concept}, band mask | `{band['layer']}` band {band['width']:.3f} | "
                            f"{own['ratio']:.2f} | {own['p']:.3f} | {'yes' if own['beats_all'] else 'no'} | "
                            f"{own['ratio_raw']:.2f} | {band['level_change_db']:.1f} ({lo:.1f} to {hi:.1f}) | "
                            f"{side[0]} {side[1]:.2f} | {'confirmed' if band['confirmed'] else 'not confirmed'} |")
    return "\n".join(rows) + "\n"
