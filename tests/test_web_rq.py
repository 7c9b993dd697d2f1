"""Jobs on RQ with real parts: a real redis-server, real worker processes (``python -m app.worker``)
SIGKILLed in the middle of jobs, web apps sharing one queue, and a restart without Redis.

The API suite (test_web_api.py) runs on RQ too, with the worker on a thread of the test
process; here the workers are separate processes, started with the shared server helper.
"""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from benchmarks import servers
from helpers import block, job_executor, state_on_disk, tone, wait_on_disk
from helpers import encode_audio as wav
from helpers import post_job as post

HEARTBEAT_S = 0.5
DEAD_AFTER_S = 3.0


def submit(client, audio: bytes, filename: str = "song.wav", **fields) -> dict:
    r = post(client, audio, filename, **fields)
    assert r.status_code == 202, r.get_json()
    return r.get_json()


def view(client, job_id: str) -> dict:
    r = client.get(f"/api/jobs/{job_id}")
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def wait_view(client, job_id: str, predicate, what: str, timeout: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        v = view(client, job_id)
        if predicate(v):
            return v
        assert time.monotonic() < deadline, f"job {job_id} never {what}: {v}"
        time.sleep(0.05)


def finished(client, job_id: str, timeout: float = 240.0) -> dict:
    return wait_view(client, job_id, lambda v: v["state"] in ("done", "failed"), "finished", timeout)


@pytest.fixture
def rq_site(redis_server, models_dir, tmp_path, make_web_app):
    """A queue of this test's own on the session's Redis, its data dir, worker processes on demand
    and web apps (each its own "web process": its own runner and limiter) on both."""
    queue = f"site-{tmp_path.name[-40:]}"
    data_dir = tmp_path / "jobs"
    data_dir.mkdir(exist_ok=True)
    workers: list[servers.Server] = []

    class Site:
        url = redis_server.url

        def worker(self, name: str) -> servers.Server:
            w = servers.worker(models_dir, data_dir, tmp_path / f"worker-{name}.log", redis_url=redis_server.url,
                               name=name, queue_name=queue, worker_heartbeat_s=HEARTBEAT_S,
                               worker_dead_after_s=DEAD_AFTER_S, spectrograms=0)
            workers.append(w)
            return w.start()

        def web(self, **overrides):
            return make_web_app(REDIS_URL=redis_server.url, QUEUE_NAME=queue, SPECTROGRAMS=False, **overrides)

    site = Site()
    site.data_dir, site.models_dir, site.queue = data_dir, models_dir, queue
    yield site
    for w in workers:
        w.stop(30)


@pytest.mark.slow
def test_workers_sigkilled_mid_job_jobs_still_end_and_positions_are_global(rq_site, make_web_app):
    """Two worker processes; the one running a long job is SIGKILLed: the job is re-queued and
    finished by the other. A second long job whose workers are killed twice is failed with a
    message (MAX_ATTEMPTS 2). Jobs queued meanwhile keep their uploads and global positions.
    Then web apps without Redis serve the finished jobs from the data dir."""
    import requests  # noqa: F401  (the helper's wait needs it)

    data_dir = rq_site.data_dir
    w1, w2 = rq_site.worker("w1"), rq_site.worker("w2")
    web_a = rq_site.web(MAX_ATTEMPTS=2, CLEANUP_INTERVAL_S=1.0)
    web_b = rq_site.web(MAX_ATTEMPTS=2, CLEANUP_INTERVAL_S=1.0)
    a, b = web_a.test_client(), web_b.test_client()
    for w in (w1, w2):
        w.wait_log(servers.WORKER_READY, timeout=300)
    assert a.get("/healthz").get_json()["queue"]["workers"] == 2

    long_clip = wav(tone(300.0))  # titrated: seconds of work, long enough to be caught running
    long_job = submit(a, long_clip, "long.wav", titrate="1")["id"]
    first = wait_on_disk(data_dir, long_job, lambda s: s["state"] == "running", "ran")
    victim, survivor = (w1, w2) if first["worker"] == "w1" else (w2, w1)
    # The survivor takes a long job of its own, so the next ones wait in the queue.
    other_long = submit(b, long_clip, "other.wav", titrate="1", seed="5")["id"]
    wait_on_disk(data_dir, other_long, lambda s: s["state"] == "running", "ran")

    clips = [wav(tone(1.0, freqs=(110.0 * (i + 2), 170.0 * (i + 1)), seed=i)) for i in range(3)]
    queued = []
    for i, (client, clip) in enumerate(zip((a, b, a), clips)):
        body = submit(client, clip, "song.wav", seed="3")
        assert body["position"] == i + 1  # global: counted over both web apps' submissions
        queued.append(body["id"])
    for i, job in enumerate(queued):  # either web app sees the same positions
        assert view(a, job)["position"] == view(b, job)["position"] == i + 1

    assert state_on_disk(data_dir, long_job)["state"] == "running"  # still running when its worker dies
    victim.kill()
    # Re-queued after its heartbeat lapsed, then run by the survivor after its current job.
    again = wait_on_disk(data_dir, long_job, lambda s: s["state"] == "running" and s["attempts"] == 2,
                      "started again", timeout=300)
    assert again["worker"] != first["worker"]
    assert finished(a, long_job, 300)["state"] == "done"
    results = {}
    for job, clip in zip(queued, clips):
        v = finished(b, job, 300)
        assert v["state"] == "done", v
        original = a.get(v["outputs"]["original"]["url"])
        y, _ = sf.read(io.BytesIO(original.data), dtype="float32")
        x, _ = sf.read(io.BytesIO(clip), dtype="float32")
        assert np.max(np.abs(y - x)) < 1e-3  # each got their own upload
        results[v["outputs"]["flossed"][0]["url"]] = a.get(v["outputs"]["flossed"][0]["url"]).data
    assert finished(a, other_long, 300)["state"] == "done"

    # A job whose workers both die under it (MAX_ATTEMPTS 2) is failed with a message.
    w3 = rq_site.worker("w3")
    w3.wait_log(servers.WORKER_READY, timeout=300)
    doomed = submit(a, long_clip, "doomed.wav", titrate="1", seed="9")["id"]
    s1 = wait_on_disk(data_dir, doomed, lambda s: s["state"] == "running", "ran")
    {"w1": w1, "w2": w2, "w3": w3}[s1["worker"]].kill()
    s2 = wait_on_disk(data_dir, doomed, lambda s: s["state"] == "running" and s["attempts"] == 2, "restarted",
                   timeout=300)
    {"w1": w1, "w2": w2, "w3": w3}[s2["worker"]].kill()
    failed = finished(b, doomed, 120)
    assert failed["state"] == "failed"
    assert "a worker stopped while this job was running (2 times)" in failed["error"], failed
    assert state_on_disk(data_dir, doomed)["state"] == "failed"  # written to disk by a web process

    # Web apps without Redis on the same data dir serve the finished jobs, byte for byte.
    web_a.extensions["senseflosser"].runner.stop()
    web_b.extensions["senseflosser"].runner.stop()
    plain = make_web_app(REDIS_URL="", SPECTROGRAMS=False).test_client()
    assert plain.get("/healthz").get_json()["queue"]["runner"] == "local"
    for url, content in results.items():
        r = plain.get(url)
        assert r.status_code == 200 and r.data == content
    assert view(plain, long_job)["state"] == "done"
    assert view(plain, doomed)["state"] == "failed"
    for w in (w1, w2, w3):
        assert "Traceback" not in w.log(1_000_000), w.log()


# ------------------------------------------------------------------ web apps on one queue (thread worker)


@pytest.fixture
def web_runner() -> str:
    return "rq"


def test_the_queue_bound_is_global(make_web_app, web_submit, web_wait):
    a_app = make_web_app(QUEUE_SIZE=2, RETRY_AFTER_S=9)
    b_app = make_web_app(QUEUE_SIZE=2, RETRY_AFTER_S=9)
    a, b = a_app.test_client(), b_app.test_client()
    executor = job_executor(a_app)
    started, release = block(executor)
    try:
        running = web_submit(a).get_json()["id"]
        assert started.wait(30)
        assert web_submit(a).get_json()["position"] == 1
        assert web_submit(b).get_json()["position"] == 2
        refused = web_submit(a)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "9"
        assert "queue is full" in refused.get_json()["error"]
        refused = web_submit(b)
        assert refused.status_code == 503
        assert len(a_app.extensions["senseflosser"].store.ids()) == 3  # refused uploads are gone
        assert b.get("/healthz").get_json()["queue"]["queued"] == 2
    finally:
        release.set()
    assert web_wait(a, running)["state"] == "done"


def test_rate_limits_count_in_redis_for_every_web_process(make_web_app, web_submit):
    a = make_web_app(RATE_LIMIT="3/minute").test_client()
    b = make_web_app(RATE_LIMIT="3/minute").test_client()
    assert [web_submit(c, audio=None).status_code for c in (a, b, a)] == [400, 400, 400]
    r = web_submit(b, audio=None)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1


def test_a_worker_that_cannot_see_the_upload_fails_the_job_with_a_clear_message(make_web_app, web_submit,
                                                                                    web_wait, tmp_path):
    from app.jobs import JobStore

    app = make_web_app()
    client = app.test_client()
    job_executor(app).store = JobStore(tmp_path / "another-host-mount")  # as if the worker mounted another dir
    view_ = web_wait(client, web_submit(client).get_json()["id"])
    assert view_["state"] == "failed"
    assert "cannot see this job's upload" in view_["error"] and "SENSEFLOSSER_DATA_DIR" in view_["error"]
    assert view_["outputs"] is None
    # The web process wrote the failure to disk: it is kept like any finished job.
    state = app.extensions["senseflosser"].store.read(view_["id"])
    assert state["state"] == "failed" and state["finished"]


def test_without_redis_submissions_get_503_and_health_says_why(make_web_app, web_submit):
    port = servers.free_port()  # nothing listens there
    app = make_web_app(REDIS_URL=f"redis://127.0.0.1:{port}/0")
    client = app.test_client()
    r = web_submit(client)
    assert r.status_code == 503 and "cannot be reached" in r.get_json()["error"]
    assert r.headers["Retry-After"]
    assert app.extensions["senseflosser"].store.ids() == []  # nothing left behind
    health = client.get("/healthz")
    assert health.status_code == 503 and "Redis" in health.get_json()["reason"]


def test_a_job_redis_lost_is_queued_again_from_disk(make_web_app, web_submit, web_wait):
    from rq.job import Job

    from app.jobs import rq_runner

    app = make_web_app()
    runner = app.extensions["senseflosser"].runner
    client = app.test_client()
    executor = job_executor(app)
    _started, release = block(executor)
    try:
        blocker = web_submit(client).get_json()["id"]
        lost = web_submit(client).get_json()["id"]
        runner.connection.lrem(runner.queue.key, 0, lost)  # as if Redis restarted without its data
        Job(lost, connection=runner.connection).delete(remove_from_queue=False)
        state = runner.store.read(lost)
        state["updated"] = time.time() - rq_runner.LOST_GRACE_S - 1
        runner.store.write(state)
        state["updated"] = time.time() - rq_runner.LOST_GRACE_S - 1  # write() stamps it: stamp again
        (runner.store.root / lost / "state.json").write_text(__import__("json").dumps(state))
        runner.cleanup()
        assert "queued again" in client.get(f"/api/jobs/{lost}").get_json()["message"]
    finally:
        release.set()
    assert web_wait(client, blocker)["state"] == "done"
    assert web_wait(client, lost)["state"] == "done"


def test_a_job_taken_by_a_worker_that_died_before_starting_it_is_queued_again(make_web_app, web_submit, web_wait,
                                                                              monkeypatch):
    from app.jobs import rq_runner

    app = make_web_app()
    runner = app.extensions["senseflosser"].runner
    client = app.test_client()
    _started, release = block(job_executor(app))
    try:
        blocker = web_submit(client).get_json()["id"]
        stranded = web_submit(client).get_json()["id"]
        # As a worker does when it takes a job, and then killed before it could mark it started:
        assert runner.connection.lmove(runner.queue.key, runner.queue.intermediate_queue_key) == stranded.encode()
        assert rq_runner.requeue_stranded(runner.queue) == []  # first seen: a live worker may be starting it
        assert rq_runner.requeue_stranded(runner.queue) == []  # not long enough yet
        monkeypatch.setattr(rq_runner, "STRANDED_S", 0.0)
        time.sleep(0.01)
        assert rq_runner.requeue_stranded(runner.queue, after_s=0.0) == [stranded]
        assert runner.connection.lrange(runner.queue.key, 0, -1) == [stranded.encode()]  # at the front again
        assert runner.connection.llen(runner.queue.intermediate_queue_key) == 0
        assert client.get(f"/api/jobs/{stranded}").get_json()["position"] == 1
    finally:
        release.set()
    assert web_wait(client, blocker)["state"] == "done"
    assert web_wait(client, stranded)["state"] == "done"


# ------------------------------------------------------------------ entry points and arrows


def test_the_core_never_imports_flask_rq_or_redis():
    import subprocess
    import sys

    code = ("import sys, senseflosser, senseflosser.cli, senseflosser.models, senseflosser.render; "
            "senseflosser.cli.build_parser(); "
            "print(sorted(m for m in ('flask', 'rq', 'redis', 'app') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_worker_is_the_web_apps_not_the_librarys(capsys, monkeypatch):
    """The core never imports the web layer: the worker is `python -m app.worker`, not a library command."""
    from app import worker
    from senseflosser import cli

    monkeypatch.delenv("SENSEFLOSSER_REDIS_URL", raising=False)
    assert worker.main(["--burst"]) == 2  # it says Redis is needed
    assert "SENSEFLOSSER_REDIS_URL" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["worker"])
    assert exc.value.code == 2


def test_a_worker_without_the_data_dir_says_so(redis_server, models_dir, tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "app.worker", "--redis-url", redis_server.url, "--models-dir",
                          str(models_dir), "--data-dir", str(tmp_path / "not-mounted")],
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 1
    assert "not-mounted is missing or not writable; mount the web servers' data dir" in out.stderr


def test_progress_comes_from_redis_for_every_web_process(make_web_app, web_submit, web_wait):
    a_app, b_app = make_web_app(), make_web_app()
    executor = job_executor(a_app)
    real, halfway, release = executor.execute, threading.Event(), threading.Event()

    def slow(job_id, state, progress):
        progress(0.5, "half way")
        halfway.set()
        release.wait(60)
        return real(job_id, state, progress)

    executor.execute = slow
    try:
        job_id = web_submit(a_app.test_client()).get_json()["id"]
        assert halfway.wait(30)
        for app in (a_app, b_app):
            v = app.test_client().get(f"/api/jobs/{job_id}").get_json()
            assert v["state"] == "running" and v["progress"] == 0.5 and v["message"] == "half way"
        on_disk = a_app.extensions["senseflosser"].store.read(job_id)
        assert on_disk["state"] == "running" and on_disk["progress"] == 0.0  # progress lives in Redis only
    finally:
        release.set()
    assert web_wait(b_app.test_client(), job_id)["state"] == "done"


def test_health_names_the_workers_devices_and_the_web_process_loads_no_model(rq_site):
    import subprocess
    import sys

    w = rq_site.worker("dev1")
    w.wait_log(servers.WORKER_READY, timeout=300)
    # A web process on RQ, in a fresh interpreter: its health report names the worker's device,
    # and it loaded no model (it reads the cards; the workers run the models).
    code = ("import json; from app import create_app; "
            f"app = create_app({{'MODELS_DIR': {str(rq_site.models_dir)!r}, 'DATA_DIR': {str(rq_site.data_dir)!r}, "
            f"'REDIS_URL': {rq_site.url!r}, 'QUEUE_NAME': {rq_site.queue!r}}}); "
            "body = app.test_client().get('/healthz').get_json(); "
            "print(json.dumps([body['device'], body['queue']['workers'], "
            "app.extensions['senseflosser'].engine.loaded(), body['models']]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    described, workers, loaded, models = json.loads(out.stdout.strip().splitlines()[-1])
    assert "CPU" in described or "GPU" in described
    assert workers == 1 and loaded == [] and models == ["tiny", "tinyfixed"]
