"""Jobs on RQ: the queue hop's cost, throughput with 1 and 2 workers, a worker SIGKILLed mid-run.

    python -m benchmarks.rq_bench [--model NAME (default: the best)] [--jobs 20] [--output bench-results/rq_bench.json]
    make bench-rq

Starts a throw-away redis-server, gunicorn with the web app on RQ (2 web processes)
and model-warm workers (``python -m app.worker``), all on loopback, and for
comparison gunicorn with the in-process runner. Measures:

- **hop**: one 30 s fog job at a time, upload to last file downloaded, through the
  in-process runner and through RQ + a worker, interleaved rounds; the overhead
  per job is the difference of the medians, also as a share of the in-process job;
- **throughput**: ``--jobs`` jobs submitted at once by concurrent clients, with one
  worker and then two; wall time from the first upload to the last job done;
- **kill**: ``--jobs`` jobs with two workers, one SIGKILLed while it runs a job;
  every job must end done (none lost, none failed); and a snapshot of the queue
  positions that clients read from the two web processes right after submitting
  (they must be exactly 1..k: one global queue).

Timings are wall-clock seconds; the load average before and after is recorded, as
the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import servers
from benchmarks.bench import _cpu_model, _web_job, synth_music, wav_bytes

ROOT = Path(__file__).resolve().parent.parent
POLL_S = 0.05


def _status(session, base: str, job_id: str) -> dict:
    return session.get(f"{base}/api/jobs/{job_id}", timeout=60).json()


def _submit(session, base: str, payload: bytes, model: str, seed: int) -> dict:
    r = session.post(f"{base}/api/jobs", files={"audio": ("bench.wav", payload, "audio/wav")},
                     data={"model": model, "action": "fog", "magnitude": "0.1", "seed": str(seed)}, timeout=120)
    if r.status_code != 202:
        raise RuntimeError(f"POST /api/jobs answered {r.status_code}: {r.text[:300]}")
    return r.json()


def _wait_all(base: str, ids: list[str], timeout: float) -> dict[str, dict]:
    import requests

    views: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    with requests.Session() as session:
        while len(views) < len(ids):
            for job_id in ids:
                if job_id not in views:
                    v = _status(session, base, job_id)
                    if v["state"] in ("done", "failed"):
                        views[job_id] = v
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(ids) - len(views)} job(s) not finished within {timeout:g} s")
            time.sleep(POLL_S * 4)
    return views


def _burst(base: str, payload: bytes, model: str, jobs: int, clients: int, seed0: int) -> tuple[list[dict], float]:
    """``jobs`` submissions from ``clients`` threads at once; returns the submit answers and t0."""
    import requests

    answers: list[dict | None] = [None] * jobs
    counter = iter(range(jobs))
    lock = threading.Lock()
    errors: list[str] = []

    def client() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                try:
                    answers[i] = _submit(session, base, payload, model, seed0 + i)
                except Exception as exc:  # noqa: BLE001
                    errors.append(str(exc))

    t0 = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} submission(s) failed: {errors[0]}")
    return [a for a in answers if a is not None], t0


def _timed_job(session, base: str, payload: bytes, model: str, seed: int) -> dict[str, float]:
    """One job, upload to last file downloaded (as :func:`benchmarks.bench._web_job`), with the server's
    own timestamps: ``pickup_s`` (accepted to started), ``run_s`` (started to finished) and ``wall_s``."""
    t0 = time.perf_counter()
    job_id = _submit(session, base, payload, model, seed)["id"]
    while True:
        v = _status(session, base, job_id)
        if v["state"] in ("done", "failed"):
            break
        time.sleep(POLL_S)
    if v["state"] != "done":
        raise RuntimeError(f"job failed: {v['error']}")
    for out in [v["outputs"]["original"], v["outputs"]["normal"], *v["outputs"]["flossed"]]:
        for key in ("url", "spectrogram"):
            if out and out.get(key):
                session.get(base + out[key], timeout=60).raise_for_status()
    return {"wall_s": time.perf_counter() - t0, "pickup_s": v["started"] - v["created"],
            "run_s": v["finished"] - v["started"]}


def measure_hop(local: servers.Server, rq_web: servers.Server, model: str, payload: bytes, rounds: int) -> dict:
    import requests

    runs: dict[str, list[float]] = {"local": [], "rq": []}
    parts: dict[str, list[dict[str, float]]] = {"local": [], "rq": []}
    with requests.Session() as session:
        for warm in range(2):
            for server in (local, rq_web):
                _web_job(session, server.base, payload, model, "fog", 0.1, 100 + warm, 600)
        for i in range(rounds):
            for key, server in (("local", local), ("rq", rq_web)) if i % 2 == 0 else (("rq", rq_web),
                                                                                       ("local", local)):
                timing = _timed_job(session, server.base, payload, model, 200 + i)
                runs[key].append(timing["wall_s"])
                parts[key].append(timing)
    med = {k: statistics.median(v) for k, v in runs.items()}
    best = {k: min(v) for k, v in runs.items()}
    pickup = {k: statistics.median(t["pickup_s"] for t in v) for k, v in parts.items()}
    run_s = {k: statistics.median(t["run_s"] for t in v) for k, v in parts.items()}
    rest = {k: statistics.median(t["wall_s"] - t["pickup_s"] - t["run_s"] for t in v) for k, v in parts.items()}
    return {
        "pickup_median_s": pickup, "run_median_s": run_s, "around_median_s": rest,
        # The hop itself: what the queue adds around the job's own run (pickup and everything after the
        # run up to the last download), compared with the in-process runner; the run is the same code.
        "hop_median_s": (pickup["rq"] + rest["rq"]) - (pickup["local"] + rest["local"]),
        "hop_median_pct": 100 * ((pickup["rq"] + rest["rq"]) - (pickup["local"] + rest["local"])) / med["local"],
        "rounds": rounds,
        "local_runs_s": [round(x, 3) for x in runs["local"]],
        "rq_runs_s": [round(x, 3) for x in runs["rq"]],
        "local_median_s": med["local"], "rq_median_s": med["rq"],
        "local_best_s": best["local"], "rq_best_s": best["rq"],
        "overhead_median_s": med["rq"] - med["local"],
        "overhead_median_pct": 100 * (med["rq"] - med["local"]) / med["local"],
        "overhead_best_s": best["rq"] - best["local"],
        "overhead_best_pct": 100 * (best["rq"] - best["local"]) / best["local"],
    }


def _cpu_s(pids: list[int]) -> float | None:
    """CPU seconds (user + system) used so far by these processes (Linux /proc)."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        return total
    except (OSError, ValueError, IndexError):
        return None


def measure_throughput(base: str, model: str, payload: bytes, jobs: int, clients: int, seed0: int,
                       worker_pids: list[int] | None = None) -> dict:
    cpu0 = _cpu_s(worker_pids or [])
    answers, t0 = _burst(base, payload, model, jobs, clients, seed0)
    views = _wait_all(base, [a["id"] for a in answers], 1800)
    wall = time.monotonic() - t0
    cpu1 = _cpu_s(worker_pids or [])
    done = sum(v["state"] == "done" for v in views.values())
    cpu = None if cpu0 is None or cpu1 is None or not worker_pids else cpu1 - cpu0
    # Cores the workers kept busy on average: on a shared machine, how much CPU they got.
    return {"jobs": jobs, "done": done, "failed": jobs - done, "wall_s": wall, "jobs_per_min": 60 * done / wall,
            "workers_cpu_s": cpu, "workers_cores_busy": None if cpu is None else cpu / wall,
            "cpu_s_per_job": None if cpu is None or not done else cpu / done}


def measure_kill(base: str, data_dir: Path, workers: dict[str, servers.Server], model: str, payload: bytes,
                 jobs: int, clients: int) -> dict:
    import requests

    answers, t0 = _burst(base, payload, model, jobs, clients, 5000)
    ids = [a["id"] for a in answers]
    # A snapshot of positions as clients see them, read through both web processes (requests alternate).
    # Reading one job after another takes time, and a worker may take a job meanwhile (the later ones then
    # read one place less): a snapshot counts only when a second pass, through the other process for each
    # job, reads exactly the same positions, so that no job left the queue between the two reads of any
    # job. Two queues (one per web process) would still read duplicates in such a stable pair.
    positions: list[int] | None = None
    with requests.Session() as s1, requests.Session() as s2:
        for _attempt in range(20):
            passes = []
            for flip in (0, 1):
                seen = {}
                for k, job_id in enumerate(ids):
                    v = _status(s1 if (k + flip) % 2 else s2, base, job_id)
                    if v["state"] == "queued":
                        seen[job_id] = v["position"]
                passes.append(seen)
            if passes[0] == passes[1]:
                positions = list(passes[0].values())
                break
    submit_positions = [a["position"] for a in answers]
    # Wait until a few jobs are done and one is running, then SIGKILL the worker running it.
    victim_job, victim_name = None, None
    want_done = min(3, len(ids) // 4)
    while victim_job is None:
        states = []
        for job_id in ids:
            try:
                states.append(json.loads((data_dir / job_id / "state.json").read_text()))
            except (OSError, ValueError):
                continue
        done = sum(s["state"] == "done" for s in states)
        running = [s for s in states if s["state"] == "running" and s.get("worker") in workers]
        if running and done >= want_done:
            victim_job, victim_name = running[0]["id"], running[0]["worker"]
        elif all(s["state"] in ("done", "failed") for s in states) and len(states) == len(ids):
            raise RuntimeError("every job ended before one was caught running: use longer clips")
        time.sleep(0.01)
    workers[victim_name].kill()
    t_kill = time.monotonic() - t0
    views = _wait_all(base, ids, 1800)
    wall = time.monotonic() - t0
    victim = json.loads((data_dir / victim_job / "state.json").read_text())
    return {
        "jobs": len(ids),
        "done": sum(v["state"] == "done" for v in views.values()),
        "failed": sum(v["state"] == "failed" for v in views.values()),
        "lost": len(ids) - len(views),
        "killed_worker": victim_name, "killed_at_s": t_kill, "wall_s": wall,
        "killed_job_attempts": victim.get("attempts"), "killed_job_state": victim["state"],
        "killed_job_finished_by": victim.get("worker"),
        "positions_at_submit": submit_positions,
        # None: no two passes agreed (the queue kept moving); that is not a pass.
        "positions_snapshot": None if positions is None else sorted(positions),
        "positions_global": positions is not None and len(positions) >= 2
        and sorted(positions) == list(range(1, len(positions) + 1)),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    models_dir = Path(args.models_dir or os.environ.get("SENSEFLOSSER_MODELS_DIR") or ROOT / "models")
    from senseflosser.models import ModelRegistry

    args.model = args.model or ModelRegistry(models_dir).best()
    payload = wav_bytes(synth_music(args.clip_seconds, seed=0))
    res: dict[str, Any] = {
        "machine": {"cpu_model": _cpu_model(), "cpus": os.cpu_count(),
                    "load_average_start": [round(x, 2) for x in os.getloadavg()]},
        "settings": {"model": args.model, "clip_seconds": args.clip_seconds, "rounds": args.rounds,
                     "jobs": args.jobs, "clients": args.clients, "worker_dead_after_s": args.dead_after,
                     "web_processes": 2, "worker_threads": args.worker_threads},
    }
    with tempfile.TemporaryDirectory(prefix="senseflosser-rqbench-") as tmp:
        work = Path(tmp)
        (work / "rq-data").mkdir()
        (work / "local-data").mkdir()
        common = dict(queue_size=max(16, 2 * args.jobs), secret_key="bench", max_attempts=3)
        with servers.RedisServer(work / "redis.log") as redis:
            rq_web = servers.gunicorn(models_dir, work / "rq-data", work / "rq-web.log", workers=2,
                                      redis_url=redis.url, **common)
            local = servers.gunicorn(models_dir, work / "local-data", work / "local-web.log", workers=1, **common)
            threads = {"SENSEFLOSSER_THREADS": str(args.worker_threads)} if args.worker_threads else {}
            workers = {name: servers.worker(models_dir, work / "rq-data", work / f"{name}.log", redis_url=redis.url,
                                            name=name, worker_dead_after_s=args.dead_after, extra_env=threads)
                       for name in ("w1", "w2")}
            try:
                for server in (rq_web, local, workers["w1"]):
                    server.start()
                rq_web.wait_healthy()
                local.wait_healthy()
                workers["w1"].wait_log(servers.WORKER_READY)
                if not args.skip_hop:
                    print("... hop: in-process vs RQ, one job at a time", file=sys.stderr, flush=True)
                    res["hop"] = measure_hop(local, rq_web, args.model, payload, args.rounds)
                local.stop()
                if args.only_hop:
                    res["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
                    return res
                print("... throughput, 1 worker", file=sys.stderr, flush=True)
                measure_throughput(rq_web.base, args.model, payload, 2, 2, 1)  # warm
                one = measure_throughput(rq_web.base, args.model, payload, args.jobs, args.clients, 1000,
                                         [workers["w1"].pid])
                workers["w2"].start()
                workers["w2"].wait_log(servers.WORKER_READY)
                print("... throughput, 2 workers", file=sys.stderr, flush=True)
                measure_throughput(rq_web.base, args.model, payload, 4, 4, 2)  # warm the second worker
                two = measure_throughput(rq_web.base, args.model, payload, args.jobs, args.clients, 3000,
                                         [workers["w1"].pid, workers["w2"].pid])
                res["throughput"] = {"one_worker": one, "two_workers": two,
                                     "speedup": two["jobs_per_min"] / one["jobs_per_min"]}
                print("... kill: one of two workers SIGKILLed mid-job", file=sys.stderr, flush=True)
                res["kill"] = measure_kill(rq_web.base, work / "rq-data", workers, args.model, payload,
                                           args.jobs, args.clients)
            finally:
                for server in (rq_web, local, *workers.values()):
                    server.stop(30)
                if args.keep_logs:
                    keep = Path(args.output).parent / "rq_bench-logs"
                    keep.mkdir(parents=True, exist_ok=True)
                    for log in work.glob("*.log"):
                        (keep / log.name).write_bytes(log.read_bytes())
    res["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return res


def format_table(res: dict[str, Any]) -> str:
    s, m = res["settings"], res["machine"]
    threads = f", {s['worker_threads']} TF thread(s) per worker" if s.get("worker_threads") else ""
    lines = [f"senseflosser RQ bench: model {s['model']}, {s['clip_seconds']:g} s fog jobs{threads}; {m['cpu_model']}, "
             f"{m['cpus']} CPUs; load average {m['load_average_start'][0]:.2f} at start, "
             f"{m['load_average_end'][0]:.2f} at end", ""]
    hop = res.get("hop")
    if hop:
        lines += [
            f"job through the in-process runner (median of {hop['rounds']})   {hop['local_median_s']:.3f} s"
            f"   best {hop['local_best_s']:.3f} s",
            f"job through RQ + a worker (median of {hop['rounds']})           {hop['rq_median_s']:.3f} s"
            f"   best {hop['rq_best_s']:.3f} s",
            f"queue hop overhead per job (medians)             {hop['overhead_median_s'] * 1000:+.0f} ms"
            f"   {hop['overhead_median_pct']:+.1f} %  (target < 5 %)",
            f"queue hop overhead per job (bests)               {hop['overhead_best_s'] * 1000:+.0f} ms"
            f"   {hop['overhead_best_pct']:+.1f} %",
            f"  server side, medians (local / rq): accepted to started {hop['pickup_median_s']['local'] * 1000:.0f}"
            f" / {hop['pickup_median_s']['rq'] * 1000:.0f} ms; run {hop['run_median_s']['local']:.3f}"
            f" / {hop['run_median_s']['rq']:.3f} s; the rest (upload, polls, downloads)"
            f" {hop['around_median_s']['local'] * 1000:.0f} / {hop['around_median_s']['rq'] * 1000:.0f} ms",
            f"  the hop alone (pickup + the rest, rq - local): {hop['hop_median_s'] * 1000:+.0f} ms"
            f" = {hop['hop_median_pct']:+.1f} % of the in-process job", ""]
    if "throughput" not in res:
        return "\n".join(lines)
    t = res["throughput"]
    def cpu(r: dict) -> str:
        if r.get("workers_cpu_s") is None:
            return ""
        return (f"   workers' CPU {r['workers_cpu_s']:.0f} s ({r['workers_cores_busy']:.2f} cores busy,"
                f" {r['cpu_s_per_job']:.2f} s per job)")

    lines += [
        f"{t['one_worker']['jobs']} jobs at once, 1 worker    {t['one_worker']['wall_s']:.1f} s"
        f"   {t['one_worker']['jobs_per_min']:.1f} jobs/min" + cpu(t["one_worker"]),
        f"{t['two_workers']['jobs']} jobs at once, 2 workers   {t['two_workers']['wall_s']:.1f} s"
        f"   {t['two_workers']['jobs_per_min']:.1f} jobs/min   x{t['speedup']:.2f}" + cpu(t["two_workers"]), ""]
    k = res["kill"]
    lines += [
        f"{k['jobs']} jobs, 2 workers, {k['killed_worker']} SIGKILLed at {k['killed_at_s']:.1f} s mid-job: "
        f"{k['done']} done, {k['failed']} failed, {k['lost']} lost in {k['wall_s']:.1f} s; the killed job "
        f"{k['killed_job_state']} on attempt {k['killed_job_attempts']} by {k['killed_job_finished_by']}",
        f"queue positions read by clients from 2 web processes right after submitting: {k['positions_snapshot']} "
        f"({_positions_verdict(k)})",
    ]
    return "\n".join(lines)


def _positions_verdict(kill: dict) -> str:
    if kill["positions_global"]:
        return "one global queue"
    if kill["positions_snapshot"] is None:
        return "NO STABLE SNAPSHOT: the queue moved during every pair of passes"
    if len(kill["positions_snapshot"]) < 2:
        return "TOO FEW QUEUED to tell: use longer clips or more jobs"
    return "NOT consecutive"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.rq_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="registry model name (default: the best, first in `senseflosser models`)")
    p.add_argument("--models-dir", default=None)
    p.add_argument("--clip-seconds", type=float, default=30.0)
    p.add_argument("--rounds", type=int, default=7, help="interleaved hop rounds (default 7)")
    p.add_argument("--jobs", type=int, default=20)
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--dead-after", type=float, default=10.0,
                   help="workers' SENSEFLOSSER_WORKER_DEAD_AFTER_S (default 10; the service default is 60)")
    p.add_argument("--worker-threads", type=int, default=0,
                   help="SENSEFLOSSER_THREADS of each worker (TensorFlow's threads; default: TensorFlow's own)")
    p.add_argument("--skip-hop", action="store_true")
    p.add_argument("--only-hop", action="store_true", help="measure the hop only")
    p.add_argument("--keep-logs", action="store_true", help="copy the servers' logs beside the output")
    p.add_argument("--output", "-o", default="bench-results/rq_bench.json")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not servers.RedisServer.available():
        print("rq_bench: error: redis-server is not installed (apt-get install redis-server)", file=sys.stderr)
        return 1
    res = run(args)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(format_table(res))
    print(f"\nwritten: {out}")
    ok = "kill" not in res or (res["kill"]["done"] == res["kill"]["jobs"] and res["kill"]["positions_global"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
