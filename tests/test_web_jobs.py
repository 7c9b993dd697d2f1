"""The job store and the local job runner, with a stand-in for the audio work."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from app.jobs import JobFailed, JobStore, LocalJobRunner, QueueFull, StorageFull, valid_job_id

DEAD_OWNER = "0123456789abcdef"


def wait_state(store: JobStore, job_id: str, states=("done", "failed"), timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = store.read(job_id)
        if state is not None and state["state"] in states:
            return state
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} did not reach {states}: {store.read(job_id)}")


class Work:
    """A stand-in for the engine: records calls; can block, fail or crash."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.fail: dict[str, BaseException] = {}

    def __call__(self, job_id: str, state: dict, progress) -> dict:
        self.calls.append(job_id)
        self.started.set()
        progress(0.5, "half way")
        assert self.gate.wait(30)
        if job_id in self.fail:
            raise self.fail[job_id]
        return {"seed": 1, "flossed": []}


@pytest.fixture
def store(tmp_path) -> JobStore:
    return JobStore(tmp_path / "jobs")


@pytest.fixture
def runners():
    made: list[LocalJobRunner] = []

    def make(store: JobStore, work, **kw) -> LocalJobRunner:
        runner = LocalJobRunner(store, work, **kw)
        runner.start()
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.stop()


def add_job(store: JobStore, state: str = "queued", *, owner: str = DEAD_OWNER, attempts: int = 0,
            finished: float | None = None, payload: int = 0) -> str:
    job_id, path = store.create()
    if payload:
        (path / "out").mkdir()
        (path / "out" / "blob.bin").write_bytes(b"x" * payload)
    store.write({"id": job_id, "state": state, "created": time.time(), "started": None, "finished": finished,
                 "owner": owner, "attempts": attempts, "position": None, "progress": 0.0, "message": "",
                 "error": None, "request": {}, "manifest": None})
    return job_id


# ------------------------------------------------------------------ store


def test_store_ids_are_random_and_safe(store):
    ids = {store.create()[0] for _ in range(50)}
    assert len(ids) == 50 and all(valid_job_id(i) for i in ids)
    assert store.path("../x") is None and store.path("a/b") is None and store.path("") is None
    assert store.path(None) is None


def test_state_writes_are_atomic_and_leave_no_temp_files(store):
    job_id = add_job(store, "done", finished=time.time())
    state = store.read(job_id)
    for i in range(20):
        state["progress"] = i / 20
        store.write(state)
    assert store.read(job_id)["progress"] == 19 / 20
    assert sorted(os.listdir(store.root / job_id)) == ["state.json"]


def test_unreadable_states_read_as_missing(store):
    job_id, path = store.create()
    assert store.read(job_id) is None
    (path / "state.json").write_text("{not json")
    assert store.read(job_id) is None
    (path / "state.json").write_text(json.dumps({"id": job_id, "state": "exploded"}))
    assert store.read(job_id) is None
    (store.root / ".runners").mkdir(exist_ok=True)
    (store.root / "not-a-job").mkdir()
    assert store.ids() == [job_id]


def test_nan_never_reaches_a_state_file(store):
    job_id = add_job(store)
    state = store.read(job_id)
    state["progress"] = float("nan")
    with pytest.raises(ValueError):
        store.write(state)


# ------------------------------------------------------------------ running


def test_jobs_run_in_order_with_published_positions(store, runners):
    work = Work()
    work.gate.clear()
    runner = runners(store, work, queue_size=2)
    first, second, third = (store.create()[0] for _ in range(3))
    runner.submit(first, {})
    assert work.started.wait(10)
    assert runner.submit(second, {})["position"] == 1
    assert runner.submit(third, {})["position"] == 2
    assert runner.position(second) == 1 and runner.position(third) == 2 and runner.position(first) is None
    running = store.read(first)
    assert running["state"] == "running" and running["attempts"] == 1
    deadline = time.monotonic() + 10
    while store.read(first)["progress"] != 0.5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.read(first)["message"] == "half way"
    full = store.create()[0]
    with pytest.raises(QueueFull):
        runner.submit(full, {})
    runner.queue_size = 3
    runner.submit(full, {})
    work.gate.set()
    for job_id in (first, second, third, full):
        assert wait_state(store, job_id)["state"] == "done"
    assert work.calls == [first, second, third, full]
    # While waiting, the positions on disk followed the queue (other processes read them).
    assert store.read(third)["position"] is None


def test_positions_on_disk_move_up(store, runners):
    work = Work()
    work.gate.clear()
    runner = runners(store, work, queue_size=4)
    ids = [store.create()[0] for _ in range(3)]
    for job_id in ids:
        runner.submit(job_id, {})
    assert work.started.wait(10)
    # ids[0] is running: ids[1] and ids[2] were moved up on disk when it started.
    assert store.read(ids[1])["position"] == 1
    assert store.read(ids[2])["position"] == 2
    work.gate.set()
    wait_state(store, ids[2])


def test_failures_are_recorded_and_the_worker_goes_on(store, runners):
    work = Work()
    runner = runners(store, work)
    bad, crash, good = (store.create()[0] for _ in range(3))
    work.fail[bad] = JobFailed("song.wav: the file holds no audio samples")
    work.fail[crash] = ZeroDivisionError("boom")
    for job_id in (bad, crash, good):
        runner.submit(job_id, {})
    assert wait_state(store, bad)["error"] == "song.wav: the file holds no audio samples"
    crashed = wait_state(store, crash)
    assert crashed["state"] == "failed" and "ZeroDivisionError" in crashed["error"]
    assert wait_state(store, good)["state"] == "done"
    assert runner.stats()["failed"] == 2 and runner.stats()["completed"] == 1
    assert runner.alive


# ------------------------------------------------------------------ restarts and dead workers


def test_queued_jobs_of_a_dead_worker_are_taken_over(store, runners):
    orphan = add_job(store, "queued")
    work = Work()
    runners(store, work)
    state = wait_state(store, orphan)
    assert state["state"] == "done" and state["owner"] != DEAD_OWNER


def test_an_interrupted_job_runs_again_then_fails(store, runners):
    once = add_job(store, "running", attempts=1)
    twice = add_job(store, "running", attempts=2)
    work = Work()
    runners(store, work, max_attempts=2)
    assert wait_state(store, once)["state"] == "done"
    failed = wait_state(store, twice)
    assert failed["state"] == "failed" and "server stopped while this job was running" in failed["error"]
    assert work.calls == [once]


def test_jobs_of_a_live_worker_are_left_alone(store, runners):
    work_a = Work()
    work_a.gate.clear()
    a = runners(store, work_a)
    job = store.create()[0]
    blocker = store.create()[0]
    a.submit(blocker, {})
    assert work_a.started.wait(10)
    a.submit(job, {})
    b = runners(store, Work())
    assert b.recover() == []
    assert store.read(job)["owner"] == a.token
    work_a.gate.set()
    assert wait_state(store, job)["state"] == "done"


def test_a_stopped_runner_hands_its_queue_to_the_next(store, runners):
    work = Work()
    work.gate.clear()
    first = runners(store, work)
    running, waiting = store.create()[0], store.create()[0]
    first.submit(running, {})
    assert work.started.wait(10)
    first.submit(waiting, {})
    first.stop(timeout=0.1)  # the running job is stuck: as if the process had died
    second = runners(store, Work())
    assert second.alive
    assert wait_state(store, waiting)["state"] == "done"
    assert wait_state(store, running)["state"] == "done"  # started again (attempt 2)
    assert store.read(running)["attempts"] == 2
    work.gate.set()


def test_only_one_runner_takes_each_orphan(store):
    orphans = [add_job(store, "queued") for _ in range(8)]
    b, c = LocalJobRunner(store, Work()), LocalJobRunner(store, Work())
    taken: list[list[str]] = [[], []]
    try:
        for r in (b, c):
            r._acquire_lock()  # alive, as after start(), but without worker threads
        threads = [threading.Thread(target=lambda i=i, r=r: taken[i].extend(r.recover()))
                   for i, r in enumerate((b, c))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        b.stop()
        c.stop()
    assert sorted(taken[0] + taken[1]) == sorted(orphans)
    owners = {store.read(j)["owner"] for j in orphans}
    assert owners <= {b.token, c.token}


# ------------------------------------------------------------------ expiry and size cap


def test_expired_results_and_upload_debris_are_deleted(store, runners):
    runner = runners(store, Work(), result_ttl=60)
    old = add_job(store, "done", owner=runner.token, finished=time.time() - 120)
    fresh = add_job(store, "failed", owner=runner.token, finished=time.time())
    debris, path = store.create()
    old_debris, old_path = store.create()
    past = time.time() - 7200
    os.utime(old_path, (past, past))
    assert runner.get(old) is None  # expired reads as gone even before the janitor runs
    assert sorted(runner.expire()) == sorted([old, old_debris])
    remaining = set(store.ids())
    assert old not in remaining and old_debris not in remaining
    assert {fresh, debris} <= remaining


def test_the_janitor_runs_on_a_timer(store, runners):
    runner = runners(store, Work(), result_ttl=0.05, cleanup_interval=0.05)
    job = add_job(store, "done", owner=runner.token, finished=time.time())
    deadline = time.monotonic() + 10
    while job in store.ids() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job not in store.ids()


def test_size_cap_removes_the_oldest_finished_results(store, runners):
    runner = runners(store, Work(), max_bytes=10_000)
    now = time.time()
    oldest = add_job(store, "done", owner=runner.token, finished=now - 30, payload=4000)
    middle = add_job(store, "done", owner=runner.token, finished=now - 20, payload=4000)
    newest = add_job(store, "failed", owner=runner.token, finished=now - 10, payload=4000)
    active = add_job(store, "running", owner=runner.token, payload=4000)
    gone = runner.enforce_cap()
    assert gone == [oldest, middle]
    assert set(store.ids()) == {newest, active}


def test_submit_refuses_when_the_cap_cannot_be_met(store, runners):
    runner = runners(store, Work(), max_bytes=1000)
    add_job(store, "running", owner=runner.token, payload=5000)
    with pytest.raises(StorageFull):
        runner.submit(store.create()[0], {})


def test_storage_full_is_503_through_the_api(make_web_app, web_submit):
    app = make_web_app(MAX_DATA_MB=0.001, RETRY_AFTER_S=5)
    store = app.extensions["senseflosser"].store
    add_job(store, "running", owner=app.extensions["senseflosser"].runner.token, payload=5000)
    r = web_submit(app.test_client())
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    assert "no room" in r.get_json()["error"]
