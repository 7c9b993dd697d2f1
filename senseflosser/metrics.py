"""Distances between waveforms, used in results, model cards and tests."""

from __future__ import annotations

import math

import librosa
import numpy as np

from .spectral import N_BINS, iter_stft, n_frames

_LSD_FLOOR_DB = -80.0
_KEEP_BYTES = 64 << 20
"""Largest reference power spectrum the log-spectral distance keeps between its two passes."""
_BLOCK = 1 << 16
"""Samples per block of the sums below: long signals are never copied whole to float64."""


def _same_length(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r = np.asarray(reference).ravel()
    e = np.asarray(estimate).ravel()
    if r.shape != e.shape:
        raise ValueError(f"signals differ in length: {r.size} vs {e.size} samples")
    return r, e


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Signal-to-noise ratio of ``estimate`` against ``reference`` in dB.

    Parameters
    ----------
    reference, estimate : np.ndarray, shape (n,)

    Returns
    -------
    float
        ``10 log10(sum(ref^2) / sum((ref - est)^2))``; ``inf`` if identical,
        ``-inf`` if the reference is silent and the estimate is not.
    """
    r, e = _same_length(reference, estimate)
    num = den = 0.0
    for i in range(0, r.size, _BLOCK):
        rb = r[i : i + _BLOCK].astype(np.float64)
        db = rb - e[i : i + _BLOCK].astype(np.float64)
        # np.sum rather than np.dot: BLAS calls stall on threads the model left busy.
        num += float(np.sum(rb * rb))
        den += float(np.sum(db * db))
    if den == 0.0:
        return math.inf
    if num == 0.0:
        return -math.inf
    return 10.0 * math.log10(num / den)


def si_snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant SNR in dB (the estimate's best-fitting scale is forgiven)."""
    r, e = _same_length(reference, estimate)
    r = r.astype(np.float64) - r.mean(dtype=np.float64)
    e = e.astype(np.float64) - e.mean(dtype=np.float64)
    energy = float(np.dot(r, r))
    if energy == 0.0:
        return -math.inf if np.any(e) else math.inf
    target = (float(np.dot(e, r)) / energy) * r
    return snr_db(target, e) if np.any(target) else -math.inf


def log_spectral_distance(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Log-spectral distance in dB.

    Root mean square over frequency of the difference between the two power
    spectra in dB, averaged over frames. Both spectra are floored at 80 dB
    below the reference's loudest bin, so inaudible bins do not dominate.

    Parameters
    ----------
    reference, estimate : np.ndarray, shape (n,)

    Returns
    -------
    float
        Distance in dB (0 for identical signals).
    """
    return log_spectral_distances(reference, [estimate])[0]


def log_spectral_distances(reference: np.ndarray, estimates) -> list[float]:
    """:func:`log_spectral_distance` of several estimates against one reference.

    The reference's spectrum is computed once for all of them (a titration
    measures every output against the same normal one).

    Parameters
    ----------
    reference : np.ndarray, shape (n,)
    estimates : sequence of np.ndarray, each shape (n,)

    Returns
    -------
    list of float
        One distance in dB per estimate, in order.
    """
    estimates = list(estimates)
    return log_spectral_distance_table([reference, *estimates], [(0, k + 1) for k in range(len(estimates))])


def log_spectral_distance_table(signals, pairs) -> list[float]:
    """:func:`log_spectral_distance` of several ``(reference, estimate)`` pairs of a few signals, in one sweep.

    Each signal's spectrum is computed once, whatever the number of pairs it
    is in (a job measures the normal output against the input and every
    damaged output against the normal one: three spectra, not five). Each
    distance equals :func:`log_spectral_distance` of its pair, bit for bit.

    Parameters
    ----------
    signals : sequence of np.ndarray, each shape (n,)
    pairs : sequence of (int, int)
        Indices into ``signals``: reference, estimate.

    Returns
    -------
    list of float
        One distance in dB per pair, in order.
    """
    pairs = [(int(a), int(b)) for a, b in pairs]
    if not pairs:
        return []
    signals = [np.asarray(s).ravel() for s in signals]
    for a, b in pairs:
        _same_length(signals[a], signals[b])
    used = sorted({i for pair in pairs for i in pair})
    refs = sorted({a for a, _ in pairs})
    n = signals[refs[0]].size
    # Block by block, so a long track never needs its whole spectrogram in memory; short signals keep
    # the references' power spectra from the first pass (their loudest bins) for the second.
    keep = n_frames(n) * N_BINS * 8 * len(refs) <= _KEEP_BYTES
    kept: dict[int, list[np.ndarray]] = {a: [] for a in refs}
    top = dict.fromkeys(refs, 0.0)
    for blocks in zip(*(iter_stft(signals[a]) for a in refs)):
        for a, S in zip(refs, blocks):
            P = _power(S)
            top[a] = max(top[a], float(np.max(P)))
            if keep:
                kept[a].append(P)
    floor = {a: max(top[a], 1e-20) * 10 ** (_LSD_FLOOR_DB / 10) for a in refs}
    totals = [0.0] * len(pairs)
    count = 0
    streams = {i: (iter(kept[i]) if keep and i in kept else (_power(S) for S in iter_stft(signals[i])))
               for i in used}
    for powers in zip(*streams.values()):
        P = dict(zip(streams, powers))
        levels: dict[tuple[int, int], np.ndarray] = {}  # (signal, reference) -> dB above that reference's floor

        def db(i: int, a: int) -> np.ndarray:
            if (i, a) not in levels:
                levels[(i, a)] = _db(P[i], floor[a])
            return levels[(i, a)]

        for k, (a, b) in enumerate(pairs):
            totals[k] += float(np.sum(np.sqrt(np.mean((db(a, a) - db(b, a)) ** 2, axis=1))))
        count += P[used[0]].shape[0]
    return [t / count for t in totals]


def _db(P: np.ndarray, floor: float) -> np.ndarray:
    # Levels in dB above the floor (only differences of levels are used).
    return librosa.power_to_db(P, ref=floor, amin=floor, top_db=None)


def _power(S: np.ndarray) -> np.ndarray:
    S = S.astype(np.float64)
    return S[..., 0] ** 2 + S[..., 1] ** 2


def rms_db(y: np.ndarray) -> float:
    """Root-mean-square level in dB relative to full scale (``-inf`` for silence)."""
    y = np.asarray(y).ravel()
    total = 0.0
    for i in range(0, y.size, _BLOCK):
        b = y[i : i + _BLOCK].astype(np.float64)
        total += float(np.sum(b * b))
    ms = total / y.size if y.size else 0.0
    return 10 * math.log10(ms) if ms > 0 else -math.inf
