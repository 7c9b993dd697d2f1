"""Load test: many concurrent clients against a real gunicorn, loopback only.

    make loadtest                       (or: python -m benchmarks.loadtest --help)

Starts gunicorn on a free 127.0.0.1 port with a fresh data folder, then lets
``--clients`` threads submit ``--jobs`` jobs in all (short synthesized clips)
and poll each to the end. Reports accepted, rejected (503) and failed counts,
p50/p95 latency from upload to the job's end, any other 5xx, and the resident
memory of the worker processes after warm-up and at the end. Bounded in count
and time; it never talks to anything but the server it started.

    make soak                           (or: python -m benchmarks.loadtest --soak)

Soak mode runs thousands of jobs against ONE worker: one phase per action of
the registry (``GET /api/actions``), then a phase mixing them all, each job
with its own seed and a magnitude drawn across the action's titration, layer
selections varying. It samples the worker's resident memory and its compiled
functions (``/healthz``) as it goes and reports, per phase, the memory slope
after warm-up in kB per job (least squares over the samples after the first
fifth) and the traces. Target: under 2 kB per job for every phase.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
import soundfile as sf

from benchmarks import servers

ROOT = Path(__file__).resolve().parent.parent


def clip(seconds: float, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 22050)) / 22050
    y = 0.2 * np.sin(2 * np.pi * rng.uniform(110, 880) * t) + 0.01 * rng.standard_normal(t.size)
    buf = io.BytesIO()
    sf.write(buf, y.astype(np.float32), 22050, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def worker_pids(master: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=2.0, help="length of each uploaded clip")
    ap.add_argument("--model", default=None, help="model name (default: the first the server lists)")
    ap.add_argument("--models-dir", default=str(ROOT / "models"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--queue-size", type=int, default=16)
    ap.add_argument("--time-limit", type=float, default=900, help="stop submitting after this many seconds")
    ap.add_argument("--json", help="also write the report here")
    ap.add_argument("--soak", action="store_true",
                    help="soak mode: one worker, --jobs jobs per action and a mixed phase (default 2000 each)")
    ap.add_argument("--actions", help="soak only these actions (comma-separated; default: every one)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the data folder (jobs and gunicorn.log); it is kept anyway when a target is missed")
    args = ap.parse_args(argv)
    if args.soak:
        args.workers = 1
        args.queue_size = max(args.queue_size, 64)
        if "--jobs" not in (argv if argv is not None else sys.argv):
            args.jobs = 2000
        if "--seconds" not in (argv if argv is not None else sys.argv):
            args.seconds = 0.5
        if "--time-limit" not in (argv if argv is not None else sys.argv):
            args.time_limit = 6 * 3600

    data = tempfile.mkdtemp(prefix="senseflosser-load-")
    server = servers.gunicorn(args.models_dir, data, Path(data) / "gunicorn.log", workers=args.workers,
                              queue_size=args.queue_size, secret_key="loadtest").start()
    base = server.base
    passed = False
    try:
        try:
            health = server.wait_healthy(300, poll_s=0.5)
        except RuntimeError as exc:
            raise SystemExit(str(exc)) from None
        model = args.model or health["models"][0]
        payloads = [clip(args.seconds, i) for i in range(8)]
        # Warm-up: until every worker has finished two jobs (fog and lapse alternate), so memory is measured
        # after the models are loaded and the shapes traced.
        pids = worker_pids(server.pid)
        if args.soak:
            report = soak(base, model, payloads, pids[0], args)
            print(json.dumps(report, indent=2))
            if args.json:
                Path(args.json).write_text(json.dumps(report, indent=2))
            passed = all(report["targets"].values())
            return 0 if passed else 1
        warm_up(base, model, payloads[0], pids, time.monotonic() + 600)
        mem_before = {p: rss_mb(p) for p in pids}

        lock = threading.Lock()
        stats = {"accepted": 0, "rejected_503": 0, "done": 0, "failed": 0, "other_5xx": 0, "other_4xx": 0,
                 "lost": 0}
        latencies: list[float] = []
        counter = iter(range(args.jobs))
        deadline = time.monotonic() + args.time_limit

        def client(cid: int) -> None:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                t0 = time.monotonic()
                try:
                    r = requests.post(
                        f"{base}/api/jobs", files={"audio": (f"song{i % 3}.wav", payloads[i % len(payloads)])},
                        data={"model": model, "action": "fog" if i % 2 else "lapse", "magnitude": "0.1",
                              "seed": str(i)}, timeout=60)
                except requests.RequestException:
                    with lock:
                        stats["lost"] += 1
                    continue
                key = None
                if r.status_code == 202:
                    key = "accepted"
                elif r.status_code == 503:
                    key = "rejected_503"
                    time.sleep(float(r.headers.get("Retry-After", "1")) * 0.2)
                elif r.status_code >= 500:
                    key = "other_5xx"
                else:
                    key = "other_4xx"
                with lock:
                    stats[key] += 1
                if key != "accepted":
                    continue
                state = poll(base, r.json()["id"], time.monotonic() + 600)
                with lock:
                    if state == "done":
                        stats["done"] += 1
                        latencies.append(time.monotonic() - t0)
                    elif state == "failed":
                        stats["failed"] += 1
                    else:
                        stats["lost"] += 1

        threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
        t_run = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t_run
        mem_after = {p: rss_mb(p) for p in pids}
        growth = max(((mem_after[p] - mem_before[p]) / mem_before[p] * 100 for p in pids if mem_before[p]),
                     default=0.0)
        lat = sorted(latencies)
        report = {
            **stats, "jobs": args.jobs, "clients": args.clients, "workers": args.workers, "model": model,
            "wall_s": round(wall, 1),
            "p50_s": round(statistics.median(lat), 3) if lat else None,
            "p95_s": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 3) if lat else None,
            "worker_rss_mb_before": {str(p): round(v) for p, v in mem_before.items()},
            "worker_rss_mb_after": {str(p): round(v) for p, v in mem_after.items()},
            "worker_rss_growth_pct_max": round(growth, 1),
        }
        report["targets"] = {
            "no 5xx other than 503": stats["other_5xx"] == 0,
            "every accepted job done": stats["done"] == stats["accepted"] and stats["lost"] == 0,
            "memory growth < 10 %": growth < 10,
        }
        print(json.dumps(report, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
        passed = all(report["targets"].values())
        return 0 if passed else 1
    finally:
        server.stop(30)
        if passed and not args.keep:
            shutil.rmtree(data, ignore_errors=True)
        else:
            print(f"data folder and server log kept in {data}", file=sys.stderr)


def slope_kb_per_job(samples: list[tuple[int, float]]) -> float:
    """Least-squares slope of (jobs done, RSS in MB) samples, in kB per job."""
    x = np.array([s[0] for s in samples], float)
    y = np.array([s[1] for s in samples], float)
    if len(x) < 2 or np.ptp(x) == 0:
        return 0.0
    return float(np.polyfit(x, y, 1)[0] * 1024)


def soak(base: str, model: str, payloads: list[bytes], pid: int, args) -> dict:
    """Phases of ``args.jobs`` jobs each against one worker; memory slope and traces per phase."""
    registry = requests.get(f"{base}/api/actions", timeout=30).json()
    wanted = [a.strip() for a in args.actions.split(",")] if args.actions else [a["name"] for a in registry]
    specs = {a["name"]: a for a in registry if a["name"] in wanted}
    if len(specs) != len(wanted):
        raise SystemExit(f"unknown actions in --actions; the server has: {', '.join(a['name'] for a in registry)}")
    card = next(c for c in requests.get(f"{base}/api/models", timeout=30).json()["models"] if c["name"] == model)
    layers = card.get("conv_layers") or []
    selections = [None] + [name for name in layers[:3]]  # default layers, then single layers
    rng = np.random.default_rng(0)
    phases = [[name] for name in specs] + ([list(specs)] if len(specs) > 1 else [])
    report: dict = {"model": model, "jobs_per_phase": args.jobs, "clip_seconds": args.seconds, "phases": {}}
    deadline = time.monotonic() + args.time_limit
    seed = iter(range(10**9))

    def health() -> dict:
        return requests.get(f"{base}/healthz", timeout=30).json()

    def fields(action: str) -> dict:
        titration = specs[action]["magnitude"]["titration"]
        magnitude = float(np.exp(rng.uniform(np.log(titration[0]), np.log(titration[-1]))))
        data = {"model": model, "action": action, "magnitude": f"{magnitude:.6g}", "seed": str(next(seed))}
        chosen = selections[int(rng.integers(len(selections)))]
        if chosen:
            data["layers"] = chosen
        return data

    def run(actions: list[str], n: int, samples: list | None) -> dict:
        counts = {"done": 0, "failed": 0, "rejected_503": 0, "other": 0}
        lock = threading.Lock()
        todo = iter(range(n))

        def client() -> None:
            while time.monotonic() < deadline:
                with lock:
                    i = next(todo, None)
                    data = fields(actions[i % len(actions)]) if i is not None else None
                if i is None:
                    return
                r = requests.post(f"{base}/api/jobs", files={"audio": ("soak.wav", payloads[i % len(payloads)])},
                                  data=data, timeout=60)
                if r.status_code == 503:
                    with lock:
                        counts["rejected_503"] += 1
                    time.sleep(0.2)
                    continue
                if r.status_code != 202:
                    with lock:
                        counts["other"] += 1
                    continue
                state = poll(base, r.json()["id"], deadline)
                with lock:
                    counts["done" if state == "done" else "failed"] += 1
                    done = counts["done"]
                if samples is not None and done % 50 == 0:
                    samples.append((done, rss_mb(pid)))

        threads = [threading.Thread(target=client) for _ in range(max(1, args.clients))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return counts

    for actions in phases:
        label = "+".join(actions)
        run(actions, 20 * len(actions) * len(selections), None)  # warm-up: every action and layer selection
        before = health()["compiled"]
        samples = [(0, rss_mb(pid))]
        t0 = time.monotonic()
        counts = run(actions, args.jobs, samples)
        after = health()["compiled"]
        steady = [s for s in samples if s[0] >= args.jobs // 5]
        report["phases"][label] = {
            **counts, "seconds": round(time.monotonic() - t0, 1),
            "rss_mb_start": round(samples[0][1], 1), "rss_mb_end": round(samples[-1][1], 1),
            "slope_kb_per_job": round(slope_kb_per_job(steady), 3),
            "compiled_before": before, "compiled_after": after,
        }
        print(f"{label}: {json.dumps(report['phases'][label])}", file=sys.stderr, flush=True)
    report["targets"] = {
        f"{label}: slope < 2 kB/job": phase["slope_kb_per_job"] < 2.0 for label, phase in report["phases"].items()
    }
    report["targets"]["no job failed"] = all(p["failed"] == 0 and p["other"] == 0 for p in report["phases"].values())
    report["targets"]["no new traces after warm-up"] = all(
        p["compiled_after"] == p["compiled_before"] for p in report["phases"].values())
    return report


def warm_up(base: str, model: str, payload: bytes, pids: list[int], deadline: float) -> None:
    """Submit warm-up jobs until every worker in ``pids`` has completed at least two.

    Which worker takes a job is up to the kernel (they share the socket), so the
    workers' own counts from /healthz decide when all are warm.
    """
    completed: dict[int, int] = {}
    action = iter(["fog", "lapse"] * 1000)
    while time.monotonic() < deadline:
        for _ in range(8 * len(pids)):
            try:
                health = requests.get(f"{base}/healthz", timeout=10).json()
            except requests.RequestException:
                continue
            completed[health["pid"]] = health["queue"]["completed"]
        if all(completed.get(pid, 0) >= 2 for pid in pids):
            return
        ids = []
        for _ in range(len(pids)):
            r = requests.post(f"{base}/api/jobs", files={"audio": ("warm.wav", payload)},
                              data={"model": model, "action": next(action), "magnitude": "0.1"}, timeout=60)
            if r.status_code == 202:
                ids.append(r.json()["id"])
        for job_id in ids:
            poll(base, job_id, deadline)
    raise SystemExit(f"not every worker warmed up in time: {completed}")


def poll(base: str, job_id: str, deadline: float) -> str:
    state = "queued"
    while time.monotonic() < deadline:
        try:
            r = requests.get(f"{base}/api/jobs/{job_id}", timeout=30)
        except requests.RequestException:
            time.sleep(0.5)
            continue
        if r.status_code != 200:
            return f"http {r.status_code}"
        state = r.json().get("state", "?")
        if state in ("done", "failed"):
            return state
        time.sleep(0.25)
    return state


if __name__ == "__main__":
    sys.exit(main())
