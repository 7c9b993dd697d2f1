"""Speed and memory benchmark: how close a job runs to the model's own cost.

    python -m benchmarks.bench [--model NAME (default: the best)] [--models-dir models/]
                                 [--output bench-results/bench.json] [--quick]

In one run, on one model, it measures

- **bare**: one forward pass of the model on a 30 s clip's STFT tensor, warm,
  best of several (the faster of an eager call and Keras' compiled
  ``predict_on_batch``): the floor nothing can beat on this machine;
- **library**: :func:`senseflosser.pipeline.floss` on the clip, one magnitude
  (normal + flossed), warm;
- **titrate**: the same with the five default magnitudes;
- **web**: one job through the HTTP API of a gunicorn started here on a free
  loopback port, from upload until the audio of the normal and the damaged
  output is downloaded (followed with long polls, as the page does): the first
  job after start (cold), warm jobs on audio the server has not seen, and
  re-runs with ``source=``;
- **naive**: the same job as a per-request pipeline would do it (load the
  model, decode, STFT, two passes, two WAVs; :mod:`benchmarks.naive`), the
  figure our warm server must beat;
- **long**: a 10-minute synthesized track through the library in a child
  process: time, real-time factor, peak resident memory of that process;
- **traces**: how many functions TensorFlow traced during ten warm jobs (the
  job function the CLI and web share, fog and lapse, fresh seeds, clip lengths
  that differ from job to job);

prints one table with the ratios and the issue's targets, and writes it all as
JSON. Timings are wall-clock seconds, best of ``--repeat`` rounds; bare,
library and titrate are measured in interleaved rounds so that load from
elsewhere on the machine hits them alike. The load average at the start and
end and the CPU seconds of the in-process figures are recorded too: on a
shared machine they tell waiting from working.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import servers

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
SR = 22050
WEB_POLL_S = 0.05
"""Pause between status requests when the server does not long-poll (no ``version`` in its answer)."""
WEB_WAIT_S = 10
"""How long each status request of the web measure may wait for a change (the page's long poll)."""
ORIGINAL_WEB_WARM_S = 1.6
"""Warm request time of the original demo on a 30 s clip (the baseline to beat)."""


@dataclass(frozen=True)
class Target:
    """One line of the verdict: ``value <= limit`` (or ``>= limit``) passes."""

    key: str
    label: str
    limit: float
    op: str  # "<=" or ">="


TARGETS = (
    Target("library_over_2bare", "library / (2 x bare)", 1.3, "<="),
    Target("titrate_over_6bare", "titrate / (6 x bare)", 1.3, "<="),
    Target("web_warm_over_2bare", "web warm / (2 x bare)", 1.5, "<="),
    Target("web_speedup_vs_original", f"original {ORIGINAL_WEB_WARM_S} s / web warm", 3.0, ">="),
    Target("long_over_20_library", "long / (20 x library)", 1.05, "<="),
    Target("long_peak_rss_gb", "long peak RSS (GB)", 1.5, "<="),
    Target("warm_traces", "traces in warm jobs", 0, "<="),
    Target("rerun_over_first", "web re-run (source=) / first job", 0.6, "<="),
    Target("web_over_naive", "web warm / naive per-request pipeline", 1.0, "<="),
)

RESULT_KEYS = ("machine", "settings", "model", "bare", "library", "titrate", "web", "naive", "long", "traces",
               "ratios")


# ----------------------------------------------------------------- audio


def synth_music(seconds: float, *, seed: int = 0, sr: int = SR) -> np.ndarray:
    """A deterministic music-like waveform: notes with harmonics, envelopes and a little noise.

    Built one second at a time into a float32 array, so a long track costs no
    more memory than its samples.

    Parameters
    ----------
    seconds : float
        Length.
    seed : int, keyword-only
    sr : int, keyword-only

    Returns
    -------
    np.ndarray, shape (round(seconds * sr),), float32
    """
    n = int(round(seconds * sr))
    out = np.empty(n, dtype=np.float32)
    rng = np.random.default_rng(seed)
    scale = 110.0 * 2.0 ** (np.array([0, 2, 3, 5, 7, 8, 10, 12, 14, 15, 17, 19, 24]) / 12.0)
    note_len = int(0.25 * sr)
    for start in range(0, n, sr):
        stop = min(n, start + sr)
        t = np.arange(start, stop) / sr
        block = np.zeros(stop - start)
        for voice in range(3):
            # One note per quarter second per voice, chosen from the scale by a hash of its index.
            idx = np.arange(start, stop) // note_len
            notes = scale[(idx * (7 + 5 * voice) + voice * 3 + seed) % len(scale)] * (1 + voice)
            phase = (np.arange(start, stop) % note_len) / note_len
            env = np.exp(-3.0 * phase) * (1 - np.exp(-60.0 * phase))
            for h in (1, 2, 3):
                block += env * np.sin(2 * np.pi * notes * h * t) / (h * (1 + voice))
        block = 0.15 * block + 0.005 * rng.standard_normal(block.size)
        out[start:stop] = block
    return out


def wav_bytes(y: np.ndarray, sr: int = SR) -> bytes:
    """A 16-bit PCM WAV of a waveform, in memory."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# ---------------------------------------------------------------- helpers


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict[str, Any]:
    """CPU, memory, backend, device and library versions of this machine."""
    import keras

    from senseflosser import device

    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": _mem_total_gb(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "backend": keras.backend.backend(),
        "device": device.describe(),
        "keras": keras.__version__,
        "numpy": np.__version__,
        "git_commit": _git_commit(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }
    if info["backend"] == "tensorflow":
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
    return info


# ------------------------------------------------------------ trace counter


class TraceCounter:
    """Counts every function TensorFlow traces while it is installed.

    TensorFlow calls each callback in
    ``tensorflow.python.eager.polymorphic_function.transform.CONCRETE_FUNCTION_CALLBACKS``
    once for every new concrete function its tracing creates (any
    ``tf.function``, Keras' own compiled functions included, nested ones too).
    On another backend nothing is counted and :attr:`available` is false.
    """

    def __init__(self) -> None:
        self.count = 0
        self.names: list[str] = []
        self.available = False
        self._hooks: list | None = None

    def _callback(self, concrete_fn) -> None:
        self.count += 1
        self.names.append(str(getattr(concrete_fn, "name", "?")))

    def __enter__(self) -> TraceCounter:
        import keras

        if keras.backend.backend() == "tensorflow":
            from tensorflow.python.eager.polymorphic_function import transform

            self._hooks = transform.CONCRETE_FUNCTION_CALLBACKS
            self._hooks.append(self._callback)
            self.available = True
        return self

    def __exit__(self, *exc) -> None:
        if self._hooks is not None:
            self._hooks.remove(self._callback)
            self._hooks = None


# ------------------------------------------------------------------ stages


def _timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """Wall and CPU seconds (this process, all threads) of one call."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def measure_in_process(model, y: np.ndarray, single, titration, rounds: int) -> dict[str, dict[str, Any]]:
    """bare, library and titrate, in interleaved rounds.

    Each round times two bare passes of each kind (eager call and Keras'
    compiled ``predict_on_batch`` on the whole clip's STFT tensor; for a
    fixed-length model, on the clip cut into a batch of pieces of its length), one
    ``floss()`` with ``single`` and one with ``titration``; each figure is the
    best over all rounds. Interleaving gives the three the same chances of a
    quiet moment when something else loads the machine. Everything is warmed
    up first. CPU seconds are recorded beside wall seconds (``*cpu_s``): on a
    busy machine they show how much of a slow figure was waiting.
    """
    from senseflosser.models import input_frames
    from senseflosser.pipeline import floss
    from senseflosser.spectral import stft

    x = stft(y)[None]
    fixed = input_frames(model)
    if fixed is not None:
        # A fixed-length model sees the clip as one batch of consecutive pieces (the last zero-padded).
        pieces = -(-x.shape[1] // fixed)
        x = np.concatenate([x, np.zeros((1, pieces * fixed - x.shape[1]) + x.shape[2:], x.dtype)], axis=1)
        x = x.reshape((pieces, fixed) + x.shape[2:])
    first = _timed(lambda: model(x, training=False))[0]
    model.predict_on_batch(x)  # builds Keras' predict function
    floss(y, model, single)
    floss(y, model, titration)
    runs: dict[str, list[tuple[float, float]]] = {"eager": [], "compiled": [], "library": [], "titrate": []}
    for _ in range(max(1, rounds)):
        for _ in range(2):
            runs["eager"].append(_timed(lambda: model(x, training=False)))
            runs["compiled"].append(_timed(lambda: model.predict_on_batch(x)))
        runs["library"].append(_timed(lambda: floss(y, model, single)))
        runs["titrate"].append(_timed(lambda: floss(y, model, titration)))

    def best(key: str) -> float:
        return min(w for w, _ in runs[key])

    def best_cpu(key: str) -> float:
        return min(c for _, c in runs[key])

    def walls(key: str) -> list[float]:
        return [round(w, 4) for w, _ in runs[key]]

    bare = {
        "seconds": min(best("eager"), best("compiled")),
        "eager_s": best("eager"),
        "compiled_s": best("compiled"),
        "cpu_s": min(best_cpu("eager"), best_cpu("compiled")),
        "first_call_s": first,
        "frames": int(x.shape[0] * x.shape[1]),
        "runs_eager": walls("eager"),
        "runs_compiled": walls("compiled"),
    }
    out = {"bare": bare}
    for key in ("library", "titrate"):
        out[key] = {"seconds": best(key), "median_s": statistics.median(w for w, _ in runs[key]),
                    "cpu_s": best_cpu(key), "runs": walls(key)}
    return out


def measure_traces(registry, model_name: str, clip_seconds: float, jobs: int, magnitude: float,
                   work: Path) -> dict[str, Any]:
    """Traces during ``jobs`` warm runs of the job function (fog and lapse alternate).

    One fog and one lapse job warm up first; then each counted job gets a fresh
    seed and a clip of a different length (so different frame counts reach
    the model), as web jobs do.
    """
    from senseflosser.jobspec import build_job
    from senseflosser.render import floss_file

    actions = ("fog", "lapse")
    lengths = [clip_seconds * (0.7 + 0.6 * k / max(1, jobs - 1)) for k in range(jobs)]
    files = []
    for k, seconds in enumerate([clip_seconds, clip_seconds, *lengths]):
        p = work / f"trace_{k}.wav"
        p.write_bytes(wav_bytes(synth_music(seconds, seed=k)))
        files.append(p)

    def job(k: int, action: str) -> None:
        spec = build_job(model=model_name, action=action, magnitudes=[magnitude], seed=1000 + k)
        floss_file(spec, files[k], registry=registry, output_dir=work / f"trace_out_{k}")

    for k, action in enumerate(actions):
        job(k, action)
    per_job = []
    with TraceCounter() as counter:
        for k in range(jobs):
            before = counter.count
            job(k + 2, actions[k % 2])
            per_job.append(counter.count - before)
    return {
        "count": counter.count if counter.available else None,
        "jobs": jobs,
        "per_job": per_job if counter.available else None,
        "traced": sorted(set(counter.names)),
        "method": "tensorflow CONCRETE_FUNCTION_CALLBACKS hook" if counter.available
        else "not counted: the backend is not tensorflow",
        "clip_seconds": [round(s, 2) for s in lengths],
    }


# ---------------------------------------------------------------------- web


def _server_cpu_s(master: int) -> float | None:
    """CPU seconds (user + system) used so far by the worker processes of a gunicorn master."""
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in children:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        return total
    except (OSError, ValueError, IndexError):
        return None


def _playable_urls(outputs: dict) -> list[str]:
    """The audio a listener waits for: the normal output and every damaged one (not images or downloads)."""
    urls = [outputs["normal"]["url"]] + [f["url"] for f in outputs.get("flossed") or []]
    return [u for u in urls if isinstance(u, str)]


def _follow(session, status_url: str, deadline: float, timeout: float, *, until=lambda body: False,
            body: dict | None = None) -> dict:
    """Follow a job with long polls, as the page does, until it is done or ``until(view)``; the last view.

    Raises RuntimeError if the job fails or outlives ``deadline`` (a ``time.monotonic()`` value)."""
    while True:
        if body is not None:
            if body.get("state") == "failed":
                raise RuntimeError(f"the job failed: {body.get('error')}")
            if body.get("state") == "done" or until(body):
                return body
            if time.monotonic() > deadline:
                raise RuntimeError(f"the job did not finish within {timeout:g} s (state {body.get('state')})")
        version = body.get("version") if body else None
        if body is not None and not version:
            time.sleep(WEB_POLL_S)
        st = session.get(status_url, params={"wait": str(WEB_WAIT_S), "version": version} if version else None,
                         timeout=timeout)
        if st.status_code != 200:
            raise RuntimeError(f"GET {status_url} answered {st.status_code}: {st.text[:300]}")
        body = st.json()


def _web_job(session, base: str, payload: bytes | None, model_name: str, action: str, magnitude: float,
             seed: int, timeout: float, *, source: str | None = None, ids: list[str] | None = None) -> float:
    """Upload (or name an earlier job's audio as ``source``), follow it as the page does (long polls) until
    its audio is playable (the job JSON says so before the job is done: the WAVs are written first, the
    distances, peaks, activation frames and manifest after), download the normal and damaged audio;
    return the wall time until that audio is here (and append the job's id to ``ids``). Then it waits,
    untimed, for the job to be done, so the next job does not queue behind this one's last steps.
    Images are drawn when first asked for, after the audio, so a listener does not wait for them and
    neither does this figure."""
    t0 = time.perf_counter()
    fields = {"model": model_name, "action": action, "magnitude": str(magnitude), "seed": str(seed)}
    if source is not None:
        fields["source"] = source
    files = {"audio": ("bench.wav", payload, "audio/wav")} if payload is not None else None
    r = session.post(f"{base}/api/jobs", files=files, data=fields, timeout=timeout)
    if r.status_code != 202:
        raise RuntimeError(f"POST /api/jobs answered {r.status_code}: {r.text[:300]}")
    if ids is not None:
        ids.append(r.json()["id"])
    status_url = r.json()["status_url"]
    status_url = status_url if status_url.startswith("http") else base + status_url
    deadline = time.monotonic() + timeout
    body = _follow(session, status_url, deadline, timeout, until=lambda b: b.get("playable"))
    urls = _playable_urls(body.get("outputs") or {})
    if not urls:
        raise RuntimeError(f"the finished job lists no output files: {body}")
    for url in urls:
        got = session.get(url if url.startswith("http") else base + url, timeout=timeout)
        if got.status_code != 200 or not got.content:
            raise RuntimeError(f"GET {url} answered {got.status_code}")
    wall = time.perf_counter() - t0
    _follow(session, status_url, deadline, timeout, body=body)  # its last steps, untimed
    return wall


def measure_web(models_dir: Path, model_name: str, y: np.ndarray, magnitude: float, repeat: int,
                work: Path, start_timeout: float = 300.0) -> dict[str, Any]:
    """One job at a time through a gunicorn (one worker) started on a free loopback port."""
    import requests

    result: dict[str, Any] = {"cold_s": None, "warm_s": None, "warm_median_s": None, "warm_cpu_s": None, "runs_warm": [],
                              "server_start_s": None, "workers": 1, "error": None, "rerun_s": None,
                              "rerun_cpu_s": None, "runs_rerun": []}
    if not (ROOT / "wsgi.py").is_file() or not (ROOT / "gunicorn.conf.py").is_file():
        result["error"] = f"no wsgi.py / gunicorn.conf.py in {ROOT}: the web app is not part of this checkout"
        return result
    data_dir = work / "web-data"
    data_dir.mkdir()
    t_spawn = time.perf_counter()
    server = servers.gunicorn(models_dir, data_dir, work / "gunicorn.log", workers=1, secret_key="bench").start()
    try:
        with requests.Session() as session:
            server.wait_healthy(start_timeout, poll_s=0.1)
            result["server_start_s"] = time.perf_counter() - t_spawn
            ids: list[str] = []

            def job(seed: int) -> tuple[float, float | None]:
                # Each job gets audio the server has not seen (the clip, scaled a hair differently), so
                # its normal pass is not served from the cache that makes re-runs cheap.
                clip = wav_bytes((y * (1.0 - 1e-4 * seed)).astype(np.float32))
                cpu0 = _server_cpu_s(server.pid)
                wall = _web_job(session, server.base, clip, model_name, "fog", magnitude, seed, 600, ids=ids)
                cpu1 = _server_cpu_s(server.pid)
                return wall, None if cpu0 is None or cpu1 is None else cpu1 - cpu0

            def rerun(seed: int) -> tuple[float, float | None]:
                # The same audio and model again, other damage: `source=` instead of an upload.
                cpu0 = _server_cpu_s(server.pid)
                wall = _web_job(session, server.base, None, model_name, "fog", magnitude * 1.5, seed, 600,
                                source=ids[-1])
                cpu1 = _server_cpu_s(server.pid)
                return wall, None if cpu0 is None or cpu1 is None else cpu1 - cpu0

            result["cold_s"] = job(1)[0]
            job(2)
            runs, reruns = [], []
            for i in range(max(1, repeat)):
                runs.append(job(3 + i))
                reruns.append(rerun(3 + i))
            result["runs_rerun"] = [round(w, 4) for w, _ in reruns]
            result["rerun_s"] = min(w for w, _ in reruns)
            rerun_cpus = [c for _, c in reruns if c is not None]
            result["rerun_cpu_s"] = min(rerun_cpus) if rerun_cpus else None
            result["runs_warm"] = [round(w, 4) for w, _ in runs]
            result["warm_s"] = min(w for w, _ in runs)
            result["warm_median_s"] = statistics.median(w for w, _ in runs)
            cpus = [c for _, c in runs if c is not None]
            result["warm_cpu_s"] = min(cpus) if cpus else None
    except Exception as exc:  # noqa: BLE001  (any failure is reported in the result, not raised)
        tail = server.log().strip().splitlines()[-8:]
        result["error"] = f"{type(exc).__name__}: {exc}" + (" | gunicorn: " + " / ".join(tail) if tail else "")
    finally:
        server.stop(30)
    return result


def measure_naive(model_path: Path, y: np.ndarray, magnitude: float, repeat: int, work: Path) -> dict[str, Any]:
    """The naive per-request pipeline (:mod:`benchmarks.naive`) on the same clip, in this process, best of
    ``repeat`` after one warm-up (TensorFlow's own start-up is not a request's cost)."""
    from benchmarks.naive import naive_job

    clip = work / "naive-in.wav"
    clip.write_bytes(wav_bytes(y))
    result: dict[str, Any] = {"seconds": None, "runs": [], "error": None}
    try:
        naive_job(model_path, clip, work / "naive-warm", magnitude=magnitude, seed=0)
        runs = [naive_job(model_path, clip, work / f"naive-{i}", magnitude=magnitude, seed=i + 1)
                for i in range(max(1, repeat))]
    except Exception as exc:  # noqa: BLE001  (reported in the result, not raised)
        result["error"] = f"{type(exc).__name__}: {exc}"
        return result
    result.update(seconds=min(runs), runs=[round(r, 4) for r in runs])
    return result


# --------------------------------------------------------------------- long


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    ``VmHWM`` from ``/proc/self/status`` where there is one: unlike
    ``getrusage``'s ``ru_maxrss``, which Linux carries over from the parent
    through fork and exec, it counts only this program's own memory.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes on macOS, kB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def _long_child(seconds: float, models_dir: str, model_name: str, magnitude: float) -> dict[str, Any]:
    """Run in a fresh process: floss a synthesized track of ``seconds`` and report time and peak RSS."""
    from senseflosser.models import ModelRegistry
    from senseflosser.pipeline import floss
    from senseflosser.recipe import Recipe

    registry = ModelRegistry(models_dir)
    model = registry.load(model_name)
    recipe = Recipe(model_name, "", "fog", magnitude, 7)
    floss(synth_music(2.0, seed=1), model, [recipe])  # warm: the timed run pays no first-call cost
    rss_before = peak_rss_mb()
    y = synth_music(seconds, seed=3)
    t0, c0 = time.perf_counter(), time.process_time()
    floss(y, model, [recipe])
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = peak_rss_mb()
    return {"seconds": elapsed, "cpu_s": cpu, "audio_seconds": len(y) / SR, "rtf": elapsed / (len(y) / SR),
            "peak_rss_mb": peak, "peak_rss_mb_before_run": rss_before}


def measure_long(seconds: float, models_dir: Path, model_name: str, magnitude: float,
                 timeout: float = 3600.0) -> dict[str, Any]:
    """:func:`_long_child` in a subprocess, so the peak resident memory is the job's own."""
    cmd = [sys.executable, "-m", "benchmarks.bench", "--long-child", str(seconds),
           "--models-dir", str(models_dir), "--model", model_name, "--magnitude", str(magnitude)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=ROOT if (ROOT / "senseflosser").is_dir() else None)
    except subprocess.TimeoutExpired:
        return {"seconds": None, "audio_seconds": seconds, "rtf": None, "peak_rss_mb": None,
                "error": f"the long run took more than {timeout:g} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " / ".join(proc.stderr.strip().splitlines()[-5:])
        return {"seconds": None, "audio_seconds": seconds, "rtf": None, "peak_rss_mb": None,
                "error": f"the long run exited with status {proc.returncode}: {tail}"}
    return {**json.loads(lines[-1]), "error": None}


# ------------------------------------------------------------------ verdict


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


def compute_ratios(res: dict[str, Any], clip_seconds: float, long_seconds: float) -> list[dict[str, Any]]:
    """The issue's ratios with their targets and pass/fail (``None`` = not measured)."""
    bare = res["bare"]["seconds"]
    lib = res["library"]["seconds"]
    web_warm = res["web"].get("warm_s")
    scale = long_seconds / clip_seconds  # 20 for 10 minutes against 30 s
    long_s = res["long"].get("seconds")
    peak = res["long"].get("peak_rss_mb")
    values = {
        "library_over_2bare": _ratio(lib, 2 * bare),
        "titrate_over_6bare": _ratio(res["titrate"]["seconds"], 6 * bare),
        "web_warm_over_2bare": _ratio(web_warm, 2 * bare),
        "web_speedup_vs_original": _ratio(ORIGINAL_WEB_WARM_S, web_warm),
        "long_over_20_library": _ratio(long_s, scale * lib),
        "long_peak_rss_gb": None if peak is None else peak / 1024,
        "warm_traces": res["traces"].get("count"),
        "rerun_over_first": _ratio(res["web"].get("rerun_s"), web_warm),
        "web_over_naive": _ratio(web_warm, res["naive"].get("seconds")),
    }
    # The same ratios on CPU seconds: what each measure costs in work, whatever else the machine runs.
    bare_cpu = res["bare"].get("cpu_s")
    lib_cpu = res["library"].get("cpu_s")
    cpu = {
        "library_over_2bare": _ratio(lib_cpu, None if bare_cpu is None else 2 * bare_cpu),
        "titrate_over_6bare": _ratio(res["titrate"].get("cpu_s"), None if bare_cpu is None else 6 * bare_cpu),
        "web_warm_over_2bare": _ratio(res["web"].get("warm_cpu_s"), None if bare_cpu is None else 2 * bare_cpu),
        "long_over_20_library": _ratio(res["long"].get("cpu_s"), None if lib_cpu is None else scale * lib_cpu),
        "rerun_over_first": _ratio(res["web"].get("rerun_cpu_s"), res["web"].get("warm_cpu_s")),
    }
    rows = []
    for t in TARGETS:
        v = values[t.key]
        ok = None if v is None else (v <= t.limit if t.op == "<=" else v >= t.limit)
        rows.append({"key": t.key, "label": t.label, "value": v, "target": f"{t.op} {t.limit:g}", "pass": ok,
                     "cpu_value": cpu.get(t.key)})
    return rows


def _fmt(v: Any, unit: str = "s") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3f} {unit}".strip()
    return f"{v} {unit}".strip()


def format_table(res: dict[str, Any]) -> str:
    """The result as a plain-text table (what ``make bench`` prints)."""
    m, s, mod = res["machine"], res["settings"], res["model"]
    bare, web, long_, tr = res["bare"], res["web"], res["long"], res["traces"]
    lines = [
        f"senseflosser bench: model {mod['name']} ({mod['params']:,} params, "
        f"{'any length' if mod['input_frames'] is None else str(mod['input_frames']) + ' frames'}), "
        f"{s['clip_seconds']:g} s clip, {s['action']} {s['magnitude']:g}{', QUICK' if s['quick'] else ''}",
        f"machine: {m['cpu_model']}, {m['cpus_usable']} CPUs, {m['memory_gb']} GB RAM; {m['device']}; "
        f"keras {m['keras']}" + (f", tensorflow {m['tensorflow']}" if m.get("tensorflow") else "")
        + f"; load average {m['load_average_start'][0]:.2f} at start, {m['load_average_end'][0]:.2f} at end",
        "",
        f"{'measure':<44}{'value':>12}",
        f"{'bare forward pass (warm, best)':<44}{_fmt(bare['seconds']):>12}"
        f"   eager {bare['eager_s']:.3f} s, compiled {bare['compiled_s']:.3f} s, {bare['frames']} frames",
        f"{'library floss(), 1 magnitude (warm, best)':<44}{_fmt(res['library']['seconds']):>12}"
        f"   median {res['library']['median_s']:.3f} s, cpu {res['library']['cpu_s']:.3f} s",
        f"{'titrate, 5 magnitudes (warm, best)':<44}{_fmt(res['titrate']['seconds']):>12}"
        f"   median {res['titrate']['median_s']:.3f} s, cpu {res['titrate']['cpu_s']:.3f} s",
        f"{'web job, warm (until audio playable, best)':<44}{_fmt(web.get('warm_s')):>12}"
        + (f"   median {web['warm_median_s']:.3f} s" if web.get("warm_median_s") is not None else "")
        + (f", server cpu {web['warm_cpu_s']:.3f} s" if web.get("warm_cpu_s") is not None else ""),
        f"{'web job, first after start (cold)':<44}{_fmt(web.get('cold_s')):>12}",
        f"{'naive per-request pipeline (best)':<44}{_fmt(res['naive'].get('seconds')):>12}"
        "   load model, decode, STFT, two passes, two WAVs",
        f"{'web re-run with source= (best)':<44}{_fmt(web.get('rerun_s')):>12}"
        + (f"   server cpu {web['rerun_cpu_s']:.3f} s" if web.get("rerun_cpu_s") is not None else ""),
        f"{'long track ' + format(s['long_seconds'] / 60, 'g') + ' min: time':<44}{_fmt(long_.get('seconds')):>12}"
        + (f"   real-time factor {long_['rtf']:.3f}, cpu {long_['cpu_s']:.1f} s" if long_.get("rtf") is not None
           and long_.get("cpu_s") is not None else ""),
        f"{'long track: peak RSS of its process':<44}{_fmt(long_.get('peak_rss_mb'), 'MB'):>12}",
        f"{'traces in ' + str(tr['jobs']) + ' warm jobs':<44}{_fmt(tr.get('count'), ''):>12}",
        "",
        f"{'ratio (wall time)':<44}{'value':>12}{'target':>10}  {'result':<13}on CPU time",
    ]
    for row in res["ratios"]:
        v = row["value"]
        shown = "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
        verdict = {True: "pass", False: "FAIL", None: "not measured"}[row["pass"]]
        cpu = f"{row['cpu_value']:.3f}" if row.get("cpu_value") is not None else ""
        lines.append(f"{row['label']:<44}{shown:>12}{row['target']:>10}  {verdict:<13}{cpu}".rstrip())
    for what in ("web", "naive", "long"):
        if res[what].get("error"):
            lines.append(f"{what} error: {res[what]['error']}")
    return "\n".join(lines)


# --------------------------------------------------------------------- main


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every stage and return the result (see :data:`RESULT_KEYS`)."""
    from senseflosser import device  # noqa: F401  (device set-up first)
    from senseflosser.models import ModelRegistry, input_frames
    from senseflosser.recipe import DEFAULT_TITRATION, Recipe

    quick = args.quick
    clip_seconds = args.clip_seconds or (3.0 if quick else 30.0)
    long_seconds = args.long_seconds or (clip_seconds * 20 if quick else 600.0)
    repeat = args.repeat or (1 if quick else 5)
    registry = ModelRegistry(args.models_dir)
    args.model = args.model or registry.best()
    model = registry.load(args.model)
    sha = registry.sha256(args.model)
    res: dict[str, Any] = {"machine": machine_info()}
    res["settings"] = {"clip_seconds": clip_seconds, "long_seconds": long_seconds, "repeat": repeat,
                       "quick": quick, "action": "fog", "magnitude": args.magnitude,
                       "titrate_magnitudes": list(DEFAULT_TITRATION), "trace_jobs": args.trace_jobs,
                       "models_dir": str(Path(registry.models_dir).resolve())}
    res["model"] = {"name": args.model, "params": int(model.count_params()), "input_frames": input_frames(model),
                    "sha256": sha}
    y = synth_music(clip_seconds, seed=0)
    recipe = Recipe(args.model, sha, "fog", args.magnitude, 7)

    def stage(name: str) -> None:
        log.info("bench: %s", name)
        if args.verbose:
            print(f"... {name}", file=sys.stderr, flush=True)

    stage("bare, library, titrate")
    titration = [recipe.with_magnitude(m) for m in DEFAULT_TITRATION]
    res.update(measure_in_process(model, y, [recipe], titration, repeat))
    res["titrate"]["magnitudes"] = list(DEFAULT_TITRATION)
    with tempfile.TemporaryDirectory(prefix="senseflosser-bench-") as tmp:
        work = Path(tmp)
        stage("traces")
        res["traces"] = measure_traces(registry, args.model, clip_seconds, args.trace_jobs, args.magnitude, work)
        if args.skip_web:
            res["web"] = {"cold_s": None, "warm_s": None, "warm_median_s": None, "warm_cpu_s": None, "runs_warm": [],
                          "server_start_s": None, "workers": 1, "error": "skipped (--skip-web)"}
        else:
            stage("web")
            res["web"] = measure_web(Path(registry.models_dir), args.model, y, args.magnitude, repeat, work)
        stage("naive")
        res["naive"] = measure_naive(registry.path(args.model), y, args.magnitude, repeat, work)
    stage("long")
    res["long"] = measure_long(long_seconds, Path(registry.models_dir), args.model, args.magnitude)
    res["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    res["ratios"] = compute_ratios(res, clip_seconds, long_seconds)
    return res


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench",
                                description="Speed and memory benchmark (prints a table, writes JSON).")
    p.add_argument("--model", default=None, help="registry model name (default: the best, first in `senseflosser models`)")
    p.add_argument("--models-dir", default=None, help="folder of models (default: models/ or $SENSEFLOSSER_MODELS_DIR)")
    p.add_argument("--output", "-o", default="bench-results/bench.json", help="JSON file to write")
    p.add_argument("--quick", action="store_true", help="tiny smoke run: 3 s clips, one repetition")
    p.add_argument("--repeat", type=int, default=None, help="timed rounds / warm web jobs (default 5; quick 1)")
    p.add_argument("--clip-seconds", type=float, default=None, help="clip length (default 30; quick 3)")
    p.add_argument("--long-seconds", type=float, default=None, help="long track length (default 600; quick 60)")
    p.add_argument("--trace-jobs", type=int, default=10, help="warm jobs watched for traces (default 10)")
    p.add_argument("--magnitude", type=float, default=0.1, help="fog magnitude of single-magnitude jobs")
    p.add_argument("--skip-web", action="store_true", help="leave out the gunicorn measure")
    p.add_argument("--verbose", "-v", action="store_true", help="name each stage on stderr as it starts")
    p.add_argument("--long-child", type=float, default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.long_child is not None:
        models_dir = args.models_dir
        print(json.dumps(_long_child(args.long_child, models_dir, args.model, args.magnitude)), flush=True)
        return 0
    from senseflosser.errors import SenseflosserError

    try:
        res = run(args)
    except SenseflosserError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=float) + "\n")
    print(format_table(res))
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
