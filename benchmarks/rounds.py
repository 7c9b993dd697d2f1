"""What the cost benchmarks share: a synthesized clip, interleaved timing rounds and their ratios.

Figures only (printed, written as JSON), never timed in the test suite: they depend on the
machine and on what else runs, so each benchmark prints the load average beside them.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 22050


def write_clip(folder: Path, seconds: float) -> Path:
    """A slowly pulsing 220 Hz tone with a little noise, ``seconds`` long, as ``folder/clip.wav`` (seeded)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SR)) / SR
    y = 0.2 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 0.5 * t) + 0.02 * rng.standard_normal(t.size)
    clip = Path(folder) / "clip.wav"
    sf.write(clip, y.astype(np.float32), SR)
    return clip


def interleaved(cases: Mapping[str, Callable[[int], object]], rounds: int) -> dict[str, tuple[float, float]]:
    """Median CPU and wall seconds of each case, run in interleaved rounds after one warm-up round.

    ``cases[name](r)`` does the work of round ``r`` (0 warms up: traces, scratch copies); interleaving
    gives every case the same chances of a quiet moment.
    """
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for r in range(rounds + 1):
        for name, work in cases.items():
            c0, w0 = time.process_time(), time.perf_counter()
            work(r)
            if r:
                times[name].append((time.process_time() - c0, time.perf_counter() - w0))
    return {name: (statistics.median(c for c, _ in pairs), statistics.median(w for _, w in pairs))
            for name, pairs in times.items()}


def against(medians: Mapping[str, tuple[float, float]], base: str) -> dict[str, dict[str, float]]:
    """Each case's medians and their ratios to ``base``'s, printed one line each."""
    base_cpu, base_wall = medians[base]
    report = {}
    for name, (cpu, wall) in medians.items():
        report[name] = {"cpu_s": round(cpu, 3), "wall_s": round(wall, 3), f"cpu_vs_{base}": round(cpu / base_cpu, 3),
                        f"wall_vs_{base}": round(wall / base_wall, 3)}
        print(f"{name:24s} cpu {cpu:6.2f} s ({cpu / base_cpu:4.2f}x {base})   "
              f"wall {wall:6.2f} s ({wall / base_wall:4.2f}x {base})")
    return report
