"""Measure a model on held-out audio: clean reconstruction and dose-response.

The figures go into the model card (``evaluation``) and a plot beside it.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import audio, metrics
from .errors import TrainingError
from .models import ModelRegistry
from .pipeline import Progress, floss
from .recipe import ACTIONS, DEFAULT_TITRATION, Recipe
from .models import input_frames
from .spectral import HOP
from .training import find_audio, write_card

log = logging.getLogger(__name__)

EVAL_SEED = 1234
"""Seed of every damaged model in an evaluation, so curves are comparable."""


def _clips(files: list[Path], clip_seconds: float, max_clips: int) -> list[tuple[Path, float]]:
    """Evenly spaced excerpts, spread over the files (deterministic)."""
    infos = []
    for f in files:
        try:
            infos.append((f, audio.probe(f).duration))
        except audio.AudioError as exc:
            log.warning("skipping %s: %s", f, exc)
    infos = [(f, d) for f, d in infos if d >= clip_seconds]
    if not infos:
        raise TrainingError(f"no readable file is at least {clip_seconds:g} s long")
    per_file = max(1, math.ceil(max_clips / len(infos)))
    clips = []
    for f, d in infos:
        for k in range(per_file):
            clips.append((f, (d - clip_seconds) * (k + 1) / (per_file + 1)))
    return clips[:max_clips]


def evaluate(
    registry: ModelRegistry,
    name: str,
    data_dir: str | os.PathLike,
    *,
    clip_seconds: float = 10.0,
    max_clips: int = 8,
    magnitudes: tuple[float, ...] = DEFAULT_TITRATION,
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
    magnitudes : tuple of float, keyword-only
        Dose-response magnitudes.
    progress : callable or None, keyword-only

    Returns
    -------
    dict
        ``normal``: median and worst SI-SNR and log-spectral distance of the
        clean reconstruction against the input; ``dose_response``: per action,
        the median SNR of flossed vs normal at each magnitude (seed
        :data:`EVAL_SEED`) and whether it falls strictly; ``clips``: which
        excerpts were used; ``forward``: FLOPs and forward time per second of
        audio (:func:`forward_cost`).
    """
    model = registry.load(name)
    sha = registry.sha256(name)
    clips = _clips(find_audio(data_dir), clip_seconds, max_clips)
    si, lsd = [], []
    curves = {a: [[] for _ in magnitudes] for a in ACTIONS}
    recipes = [Recipe(name, sha, a, m, EVAL_SEED) for a in ACTIONS for m in magnitudes]
    for i, (path, offset) in enumerate(clips):
        y = audio.load(path, offset=offset, duration=clip_seconds)
        res = floss(y, model, recipes)
        # Unscaled normal output: undo any anti-clipping gain before measuring.
        normal = res.normal / res.normal_metrics["gain"]
        si.append(metrics.si_snr_db(y, normal))
        lsd.append(metrics.log_spectral_distance(y, normal))
        for out in res.flossed:
            curves[out.recipe.action][magnitudes.index(out.recipe.magnitude)].append(out.metrics["snr_db"])
        if progress:
            progress((i + 1) / len(clips), f"clip {i + 1} of {len(clips)}")
    dose = {}
    for action, per_mag in curves.items():
        med = [float(np.median(v)) for v in per_mag]
        dose[action] = {
            "snr_db_median": [round(v, 2) for v in med],
            "monotone": all(a > b for a, b in zip(med, med[1:])),
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
        "magnitudes": list(magnitudes),
        "seed": EVAL_SEED,
        "dose_response": dose,
        "forward": forward_cost(model),
    }


FRAMES_PER_SECOND = audio.SAMPLE_RATE / HOP
"""STFT frames per second of audio (hop 1024 at 22050 Hz)."""


def forward_flops_per_frame(model) -> float:
    """Multiply-adds x 2 of one forward pass, per STFT frame (conv and dense layers only).

    Counted from the layer shapes: a Conv1D / Conv2D costs ``2 * kernel size *
    input channels * output channels`` per output position, a transposed conv
    the same per *input* position, a Dense layer ``2 * inputs * outputs`` per
    position. Element-wise layers (activations, spectral scaling) are left
    out; they are a small share.
    """
    import keras

    total = 0.0
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv1DTranspose,
                              keras.layers.Conv2DTranspose, keras.layers.Dense)):
            kernel = layer.kernel.shape  # (*k, in, out) or, transposed, (*k, out, in)
            per_pos = 2.0 * math.prod(kernel)
            transposed = isinstance(layer, (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose))
            shape = (layer.input if transposed else layer.output).shape  # (batch, time, [freq,] ch)
            positions = math.prod(d for d in shape[2:-1]) if len(shape) > 3 else 1
            total += per_pos * positions
    return total


def forward_cost(model, *, seconds: float = 30.0, rounds: int = 3) -> dict[str, Any]:
    """FLOPs and wall time of the forward pass, per second of audio.

    The time is the best of ``rounds`` warm runs of the compiled inference
    function the pipeline uses, on ``seconds`` of noise in chunks of
    :data:`~senseflosser.spectral.DEFAULT_CHUNK_FRAMES` frames (a fixed-length
    model: its own input length), in this process's thread setting.
    """
    from .pipeline import _Runner
    from .spectral import DEFAULT_CHUNK_FRAMES, N_BINS, n_frames

    frames = n_frames(int(seconds * audio.SAMPLE_RATE))
    chunk = input_frames(model) or DEFAULT_CHUNK_FRAMES
    x = np.random.default_rng(0).standard_normal((frames, N_BINS, 2)).astype(np.float32)
    runner = _Runner(model)
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

    Returns
    -------
    card_path, plot_path : pathlib.Path
    """
    card = registry.card(name)
    card.pop("file", None)
    card.pop("conv_layers", None)
    card.pop("input_frames", None)
    model_path = registry.path(name)
    card["evaluation"] = report
    model = registry.load(name)
    from .models import conv_layer_names, input_frames

    card["conv_layers"] = conv_layer_names(model)
    card["input_frames"] = input_frames(model)
    card["sha256"] = registry.sha256(name)
    card["size_bytes"] = model_path.stat().st_size
    card_path = write_card(model_path.with_suffix(".json"), card)
    plot_path = plot_card(card, model_path.with_suffix(".png"))
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
    mags = ev.get("magnitudes") or []
    for action, curve in (ev.get("dose_response") or {}).items():
        ax.plot(mags, curve["snr_db_median"], marker="o", label=action)
    if mags:
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
