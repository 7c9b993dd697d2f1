"""Every shipped model's clean reconstruction and forward cost, measured in one run.

    SENSEFLOSSER_THREADS=1 python -m benchmarks.models_table \\
        --heldout music=.senseflosser-work/game-orchestral/heldout \\
        --heldout speech=.senseflosser-work/speech-cs/heldout [--clips 8] [--json out.json]

For each model of the registry and each held-out folder (audio no model was
trained on: ``make models`` leaves them in ``.senseflosser-work``) it prints
the median and worst SI-SNR and the median log-spectral distance of the normal
output against the input, as ``senseflosser evaluate`` measures them (same
excerpts, no damage), and once per model its FLOPs and forward time per second
of audio. One process, one thread setting, one machine state: the rows compare.
Run it on a quiet machine and say so beside the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heldout", action="append", required=True, metavar="LABEL=DIR",
                    help="a folder of held-out audio, with a short label for the table (repeatable)")
    ap.add_argument("--models-dir", default=str(Path(__file__).resolve().parent.parent / "models"))
    ap.add_argument("--clips", type=int, default=8, help="excerpts per folder (as senseflosser evaluate)")
    ap.add_argument("--clip-seconds", type=float, default=10.0)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    sets = []
    for item in args.heldout:
        label, sep, folder = item.partition("=")
        if not sep or not label or not Path(folder).is_dir():
            ap.error(f"--heldout wants LABEL=DIR with an existing folder, got {item!r}")
        sets.append((label, folder))

    from senseflosser.evaluation import evaluate
    from senseflosser.models import ModelRegistry

    registry = ModelRegistry(args.models_dir)
    report: dict[str, dict] = {}
    header = "| model | " + " | ".join(f"{label}: SI-SNR median (worst) | {label}: LSD" for label, _ in sets)
    rows = []
    for name in registry.names():
        entry: dict = {}
        cells = []
        for label, folder in sets:
            ev = evaluate(registry, name, folder, clip_seconds=args.clip_seconds, max_clips=args.clips,
                          magnitudes={}, calibrate=False)
            n = ev["normal"]
            entry[label] = n
            entry.setdefault("forward", ev["forward"])
            cells.append(f"{n['si_snr_db_median']:.1f} dB ({n['si_snr_db_worst']:.1f}) | {n['lsd_db_median']:.2f} dB")
        fwd = entry["forward"]
        report[name] = entry
        rows.append(f"| {name} | " + " | ".join(cells)
                    + f" | {fwd['gflop_per_s_audio']:.2f} | {fwd['forward_ms_per_s_audio']:.1f} ms |")
    print(header + " | GFLOP / s audio | forward / s audio |")
    print("|---" * (1 + 2 * len(sets) + 2) + "|")
    print("\n".join(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
