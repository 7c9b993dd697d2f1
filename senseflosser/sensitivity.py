"""Where does the sense live? Each conv layer damaged alone, at each magnitude, against normal.

:func:`sensitivity_map` runs one flossed pass per cell (layer x magnitude x
seed) over one excerpt, all in a single :func:`~senseflosser.pipeline.floss`
call so the normal output and the excerpt's STFT are computed once, and
summarises each cell over its seeds (median, min and max of SNR and
log-spectral distance against the normal output). :func:`write_map` writes
``map.json``, ``map.csv`` and the heat map ``map.png``.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from . import actions
from .errors import RecipeError
from .models import ModelRegistry, conv_layer_names, input_frames
from .jsonfile import write_json
from .pipeline import Progress, floss
from .runners import compiled_call
from .jobspec import split_magnitudes
from .recipe import Recipe
from .spectral import stft

DEFAULT_SEEDS = 3
DEFAULT_DURATION = 10.0
"""Seconds of audio a map is measured on unless told otherwise."""
MAX_CELLS = 2000


def sensitivity_map(
    y: np.ndarray,
    model: keras.Model,
    *,
    model_name: str,
    model_sha256: str = "",
    action: str = "fog",
    magnitudes: Sequence[float] | str | None = None,
    seeds: int = DEFAULT_SEEDS,
    seed: int = 0,
    layers: Sequence[str] | None = None,
    progress: Progress | None = None,
    source: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Damage each conv layer alone at each magnitude and measure the output against normal.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        The excerpt, mono at 22050 Hz.
    model : keras.Model
        The pristine model (never mutated).
    model_name, model_sha256 : str, keyword-only
        Recorded in the map and its recipes.
    source : path or None, keyword-only
        The model's file, beside which an action's per-model data lies (adversarial's direction).
    action : str, keyword-only
        Any registered action (default fog).
    magnitudes : sequence or str or None, keyword-only
        Default: the action's titration (from the registry).
    seeds : int, keyword-only
        Seeds per cell (``seed``, ``seed + 1``, ...); an action whose output
        does not depend on the seed (the registry's ``seeded``) runs one, as
        more would repeat it: the report's ``seeds`` says how many ran.
    seed : int, keyword-only
    layers : sequence of str or None, keyword-only
        Layers to map (default: every conv layer).
    progress : callable or None, keyword-only

    Returns
    -------
    dict
        ``layers``, ``magnitudes``, ``cells`` (``cells[layer][i]`` for
        ``magnitudes[i]``: ``snr_db`` and ``lsd_db`` each with ``median``,
        ``min``, ``max``), ``most_sensitive`` (layers ordered by their median
        SNR summed over magnitudes, most damaged first), the timing
        (``seconds``, ``forward_pass_seconds``, ``passes_equivalent``) and
        what produced it.
    """
    spec = actions.get(action)
    if spec.kind == "input":
        raise RecipeError(f"a map damages each layer alone, and {spec.name} changes the audio, not the model: "
                          "choose an action that damages the model")
    mags = (spec.magnitude.titration if magnitudes is None
            else tuple(dict.fromkeys(spec.magnitude.validate(m, spec.name) for m in split_magnitudes(magnitudes))))
    if not mags:
        raise RecipeError("give at least one magnitude, or none for the action's titration")
    if not isinstance(seeds, int) or not 1 <= seeds <= 16:
        raise RecipeError(f"seeds must be a whole number from 1 to 16, got {seeds!r}")
    if not spec.seeded:
        seeds = 1
    convs = conv_layer_names(model)
    chosen = list(convs) if not layers else [n for n in convs if n in set(layers)]
    unknown = [n for n in (layers or ()) if n not in convs]
    if unknown:
        raise RecipeError(f"layer {unknown[0]!r} is not a conv layer of model {model_name!r}; "
                          f"choose from: {', '.join(convs)}")
    cells = len(chosen) * len(mags) * seeds
    if cells > MAX_CELLS:
        raise RecipeError(f"the map would have {cells} cells; at most {MAX_CELLS} (fewer magnitudes or seeds)")
    recipes = [Recipe(model_name, model_sha256, spec.name, m, seed + s, layers=(name,))
               for name in chosen for m in mags for s in range(seeds)]
    t_pass = _forward_seconds(model, y)
    t0 = time.perf_counter()
    result = floss(y, model, recipes, progress=progress, source=source)
    seconds = time.perf_counter() - t0
    table: dict[str, list[dict[str, Any]]] = {}
    it = iter(result.flossed)
    for name in chosen:
        row = []
        for _ in mags:
            outs = [next(it) for _ in range(seeds)]
            row.append({key: _summary([o.metrics[key] for o in outs]) for key in ("snr_db", "lsd_db")})
        table[name] = row
    order = sorted(chosen, key=lambda n: sum(c["snr_db"]["median"] for c in table[n]))
    return {
        "model": model_name, "model_sha256": model_sha256, "action": spec.name,
        "magnitude_meaning": spec.magnitude.meaning, "magnitudes": list(mags), "seeds": seeds, "seed": seed,
        "layers": chosen, "cells": table, "most_sensitive": order,
        "duration": len(y) / 22050, "normal": {k: result.normal_metrics[k] for k in ("snr_db", "lsd_db")},
        "seconds": round(seconds, 3), "forward_pass_seconds": round(t_pass, 4),
        "passes_equivalent": round(seconds / t_pass, 1) if t_pass > 0 else None,
    }


def _summary(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    return {"median": round(float(np.median(v)), 2), "min": round(float(v.min()), 2), "max": round(float(v.max()), 2)}


def _forward_seconds(model: keras.Model, y: np.ndarray, repeats: int = 3) -> float:
    """Best time of one bare, compiled forward pass of the model over the whole excerpt."""
    x = stft(np.asarray(y, np.float32))[None]
    fixed = input_frames(model)
    if fixed is not None:  # a fixed-length model sees the excerpt in windows of its length
        n = -(-x.shape[1] // fixed) * fixed
        x = np.concatenate([x, np.zeros((1, n - x.shape[1]) + x.shape[2:], np.float32)], axis=1)
        x = x.reshape(-1, fixed, *x.shape[2:])
    fn = compiled_call(model)
    weights = [keras.ops.convert_to_tensor(v.value) for v in model.trainable_variables]
    state = [keras.ops.convert_to_tensor(v.value) for v in model.non_trainable_variables]
    best = float("inf")
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        for i in range(x.shape[0]):
            keras.ops.convert_to_numpy(fn(weights, state, x[i:i + 1])[0])
        best = min(best, time.perf_counter() - t0)
    return best


def write_map(report: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, str]:
    """Write ``map.json``, ``map.csv`` and ``map.png`` (the heat map); returns their names."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "map.json", report)
    with open(out / "map.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", "magnitude", "snr_db_median", "snr_db_min", "snr_db_max",
                    "lsd_db_median", "lsd_db_min", "lsd_db_max"])
        for layer in report["layers"]:
            for m, cell in zip(report["magnitudes"], report["cells"][layer]):
                w.writerow([layer, m, *(cell[k][s] for k in ("snr_db", "lsd_db") for s in ("median", "min", "max"))])
    plot_map(report, out / "map.png")
    return {"json": "map.json", "csv": "map.csv", "png": "map.png"}


def plot_map(report: dict[str, Any], path: str | os.PathLike) -> Path:
    """Draw the heat map: layers down, magnitudes across, median SNR against normal in dB."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers, mags = report["layers"], report["magnitudes"]
    grid = np.array([[c["snr_db"]["median"] for c in report["cells"][n]] for n in layers])
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(mags), 1.4 + 0.5 * len(layers)))
    lo, hi = float(np.nanmin(grid)), float(np.nanmax(grid))
    image = ax.imshow(grid, cmap="magma", aspect="auto", vmin=min(lo, hi - 1), vmax=hi)
    ax.set_xticks(range(len(mags)), [f"{m:g}" for m in mags])
    ax.set_yticks(range(len(layers)), layers)
    ax.set_xlabel(f"{report['action']} magnitude ({report['magnitude_meaning']})")
    ax.set_ylabel("damaged layer (alone)")
    mid = (lo + hi) / 2
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=8,
                    color="black" if grid[i, j] > mid else "white")
    bar = fig.colorbar(image, ax=ax)
    bar.set_label("SNR against normal (dB), median over seeds")
    ax.set_title(f"{report['model']}: where the sense lives ({report['action']}, {report['seeds']} seeds, "
                 f"{report['duration']:.0f} s)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def map_to_dir(
    input_path: str | os.PathLike,
    *,
    registry: ModelRegistry,
    model: str | tuple[str, keras.Model, str],
    output_dir: str | os.PathLike,
    action: str = "fog",
    magnitudes: Sequence[float] | str | None = None,
    seeds: int = DEFAULT_SEEDS,
    seed: int = 0,
    offset: float = 0.0,
    duration: float | None = DEFAULT_DURATION,
    max_duration: float | None = None,
    allow_model_paths: bool = False,
    channels: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Map one excerpt of an audio file and write ``map.json``, ``map.csv`` and ``map.png``.

    Parameters are those of :func:`sensitivity_map`, with the model found as
    :func:`senseflosser.render.resolve_model` finds it and the excerpt read
    from ``input_path`` (``offset``, ``duration``; default 10 s). With
    ``channels``, the map also ranks every layer's channels
    (:func:`channel_ranking`).

    Returns
    -------
    dict
        The map (as written to ``map.json``), with ``files``.
    """
    from . import audio
    from .render import resolve_model

    name, net, sha, source, note = resolve_model(registry, model, allow_paths=allow_model_paths)
    y = audio.load(input_path, offset=offset, duration=duration, max_duration=max_duration)
    split = 0.7 if channels else 1.0
    report = sensitivity_map(y, net, model_name=name, model_sha256=sha, action=action, magnitudes=magnitudes,
                             seeds=seeds, seed=seed, source=source,
                             progress=(lambda f, m: progress(split * f, m)) if progress else None)
    if channels:
        report["channels"] = channel_ranking(
            y, net, model_name=name, seed=seed,
            progress=(lambda f, m: progress(split + (1 - split) * f, m)) if progress else None)
    report["input"] = {"file": Path(input_path).name, "offset": offset, "duration": len(y) / audio.SAMPLE_RATE}
    if note:
        report["model_note"] = note
    report["files"] = write_map(report, output_dir)
    return report


MAP_KEYS = ("action", "magnitudes", "seeds", "seed", "layers", "cells", "most_sensitive", "duration", "input",
            "channels")
"""What a card keeps of a map report."""


def record_in_card(registry: ModelRegistry, report: dict[str, Any], png: str | os.PathLike) -> Path:
    """Store a map in its registry model's card, under its action.

    Every map goes into the card's ``maps`` section under its action (its
    table; the heat map is not kept). The card's reference map,
    ``sensitivity``, with its heat map as ``<name>.map.png``, is the first map
    recorded; a later map of the same action replaces it, one of another
    action leaves it as it is.

    Returns
    -------
    pathlib.Path
        The card file written.
    """
    import shutil

    name = report["model"]
    card = registry.card(name)
    kept = {k: report[k] for k in MAP_KEYS if k in report}
    sections: dict[str, Any] = {"maps": {**(card.get("maps") or {}), report["action"]: kept}}
    reference = card.get("sensitivity")
    if not reference or reference.get("action") == report["action"]:
        target = registry.path(name).with_name(f"{name}.map.png")
        shutil.copyfile(png, target)
        sections["sensitivity"] = kept | {"plot": target.name}
    return registry.update_card(name, **sections)


def channel_ranking(
    y: np.ndarray,
    model: keras.Model,
    *,
    model_name: str,
    layers: Sequence[str] | None = None,
    check: int = 3,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Rank each conv layer's channels (neurons) by how much silencing each alone would hurt.

    The estimate is first order, from one backward pass: a copy of the model
    gets a gate (a per-channel factor, 1) after every conv layer, and the
    gradient of the reconstruction loss (compressed spectra of the output
    against those of the input) with respect to a gate is the loss's change
    when that channel's output is scaled, so ``|dL/dg|`` estimates what
    silencing it (``g = 0``) costs. The estimate is then checked by real
    ablation: the ``check`` top-ranked channels of each layer and as many
    others drawn at random, each silenced alone, measured against normal.

    Returns
    -------
    dict
        Per layer: ``ranking`` (channels, most important first), ``estimate``
        (``|dL/dg|`` in ranking order), ``checked`` (``channel``, ``rank``,
        ``snr_db`` of the real ablation) and ``confirmed`` (the top channels'
        median SNR is below the others').
    """
    from .actions.base import copy_model
    from .layers import ChannelGate
    from .actions.worst_case import _compressed, _excerpt_tensors
    from keras import ops

    convs = conv_layer_names(model)
    chosen = [n for n in convs if not layers or n in set(layers)]

    def gated_call(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        if layer.name in chosen:
            out = ChannelGate(int(layer.filters), name=f"{layer.name}_gate")(out)
        return out

    gated = copy_model(model, call_function=gated_call)

    def loss(out, target):
        return ops.mean(ops.square(_compressed(out) - _compressed(target)))

    from . import device

    step = device.compile_loss_gradient(gated, loss)
    index = {id(v): i for i, v in enumerate(gated.trainable_variables)}
    weights = [v.value for v in gated.trainable_variables]
    state = [v.value for v in gated.non_trainable_variables]
    grads = {n: np.zeros(int(model.get_layer(n).filters)) for n in chosen}
    for x in _excerpt_tensors(gated, [y]):
        _, g = step(weights, state, x, x)
        for n in chosen:
            grads[n] += np.asarray(ops.convert_to_numpy(g[index[id(gated.get_layer(f"{n}_gate").gate)]]))
    if progress is not None:
        progress(0.2, "estimated every channel's importance")
    rng = np.random.default_rng(seed)
    result: dict[str, Any] = {}
    recipes, where = [], []
    for n in chosen:
        est = np.abs(grads[n])
        ranking = [int(c) for c in np.argsort(-est, kind="stable")]
        top = ranking[:check]
        rest = ranking[check:]
        others = [int(c) for c in rng.choice(rest, size=min(check, len(rest)), replace=False)] if rest else []
        result[n] = {"ranking": ranking, "estimate": [float(f"{est[c]:.4g}") for c in ranking], "checked": []}
        for c in top + others:
            recipes.append(Recipe(model_name, "", "ablate", 1.0, seed, layers=(f"{n}:{c}",)))
            where.append((n, c, ranking.index(c)))
    res = floss(y, model, recipes, progress=(lambda f, m: progress(0.2 + 0.8 * f, m)) if progress else None)
    for (n, c, rank), out in zip(where, res.flossed):
        result[n]["checked"].append({"channel": c, "rank": rank, "snr_db": round(out.metrics["snr_db"], 2)})
    for n in chosen:
        checked = result[n]["checked"]
        top = [r["snr_db"] for r in checked if r["rank"] < check]
        others = [r["snr_db"] for r in checked if r["rank"] >= check]
        result[n]["confirmed"] = bool(others) and float(np.median(top)) < float(np.median(others))
    return result
