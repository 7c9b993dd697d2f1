"""Load test: many concurrent clients against a real gunicorn, loopback only.

    make loadtest                       (or: python -m benchmarks.loadtest --help)

Starts gunicorn on a free 127.0.0.1 port with a fresh data folder, then lets
``--clients`` threads submit ``--jobs`` jobs in all (short synthesized clips)
and poll each to the end. Reports accepted, rejected (503) and failed counts,
p50/p95 latency from upload to the job's end, any other 5xx, and the resident
memory of the worker processes after warm-up and at the end. Bounded in count
and time; it never talks to anything but the server it started.
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
    ap.add_argument("--keep", action="store_true",
                    help="keep the data folder (jobs and gunicorn.log); it is kept anyway when a target is missed")
    args = ap.parse_args(argv)

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
