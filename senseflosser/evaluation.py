"""Measure a model on held-out audio: clean reconstruction and dose-response.

The figures go into the model card (``evaluation``) and a plot beside it.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import actions, audio, metrics
from .actions import ACTIONS
from .errors import RecipeError
from .models import ModelRegistry, conv_channels, conv_layer_names, input_frames
from .pipeline import Progress, floss
from .runners import Runner
from .recipe import Recipe
from .spectral import HOP

log = logging.getLogger(__name__)

EVAL_SEED = 1234
"""Seed of every damaged model in an evaluation, so curves are comparable."""


CALIBRATION_LEVELS = (15.0, 10.0, 5.0, 0.0, -10.0)
"""SNR against normal (dB) at which a card records each action's magnitude (the page's calibrated slider)."""


def calibration_grid(action: str, points: int = 11) -> tuple[float, ...]:
    """Magnitudes, evenly spaced in log, from a third of an action's first titration point to twice its last."""
    m = ACTIONS[action].magnitude
    lo, hi = m.titration[0] / 3, min(m.max, m.titration[-1] * 2)
    return tuple(float(f"{v:.3g}") for v in np.geomspace(lo, hi, points))


def calibration(curve: Sequence[tuple[float, float]], levels: Sequence[float]) -> list[float | None]:
    """Magnitudes at which a dose-response curve first falls to each level (interpolated in log magnitude).

    Parameters
    ----------
    curve : sequence of (magnitude, snr_db)
        Sorted by magnitude; magnitudes > 0.
    levels : sequence of float
        SNR levels in dB.

    Returns
    -------
    list
        One magnitude per level, ``None`` where the curve does not cross it.
    """
    out: list[float | None] = []
    pts = [(m, s) for m, s in curve if m > 0 and math.isfinite(s)]
    for level in levels:
        found = None
        for (m0, s0), (m1, s1) in zip(pts, pts[1:]):
            if s0 >= level >= s1 and s0 != s1:
                t = (s0 - level) / (s0 - s1)
                found = float(f"{math.exp(math.log(m0) + t * (math.log(m1) - math.log(m0))):.4g}")
                break
        out.append(found)
    return out


def evaluate(
    registry: ModelRegistry,
    name: str,
    data_dir: str | os.PathLike,
    *,
    clip_seconds: float = 10.0,
    max_clips: int = 8,
    magnitudes: Mapping[str, Sequence[float]] | None = None,
    calibrate: bool = True,
    calibration_points: int = 11,
    forward: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Evaluate a registry model on audio it was not trained on.

    Parameters
    ----------
    registry : ModelRegistry
    name : str
        Model name.
    data_dir : str or os.PathLike
        Folder of held-out audio (searched recursively).
    clip_seconds : float, keyword-only
        Length of each excerpt.
    max_clips : int, keyword-only
        Number of excerpts, spread over the files.
    magnitudes : mapping or None, keyword-only
        Action -> its dose-response magnitudes; default: every registered
        action at its default titration (from the registry).
    calibrate : bool, keyword-only
        Also run each action on :func:`calibration_grid` and report the
        magnitudes at which the median SNR falls to :data:`CALIBRATION_LEVELS`.
    calibration_points : int, keyword-only
        Points of that grid (at least 2; the report's ``calibration.grid_points``
        records it per action). Fewer points cost fewer passes and interpolate
        more coarsely between them.
    forward : bool, keyword-only
        Also time the forward pass (:func:`forward_cost`); off when only a few
        actions are evaluated to :func:`merge` into an existing report.
    progress : callable or None, keyword-only

    Returns
    -------
    dict
        ``normal``: median and worst SI-SNR and log-spectral distance of the
        clean reconstruction against the input; ``dose_response``: per action,
        the median SNR of flossed vs normal at each magnitude (seed
        :data:`EVAL_SEED`) and whether it falls strictly;
        ``adversarial_vs_fog``: at each of adversarial's magnitudes, fog's and
        adversarial's median SNR and how many dB worse adversarial is (when
        the model has a stored direction); ``calibration``: the magnitudes at
        :data:`CALIBRATION_LEVELS`; ``clips``: which excerpts were used;
        ``forward``: FLOPs and forward time per second of audio
        (:func:`forward_cost`).
    """
    model = registry.load(name)
    sha = registry.sha256(name)
    clips = audio.spread_excerpts(audio.find_audio(data_dir), clip_seconds, max_clips)
    si, lsd = [], []
    if magnitudes is None:
        # An input action (dream) changes the audio, not the model: the card's damage curves leave it out.
        magnitudes = {a: spec.magnitude.titration for a, spec in ACTIONS.items() if spec.kind != "input"}
    magnitudes = {a: tuple(mags) for a, mags in magnitudes.items()}
    source = registry.path(name)
    for action in list(magnitudes):  # an action whose per-model data is missing (a stored direction) is skipped
        if ACTIONS[action].prepare is not None:
            try:
                actions.prepare(model, None, [Recipe(name, sha, action, magnitudes[action][0], EVAL_SEED)],
                                source=source)
            except RecipeError as exc:
                log.warning("%s: %s not evaluated: %s", name, action, exc)
                del magnitudes[action]
    # Each action also runs on a denser grid around its titration, for the calibration; an action that is
    # compared with another (adversarial with fog: how much worse the worst case is than random damage of
    # the same size) has that one run at its magnitudes too.
    runs = {a: tuple(sorted(set(mags) | set(calibration_grid(a, calibration_points) if calibrate else ())))
            for a, mags in magnitudes.items()}
    pairs = [(a, ACTIONS[a].compare_with) for a in magnitudes if ACTIONS[a].compare_with]
    for action, other in pairs:
        runs[other] = tuple(sorted(set(runs.get(other, ())) | set(magnitudes[action])))
    curves = {a: [[] for _ in mags] for a, mags in runs.items()}
    recipes = [Recipe(name, sha, a, m, EVAL_SEED) for a, mags in runs.items() for m in mags]
    for i, (path, offset) in enumerate(clips):
        y = audio.load(path, offset=offset, duration=clip_seconds)
        res = floss(y, model, recipes, source=source)
        # Unscaled normal output: undo any anti-clipping gain before measuring.
        normal = res.normal / res.normal_metrics["gain"]
        si.append(metrics.si_snr_db(y, normal))
        lsd.append(metrics.log_spectral_distance(y, normal))
        for out in res.flossed:
            curves[out.recipe.action][runs[out.recipe.action].index(out.recipe.magnitude)].append(
                out.metrics["snr_db"])
        if progress:
            progress((i + 1) / len(clips), f"clip {i + 1} of {len(clips)}")
    medians = {a: dict(zip(runs[a], (float(np.median(v)) for v in per_mag))) for a, per_mag in curves.items()}
    dose = {}
    for action, mags in magnitudes.items():
        med = [medians[action][m] for m in mags]
        dose[action] = {
            "magnitudes": list(mags),
            "snr_db_median": [round(v, 2) for v in med],
            "monotone": all(a > b for a, b in zip(med, med[1:])),
        }
    comparisons = {
        f"{action}_vs_{other}": [
            {"magnitude": m, f"{other}_snr_db": round(medians[other][m], 2),
             f"{action}_snr_db": round(medians[action][m], 2),
             "worse_by_db": round(medians[other][m] - medians[action][m], 2)}
            for m in magnitudes[action] if m in medians.get(other, {})
        ]
        for action, other in pairs
    }
    return {
        "data": str(Path(data_dir).name),
        "clip_seconds": clip_seconds,
        "clips": [{"file": p.name, "offset": round(o, 2)} for p, o in clips],
        "normal": {
            "clips": len(clips),
            "si_snr_db_median": round(float(np.median(si)), 2),
            "si_snr_db_worst": round(float(np.min(si)), 2),
            "lsd_db_median": round(float(np.median(lsd)), 3),
            "lsd_db_worst": round(float(np.max(lsd)), 3),
        },
        "seed": EVAL_SEED,
        "dose_response": dose,
        **comparisons,
        "calibration": {
            "levels_db": list(CALIBRATION_LEVELS),
            "magnitudes": {a: calibration(sorted(medians[a].items()), CALIBRATION_LEVELS) for a in magnitudes},
            "grid_points": {a: calibration_points for a in magnitudes},
        } if calibrate else None,
        "forward": forward_cost(model) if forward else None,
    }


def merge(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """``old`` with the actions of ``new`` (an evaluation of some actions on the same clips) put in.

    The dose-responses, calibrations and comparisons of ``new``'s actions
    replace or join ``old``'s; the rest of ``old`` (its clean figures, its
    forward cost, its other actions) is kept, so a newly registered action is
    evaluated without measuring every other one again.

    Raises
    ------
    RecipeError
        If ``new`` was measured on other clips, at another clip length or seed:
        its figures would not be comparable with ``old``'s.
    """
    for key in ("clips", "clip_seconds", "seed"):
        if old.get(key) != new.get(key):
            raise RecipeError(f"cannot merge evaluations measured on different {key}: "
                              f"{old.get(key)!r} in the card, {new.get(key)!r} now; evaluate every action instead")
    merged = {k: v for k, v in old.items()}
    merged["dose_response"] = {**old.get("dose_response", {}), **new["dose_response"]}
    if new.get("calibration"):
        calib = dict(old.get("calibration") or {"levels_db": new["calibration"]["levels_db"], "magnitudes": {}})
        for key in ("magnitudes", "grid_points"):
            calib[key] = {**calib.get(key, {}), **new["calibration"].get(key, {})}
        merged["calibration"] = calib
    for key, rows in new.items():
        if "_vs_" in key:
            merged[key] = rows
    return merged


FRAMES_PER_SECOND = audio.SAMPLE_RATE / HOP
"""STFT frames per second of audio (hop 1024 at 22050 Hz)."""


def forward_flops_per_frame(model) -> float:
    """Multiply-adds x 2 of one forward pass, per STFT frame (conv and dense layers only).

    Counted from the layer shapes: a Conv1D / Conv2D costs ``2 * kernel size *
    input channels * output channels`` per output position, a transposed conv
    the same per *input* position, a Dense layer ``2 * inputs * outputs`` per
    position. A fixed-length model's layers at a coarser time grid (strides on
    time, as the original architecture has) count their share of the frames.
    Element-wise layers (activations, spectral scaling) are left out; they are
    a small share.
    """
    import keras

    frames = model.inputs[0].shape[1]
    total = 0.0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv1DTranspose,
                              keras.layers.Conv2DTranspose, keras.layers.Dense)):
            kernel = layer.kernel.shape  # (*k, in, out) or, transposed, (*k, out, in)
            per_pos = 2.0 * math.prod(kernel)
            transposed = isinstance(layer, (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose))
            shape = (layer.input if transposed else layer.output).shape  # (batch, time, [freq,] ch)
            positions = math.prod(d for d in shape[2:-1]) if len(shape) > 3 else 1
            if frames and shape[1]:  # a coarser time grid than the input's
                positions *= shape[1] / frames
            total += per_pos * positions
    return total


def forward_cost(model, *, seconds: float = 30.0, rounds: int = 3) -> dict[str, Any]:
    """FLOPs and wall time of the forward pass, per second of audio.

    The time is the best of ``rounds`` warm runs of the compiled inference
    function the pipeline uses, on ``seconds`` of noise in chunks of
    :data:`~senseflosser.spectral.DEFAULT_CHUNK_FRAMES` frames (a fixed-length
    model: its own input length), in this process's thread setting.
    """
    from .spectral import DEFAULT_CHUNK_FRAMES, N_BINS, n_frames

    frames = n_frames(int(seconds * audio.SAMPLE_RATE))
    chunk = input_frames(model) or DEFAULT_CHUNK_FRAMES
    x = np.random.default_rng(0).standard_normal((frames, N_BINS, 2)).astype(np.float32)
    runner = Runner(model)
    runner(x[:chunk], 0)  # compile
    best = math.inf
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(0, frames, chunk):
            runner(x[i : i + chunk], i)
        best = min(best, time.perf_counter() - t0)
    runner.finish()
    per_frame = forward_flops_per_frame(model)
    return {
        "gflop_per_s_audio": round(per_frame * FRAMES_PER_SECOND / 1e9, 3),
        "forward_ms_per_s_audio": round(1000 * best / seconds, 2),
        "threads": os.environ.get("SENSEFLOSSER_THREADS") or "default",
        "measured_on": f"{seconds:g} s of audio, best of {rounds}",
    }


def update_card(registry: ModelRegistry, name: str, report: dict[str, Any]) -> tuple[Path, Path]:
    """Store an evaluation in a model's card and draw its plot (``<name>.png``).

    Besides ``evaluation``, the card's description of the model file is
    refreshed from the file: ``conv_channels``, ``conv_layers``,
    ``input_frames``, ``sha256`` and ``size_bytes``.

    Returns
    -------
    card_path, plot_path : pathlib.Path
    """
    model = registry.load(name)
    model_path = registry.path(name)
    card_path = registry.update_card(
        name,
        evaluation=report,
        conv_channels=conv_channels(model),
        conv_layers=conv_layer_names(model),
        input_frames=input_frames(model),
        sha256=registry.sha256(name),
        size_bytes=model_path.stat().st_size,
    )
    plot_path = plot_card(registry.card(name), model_path.with_suffix(".png"))
    return card_path, plot_path


def plot_card(card: dict[str, Any], path: Path) -> Path:
    """Loss curve (if the card has one) and dose-response curves, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    history = (card.get("training") or {}).get("history") or []
    ev = card.get("evaluation") or {}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    ax = axes[0]
    if history:
        ep = [h["epoch"] + 1 for h in history]
        ax.plot(ep, [h["loss"] for h in history], label="training")
        if "val_loss" in history[0]:
            ax.plot(ep, [h["val_loss"] for h in history], label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (compressed-STFT MAE)")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no loss curve recorded", ha="center", va="center")
    ax.set_title(f"{card['name']}: training")
    ax = axes[1]
    curves = ev.get("dose_response") or {}
    for action, curve in curves.items():
        # Older cards keep one list of magnitudes for every action.
        mags = curve.get("magnitudes") or ev.get("magnitudes") or []
        snr = [np.nan if v is None or not math.isfinite(v) else v for v in curve["snr_db_median"]]  # no damage
        ax.plot(mags, snr, marker="o", label=action)
    if curves:
        ax.set_xscale("log")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel("magnitude")
        ax.set_ylabel("SNR flossed vs normal (dB)")
        ax.legend()
    normal = ev.get("normal") or {}
    title = "dose-response"
    if normal:
        title += f" (normal SI-SNR {normal['si_snr_db_median']:.1f} dB)"
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _db_text(snr: float | None) -> str:
    # An infinite SNR (stored as null in a card) means the output equals the normal one.
    return "no change" if snr is None or not math.isfinite(snr) else f"{snr:.1f}"


def markdown_tables(cards: Sequence[dict[str, Any]]) -> str:
    """The README's tables of the shipped models, made from their cards (a test keeps the README equal).

    One table of what each model is and how well it reconstructs, one of every
    action's held-out dose-response, and one sentence per model on the layer
    its map found most sensitive, then a table of every action's map (the
    card's ``maps``): its layers, most sensitive first.
    """
    rows = ["| model | input | corpus (licence) | parameters | normal SI-SNR median / worst | LSD median | "
            "forward cost per s of audio |", "|---|---|---|---|---|---|---|"]
    for c in cards:
        ev = c.get("evaluation") or {}
        normal = ev.get("normal") or {}
        corpus = c.get("corpus") or {}
        fwd = ev.get("forward") or {}
        cost = (f"{fwd['gflop_per_s_audio']:.2f} GFLOP, {fwd['forward_ms_per_s_audio']:.0f} ms"
                if "gflop_per_s_audio" in fwd else "")
        frames = c.get("input_frames")
        rows.append(
            f"| `{c['name']}` | {'any length' if frames is None else f'fixed {frames} frames'} | "
            f"{corpus.get('source', '')} ({corpus.get('licence', '')}) | {c.get('parameters', 0):,} | "
            f"{normal.get('si_snr_db_median', float('nan')):.1f} / {normal.get('si_snr_db_worst', float('nan')):.1f} dB | "
            f"{normal.get('lsd_db_median', float('nan')):.2f} dB | {cost} |")
    out = "\n".join(rows) + "\n\n"
    rows = ["| model | action | magnitudes | SNR against normal (dB), median of held-out excerpts |",
            "|---|---|---|---|"]
    for c in cards:
        for action, curve in ((c.get("evaluation") or {}).get("dose_response") or {}).items():
            mags = curve.get("magnitudes") or (c.get("evaluation") or {}).get("magnitudes") or []
            rows.append(f"| `{c['name']}` | {action} | {' / '.join(f'{m:g}' for m in mags)} | "
                        f"{' / '.join(_db_text(v) for v in curve['snr_db_median'])} |")
    out += "\n".join(rows) + "\n"
    lines = []
    for c in cards:
        versus = {r["magnitude"]: r["worse_by_db"] for r in (c.get("evaluation") or {}).get("adversarial_vs_fog") or []}
        if 0.0003 in versus and 0.001 in versus:
            lines.append(f"- `{c['name']}`: adversarial damage is {versus[0.0003]:.1f} dB worse than fog of the "
                         f"same size at 0.0003 and {versus[0.001]:.1f} dB worse at 0.001.")
        sens = c.get("sensitivity")
        if sens and sens.get("most_sensitive"):
            order = sens["most_sensitive"]
            lines.append(f"- `{c['name']}`: damaged alone, `{order[0]}` hurts most and `{order[-1]}` least "
                         f"({sens['action']}, {sens['seeds']} seeds, {sens['duration']:.0f} s of held-out audio; "
                         f"map in `models/{sens['plot']}`).")
    if lines:
        out += "\n" + "\n".join(lines) + "\n"
    rows = ["| model | action | magnitudes x seeds | layers damaged alone, most sensitive first |", "|---|---|---|---|"]
    for c in cards:
        for action, m in (c.get("maps") or {}).items():
            rows.append(f"| `{c['name']}` | {action} | {' / '.join(f'{v:g}' for v in m['magnitudes'])} x "
                        f"{m['seeds']} | {', '.join(f'`{n}`' for n in m['most_sensitive'])} |")
    if len(rows) > 2:
        out += "\n" + "\n".join(rows) + "\n"
    return out
