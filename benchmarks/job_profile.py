"""Where a warm web job's time goes, stage by stage.

    python -m benchmarks.job_profile [--model NAME (default: the best)] [--seconds 30] [--rounds 3]

Runs the web worker's own job function (:func:`senseflosser.render.floss_file`
with the outputs a web job writes: original, normal and one fog output, peaks,
activation frames, spectrograms listed to be drawn when first asked for) on audio it has not seen,
warm, under :mod:`cProfile`, and sums the time of the functions that make each
stage, and when its audio was playable (the WAVs are written first; the
distances, peaks, activation frames and manifest after). The images are
profiled separately, as the page's first requests for them draw them afterwards.
Prints one table (milliseconds, median over the rounds) and the load average:
take it on a quiet machine.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

STAGES = {
    # stage: (file suffix, function name[, only when called by this function]) whose cumulative time is the
    # stage's; no stage's functions run inside another's
    "decode the upload": [("senseflosser/audio.py", "load")],
    "model passes": [("senseflosser/runners.py", "__call__")],
    "STFT of the input": [("senseflosser/spectral.py", "_analyse", "process")],
    "inverse STFT, overlap-add": [("senseflosser/spectral.py", "add")],
    "metrics (SNR, LSD)": [("senseflosser/metrics.py", "snr_db"),
                           ("senseflosser/metrics.py", "log_spectral_distance_table")],
    "damage (new weights)": [("senseflosser/runners.py", "damaged_runner")],
    "WAVs": [("senseflosser/audio.py", "write_wav")],
    "peaks": [("senseflosser/peaks.py", "write_peaks")],
    "activation frames (files)": [("senseflosser/framesfile.py", "write"), ("senseflosser/framesfile.py", "pca_basis")],
    "normal kept for re-runs": [("senseflosser/normal_cache.py", "put")],
    "manifest and recipes": [("senseflosser/jsonfile.py", "write_json")],
}


def _stage_times(stats: pstats.Stats) -> dict[str, float]:
    found = {name: 0.0 for name in STAGES}
    for (path, _line, func), (_cc, _nc, _tt, cumulative, callers) in stats.stats.items():
        for name, keys in STAGES.items():
            for suffix, fn, *caller in keys:
                if not (path.endswith(suffix) and func == fn):
                    continue
                if caller:  # only the time spent in calls from that caller
                    found[name] += sum(ct for (_p, _l, by), (_c, _n, _t, ct) in callers.items() if by == caller[0])
                else:
                    found[name] += cumulative
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.job_profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="registry model (default: the best)")
    p.add_argument("--models-dir", default=None, help="folder of models (default: models/)")
    p.add_argument("--seconds", type=float, default=30.0, help="clip length (default 30)")
    p.add_argument("--rounds", type=int, default=3, help="profiled jobs (default 3)")
    args = p.parse_args(argv)

    from app.engine import OUTPUT_STEM
    from benchmarks.bench import synth_music, wav_bytes
    from senseflosser.jobspec import Outputs, build_job
    from senseflosser.models import ModelRegistry, default_models_dir
    from senseflosser.normal_cache import NormalCache
    from senseflosser.render import floss_file
    from senseflosser.spectrogram import spectrogram_of_wav, warm_up

    registry = ModelRegistry(args.models_dir or default_models_dir())
    name = args.model or registry.best()
    # What a web job writes (app.engine.Engine.outputs)
    outputs = Outputs(original=True, spectrograms=True, spectrograms_later=True, peaks=True, stem=OUTPUT_STEM,
                      activations=True)
    warm_up()
    rows: dict[str, list[float]] = {stage: [] for stage in STAGES}
    totals, images, playable = [], [], []
    with tempfile.TemporaryDirectory(prefix="senseflosser-profile-") as tmp:
        for k in range(args.rounds + 1):  # the first job warms up
            clip = Path(tmp) / f"in{k}.wav"
            clip.write_bytes(wav_bytes(synth_music(args.seconds, seed=k)))  # audio the job has not seen
            spec = build_job(model=name, action="fog", magnitudes="0.1", seed=7, outputs=outputs)
            out = Path(tmp) / f"out{k}"
            profiler = cProfile.Profile()
            heard: list[float] = []
            t0 = time.perf_counter()
            profiler.enable()
            manifest = floss_file(spec, clip, registry=registry, output_dir=out,
                                  normal_cache=NormalCache(Path(tmp) / "normals"),
                                  on_playable=lambda files: heard.append(time.perf_counter()))
            profiler.disable()
            wall = time.perf_counter() - t0
            t1 = time.perf_counter()
            for entry in [manifest["original"], manifest["normal"], *manifest["flossed"]]:
                spectrogram_of_wav(out / entry["file"], out / entry["spectrogram"])
            drawn = time.perf_counter() - t1
            if k == 0:
                continue
            totals.append(wall)
            images.append(drawn)
            playable.append(heard[0] - t0)
            for stage, seconds in _stage_times(pstats.Stats(profiler)).items():
                rows[stage].append(seconds)
    total = statistics.median(totals)
    print(f"job profile: model {name}, {args.seconds:g} s clip, fog 0.1, {args.rounds} rounds (median, ms; "
          f"times under the profiler), load average {os.getloadavg()[0]:.2f}")
    print(f"{'stage':<34}{'ms':>8}{'share':>8}")
    accounted = 0.0
    for stage, values in rows.items():
        ms = statistics.median(values) * 1000
        accounted += ms
        print(f"{stage:<34}{ms:>8.0f}{ms / total / 10:>7.0f}%")
    print(f"{'everything else':<34}{total * 1000 - accounted:>8.0f}{(total * 1000 - accounted) / total / 10:>7.0f}%")
    print(f"{'job, until it is done':<34}{total * 1000:>8.0f}{100:>7.0f}%")
    print(f"{'of which until its audio plays':<34}{statistics.median(playable) * 1000:>8.0f}"
          f"{statistics.median(playable) / total * 100:>7.0f}%")
    print(f"{'3 spectrograms, when first asked':<34}{statistics.median(images) * 1000:>8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
