"""What a job costs per action: the web job's work (floss_to_dir as the web app runs it) on one clip.

    python benchmarks/action_cost.py [--model NAME (default: the best)] [--seconds 30] [--rounds 5]

Runs one warm job per action of the registry (at the middle of its titration,
spectrograms and the original written, as the web app does), in interleaved
rounds, and prints the median CPU and wall seconds of each and its ratio to
fog's. Weights-only actions should cost what fog costs; lapse runs a shared
damaged copy; adversarial on input adds its search. Nothing here is timed in
the test suite: figures depend on the machine and on what else runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="registry model name (default: the best, first in `senseflosser models`)")
    ap.add_argument("--models-dir", default=str(Path(__file__).resolve().parent.parent / "models"))
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)

    from senseflosser.actions import ACTIONS
    from senseflosser.models import ModelRegistry
    from senseflosser.runners import warm_up
    from senseflosser.jobspec import Outputs, build_job
    from senseflosser.render import floss_file

    reg = ModelRegistry(args.models_dir)
    args.model = args.model or reg.best()
    warm_up(reg.load(args.model))
    rng = np.random.default_rng(0)
    t = np.arange(int(args.seconds * 22050)) / 22050
    y = (0.2 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 0.5 * t) + 0.02 * rng.standard_normal(t.size))
    work = Path(tempfile.mkdtemp(prefix="senseflosser-actions-"))
    clip = work / "clip.wav"
    sf.write(clip, y.astype(np.float32), 22050)
    runs = {name: dict(magnitudes=[spec.magnitude.titration[2]]) for name, spec in ACTIONS.items()}
    for name, spec in ACTIONS.items():  # and each true-or-false parameter switched on (adversarial on the input)
        for param in spec.params:
            if param.type == "bool":
                runs[f"{name} ({param.name})"] = dict(magnitudes=[spec.magnitude.titration[2]],
                                                      params={param.name: not param.default})
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for r in range(args.rounds + 1):  # round 0 warms every action up (traces, scratch copies)
        for name, opts in runs.items():
            action = name.split(" ")[0]
            c0, w0 = time.process_time(), time.perf_counter()
            spec = build_job(model=args.model, action=action, seed=r,
                             outputs=Outputs(original=True, spectrograms=True), **opts)
            floss_file(spec, clip, registry=reg, output_dir=work / f"out{r}")
            if r:
                times[name].append((time.process_time() - c0, time.perf_counter() - w0))
    fog_cpu = statistics.median(c for c, _ in times["fog"])
    fog_wall = statistics.median(w for _, w in times["fog"])
    report = {}
    for name, pairs in times.items():
        cpu, wall = statistics.median(c for c, _ in pairs), statistics.median(w for _, w in pairs)
        report[name] = {"cpu_s": round(cpu, 3), "wall_s": round(wall, 3), "cpu_vs_fog": round(cpu / fog_cpu, 3),
                        "wall_vs_fog": round(wall / fog_wall, 3)}
        print(f"{name:24s} cpu {cpu:6.2f} s ({cpu / fog_cpu:4.2f}x fog)   wall {wall:6.2f} s ({wall / fog_wall:4.2f}x fog)")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "seconds": args.seconds, "rounds": args.rounds,
                                               "actions": report}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
