"""Shared fixtures.

Core section: tiny models and synthesized audio, so tests are fast and need no
download. Web fixtures follow in their own section.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402

import senseflosser  # noqa: E402,F401  (registers custom layers)
from senseflosser.layers import SpectralCompress, SpectralExpand  # noqa: E402
from senseflosser.spectral import N_BINS  # noqa: E402

SR = 22050

# ---------------------------------------------------------------- core section


def make_tiny_model(*, frames: int | None = None, seed: int = 0, name: str = "tiny") -> keras.Model:
    """A small conv autoencoder of the shipped models' shape: compress, 3 convs, expand."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape=(frames, N_BINS, 2), name="stft")
    x = SpectralCompress(0.3, name="compress")(inp)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="gelu", name="conv_a")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="gelu", name="conv_b")(x)
    x = keras.layers.Conv2D(2, 3, padding="same", name="conv_out")(x)
    out = SpectralExpand(0.3, name="expand")(x)
    return keras.Model(inp, out, name=name)


def tone(seconds: float = 2.0, sr: int = SR, *, freqs=(220.0, 440.0, 1330.0), amp: float = 0.25,
         channels: int = 1, seed: int = 0) -> np.ndarray:
    """A mix of sines plus a little noise, shape (n,) or (n, channels)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = sum(np.sin(2 * np.pi * f * t + i) for i, f in enumerate(freqs)) / len(freqs)
    y = amp * y + 0.01 * rng.standard_normal(t.size)
    y = y.astype(np.float32)
    if channels > 1:
        y = np.stack([y * (1 - 0.1 * c) for c in range(channels)], axis=1)
    return y


@pytest.fixture(scope="session")
def tiny_model() -> keras.Model:
    return make_tiny_model()


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """A model registry folder with a variable-length and a fixed-length tiny model."""
    d = tmp_path_factory.mktemp("models")
    make_tiny_model().save(d / "tiny.keras")
    (d / "tiny.json").write_text(json.dumps({"name": "tiny", "summary": "tiny test model"}))
    make_tiny_model(frames=24, seed=1, name="tinyfixed").save(d / "tinyfixed.keras")
    (d / "tinyfixed.json").write_text(json.dumps({"name": "tinyfixed", "summary": "fixed 24 frames"}))
    return d


@pytest.fixture
def registry(models_dir):
    from senseflosser.models import ModelRegistry

    return ModelRegistry(models_dir)


@pytest.fixture
def wav_file(tmp_path) -> Path:
    """A 2-second stereo 44.1 kHz 16-bit WAV."""
    p = tmp_path / "song.wav"
    sf.write(p, tone(2.0, 44100, channels=2), 44100, subtype="PCM_16")
    return p


# ----------------------------------------------------------------- web section
