"""Descriptors: measurable properties of sound, frame by frame, at the models' STFT settings.

Every descriptor is computed from the magnitude of the very STFT the models
see (:func:`senseflosser.spectral.stft`: n_fft 2048, hop 1024, periodic Hann,
centre padding, 22050 Hz), so frame ``t`` of a descriptor lines up with frame
``t`` of a conv layer's activations. With ``|X|`` the magnitude (bins x frames)
and ``P = |X|**2`` the power:

- ``brightness``: spectral centroid in Hz, ``librosa.feature.spectral_centroid(S=|X|)``.
- ``noisiness``: spectral flatness, ``librosa.feature.spectral_flatness(S=|X|)``
  (of the power, amin 1e-10): 0 for a pure tone, 1 for white noise.
- ``percussive``: share of the power in the percussive part of
  ``librosa.decompose.hpss(|X|)`` (median filters of 31 frames and 31 bins,
  soft masks): ``sum(P_perc) / (sum(P_perc) + sum(P_harm))`` per frame.
- ``bass``: share of the power in bins below 250 Hz.
- ``air``: share of the power in bins above 4 kHz.
- ``loudness``: RMS in dB, ``20 log10 librosa.feature.rms(S=|X|)`` (floor
  1e-10): a descriptor to report and to control for, not a sense to locate.

A frame without power has every share 0. The level of a whole clip
(:func:`clip_descriptors`) averages the frames that are *active* in the
reference (its input): louder than the reference's loudest frame minus
:data:`ACTIVE_DB`, so silences do not vote.
"""

from __future__ import annotations

import librosa
import numpy as np

from .spectral import HOP, N_FFT, stft

SAMPLE_RATE = 22050
BASS_HZ = 250.0
AIR_HZ = 4000.0
ACTIVE_DB = 60.0
"""A frame quieter than the loudest frame of the reference by more than this takes no part in clip levels."""
_EPS = 1e-20

DESCRIPTORS: tuple[str, ...] = ("brightness", "noisiness", "percussive", "bass", "air", "loudness")
"""Every descriptor, in the order tables list them."""
CONCEPTS: tuple[str, ...] = DESCRIPTORS[:-1]
"""The descriptors that are senses to locate (loudness is the control)."""
UNITS = {"brightness": "Hz", "noisiness": "", "percussive": "share", "bass": "share", "air": "share",
         "loudness": "dB"}

__all__ = ["ACTIVE_DB", "AIR_HZ", "BASS_HZ", "CONCEPTS", "DESCRIPTORS", "UNITS", "active_frames",
           "clip_descriptors", "frame_descriptors", "magnitude"]

_FREQS = librosa.fft_frequencies(sr=SAMPLE_RATE, n_fft=N_FFT)


def magnitude(y: np.ndarray) -> np.ndarray:
    """``|X|`` of a mono waveform, shape ``(1025, frames)`` (frames as :func:`senseflosser.spectral.stft`), float64."""
    S = stft(np.asarray(y, np.float32)).astype(np.float64)
    return np.sqrt(S[..., 0] ** 2 + S[..., 1] ** 2).T


def _share(power: np.ndarray, part: np.ndarray) -> np.ndarray:
    total = power.sum(axis=0)
    return np.where(total > _EPS, part.sum(axis=0) / np.maximum(total, _EPS), 0.0)


def frame_descriptors(y: np.ndarray | None = None, *, mag: np.ndarray | None = None,
                      names: tuple[str, ...] = DESCRIPTORS) -> dict[str, np.ndarray]:
    """Each descriptor of each STFT frame of ``y`` (or of a magnitude ``mag`` from :func:`magnitude`).

    Returns
    -------
    dict
        Descriptor name -> array of shape ``(frames,)``, float64, in ``names`` order.
    """
    if mag is None:
        mag = magnitude(y)
    power = mag ** 2
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name == "brightness":
            out[name] = librosa.feature.spectral_centroid(S=mag, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP)[0]
        elif name == "noisiness":
            out[name] = librosa.feature.spectral_flatness(S=mag)[0]
        elif name == "percussive":
            harm, perc = librosa.decompose.hpss(mag)
            hp, pp = harm ** 2, perc ** 2
            both = hp.sum(axis=0) + pp.sum(axis=0)
            out[name] = np.where(both > _EPS, pp.sum(axis=0) / np.maximum(both, _EPS), 0.0)
        elif name == "bass":
            out[name] = _share(power, power[_FREQS < BASS_HZ])
        elif name == "air":
            out[name] = _share(power, power[_FREQS > AIR_HZ])
        elif name == "loudness":
            rms = librosa.feature.rms(S=mag, frame_length=N_FFT)[0]
            out[name] = 20.0 * np.log10(np.maximum(rms, 1e-10))
        else:
            raise ValueError(f"unknown descriptor {name!r}; known: {', '.join(DESCRIPTORS)}")
    return {k: np.asarray(v, np.float64) for k, v in out.items()}


def active_frames(loudness: np.ndarray) -> np.ndarray:
    """Frames within :data:`ACTIVE_DB` of the loudest one (a boolean mask)."""
    loudness = np.asarray(loudness, np.float64)
    if loudness.size == 0:
        return np.zeros(0, bool)
    return loudness >= loudness.max() - ACTIVE_DB


def clip_descriptors(frames: dict[str, np.ndarray], active: np.ndarray) -> dict[str, float]:
    """One clip's level of each descriptor: the mean over its ``active`` frames.

    Loudness is averaged as power (``10 log10 mean 10**(L/10)``), the others as they are.
    """
    out = {}
    for name, values in frames.items():
        v = np.asarray(values, np.float64)[active]
        if name == "loudness":
            out[name] = float(10.0 * np.log10(np.mean(10.0 ** (v / 10.0)))) if v.size else float("nan")
        else:
            out[name] = float(v.mean()) if v.size else float("nan")
    return out
