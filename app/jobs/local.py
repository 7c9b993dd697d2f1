"""The in-process job runner: a bounded queue and one inference thread per process.

The embedded default (``make run``, no services): each web worker process runs
its own queue, plus a janitor thread that deletes expired results, keeps the
data dir under its size cap (:mod:`app.jobs.retention`) and takes over the jobs
of worker processes that died.

Which process owns a job is recorded in its state as the owner's token; the
owner holds an exclusive ``flock`` on ``.runners/<token>.lock`` for as long as
it lives. The kernel drops that lock when the process dies, even by SIGKILL, so
a lock that can be taken marks a dead owner whose queued and running jobs are
re-queued (or failed after ``max_attempts`` starts). Jobs queued on RQ (owner
``rq``) are never taken over: their workers may still be running them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from .base import (ACTIVE, RQ_OWNER, UNSAVED_RESULT, USER_ERRORS, Execute, ProgressThrottle, QueueFull,
                   deadline_progress, internal_error, interrupted_error, job_limit, new_state)
from .retention import Retention
from .store import JobStore

log = logging.getLogger(__name__)

_TOKEN_RE = re.compile(r"[0-9a-f]{16}")
RUNNERS_DIR = ".runners"


class LocalJobRunner:
    """A bounded queue served by one inference thread in this process.

    Parameters
    ----------
    store : JobStore
    execute : callable
        ``execute(job_id, state, progress) -> manifest``: does the work.
    queue_size : int
        Jobs that may wait (the running one not counted).
    result_ttl : float
        Seconds a finished job is kept.
    max_bytes : int
        Size cap of the data dir.
    cleanup_interval : float
        Seconds between janitor rounds.
    max_attempts : int
        Starts a job gets before a crash-interrupted run is failed instead of retried.
    job_timeout : float or None
        The longest any job may run; a job's own limit (``time_limit_s`` in its request) may be shorter.
        A job past its limit is stopped at its next progress step and failed with a message.
    """

    def __init__(
        self,
        store: JobStore,
        execute: Execute,
        *,
        queue_size: int = 16,
        result_ttl: float = 3600.0,
        max_bytes: int = 2 << 30,
        cleanup_interval: float = 60.0,
        max_attempts: int = 3,
        job_timeout: float | None = None,
    ) -> None:
        self.store = store
        self.execute = execute
        self.queue_size = int(queue_size)
        self.retention = Retention(store, result_ttl=result_ttl, max_bytes=max_bytes)
        self.cleanup_interval = float(cleanup_interval)
        self.max_attempts = int(max_attempts)
        self.job_timeout = job_timeout
        self.token = secrets.token_hex(8)
        self._queue: deque[str] = deque()
        self._current: str | None = None
        # Lock order: the cross-process claim lock, then _write_lock, then _cv.
        self._cv = threading.Condition()
        self._write_lock = threading.RLock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock_fd: int | None = None
        self._runners_dir = store.root / RUNNERS_DIR
        self.completed = 0
        self.failed = 0

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._threads:
            return
        self._acquire_lock()
        self.recover()
        for name, target in (("senseflosser-inference", self._work), ("senseflosser-janitor", self._janitor)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("job runner %s started (pid %d, queue size %d)", self.token, os.getpid(), self.queue_size)

    def _acquire_lock(self) -> None:
        """Hold this runner's lock file for as long as the process lives (marks it alive)."""
        if self._lock_fd is not None:
            return
        self._runners_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._runners_dir / f"{self.token}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def stop(self, timeout: float | None = 5.0) -> None:
        self._stopping.set()
        with self._cv:
            self._cv.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._runners_dir / f"{self.token}.lock")
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    # ------------------------------------------------------------ queue

    def has_room(self) -> bool:
        with self._cv:
            return len(self._queue) < self.queue_size

    def submit(self, job_id: str, request: dict) -> dict:
        self.retention.make_room()
        state = new_state(job_id, request, self.token)
        with self._write_lock, self._cv:  # always this order: _write_lock, then _cv
            if len(self._queue) >= self.queue_size:
                raise QueueFull()
            state["position"] = len(self._queue) + 1
            self.store.write(state)
            self._queue.append(job_id)
            self._cv.notify()
        log.info("job %s queued at position %d", job_id, state["position"])
        return state

    def position(self, job_id: str) -> int | None:
        with self._cv:
            try:
                return self._queue.index(job_id) + 1
            except ValueError:
                pass
        state = self.store.read(job_id)
        if state is not None and state["state"] == "queued":
            return state.get("position")
        return None

    def get(self, job_id: str) -> dict | None:
        state = self.store.read(job_id)
        if state is None:
            return None
        if self.retention.expired(state):
            return None
        if state["state"] == "queued" and state.get("owner") == self.token:
            state["position"] = self.position(job_id)
        return state

    def stats(self) -> dict:
        with self._cv:
            return {
                "runner": "local",
                "queued": len(self._queue),
                "running": self._current is not None,
                "capacity": self.queue_size,
                "completed": self.completed,
                "failed": self.failed,
                "worker_alive": self.alive,
            }

    # ------------------------------------------------------------ work

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stopping.is_set():
                    self._cv.wait()
                if self._stopping.is_set():
                    return
                job_id = self._queue.popleft()
                self._current = job_id
            try:
                self._publish_positions()
                self._run(job_id)
            except Exception:  # the worker must outlive anything a job does
                log.exception("job %s: unexpected error in the job runner", job_id)
            finally:
                with self._cv:
                    self._current = None

    def _publish_positions(self) -> None:
        """Write the current queue positions into the waiting jobs' states (for other processes)."""
        with self._cv:
            waiting = list(self._queue)
        for i, job_id in enumerate(waiting, start=1):
            with self._write_lock:
                state = self.store.read(job_id)
                if state is not None and state["state"] == "queued" and state.get("position") != i:
                    state["position"] = i
                    self.store.write(state)

    def _run(self, job_id: str) -> None:
        with self._write_lock:
            state = self.store.read(job_id)
            if state is None or state["state"] != "queued" or state.get("owner") != self.token:
                return
            state.update(state="running", started=time.time(), position=None, progress=0.0,
                         message="starting", attempts=int(state.get("attempts", 0)) + 1)
            self.store.write(state)
        log.info("job %s started (attempt %d)", job_id, state["attempts"])
        throttle = ProgressThrottle()

        def progress(fraction: float, message: str) -> None:
            fraction = min(1.0, max(float(state["progress"]), float(fraction)))
            if not throttle.due(message):
                state["progress"], state["message"] = fraction, str(message)
                return
            with self._write_lock:
                state["progress"], state["message"] = fraction, str(message)
                if self._still_mine(job_id):
                    self.store.write(state)

        t0 = time.monotonic()
        try:
            limit = job_limit(state["request"], self.job_timeout)
            manifest = self.execute(job_id, dict(state), deadline_progress(progress, limit))
        except USER_ERRORS as exc:
            self._finish(state, error=str(exc))
            log.info("job %s failed: %s", job_id, exc)
        except BaseException as exc:  # SystemExit raised by a library included: the worker goes on
            log.exception("job %s crashed", job_id)
            self._finish(state, error=internal_error(exc))
        else:
            self._finish(state, manifest=manifest)
            log.info("job %s done in %.1f s", job_id, time.monotonic() - t0)

    def _finish(self, state: dict, *, manifest: dict | None = None, error: str | None = None) -> None:
        # The job's outputs are on disk now: the next submission must see them against the size cap.
        self.store.forget_usage()
        with self._write_lock:
            if not self._still_mine(state["id"]):
                log.warning("job %s was deleted or taken over while it ran; result dropped", state["id"])
                return
            state.update(finished=time.time(), position=None)
            if error is None:
                state.update(state="done", progress=1.0, message="done", manifest=manifest, error=None)
                self.completed += 1  # counted before a reader can see "done" on disk
                try:
                    self.store.write(state)
                except (TypeError, ValueError, OSError):
                    # An unwritable result (not JSON, or the disk is full) must not leave the job
                    # "running" for ever: record it as failed if at all possible.
                    log.exception("job %s: its result could not be recorded", state["id"])
                    error = UNSAVED_RESULT
                    state.update(manifest=None, progress=0.0)
                    self.completed -= 1
                else:
                    return
            state.update(state="failed", message="failed", error=error)
            self.failed += 1
            self.store.write(state)

    def _still_mine(self, job_id: str) -> bool:
        """Whether the job still exists and is still ours (not taken over after a stall)."""
        current = self.store.read(job_id)
        return current is not None and current.get("owner") == self.token

    # ------------------------------------------------------------ janitor

    def _janitor(self) -> None:
        while not self._stopping.wait(self.cleanup_interval):
            try:
                self.cleanup()
            except Exception:
                log.exception("clean-up round failed")

    def cleanup(self) -> None:
        """One janitor round: take over orphaned jobs, delete expired ones, enforce the size cap."""
        self.recover()
        self.expire()
        self.enforce_cap()

    def expire(self) -> list[str]:
        """Delete finished jobs past their lifetime (see :class:`~app.jobs.retention.Retention`)."""
        return self.retention.expire()

    def enforce_cap(self) -> list[str]:
        """Delete the oldest finished jobs until the data dir is under its size cap."""
        return self.retention.enforce_cap()

    @contextlib.contextmanager
    def _claim_lock(self) -> Iterator[None]:
        fd = os.open(self._runners_dir / "claim.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _owner_alive(self, token: Any) -> bool:
        if token == self.token:
            return True
        if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
            return False
        lock = self._runners_dir / f"{token}.lock"
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        else:
            with contextlib.suppress(OSError):
                os.unlink(lock)
            return False
        finally:
            os.close(fd)

    def recover(self) -> list[str]:
        """Take over the queued and running jobs of processes that died.

        Jobs that were waiting are queued here; a job that was running is
        started again unless it has had ``max_attempts`` starts already, in
        which case it is failed with a message (it may be what killed them).
        Recovered jobs may exceed the queue size: they were accepted once.
        """
        self._runners_dir.mkdir(parents=True, exist_ok=True)
        orphans = []
        for job_id in self.store.ids():
            state = self.store.read(job_id)
            if (state is not None and state["state"] in ACTIVE
                    and state.get("owner") not in (self.token, RQ_OWNER)):
                orphans.append((state.get("created") or 0.0, job_id))
        taken = []
        dead: dict[str, bool] = {}
        for _created, job_id in sorted(orphans):
            with self._claim_lock(), self._write_lock:
                state = self.store.read(job_id)
                if state is None or state["state"] not in ACTIVE or state.get("owner") == self.token:
                    continue
                owner = state.get("owner")
                if owner not in dead:
                    dead[owner] = not self._owner_alive(owner)
                if not dead[owner]:
                    continue
                state["owner"] = self.token
                if state["state"] == "running" and int(state.get("attempts", 0)) >= self.max_attempts:
                    state.update(
                        state="failed", finished=time.time(), position=None, message="failed",
                        error=interrupted_error(state["attempts"]))
                    self.store.write(state)
                    log.warning("job %s failed after %d interrupted attempts", job_id, state["attempts"])
                    continue
                was = state["state"]
                state.update(state="queued", progress=0.0, message="waiting in the queue (resumed after a restart)")
                with self._cv:
                    state["position"] = len(self._queue) + 1
                    self.store.write(state)
                    self._queue.append(job_id)
                    self._cv.notify()
                taken.append(job_id)
                log.warning("job %s taken over from a stopped worker (was %s)", job_id, was)
        return taken
