"""Rendering a performance: the crossfade of a ladder's rung WAVs, in streamed chunks.

The crossfade is computed from the rung files exactly as they are served (the
16-bit samples the page decodes and plays), so the download equals what was
heard. Only a chunk of each rung is in memory at a time. The optional
continuous render runs the path as a true magnitude envelope through
:func:`senseflosser.pipeline.floss` and is measured against the crossfade.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import soundfile as sf

from . import audio as audio_io
from . import metrics
from .errors import AudioError
from .jsonfile import write_json
from .ladder import RULE, Performance
from .peaks import DEFAULT_BINS
from .pipeline import floss
from .recipe import Recipe

log = logging.getLogger(__name__)

CHUNK_SAMPLES = 1 << 16
"""Samples of each rung read per step (about 3 s at 22050 Hz)."""

__all__ = ["CHUNK_SAMPLES", "crossfade", "perform_to_dir", "render_continuous", "render_performance"]


def crossfade(block: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The crossfade of one chunk of every rung at the given positions.

    Parameters
    ----------
    block : np.ndarray, shape (K, n)
        The rungs' samples (any numeric dtype), K >= 2.
    positions : np.ndarray, shape (n,)
        Fractional rung positions in ``[0, K-1]``.

    Returns
    -------
    np.ndarray, shape (n,), float64
        ``(1 - f) * block[i] + f * block[i + 1]`` with ``i = floor(p)``
        (``K - 2`` at the top rung, where ``f = 1``), ``f = p - i``.
    """
    k = block.shape[0]
    lo = np.minimum(np.floor(positions), k - 2).astype(np.intp)
    f = positions - lo
    cols = np.arange(block.shape[1])
    a = block[lo, cols].astype(np.float64)
    b = block[lo + 1, cols].astype(np.float64)
    return (1.0 - f) * a + f * b


def render_performance(
    rung_files: Sequence[str | os.PathLike],
    performance: Performance,
    out_path: str | os.PathLike,
    *,
    chunk_samples: int = CHUNK_SAMPLES,
    bins: int | None = None,
) -> tuple[Path, dict | None]:
    """Write the crossfade of the rung WAVs along ``performance`` as a 16-bit WAV, chunk by chunk.

    Parameters
    ----------
    rung_files : sequence of path, length K
        The rungs' 16-bit mono WAVs, lowest magnitude first, all of one length and rate.
    performance : Performance
        Checked against K (positions in ``0..K-1``).
    out_path : path
    chunk_samples : int, keyword-only
        Samples of each rung in memory at a time.
    bins : int or None, keyword-only
        Also gather the waveform overview of :func:`senseflosser.peaks.peaks`
        with this many bins, chunk by chunk (the same figures).

    Returns
    -------
    path : pathlib.Path
    overview : dict or None
        The peaks when ``bins`` is given.

    Raises
    ------
    AudioError
        If the rung files differ in length or rate.
    """
    out_path = Path(out_path)
    handles = [sf.SoundFile(str(p)) for p in rung_files]
    try:
        rate, frames = handles[0].samplerate, handles[0].frames
        if any(h.samplerate != rate or h.frames != frames or h.channels != 1 for h in handles):
            raise AudioError("the ladder's rung files differ in length, rate or channels; render the ladder again")
        count = max(1, min(int(bins), frames)) if bins and frames else 0
        edges = np.linspace(0, frames, count + 1).astype(np.int64)
        lo, hi = np.full(count, np.inf, np.float32), np.full(count, -np.inf, np.float32)
        tmp = out_path.with_name(out_path.name + ".tmp")
        with sf.SoundFile(str(tmp), "w", samplerate=rate, channels=1, subtype="PCM_16", format="WAV") as out:
            for start in range(0, frames, chunk_samples):
                block = np.stack([h.read(min(chunk_samples, frames - start), dtype="int16") for h in handles])
                times = (start + np.arange(block.shape[1], dtype=np.float64)) / rate
                mixed = crossfade(block, performance.positions(times))
                samples = np.clip(np.rint(mixed), -32768, 32767).astype(np.int16)
                out.write(samples)
                if count:
                    which = np.searchsorted(edges, start + np.arange(samples.size), side="right") - 1
                    values = samples.astype(np.float32) / 32768.0
                    np.minimum.at(lo, which, values)
                    np.maximum.at(hi, which, values)
        os.replace(tmp, out_path)
    finally:
        for h in handles:
            h.close()
    log.info("performance rendered (%s) from %d rungs into %s", RULE, len(handles), out_path.name)
    overview = None
    if count:
        overview = {"sample_rate": rate, "samples": frames, "duration": frames / rate, "bins": count,
                    "min": np.round(lo.astype(np.float64), 4).tolist(), "max": np.round(hi.astype(np.float64), 4).tolist()}
    return out_path, overview


def render_continuous(
    audio: np.ndarray,
    net: keras.Model,
    base: Recipe,
    magnitudes: Sequence[float],
    performance: Performance,
    reference: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    source: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Render the path as a continuous envelope (true per-frame magnitudes) and measure it against the crossfade.

    Parameters
    ----------
    audio : np.ndarray, shape (n_samples,)
        The segment the ladder was rendered from.
    net : keras.Model
        The pristine model.
    base : Recipe
        The ladder's first rung (model, action, seed, layers, parameters, segment).
    magnitudes : sequence of float, length K
    performance : Performance
    reference : path
        The crossfade's WAV (:func:`render_performance`).
    out_path : path

    Returns
    -------
    dict
        ``file`` (name), ``envelope`` (the points rendered), ``recipe``, ``metrics``
        (``snr_db`` against the crossfade, and the output's ``gain``, ``peak``, ``rms_db``).
    """
    points = performance.envelope(magnitudes)
    recipe = base.derive(magnitude=max(m for _, m in points), envelope=points)
    result = floss(audio, net, [recipe], source=source)
    out = result.flossed[0]
    path = audio_io.write_wav(out_path, out.audio)
    ref, _ = sf.read(str(reference), dtype="float32")
    got, _ = sf.read(str(path), dtype="float32")
    if ref.shape != got.shape:
        raise AudioError(f"the continuous render has {got.shape[0]} samples, the crossfade {ref.shape[0]}")
    snr = metrics.snr_db(ref, got)
    return {"file": path.name, "envelope": [list(p) for p in points], "recipe": recipe.to_dict(),
            "metrics": {"snr_db": snr, **{k: out.metrics[k] for k in ("gain", "peak", "rms_db")}}}


def perform_to_dir(
    performance: Performance,
    *,
    audio: np.ndarray,
    net: keras.Model,
    base: Recipe,
    magnitudes: Sequence[float],
    rung_files: Sequence[Path],
    out_dir: Path,
    stem: str,
    recipe: dict[str, Any],
    peaks: bool = False,
    source: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Write a ladder job's performance (and its continuous render, when asked) beside the rungs.

    Parameters
    ----------
    performance : Performance
    audio : np.ndarray, shape (n_samples,)
        The segment (for the continuous render).
    net : keras.Model
    base : Recipe
        The first rung's recipe.
    magnitudes : sequence of float, length K
    rung_files : sequence of Path, length K
        The rung WAVs as written (and served).
    out_dir : Path
    stem : str
    recipe : dict
        The job's recipe (with ``magnitudes`` and ``performance``), written as
        ``<stem>_performance.json`` so ``--recipe`` reproduces this output.
    peaks : bool, keyword-only
        Also write a waveform overview of the crossfade.

    Returns
    -------
    dict
        The manifest's ``performance`` entry: ``file``, ``recipe_file``,
        ``points``, ``rule``, ``peaks`` (if written), ``continuous`` (if asked).
    """
    path, overview = render_performance(rung_files, performance, out_dir / f"{stem}_performance.wav",
                                        bins=DEFAULT_BINS if peaks else None)
    entry: dict[str, Any] = {"file": path.name, "points": [list(p) for p in performance.points], "rule": RULE}
    if overview is not None:
        entry["peaks"] = write_json(out_dir / f"{stem}_performance.peaks.json", overview).name
    if performance.continuous:
        entry["continuous"] = render_continuous(audio, net, base, magnitudes, performance, path,
                                                out_dir / f"{stem}_performance_envelope.wav", source=source)
    entry["recipe_file"] = write_json(out_dir / f"{stem}_performance.json",
                                      {"recipe": recipe, "output": path.name}).name
    return entry
