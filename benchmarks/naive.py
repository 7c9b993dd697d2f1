"""The naive per-request pipeline: what a web handler written without any of our machinery does.

For each request it loads the model file, decodes the upload, computes the STFT,
runs the model twice (the model as loaded, then a copy with fog-like noise on a
random half of each conv weight array), inverts both STFTs and writes two WAVs.
No warm state, no chunking, no cache: the figure our warm server has to beat
(``make bench`` times both in one run).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

SR = 22050
N_FFT = 2048
HOP = 1024


def naive_job(model_path: str | Path, wav_path: str | Path, out_dir: str | Path, *, magnitude: float,
              seed: int) -> float:
    """Run one request's work from files to files; returns its wall time in seconds."""
    import keras
    import librosa
    import soundfile as sf

    import senseflosser.bends  # noqa: F401  (registers the layers the shipped models use)
    import senseflosser.layers  # noqa: F401

    t0 = time.perf_counter()
    model = keras.saving.load_model(str(model_path), compile=False)
    y, _ = librosa.load(str(wav_path), sr=SR, mono=True)
    spec = librosa.stft(y, n_fft=N_FFT, hop_length=HOP, window="hann", center=True)
    x = np.stack([spec.real.T, spec.imag.T], axis=-1)[None].astype(np.float32)

    def render(net) -> np.ndarray:
        out = np.asarray(net(x, training=False))[0]
        return librosa.istft(out[..., 0].T + 1j * out[..., 1].T, hop_length=HOP, window="hann", center=True,
                             length=len(y))

    normal = render(model)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if "conv" in type(layer).__name__.lower():
            weights = []
            for w in layer.get_weights():
                mask = rng.random(w.shape) < 0.5
                weights.append(w + mask * rng.normal(0.0, magnitude, w.shape).astype(w.dtype))
            layer.set_weights(weights)
    flossed = render(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, wave in (("normal", normal), ("flossed", flossed)):
        peak = float(np.max(np.abs(wave))) or 1.0
        sf.write(str(out / f"{name}.wav"), wave / max(1.0, peak), SR, subtype="PCM_16")
    return time.perf_counter() - t0
