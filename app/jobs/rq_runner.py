"""The RQ runner: the web side of jobs on RQ and Redis (``SENSEFLOSSER_REDIS_URL`` set).

The web process stores the upload and the job's ``state.json`` in the shared data
dir, then enqueues ``app.jobs.task.run(job_id)`` on one RQ queue; model-warm
workers (:mod:`app.worker`, any number, on any host that mounts the data dir)
take jobs from it. The web process never runs a model.

- The queue bound is global: a job that lands past ``queue_size`` waiting jobs is
  taken out again and refused (503), whichever web process accepted it.
- Queue positions come from Redis (``LPOS`` in the queue), progress from the RQ
  job's meta; both are the same whichever web process answers.
- A worker heartbeats its running job; a worker that dies (SIGKILL, machine gone)
  stops heartbeating, and the next maintenance round (in any worker or web
  process, see :func:`recover_abandoned`) re-queues its job through RQ's
  ``Retry``: ``max_attempts - 1`` times, then the job is failed with a message.
  A worker killed between taking a job and starting it leaves the job in RQ's
  intermediate list; the same round puts it back at the front of the queue
  (:func:`requeue_stranded`).
  A job that raises is failed at once (:mod:`app.jobs.task`).
- ``state.json`` stays the durable record: finished jobs are served from disk
  (also by a later web process without Redis), and a failure known only to Redis
  (a worker that could not see the data dir, a job abandoned too often) is
  written to disk when a web process first sees it. A queued job that Redis lost
  (restarted without persistence) is enqueued again from disk.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Retry, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry, clean_registries
from rq.worker_registration import clean_worker_registry

from .base import ACTIVE, RQ_OWNER, QueueFull, interrupted_error, job_limit, new_state
from .retention import Retention
from .store import JobStore
from .task import counter_key

log = logging.getLogger(__name__)

JOB_FUNCTION = "app.jobs.task.run"
DEFAULT_QUEUE = "senseflosser"
LOST_GRACE_S = 60.0
"""A job queued on disk but unknown to Redis for this long is enqueued again."""
STRANDED_S = 10.0
"""A job a worker took off the queue but never started (it died in between: RQ's "intermediate" list)
is put back at the front of the queue once seen there this long (taking one lasts milliseconds)."""
MAINTENANCE_LOCK_S = 30
"""Expiry of the maintenance lock (RQ's own key), so a process killed while holding it blocks no one long."""

UNREACHABLE = "the job queue cannot be reached right now"
RQ_TIMEOUT_GRACE_S = 5.0
"""RQ stops a job this long after its own time limit (the job stops itself at its next progress step)."""


def devices_key(queue_name: str) -> str:
    """Redis hash of the device each worker of a queue runs on (worker name -> description)."""
    return f"senseflosser:{queue_name}:devices"


def publish_device(queue: Queue, worker_name: str, description: str) -> None:
    """A worker says which device it runs its models on (read by the web processes' health report)."""
    queue.connection.hset(devices_key(queue.name), worker_name, description)


def connect(url: str) -> Redis:
    """A Redis client for ``url`` with timeouts (a dead Redis must not hang a request)."""
    return Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30, health_check_interval=30)


def recover_abandoned(queue: Queue) -> bool:
    """One maintenance round of RQ's registries under RQ's own maintenance lock.

    Running jobs whose worker stopped heartbeating are re-queued (while the job
    has retries left) or failed; stale workers leave the worker registry. Returns
    whether this process did the round (another one may hold the lock).
    """
    if not queue.connection.set(queue.registry_cleaning_key, 1, nx=True, ex=MAINTENANCE_LOCK_S):
        return False
    try:
        clean_registries(queue)
        clean_worker_registry(queue)
        requeue_stranded(queue)
    finally:
        queue.release_maintenance_lock()
    return True


def requeue_stranded(queue: Queue, *, after_s: float = STRANDED_S) -> list[str]:
    """Put back at the front of the queue the jobs a worker took but never started (see :data:`STRANDED_S`).

    A worker moves a job from the queue to RQ's intermediate list, then marks it started; one killed in
    between leaves it there, where RQ's own clean-up (a worker's maintenance, every 10 minutes) would
    fail it. Returns the ids put back.
    """
    stranded = queue.intermediate_queue
    started = StartedJobRegistry(queue=queue)
    back = []
    for job_id in stranded.get_job_ids():
        if job_id in started:
            continue
        if stranded.set_first_seen(job_id):  # first sighting: a live worker may be starting it right now
            continue
        first = stranded.get_first_seen(job_id)
        if first is None or time.time() - first.timestamp() < after_s:
            continue
        with queue.connection.pipeline() as pipe:
            pipe.lrem(stranded.key, 1, job_id)
            pipe.lpush(queue.key, job_id)
            pipe.delete(stranded.get_first_seen_key(job_id))
            pipe.execute()
        log.warning("job %s was taken off the queue by a worker that stopped before starting it; queued again",
                    job_id)
        back.append(job_id)
    return back


class RQJobRunner:
    """Jobs on an RQ queue in Redis, state and files in the shared data dir.

    Parameters
    ----------
    store : JobStore
    redis_url : str
    queue_name : str
    queue_size : int
        Jobs that may wait, over all web processes and workers.
    result_ttl : float
        Seconds a finished job is kept (files on disk; its RQ record as long).
    max_bytes : int
        Size cap of the data dir.
    cleanup_interval : float
        Seconds between janitor rounds (expiry, size cap, abandoned jobs, failures known only to Redis).
    max_attempts : int
        Starts a job gets when its workers die under it, before it is failed.
    job_timeout : float
        The longest any job may run before RQ stops it; a job's own limit (``time_limit_s``) may be shorter.
    """

    def __init__(self, store: JobStore, redis_url: str, *, queue_name: str = DEFAULT_QUEUE, queue_size: int = 16,
                 result_ttl: float = 3600.0, max_bytes: int = 2 << 30, cleanup_interval: float = 60.0,
                 max_attempts: int = 3, job_timeout: float = 1800.0) -> None:
        self.store = store
        self.connection = connect(redis_url)
        self.queue = Queue(queue_name, connection=self.connection)
        self.queue_size = int(queue_size)
        self.retention = Retention(store, result_ttl=result_ttl, max_bytes=max_bytes)
        self.cleanup_interval = float(cleanup_interval)
        self.max_attempts = int(max_attempts)
        self.job_timeout = int(job_timeout)
        self.result_ttl = int(result_ttl)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._janitor, name="senseflosser-rq-janitor", daemon=True)
        self._thread.start()
        log.info("jobs go to RQ queue %r (queue size %d)", self.queue.name, self.queue_size)

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------ queue

    def has_room(self) -> bool:
        try:
            return self.queue.count < self.queue_size
        except RedisError:
            return True  # submit() says what is wrong

    def _enqueue(self, job_id: str, request: dict, *, at_front: bool = False) -> Job:
        retries = self.max_attempts - 1
        # The job stops itself at its limit (app.jobs.task); RQ's own timeout, a little later, is for a job
        # stuck between two progress steps.
        limit = job_limit(request, self.job_timeout) or self.job_timeout
        timeout = int(math.ceil(limit + RQ_TIMEOUT_GRACE_S))
        return self.queue.enqueue_call(
            JOB_FUNCTION, args=(job_id,), job_id=job_id, timeout=timeout, result_ttl=self.result_ttl,
            failure_ttl=self.result_ttl, description=f"senseflosser job {job_id}", at_front=at_front,
            retry=Retry(max=retries) if retries > 0 else None,
        )

    def submit(self, job_id: str, request: dict) -> dict:
        self.retention.make_room()
        state = new_state(job_id, request, RQ_OWNER)
        self.store.write(state)
        try:
            self._enqueue(job_id, request)
            index = self.queue.get_job_position(job_id)
            if index is not None and index >= self.queue_size:
                # Over the global bound: take it out again, unless a worker took it meanwhile.
                if self.connection.lrem(self.queue.key, 0, job_id):
                    Job(job_id, connection=self.connection).delete(remove_from_queue=False)
                    raise QueueFull()
                index = None
        except RedisError as exc:
            log.error("job %s could not be queued: %s", job_id, exc)
            raise QueueFull(UNREACHABLE) from None
        # Taken by a worker already (index None): it was next to start.
        state["position"] = 1 if index is None else index + 1
        log.info("job %s queued on RQ at position %s", job_id, state["position"])
        return state

    def position(self, job_id: str) -> int | None:
        try:
            index = self.queue.get_job_position(job_id)
        except RedisError:
            return None
        return None if index is None else index + 1

    def get(self, job_id: str) -> dict | None:
        state = self.store.read(job_id)
        if state is None or self.retention.expired(state):
            return None
        if state["state"] in ACTIVE and state.get("owner") == RQ_OWNER:
            self._overlay(state)
        return state

    def _overlay(self, state: dict) -> None:
        """Bring a queued or running job's state up to date from Redis (writing failures to disk)."""
        job_id = state["id"]
        try:
            job = Job.fetch(job_id, connection=self.connection)
            status = job.get_status(refresh=False)
        except NoSuchJobError:
            self._lost(state)
            return
        except RedisError:
            state["position"] = None
            return
        if status in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
            state.update(state="queued", position=self.position(job_id), progress=0.0, error=None)
            if state.get("attempts"):
                state["message"] = "waiting in the queue (started again: its worker stopped)"
        elif status == JobStatus.STARTED:
            meta = job.meta or {}
            state.update(state="running", position=None, progress=float(meta.get("progress", 0.0)),
                         message=meta.get("message") or "running")
        elif status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            fresh = self.store.read(job_id)
            if fresh is not None and fresh["state"] not in ACTIVE:
                state.clear()
                state.update(fresh)
                return
            error = (job.meta or {}).get("error") or interrupted_error(int(state.get("attempts") or 0) or 1,
                                                                       "a worker")
            state.update(state="failed", position=None, finished=time.time(), message="failed", error=error)
            self.store.write(state)
            log.warning("job %s failed on RQ: %s", job_id, error)
        elif status == JobStatus.FINISHED:
            fresh = self.store.read(job_id)  # the worker wrote the result just now
            if fresh is not None:
                state.clear()
                state.update(fresh)

    def _lost(self, state: dict) -> None:
        """A job on disk that Redis does not know: enqueue it again if it was waiting long enough."""
        state["position"] = None
        updated = state.get("updated") or state.get("created") or 0.0
        if state["state"] != "queued" or time.time() - updated < LOST_GRACE_S:
            return
        try:
            self._enqueue(state["id"], state.get("request") or {}, at_front=True)
        except RedisError:
            return
        state["message"] = "waiting in the queue (queued again: the queue had lost it)"
        self.store.write(state)
        log.warning("job %s was unknown to Redis: queued again", state["id"])

    def stats(self) -> dict:
        try:
            conn = self.connection
            return {
                "runner": "rq",
                "queue_name": self.queue.name,
                "queued": self.queue.count,
                "running": StartedJobRegistry(queue=self.queue).count,
                "capacity": self.queue_size,
                "completed": int(conn.get(counter_key(self.queue.name, "completed")) or 0),
                "failed": int(conn.get(counter_key(self.queue.name, "failed")) or 0),
                "workers": Worker.count(queue=self.queue),
                "redis": "ok",
                "worker_alive": self.alive,
            }
        except RedisError as exc:
            return {"runner": "rq", "queue_name": self.queue.name, "capacity": self.queue_size,
                    "redis": f"unreachable: {type(exc).__name__}", "worker_alive": self.alive}

    def devices(self) -> dict[str, str]:
        """Devices of the live workers of this queue (worker name -> description)."""
        try:
            live = {w.name for w in Worker.all(queue=self.queue)}
            known = self.connection.hgetall(devices_key(self.queue.name))
        except RedisError:
            return {}
        out = {}
        for name, description in known.items():
            name, description = name.decode(), description.decode()
            if name in live:
                out[name] = description
            else:  # a worker that is gone
                self.connection.hdel(devices_key(self.queue.name), name)
        return out

    def redis_ok(self) -> bool:
        try:
            return bool(self.connection.ping())
        except RedisError:
            return False

    # ------------------------------------------------------------ janitor

    def _janitor(self) -> None:
        while not self._stopping.wait(self.cleanup_interval):
            try:
                self.cleanup()
            except Exception:  # noqa: BLE001
                log.exception("clean-up round failed")

    def cleanup(self) -> None:
        """One janitor round: abandoned jobs, failures known only to Redis, expiry and size cap."""
        try:
            recover_abandoned(self.queue)
            for job_id in self.store.ids():
                state = self.store.read(job_id)
                if state is not None and state["state"] in ACTIVE and state.get("owner") == RQ_OWNER:
                    self._overlay(state)
        except RedisError as exc:
            log.warning("clean-up round without Redis: %s", exc)
        self.retention.expire()
        self.retention.enforce_cap()

    def expire(self) -> list[str]:
        return self.retention.expire()

    def enforce_cap(self) -> list[str]:
        return self.retention.enforce_cap()
