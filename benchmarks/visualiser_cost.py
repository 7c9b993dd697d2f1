"""What the visualiser costs: a web job's time and bytes with and without activation frames, and the video.

    python -m benchmarks.visualiser_cost [--model NAME (default: the best)] [--seconds 30] [--rounds 3]
        [--json FILE] [--figure PNG]

Runs the web app's job (floss_to_dir through floss_file: the original, the
normal and a titration of fog, peaks written) on one synthesized clip, in
interleaved rounds with and without activation frames, and prints the median
CPU and wall seconds of each, the extra share, and the bytes the ``.frames``
files add; then renders the video of the clip (normal beside the strongest fog)
and prints its time against the clip's length. The load average is printed
beside the figures: they depend on what else runs. Nothing here runs in the
test suite.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

log = logging.getLogger("benchmarks.visualiser_cost")


def _clip(seconds: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * 22050)) / 22050
    y = sum(np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * np.sin(2 * np.pi * r * t))
            for f, r in ((110, 0.25), (330, 0.5), (1320, 1.0), (2640, 2.0))) / 8
    return (y + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="registry model name (default: the best)")
    ap.add_argument("--models-dir", default=str(Path(__file__).resolve().parent.parent / "models"))
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--figure", help="also write one frame of the video (the clip's middle) as this PNG")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from senseflosser.jobspec import Outputs, build_job
    from senseflosser.models import ModelRegistry
    from senseflosser.render import floss_file
    from senseflosser.runners import warm_up

    reg = ModelRegistry(args.models_dir)
    args.model = args.model or reg.best()
    warm_up(reg.load(args.model))
    work = Path(tempfile.mkdtemp(prefix="senseflosser-visualiser-"))
    clip = work / "clip.wav"
    sf.write(clip, _clip(args.seconds), 22050)
    load_before = os.getloadavg()
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    frame_bytes = 0
    for r in range(args.rounds + 1):  # round 0 warms both paths up (the tapped function is traced once)
        for frames in (False, True):
            spec = build_job(model=args.model, action="fog", titrate=True, seed=1,
                             outputs=Outputs(original=True, peaks=True, activations=frames))
            out = work / f"out{r}{int(frames)}"
            c0, w0 = time.process_time(), time.perf_counter()
            floss_file(spec, clip, registry=reg, output_dir=out)
            if r:
                times[frames].append((time.process_time() - c0, time.perf_counter() - w0))
            if frames:
                frame_bytes = sum(p.stat().st_size for p in out.glob("*.frames"))
    med = {k: (statistics.median(c for c, _ in v), statistics.median(w for _, w in v)) for k, v in times.items()}
    extra_cpu = med[True][0] / med[False][0] - 1
    extra_wall = med[True][1] / med[False][1] - 1
    log.info("job of %.0f s, %s, fog titration (6 outputs with frames): cpu %.2f -> %.2f s (%+.1f %%), "
             "wall %.2f -> %.2f s (%+.1f %%); .frames files %d bytes", args.seconds, args.model, med[False][0],
             med[True][0], 100 * extra_cpu, med[False][1], med[True][1], 100 * extra_wall, frame_bytes)
    spec = build_job(model=args.model, action="fog", magnitudes="0.2", seed=1, outputs=Outputs(video=True))
    t0 = time.perf_counter()
    manifest = floss_file(spec, clip, registry=reg, output_dir=work / "video")
    job_with_video = time.perf_counter() - t0
    from senseflosser.video import render_job_video

    t0 = time.perf_counter()
    render_job_video(manifest, work / "video")
    video_s = time.perf_counter() - t0
    if args.figure:
        from matplotlib.image import imsave

        from senseflosser import framesfile
        from senseflosser.visualiser import Scene

        folder = work / "video"
        scene = Scene(framesfile.read(folder / manifest["normal"]["activations"]),
                      framesfile.read(folder / manifest["flossed"][-1]["activations"]), ("normal", "fog 0.2"))
        imsave(args.figure, scene.draw(args.seconds / 2))
    load_after = os.getloadavg()
    log.info("video of %.0f s: rendered in %.1f s (%.2fx real time); the whole job with it %.1f s; "
             "%d bytes", args.seconds, video_s, video_s / args.seconds, job_with_video,
             (work / "video" / manifest["video"]).stat().st_size)
    log.info("load average (1, 5, 15 min) before %s, after %s, on %d CPUs", load_before, load_after, os.cpu_count())
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": args.model, "seconds": args.seconds, "rounds": args.rounds,
            "job_cpu_s": {"without": med[False][0], "with": med[True][0]},
            "job_wall_s": {"without": med[False][1], "with": med[True][1]},
            "extra_cpu": extra_cpu, "extra_wall": extra_wall, "frames_bytes": frame_bytes,
            "video_s": video_s, "video_vs_real_time": video_s / args.seconds,
            "load_before": load_before, "load_after": load_after}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
