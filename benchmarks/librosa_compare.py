"""Our own DSP against librosa's, where both could do the job: time and peak memory.

    python -m benchmarks.librosa_compare [--rounds 3] [--long 600] [--json out.json]

For each task the project could hand to librosa it runs both ways on the same
input and prints the median wall time and the peak memory numpy allocated
(tracemalloc), plus the largest difference between the two results:

- ``load``: decode a 44.1 kHz stereo file to mono 22050 Hz. Ours streams
  blocks through soxr; ``librosa.load`` reads the whole segment at its own rate
  and channel count, then resamples with the same soxr HQ filter.
- ``analysis``: the model's transform (n_fft 2048, hop 1024, Hann, centred,
  zero padding) as :func:`senseflosser.spectral.iter_stft` streams it (librosa's
  STFT per block of 512 frames, as model tensors) against one
  ``librosa.stft`` of the whole signal.
- ``synthesis``: our overlap-add fed 512 frames at a time, as a job's output
  arrives, against ``librosa.istft`` of the whole STFT.
- ``process``: a whole job's transform path, STFT -> model (identity here) ->
  inverse, as :func:`senseflosser.spectral.process` streams it chunk by chunk
  against ``librosa.istft(librosa.stft(y))``.
- ``spectrogram``: one image as jobs draw it (librosa's mel spectrogram and
  ``specshow``); librosa only, so it has no "ours" column.

A short clip (30 s) and a long one (``--long`` seconds, the web app's
largest segment by default) show how each side grows. Nothing here is timed in
the test suite; run it on a quiet machine and say so beside the figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf

SR_FILE = 44100


def measure(fn: Callable[[], object], rounds: int) -> tuple[float, float, object]:
    """Median wall seconds over ``rounds`` warm calls, peak traced MiB of one call, and the last result."""
    fn()  # warm: imports, caches, JIT
    times = []
    for _ in range(rounds):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        del out
    gc.collect()
    tracemalloc.start()
    out = fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return statistics.median(times), peak, out


def _signal(seconds: float, sr: int, channels: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.3 * t))
    y = np.stack([tone + 0.02 * rng.standard_normal(t.size) for _ in range(channels)], axis=1)
    return y.astype(np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--short", type=float, default=30.0, help="seconds of the short clip")
    ap.add_argument("--long", type=float, default=600.0, help="seconds of the long clip")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)

    import librosa

    from senseflosser import audio, spectral
    from senseflosser.spectrogram import save_spectrogram

    work = Path(tempfile.mkdtemp(prefix="senseflosser-librosa-"))
    stft_kw = dict(n_fft=spectral.N_FFT, hop_length=spectral.HOP, window="hann", center=True, pad_mode="constant")
    report: dict[str, dict] = {}

    def row(task: str, seconds: float, ours: tuple, theirs: tuple, diff: float) -> None:
        (t_o, m_o, _), (t_l, m_l, _) = ours, theirs
        key = f"{task} {seconds:g} s"
        report[key] = {"ours_s": round(t_o, 4), "librosa_s": round(t_l, 4), "ours_mib": round(m_o, 1),
                       "librosa_mib": round(m_l, 1), "max_abs_diff": float(f"{diff:.3g}")}
        print(f"{key:16s} time ours {t_o:7.3f} s  librosa {t_l:7.3f} s ({t_l / t_o:5.2f}x)   "
              f"peak ours {m_o:7.1f} MiB  librosa {m_l:7.1f} MiB ({m_l / max(m_o, 1e-3):5.1f}x)   "
              f"max |diff| {diff:.2g}")

    for seconds in (args.short, args.long):
        path = work / f"clip{seconds:g}.flac"
        sf.write(path, _signal(seconds, SR_FILE, 2), SR_FILE, subtype="PCM_16")
        ours = measure(lambda: audio.load(path), args.rounds)
        theirs = measure(lambda: librosa.load(path, sr=audio.SAMPLE_RATE, mono=True, res_type="soxr_hq"),
                         args.rounds)
        y_o, (y_l, _) = ours[2], theirs[2]
        n = min(y_o.size, y_l.size)
        row("load", seconds, ours, theirs, float(np.max(np.abs(y_o[:n] - y_l[:n]))))

        y = y_o
        def consume() -> float:
            # What the metrics and spectrograms do with it: use each block, keep none.
            return sum(float(S[0, 0, 0]) for S in spectral.iter_stft(y))

        ours = measure(consume, args.rounds)
        theirs = measure(lambda: librosa.stft(y, **stft_kw), args.rounds)
        S_o, S_l = spectral.stft(y), theirs[2]
        k = S_l.shape[1]  # ours has one frame more at the end (see spectral.n_frames)
        diff = float(np.max(np.abs((S_o[:k, :, 0] + 1j * S_o[:k, :, 1]).T - S_l)))
        row("analysis", seconds, ours, theirs, diff)

        def streamed() -> np.ndarray:
            syn = spectral._Synthesis(S_o.shape[0], y.size)
            for first in range(0, S_o.shape[0], spectral.DEFAULT_CHUNK_FRAMES):
                syn.add(S_o[first : first + spectral.DEFAULT_CHUNK_FRAMES], first)
            return syn.result()

        ours = measure(streamed, args.rounds)
        theirs = measure(lambda: spectral.istft(S_o, y.size), args.rounds)
        row("synthesis", seconds, ours, theirs, float(np.max(np.abs(ours[2] - theirs[2]))))

        ours = measure(lambda: spectral.process(y, [lambda s, i: s])[0], args.rounds)
        theirs = measure(lambda: librosa.istft(librosa.stft(y, **stft_kw), hop_length=spectral.HOP,
                                               n_fft=spectral.N_FFT, window="hann", length=y.size), args.rounds)
        row("process", seconds, ours, theirs, float(np.max(np.abs(ours[2] - theirs[2]))))
        t_img, m_img, _ = measure(lambda: save_spectrogram(y, work / "spectrogram.png"), args.rounds)
        report[f"spectrogram {seconds:g} s"] = {"librosa_s": round(t_img, 4), "librosa_mib": round(m_img, 1)}
        print(f"{'spectrogram ' + format(seconds, 'g') + ' s':16s} time {t_img:7.3f} s   peak {m_img:7.1f} MiB")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
