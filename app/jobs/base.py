"""What every part of the job system shares: states, ids, errors, the runner interface.

A job lives in ``<data_dir>/<id>/`` under a random id (see :mod:`app.jobs.store`);
its ``state.json`` is the truth about it, whichever runner ran it.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol

from senseflosser.errors import SenseflosserError

STATES = ("queued", "running", "done", "failed")
ACTIVE = ("queued", "running")
JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")

RQ_OWNER = "rq"
"""The ``owner`` of a job queued on RQ (the in-process runner never takes such a job over)."""

Progress = Callable[[float, str], None]
Execute = Callable[[str, dict, Progress], dict]
"""``execute(job_id, state, progress) -> manifest``; raises :class:`JobFailed` for user errors."""


class QueueFull(Exception):
    """The queue has no room for another job (or cannot take one now: ``str(exc)`` says why)."""


class StorageFull(Exception):
    """The data dir is at its size cap and nothing can be evicted."""


class JobFailed(Exception):
    """A job failed for a reason its user can act on; ``str(exc)`` is a plain sentence."""


USER_ERRORS: tuple[type[BaseException], ...] = (JobFailed, SenseflosserError)
"""What a job raises for a reason its user can fix: its message is the job's error, with no traceback logged."""


def new_job_id() -> str:
    """A random, URL-safe job id (128 bits)."""
    return secrets.token_urlsafe(16)


def valid_job_id(job_id: Any) -> bool:
    return isinstance(job_id, str) and bool(JOB_ID_RE.match(job_id))


def new_state(job_id: str, request: dict, owner: str) -> dict:
    """The state of a job just accepted into a queue."""
    return {
        "id": job_id,
        "state": "queued",
        "created": time.time(),
        "started": None,
        "finished": None,
        "owner": owner,
        "attempts": 0,
        "position": None,
        "progress": 0.0,
        "message": "waiting in the queue",
        "error": None,
        "request": request,
        "manifest": None,
    }


def internal_error(exc: BaseException) -> str:
    """What the user reads when a job crashed (the details go to the log)."""
    return (f"the job failed because of an internal error ({type(exc).__name__}); "
            "it has been logged. Try again, or with a shorter segment")


def interrupted_error(attempts: int, who: str = "the server") -> str:
    """What the user reads when a job was interrupted too often (it may be what crashed the workers)."""
    return (f"{who} stopped while this job was running ({attempts} times); "
            "it was not started again. Try a shorter segment or fewer magnitudes")


UNSAVED_RESULT = ("the job's result could not be saved (an internal error; it has been logged). "
                  "Try again in a while")


class JobRunner(Protocol):
    """What the views need from a job backend (:class:`~app.jobs.local.LocalJobRunner` or
    :class:`~app.jobs.rq_runner.RQJobRunner`)."""

    def start(self) -> None:
        """Start working (and take over jobs left by dead processes)."""

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking jobs; queued jobs stay queued for the next runner."""

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

    def cleanup(self) -> None:
        """One janitor round (expiry, size cap, recovery of interrupted jobs)."""
