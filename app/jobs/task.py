"""The job function RQ workers run: ``app.jobs.task.run(job_id)``.

The web process enqueues only the job's id; everything else is in the job's folder
in the data dir that every web and worker host mounts. The worker process installs
a :class:`WorkerContext` (its data dir and its warm models, see :mod:`app.worker`)
before it takes jobs, so a job never loads a model.

States on disk are written here: ``running`` (with the attempt count) when the job
starts, ``done`` or ``failed`` when it ends. Progress goes to the RQ job's meta in
Redis only (``progress``, ``message``), where every web process reads it.

A job that raises is failed at once with its error (it is never retried: retries
are for jobs whose worker died, see :mod:`app.jobs.rq_runner`). A worker that
cannot see the job's folder fails it in Redis with a message that says so; the
web process, which can see it, writes that to disk.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field

from .base import (ACTIVE, UNSAVED_RESULT, USER_ERRORS, Execute, JobFailed, ProgressThrottle, deadline_progress,
                   internal_error, job_limit, timeout_error)
from .store import STATE_FILE, JobStore

log = logging.getLogger(__name__)


def counter_key(queue_name: str, what: str) -> str:
    """Redis key of a count of finished jobs (``completed`` or ``failed``) of one queue."""
    return f"senseflosser:{queue_name}:{what}"


def unseen_upload_error(host: str) -> str:
    """What the user reads when the worker that took the job cannot see its folder."""
    return (f"the worker on host {host!r} cannot see this job's upload in its data directory: every web "
            "server and worker must mount the same data directory (SENSEFLOSSER_DATA_DIR); "
            "the operator has to fix this, then the job can be submitted again")


@dataclass
class WorkerContext:
    """What a worker process gives its jobs: the data dir and the function doing the work.

    ``execute(job_id, state, progress) -> manifest`` (the warm engine's render in a
    worker; tests may replace it).
    """

    store: JobStore
    execute: Execute
    host: str = field(default_factory=socket.gethostname)


_context: WorkerContext | None = None
_context_lock = threading.Lock()


def install(context: WorkerContext | None) -> None:
    """Make ``context`` the one the jobs of this process use (``None`` removes it)."""
    global _context
    with _context_lock:
        _context = context


def current() -> WorkerContext:
    if _context is None:
        raise RuntimeError("no worker context: senseflosser jobs run in `python -m app.worker` "
                           "(make worker), which loads the models first")
    return _context


def _no_retry(rq_job, error: str) -> None:
    """Mark the running RQ job as failed for good with ``error`` (read by the web process)."""
    if rq_job is None:
        return
    rq_job.retries_left = 0  # a raising job is not retried (the worker's failure handling reads this)
    rq_job.meta["error"] = error
    try:
        rq_job.save_meta()
    except Exception:  # noqa: BLE001  (Redis gone: the job is failed by the worker or the janitor anyway)
        log.exception("job %s: its error could not be written to Redis", rq_job.id)


def _count(rq_job, what: str, by: int = 1) -> None:
    if rq_job is None:
        return
    try:
        rq_job.connection.incrby(counter_key(rq_job.origin, what), by)
    except Exception:  # noqa: BLE001
        log.warning("job %s: could not count it as %s", rq_job.id, what)


def run(job_id: str) -> str:
    """Run one job in this worker process; returns its final state (``done``/``failed``/``skipped``).

    Raises
    ------
    JobFailed
        When the job's state cannot be read or written here (its failure is then
        recorded in Redis for the web process to show).
    """
    from rq import get_current_job
    from rq.timeouts import JobTimeoutException

    ctx = current()
    rq_job = get_current_job()
    store = ctx.store
    state = store.read(job_id)
    if state is None:
        where = store.path(job_id)
        log.error("job %s: no readable %s in %s: this worker does not see the web servers' data dir",
                  job_id, STATE_FILE, where)
        error = unseen_upload_error(ctx.host)
        _no_retry(rq_job, error)
        raise JobFailed(error)
    if state["state"] not in ACTIVE:
        log.warning("job %s is already %s; not run again", job_id, state["state"])
        return "skipped"
    token = secrets.token_hex(8)
    state.update(state="running", started=time.time(), position=None, progress=0.0, message="starting",
                 attempts=int(state.get("attempts", 0)) + 1, run=token,
                 worker=getattr(rq_job, "worker_name", None) or ctx.host)
    try:
        store.write(state)
    except OSError as exc:
        log.exception("job %s: its state could not be written", job_id)
        _no_retry(rq_job, internal_error(exc))
        raise JobFailed(internal_error(exc)) from None
    log.info("job %s started (attempt %d)", job_id, state["attempts"])

    highest = [0.0]
    throttle = ProgressThrottle()

    def progress(fraction: float, message: str) -> None:
        fraction = min(1.0, max(highest[0], float(fraction)))
        highest[0] = fraction
        if rq_job is None or not throttle.due(message):
            return
        rq_job.meta.update(progress=fraction, message=str(message))
        try:
            rq_job.save_meta()
        except Exception:  # noqa: BLE001  (progress is a courtesy; the job goes on)
            log.warning("job %s: progress could not be written to Redis", job_id)

    t0 = time.monotonic()
    manifest, error = None, None
    try:
        manifest = ctx.execute(job_id, dict(state), deadline_progress(progress, job_limit(state["request"], None)))
    except USER_ERRORS as exc:
        error = str(exc)
        log.info("job %s failed: %s", job_id, exc)
    except JobTimeoutException:  # RQ's own timeout: stuck between two progress steps
        error = timeout_error(job_limit(state["request"], None) or getattr(rq_job, "timeout", 0) or 0)
        log.info("job %s stopped by its time limit", job_id)
    except BaseException as exc:  # SystemExit raised by a library included: the worker goes on
        log.exception("job %s crashed", job_id)
        error = internal_error(exc)
    return _finish(store, rq_job, state, token, manifest, error, time.monotonic() - t0)


def _finish(store: JobStore, rq_job, state: dict, token: str, manifest: dict | None, error: str | None,
            seconds: float) -> str:
    store.forget_usage()
    current_state = store.read(state["id"])
    if current_state is None or current_state.get("run") != token:
        log.warning("job %s was deleted or started again elsewhere while it ran; result dropped", state["id"])
        return "skipped"
    state.update(finished=time.time(), position=None)
    if error is None:
        state.update(state="done", progress=1.0, message="done", manifest=manifest, error=None)
        _count(rq_job, "completed")  # counted before a reader can see "done" on disk
        try:
            store.write(state)
        except (TypeError, ValueError, OSError):
            log.exception("job %s: its result could not be recorded", state["id"])
            error = UNSAVED_RESULT
            state.update(manifest=None, progress=0.0)
            _count(rq_job, "completed", -1)
        else:
            log.info("job %s done in %.1f s", state["id"], seconds)
            return "done"
    state.update(state="failed", message="failed", error=error)
    _count(rq_job, "failed")
    try:
        store.write(state)
    except OSError:
        log.exception("job %s: its failure could not be recorded on disk", state["id"])
        _no_retry(rq_job, error)
        raise JobFailed(error) from None
    return "failed"
