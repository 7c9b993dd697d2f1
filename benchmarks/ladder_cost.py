"""What a ladder costs: an 8-rung ladder of a clip against a single-magnitude job of the same clip.

    python -m benchmarks.ladder_cost [--model game-orchestral-lite] [--seconds 30] [--rungs 8] [--rounds 3]

Both are the web job's work (:func:`senseflosser.render.floss_file` with the
original, spectrograms and peaks written, as the web app runs it), warm, in
interleaved rounds; the ladder's rungs share its normal pass and STFT as a
titration does. Also timed: the same ladder with a performance (the streamed
crossfade of its rung WAVs). Prints the median CPU and wall seconds, the ratios,
and ``os.getloadavg()`` before and after (the figures depend on what else runs).
Nothing here is timed in the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="game-orchestral-lite")
    ap.add_argument("--models-dir", default=str(Path(__file__).resolve().parent.parent / "models"))
    ap.add_argument("--action", default="fog")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rungs", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)

    from senseflosser.jobspec import Outputs, build_job
    from senseflosser.models import ModelRegistry
    from senseflosser.render import floss_file
    from senseflosser.runners import warm_up

    reg = ModelRegistry(args.models_dir)
    warm_up(reg.load(args.model))
    calib = (reg.read_card(args.model).get("evaluation") or {}).get("calibration")
    rng = np.random.default_rng(0)
    t = np.arange(int(args.seconds * 22050)) / 22050
    y = 0.2 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 0.5 * t) + 0.02 * rng.standard_normal(t.size)
    work = Path(tempfile.mkdtemp(prefix="senseflosser-ladder-"))
    clip = work / "clip.wav"
    sf.write(clip, y.astype(np.float32), 22050)
    path = ",".join(f"{s:g}:{(args.rungs - 1) * (0.5 + 0.5 * np.sin(s)):.4f}" for s in np.arange(0, args.seconds, 0.5))
    outputs = Outputs(original=True, spectrograms=True, peaks=True)
    runs = {
        "single": dict(magnitudes=[0.02]),
        "ladder": dict(ladder=args.rungs, calibration=calib),
        "ladder+performance": dict(ladder=args.rungs, calibration=calib, performance=path),
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    load_before = os.getloadavg()
    for r in range(args.rounds + 1):  # round 0 warms up
        for name, opts in runs.items():
            spec = build_job(model=args.model, action=args.action, seed=r, outputs=outputs, **opts)
            c0, w0 = time.process_time(), time.perf_counter()
            floss_file(spec, clip, registry=reg, output_dir=work / f"{name}{r}")
            if r:
                times[name].append((time.process_time() - c0, time.perf_counter() - w0))
    load_after = os.getloadavg()
    base_cpu = statistics.median(c for c, _ in times["single"])
    base_wall = statistics.median(w for _, w in times["single"])
    report = {}
    for name, pairs in times.items():
        cpu, wall = statistics.median(c for c, _ in pairs), statistics.median(w for _, w in pairs)
        report[name] = {"cpu_s": round(cpu, 3), "wall_s": round(wall, 3), "cpu_vs_single": round(cpu / base_cpu, 3),
                        "wall_vs_single": round(wall / base_wall, 3)}
        print(f"{name:20s} cpu {cpu:6.2f} s ({cpu / base_cpu:4.2f}x)   wall {wall:6.2f} s ({wall / base_wall:4.2f}x)")
    print(f"load average (1, 5, 15 min) before {load_before}, after {load_after}; {os.cpu_count()} CPUs")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "action": args.action, "seconds": args.seconds,
                                               "rungs": args.rungs, "rounds": args.rounds, "load_before": load_before,
                                               "load_after": load_after, "runs": report}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
