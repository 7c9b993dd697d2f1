"""Waveform peaks: a small summary of a waveform for drawing it (the page's seek bar).

:func:`peaks` reduces a waveform to ``bins`` (min, max) pairs; :func:`write_peaks`
stores them as JSON beside the WAV they describe, so a browser draws a waveform
without downloading and decoding the audio.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE

DEFAULT_BINS = 800
"""Number of (min, max) pairs: about one per pixel of a wide seek bar."""


def peaks(y: np.ndarray, bins: int = DEFAULT_BINS) -> dict:
    """Min and max of each of ``bins`` equal slices of a waveform, as drawn (never normalised).

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono waveform at 22050 Hz.
    bins : int
        Number of slices (fewer when the waveform has fewer samples).

    Returns
    -------
    dict
        ``{"sample_rate", "samples", "duration", "bins", "min": [...], "max": [...]}``,
        values rounded to 4 decimals.
    """
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    n = int(y.size)
    count = max(1, min(int(bins), n)) if n else 0
    lo: list[float] = []
    hi: list[float] = []
    if count:
        edges = np.linspace(0, n, count + 1).astype(np.int64)
        lo = np.round(np.minimum.reduceat(y, edges[:-1]).astype(np.float64), 4).tolist()
        hi = np.round(np.maximum.reduceat(y, edges[:-1]).astype(np.float64), 4).tolist()
    return {"sample_rate": SAMPLE_RATE, "samples": n, "duration": n / SAMPLE_RATE, "bins": count,
            "min": lo, "max": hi}


def write_peaks(y: np.ndarray, path: str | os.PathLike, bins: int = DEFAULT_BINS) -> Path:
    """Write :func:`peaks` of ``y`` as compact JSON to ``path``; returns the path."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(peaks(y, bins), separators=(",", ":")))
    os.replace(tmp, path)
    return path
