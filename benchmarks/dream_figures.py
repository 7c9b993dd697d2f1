"""What a dream does, measured on the written audio: every shipped model, default settings, held-out audio.

    SENSEFLOSSER_THREADS=1 nice python -m benchmarks.dream_figures [--models NAME ...] [--clips 2]
        [--seconds 10] [--cost-seconds 30] [--data NAME=DIR ...] [--json FILE]

For each model and each conv layer but the output one (``conv_in``,
``down``, ``mid``, ``up`` and ``conv_out`` on the shipped models) it dreams, through the job's own path
(:func:`senseflosser.pipeline.floss` with a ``dream`` recipe at the registry's
defaults), toward

- a *channel set*: the layer's largest cluster on its card (``LAYER:clusterN``), and
- the *whole layer*,

writes each output as the job does (16-bit WAV), reads it back, and runs the
model on it. Figures per dream: the target's mean activation on the written
audio over the input's (``ratio``), the whole layer's ratio for a channel-set
dream, the correlation of librosa's onset-strength envelopes of output and
input (``onset_corr``), output minus input RMS in dB, the output's peak, and
spectral flatness and onset rate (onsets per second) of input and output.
Then one ``--cost-seconds`` dream (the middle layer's channel set) is timed:
its forward-plus-backward passes (as passes over that much audio) and wall
seconds. Nothing here runs in the test suite: seconds depend on the machine
and on what else runs on it (the load average is printed with them).
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

_WORK = Path(__file__).resolve().parent.parent / ".senseflosser-work" / "corpus"
HELD_OUT = {"game-orchestral": _WORK / "game-orchestral" / "heldout",
            "game-orchestral-lite": _WORK / "game-orchestral" / "heldout",
            "game-orchestral-hq": _WORK / "game-orchestral" / "heldout",
            "hedgewars-fixed": _WORK / "hedgewars" / "heldout", "speech-czech": _WORK / "speech-cs" / "heldout",
            "general-lite": _WORK / "game-orchestral" / "heldout"}
"""Held-out audio (never trained on) of each shipped model, where `make models` lays it out."""


def _largest_cluster(card: dict, layer: str) -> int:
    groups = card.get("clusters", {}).get("layers", {}).get(layer) or []
    if not groups:
        raise SystemExit(f"the card has no clusters for {layer}: run `senseflosser clusters` first")
    return max(range(len(groups)), key=lambda i: (len(groups[i]), -i))


def _describe(y: np.ndarray, sr: int) -> dict:
    import librosa

    return {"flatness": float(np.mean(librosa.feature.spectral_flatness(y=y))),
            "onset_rate": len(librosa.onset.onset_detect(y=y, sr=sr)) / (len(y) / sr)}


def measure(registry, name: str, y: np.ndarray, layer: str, selection: str, *, seed: int = 0) -> dict:
    """One dream of ``y`` toward ``selection`` at the defaults, measured on its written WAV."""
    import librosa

    from senseflosser import audio, dream, pipeline
    from senseflosser.actions import split_entry
    from senseflosser.jobspec import build_job

    model = registry.load(name)
    card = registry.card(name)
    job = build_job(model=name, model_sha256=registry.sha256(name), action="dream", magnitudes="1", seed=seed,
                    layers=selection, conv_layers=dict(card["conv_channels"]), clusters=card["clusters"]["layers"])
    t0 = time.perf_counter()
    result = pipeline.floss(y, model, job.recipes)
    seconds = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        out = audio.load(audio.write_wav(Path(tmp) / "dream.wav", result.flossed[0].audio))
    chosen = dict(split_entry(e) for e in job.base.layers)
    whole = {layer: None}
    before = dream.mean_activations(model, y, chosen)
    after = dream.mean_activations(model, out, chosen)
    sr = audio.SAMPLE_RATE
    o_in = librosa.onset.onset_strength(y=y, sr=sr)
    o_out = librosa.onset.onset_strength(y=out, sr=sr)
    row = {
        "model": name, "layer": layer, "target": ",".join(job.base.layers),
        "channels": None if chosen[layer] is None else len(chosen[layer]),
        "ratio": after[layer] / before[layer],
        "onset_corr": float(np.corrcoef(o_in, o_out)[0, 1]),
        "rms_diff_db": 20 * np.log10(np.sqrt(np.mean(out.astype(np.float64) ** 2))
                                     / np.sqrt(np.mean(y.astype(np.float64) ** 2))),
        "peak": float(np.max(np.abs(out))),
        "input": _describe(y, sr), "output": _describe(out, sr),
        "seconds": seconds, "dream": result.provenance[0]["dream"],
    }
    if chosen[layer] is not None:
        row["layer_ratio"] = (dream.mean_activations(model, out, whole)[layer]
                              / dream.mean_activations(model, y, whole)[layer])
    return row


def _memory(args) -> int:
    """Peak RSS of one process that dreams ``args.memory`` seconds (memory does not depend on the iterations)."""
    import resource

    from senseflosser import audio, pipeline
    from senseflosser.jobspec import build_job
    from senseflosser.models import ModelRegistry

    registry = ModelRegistry(args.models_dir)
    name = (args.models or [registry.best()])[0]
    files = audio.find_audio(dict(HELD_OUT, **dict(d.split("=", 1) for d in args.data))[name])
    clip = audio.load(files[0])
    n = int(args.memory * audio.SAMPLE_RATE)
    y = np.resize(clip, n).astype(np.float32)
    del clip
    model = registry.load(name)
    job = build_job(model=name, action="dream", magnitudes="1", seed=0, layers="mid", params={"iterations": 1})
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    result = pipeline.floss(y, model, job.recipes)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{name}: {args.memory:.0f} s dreamed ({result.provenance[0]['dream']['chunks']} chunks, one iteration) "
          f"in {time.perf_counter() - t0:.0f} s; peak RSS {peak:.0f} MiB (before the dream {base:.0f} MiB; "
          f"the audio itself {y.nbytes / 2**20:.0f} MiB per copy)")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", help="registry names (default: every shipped model)")
    ap.add_argument("--models-dir", default=str(Path(__file__).resolve().parent.parent / "models"))
    ap.add_argument("--data", action="append", default=[], metavar="NAME=DIR", help="held-out audio of a model")
    ap.add_argument("--clips", type=int, default=2, help="excerpts per model (default 2)")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each excerpt (default 10)")
    ap.add_argument("--cost-seconds", type=float, default=30.0, help="length of the timed dream (0: none)")
    ap.add_argument("--layers", nargs="*", help="layers to dream on (default: every conv layer but the output)")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--memory", type=float, metavar="SECONDS",
                    help="instead: dream this much audio (a held-out file repeated) at one iteration and print the "
                         "process's peak memory (run once per length, each in a fresh process)")
    args = ap.parse_args(argv)
    if args.memory:
        return _memory(args)

    from senseflosser import audio
    from senseflosser.models import ModelRegistry, conv_layer_names

    registry = ModelRegistry(args.models_dir)
    data = dict(HELD_OUT, **dict(d.split("=", 1) for d in args.data))
    rows, costs = [], []
    for name in args.models or registry.names():
        if name not in data or not Path(data[name]).is_dir():
            print(f"{name}: no held-out audio (give --data {name}=DIR)", file=sys.stderr)
            continue
        model = registry.load(name)
        card = registry.card(name)
        convs = conv_layer_names(model)
        layers = args.layers or convs[:-1]
        clips = audio.spread_excerpts(audio.find_audio(data[name]), args.seconds, args.clips)
        for path, offset in clips:
            y = audio.load(path, offset=offset, duration=args.seconds)
            for layer in layers:
                for selection in (f"{layer}:cluster{_largest_cluster(card, layer)}", layer):
                    row = measure(registry, name, y, layer, selection)
                    row["clip"] = f"{path.name}@{offset:.0f}"
                    rows.append(row)
                    print(f"{name:22s} {row['clip']:16s} {row['target'][:28]:28s} ratio {row['ratio']:5.2f}"
                          + (f" (layer {row['layer_ratio']:4.2f})" if "layer_ratio" in row else " " * 13)
                          + f" onset {row['onset_corr']:.2f} rms {row['rms_diff_db']:+.2f} dB"
                          f" peak {row['peak']:.3f} flat {row['input']['flatness']:.3f}->"
                          f"{row['output']['flatness']:.3f} onsets/s {row['input']['onset_rate']:.1f}->"
                          f"{row['output']['onset_rate']:.1f} {row['seconds']:.1f} s", flush=True)
        if args.cost_seconds:
            long = audio.spread_excerpts(audio.find_audio(data[name]), args.cost_seconds, 1)
            if long:
                path, offset = long[0]
                y = audio.load(path, offset=offset, duration=args.cost_seconds)
                mid = convs[(len(convs) - 1) // 2]
                load = os.getloadavg()[0]
                row = measure(registry, name, y, mid, f"{mid}:cluster{_largest_cluster(card, mid)}")
                cost = {"model": name, "seconds_of_audio": len(y) / audio.SAMPLE_RATE, "wall_s": row["seconds"],
                        "passes": row["dream"]["passes"],
                        "passes_over_the_audio": row["dream"]["pass_seconds"] / (len(y) / audio.SAMPLE_RATE),
                        "load_before": load, "load_after": os.getloadavg()[0], "ratio": row["ratio"],
                        "onset_corr": row["onset_corr"]}
                costs.append(cost)
                print(f"{name}: a {cost['seconds_of_audio']:.0f} s dream: {cost['passes']} forward+backward passes "
                      f"on chunks ({cost['passes_over_the_audio']:.1f} passes over the whole audio), "
                      f"{cost['wall_s']:.1f} s wall (load average {load:.1f} -> {cost['load_after']:.1f})", flush=True)
    summary = {}
    for kind in ("set", "layer"):
        for layer_pos in sorted({r["layer"] for r in rows}):
            sel = [r for r in rows if r["layer"] == layer_pos and (r["channels"] is not None) == (kind == "set")]
            if sel:
                summary[f"{kind}:{layer_pos}"] = {
                    "ratio_median": statistics.median(r["ratio"] for r in sel),
                    "ratio_min": min(r["ratio"] for r in sel),
                    "onset_corr_median": statistics.median(r["onset_corr"] for r in sel),
                    "onset_corr_min": min(r["onset_corr"] for r in sel)}
    for key, s in summary.items():
        print(f"{key:16s} ratio median {s['ratio_median']:.2f} (min {s['ratio_min']:.2f}), onset corr median "
              f"{s['onset_corr_median']:.2f} (min {s['onset_corr_min']:.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "costs": costs, "summary": summary}, indent=2,
                                              default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
