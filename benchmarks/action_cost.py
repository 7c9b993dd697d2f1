"""What a job costs per action: the web job's work (floss_to_dir as the web app runs it) on one clip.

    python -m benchmarks.action_cost [--model NAME (default: the best)] [--seconds 30] [--rounds 5]

Runs one warm job per action of the registry that damages the model (at the middle of its titration,
spectrograms and the original written, as the web app does), in interleaved
rounds, and prints the median CPU and wall seconds of each and its ratio to
fog's. Weights-only actions should cost what fog costs; lapse runs a shared
damaged copy; adversarial on input adds its search. Nothing here is timed in
the test suite: figures depend on the machine and on what else runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from benchmarks.rounds import against, interleaved, write_clip


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
    work = Path(tempfile.mkdtemp(prefix="senseflosser-actions-"))
    clip = write_clip(work, args.seconds)
    # An input action (dream) costs minutes, not a job's two passes: benchmarks/dream_figures.py times it.
    damaging = {name: spec for name, spec in ACTIONS.items() if spec.kind != "input"}
    runs = {name: dict(magnitudes=[spec.magnitude.titration[2]]) for name, spec in damaging.items()}
    for name, spec in damaging.items():  # and each true-or-false parameter switched on (adversarial on the input)
        for param in spec.params:
            if param.type == "bool":
                runs[f"{name} ({param.name})"] = dict(magnitudes=[spec.magnitude.titration[2]],
                                                      params={param.name: not param.default})

    def job(name: str, opts: dict):
        def run(r: int) -> None:  # round 0 warms every action up (traces, scratch copies)
            spec = build_job(model=args.model, action=name.split(" ")[0], seed=r,
                             outputs=Outputs(original=True, spectrograms=True), **opts)
            floss_file(spec, clip, registry=reg, output_dir=work / f"out{r}")
        return run

    report = against(interleaved({name: job(name, opts) for name, opts in runs.items()}, args.rounds), "fog")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "seconds": args.seconds, "rounds": args.rounds,
                                               "actions": report}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
