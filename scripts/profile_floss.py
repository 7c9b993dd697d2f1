"""Profile one warm ``floss()`` run and one warm web-style job with cProfile.

    python -m scripts.profile_floss [--model game-orchestral] [--models-dir models/]
                                    [--seconds 30] [--action fog] [--magnitudes 0.1] [--top 25]

(from the project root: it uses ``benchmarks/``, which is not part of the installed package).

Prints, for each, the wall time and the functions with the most cumulative
time, restricted to senseflosser and the libraries it calls for audio, images
and model copies (TensorFlow's own frames are summed under the model call).
The job is :func:`senseflosser.render.floss_to_dir` with the settings the web
app uses (original written, spectrograms drawn).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FOCUS = r"senseflosser|soundfile|PIL/|cloning|numpy/fft"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="game-orchestral")
    ap.add_argument("--models-dir", default=None)
    ap.add_argument("--seconds", type=float, default=30.0)
    from senseflosser.actions import names

    ap.add_argument("--action", default="fog", choices=names())
    ap.add_argument("--magnitudes", default="0.1", help="comma list (five for a titration)")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args(argv)

    from benchmarks.bench import synth_music, wav_bytes
    from senseflosser.models import ModelRegistry
    from senseflosser.pipeline import floss
    from senseflosser.runners import warm_up
    from senseflosser.jobspec import split_magnitudes
    from senseflosser.recipe import Recipe
    from senseflosser.jobspec import Outputs, build_job
    from senseflosser.render import floss_file

    mags = split_magnitudes(args.magnitudes)
    registry = ModelRegistry(args.models_dir)
    warm_up(registry.load(args.model))
    model = registry.load(args.model)
    y = synth_music(args.seconds)
    recipes = [Recipe(args.model, "", args.action, m, 7) for m in mags]

    def show(label: str, fn) -> None:
        fn()  # warm
        t0 = time.perf_counter()
        fn()
        plain = time.perf_counter() - t0
        prof = cProfile.Profile()
        prof.enable()
        fn()
        prof.disable()
        print(f"\n=== {label}: {plain:.3f} s warm (unprofiled) ===")
        pstats.Stats(prof, stream=sys.stdout).sort_stats("cumulative").print_stats(FOCUS, args.top)

    show(f"floss(), {args.seconds:g} s, {args.action} x{len(mags)}", lambda: floss(y, model, recipes))
    with tempfile.TemporaryDirectory(prefix="senseflosser-profile-") as tmp:
        src = Path(tmp) / "input.wav"
        src.write_bytes(wav_bytes(y))
        runs = iter(range(1_000_000))

        def job() -> None:
            k = next(runs)
            spec = build_job(model=args.model, action=args.action, magnitudes=mags, seed=k,
                             outputs=Outputs(original=True, spectrograms=True, peaks=True, stem="audio"))
            floss_file(spec, src, registry=registry, output_dir=Path(tmp) / f"out{k}")

        show("job (floss_file as the web app runs it)", job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
