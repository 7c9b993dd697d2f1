"""Jobs: their folders and state on disk, and the runner that works through them.

Every job lives in ``<data_dir>/<id>/`` under a random id: ``input/`` holds the
upload, ``out/`` the results and ``state.json`` the job's state, written
atomically. The state on disk is the truth, so any worker process can answer
for any job, and finished results survive restarts.

:class:`JobRunner` is the interface the views use. :class:`LocalJobRunner` is
the embedded implementation: a bounded queue and one inference thread per
process, plus a janitor thread that deletes expired results, keeps the data
dir under its size cap and takes over the jobs of worker processes that died.

Which process owns a job is recorded in its state as the owner's token; the
owner holds an exclusive ``flock`` on ``.runners/<token>.lock`` for as long as
it lives. The kernel drops that lock when the process dies, even by SIGKILL, so
a lock that can be taken marks a dead owner whose queued and running jobs are
re-queued (or failed after ``max_attempts`` starts).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

STATES = ("queued", "running", "done", "failed")
ACTIVE = ("queued", "running")
JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")
_TOKEN_RE = re.compile(r"^[0-9a-f]{16}$")
STATE_FILE = "state.json"
RUNNERS_DIR = ".runners"
# A job folder without a readable state this old is debris of an interrupted upload.
ORPHAN_GRACE_S = 600.0

Progress = Callable[[float, str], None]
Execute = Callable[[str, dict, Progress], dict]
"""``execute(job_id, state, progress) -> manifest``; raises :class:`JobFailed` for user errors."""


class QueueFull(Exception):
    """The queue has no room for another job."""


class StorageFull(Exception):
    """The data dir is at its size cap and nothing can be evicted."""


class JobFailed(Exception):
    """A job failed for a reason its user can act on; ``str(exc)`` is a plain sentence."""


def new_job_id() -> str:
    """A random, URL-safe job id (128 bits)."""
    return secrets.token_urlsafe(16)


def valid_job_id(job_id: Any) -> bool:
    return isinstance(job_id, str) and bool(JOB_ID_RE.match(job_id))


class JobStore:
    """Job folders and their ``state.json`` under one root folder.

    Parameters
    ----------
    root : pathlib.Path
        The data dir; created if missing.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._usage: tuple[float, int] | None = None

    def create(self) -> tuple[str, Path]:
        """Make a new, empty job folder under a fresh random id."""
        while True:
            job_id = new_job_id()
            path = self.root / job_id
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return job_id, path

    def path(self, job_id: str) -> Path | None:
        """The folder of a job, or ``None`` for an id that cannot be one."""
        return self.root / job_id if valid_job_id(job_id) else None

    def ids(self) -> list[str]:
        """Ids of every job folder."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return [n for n in names if valid_job_id(n)]

    def read(self, job_id: str) -> dict | None:
        """The state of a job, or ``None`` if there is no such job (or its state is unreadable)."""
        path = self.path(job_id)
        if path is None:
            return None
        try:
            state = json.loads((path / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) and state.get("state") in STATES else None

    def write(self, state: dict) -> None:
        """Write a job's state atomically (a reader sees the old or the new state, never half)."""
        path = self.path(state["id"])
        if path is None:
            raise ValueError(f"invalid job id {state['id']!r}")
        state["updated"] = time.time()
        tmp = path / f".{STATE_FILE}.{secrets.token_hex(4)}.tmp"
        data = json.dumps(state, indent=1, allow_nan=False).encode()
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path / STATE_FILE)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def delete(self, job_id: str) -> None:
        path = self.path(job_id)
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)
            self._usage = None

    def forget_usage(self) -> None:
        """Drop the cached size measurement (files were just added)."""
        self._usage = None

    def usage(self, max_age: float = 1.0) -> int:
        """Bytes used under the root (measured at most every ``max_age`` seconds)."""
        now = time.monotonic()
        if self._usage is not None and now - self._usage[0] < max_age:
            return self._usage[1]
        total = 0
        stack = [str(self.root)]
        while stack:
            try:
                with os.scandir(stack.pop()) as it:
                    for entry in it:
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                stack.append(entry.path)
                            elif entry.is_file(follow_symlinks=False):
                                total += entry.stat(follow_symlinks=False).st_size
                        except OSError:
                            continue
            except OSError:
                continue
        self._usage = (now, total)
        return total


class JobRunner(Protocol):
    """What the views need from a job backend (embedded now, distributed later)."""

    def start(self) -> None:
        """Start working (and take over jobs left by dead processes)."""

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking jobs; queued jobs stay on disk for the next runner."""

    def has_room(self) -> bool:
        """Whether :meth:`submit` would accept a job now."""

    def submit(self, job_id: str, request: dict) -> dict:
        """Queue a job whose folder already holds its input; return its state.

        Raises :class:`QueueFull` or :class:`StorageFull`.
        """

    def get(self, job_id: str) -> dict | None:
        """The job's state (with a current ``position`` while queued), or ``None``."""

    def position(self, job_id: str) -> int | None:
        """1-based place in the queue (1 = next to start), or ``None`` if not waiting."""

    def stats(self) -> dict:
        """Queue figures for the health report."""


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
        max_attempts: int = 2,
    ) -> None:
        self.store = store
        self.execute = execute
        self.queue_size = int(queue_size)
        self.result_ttl = float(result_ttl)
        self.max_bytes = int(max_bytes)
        self.cleanup_interval = float(cleanup_interval)
        self.max_attempts = int(max_attempts)
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
        if self.store.usage() > self.max_bytes:
            self.enforce_cap()
            if self.store.usage(max_age=0) > self.max_bytes:
                raise StorageFull()
        now = time.time()
        state = {
            "id": job_id,
            "state": "queued",
            "created": now,
            "started": None,
            "finished": None,
            "owner": self.token,
            "attempts": 0,
            "position": None,
            "progress": 0.0,
            "message": "waiting in the queue",
            "error": None,
            "request": request,
            "manifest": None,
        }
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
        if self._expired(state, time.time()):
            return None
        if state["state"] == "queued" and state.get("owner") == self.token:
            state["position"] = self.position(job_id)
        return state

    def stats(self) -> dict:
        with self._cv:
            return {
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
        last_write = [0.0]

        def progress(fraction: float, message: str) -> None:
            fraction = min(1.0, max(float(state["progress"]), float(fraction)))
            now = time.monotonic()
            if now - last_write[0] < 0.2 and fraction < 1.0:
                state["progress"], state["message"] = fraction, str(message)
                return
            last_write[0] = now
            with self._write_lock:
                state["progress"], state["message"] = fraction, str(message)
                if self._still_mine(job_id):
                    self.store.write(state)

        t0 = time.monotonic()
        try:
            manifest = self.execute(job_id, dict(state), progress)
        except JobFailed as exc:
            self._finish(state, error=str(exc))
            log.info("job %s failed: %s", job_id, exc)
        except BaseException as exc:  # SystemExit raised by a library included: the worker goes on
            log.exception("job %s crashed", job_id)
            self._finish(state, error=(
                f"the job failed because of an internal error ({type(exc).__name__}); "
                "it has been logged. Try again, or with a shorter segment"))
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
                try:
                    self.store.write(state)
                except (TypeError, ValueError, OSError):
                    # An unwritable result (not JSON, or the disk is full) must not leave the job
                    # "running" for ever: record it as failed if at all possible.
                    log.exception("job %s: its result could not be recorded", state["id"])
                    error = ("the job's result could not be saved (an internal error; it has been logged). "
                             "Try again in a while")
                    state.update(manifest=None, progress=0.0)
                else:
                    self.completed += 1
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

    def _expired(self, state: dict, now: float) -> bool:
        finished = state.get("finished")
        return (state["state"] not in ACTIVE and isinstance(finished, (int, float))
                and finished + self.result_ttl < now)

    def expire(self) -> list[str]:
        """Delete finished jobs older than the result lifetime, and debris of broken uploads."""
        now = time.time()
        gone = []
        for job_id in self.store.ids():
            state = self.store.read(job_id)
            if state is None:
                path = self.store.path(job_id)
                try:
                    age = now - path.stat().st_mtime
                except OSError:
                    continue
                if age > max(ORPHAN_GRACE_S, self.result_ttl):
                    self.store.delete(job_id)
                    gone.append(job_id)
            elif self._expired(state, now):
                self.store.delete(job_id)
                gone.append(job_id)
        if gone:
            log.info("deleted %d expired job(s)", len(gone))
        return gone

    def enforce_cap(self) -> list[str]:
        """Delete the oldest finished jobs until the data dir is under its size cap."""
        if self.store.usage(max_age=0) <= self.max_bytes:
            return []
        finished = []
        for job_id in self.store.ids():
            state = self.store.read(job_id)
            if state is not None and state["state"] not in ACTIVE:
                finished.append((state.get("finished") or 0.0, job_id))
        gone = []
        for _when, job_id in sorted(finished):
            if self.store.usage(max_age=0) <= self.max_bytes:
                break
            self.store.delete(job_id)
            gone.append(job_id)
        if gone:
            log.warning("data dir over its size cap: deleted %d finished job(s) early", len(gone))
        return gone

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
        if not isinstance(token, str) or not _TOKEN_RE.match(token):
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
            if state is not None and state["state"] in ACTIVE and state.get("owner") != self.token:
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
                        error=(f"the server stopped while this job was running ({state['attempts']} times); "
                               "it was not started again. Try a shorter segment or fewer magnitudes"))
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
