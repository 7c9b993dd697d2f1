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
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.rounds import against, interleaved, write_clip


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
    work = Path(tempfile.mkdtemp(prefix="senseflosser-ladder-"))
    clip = write_clip(work, args.seconds)
    path = ",".join(f"{s:g}:{(args.rungs - 1) * (0.5 + 0.5 * np.sin(s)):.4f}" for s in np.arange(0, args.seconds, 0.5))
    outputs = Outputs(original=True, spectrograms=True, peaks=True)
    runs = {
        "single": dict(magnitudes=[0.02]),
        "ladder": dict(ladder=args.rungs, calibration=calib),
        "ladder+performance": dict(ladder=args.rungs, calibration=calib, performance=path),
    }

    def job(name: str, opts: dict):
        def run(r: int) -> None:  # round 0 warms up
            spec = build_job(model=args.model, action=args.action, seed=r, outputs=outputs, **opts)
            floss_file(spec, clip, registry=reg, output_dir=work / f"{name}{r}")
        return run

    load_before = os.getloadavg()
    report = against(interleaved({name: job(name, opts) for name, opts in runs.items()}, args.rounds), "single")
    load_after = os.getloadavg()
    print(f"load average (1, 5, 15 min) before {load_before}, after {load_after}; {os.cpu_count()} CPUs")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "action": args.action, "seconds": args.seconds,
                                               "rungs": args.rungs, "rounds": args.rounds, "load_before": load_before,
                                               "load_after": load_after, "runs": report}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
