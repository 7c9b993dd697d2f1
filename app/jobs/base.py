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
JOB_ID_RE = re.compile(r"[A-Za-z0-9_-]{22}")
"""A job id, matched whole (:func:`re.fullmatch`: ``$`` alone would let a trailing newline through)."""

RQ_OWNER = "rq"
"""The ``owner`` of a job queued on RQ (the in-process runner never takes such a job over)."""

Progress = Callable[[float, str], None]
Execute = Callable[[str, dict, Progress], dict]
"""``execute(job_id, state, progress) -> manifest``; raises :class:`JobFailed` for user errors."""

PROGRESS_EVERY_S = 0.2
"""A runner writes a running job's progress at most this often (each write is a file or a Redis round trip)."""


class Milestone(str):
    """A progress message a waiting page must learn of at once (the audio is playable): never held back."""


class ProgressThrottle:
    """When a runner writes a progress step: at most every :data:`PROGRESS_EVERY_S`, but a
    :class:`Milestone` at once.

    A step at 100 % is not forced through: the job's end is written right after it (``done``, at
    100 %), and a write just before that only made a waiting page ask once more before it learnt
    of the end."""

    def __init__(self, every_s: float = PROGRESS_EVERY_S) -> None:
        self.every_s = every_s
        self.last = float("-inf")

    def due(self, message: str) -> bool:
        now = time.monotonic()
        if now - self.last < self.every_s and not isinstance(message, Milestone):
            return False
        self.last = now
        return True


class QueueFull(Exception):
    """The queue has no room for another job (or cannot take one now: ``str(exc)`` says why)."""


class StorageFull(Exception):
    """The data dir is at its size cap and nothing can be evicted."""


class JobFailed(Exception):
    """A job failed for a reason its user can act on; ``str(exc)`` is a plain sentence."""


USER_ERRORS: tuple[type[BaseException], ...] = (JobFailed, SenseflosserError)
"""What a job raises for a reason its user can fix: its message is the job's error, with no traceback logged."""


class JobTimeout(JobFailed):
    """A job ran past its time limit (raised at its next progress step); ``str(exc)`` says so."""


def time_limit(*, seconds: float, passes: int, base: float, per_audio: float, most: float) -> float:
    """How long a job may run: ``base`` plus ``per_audio`` for each second of audio of each pass, at most ``most``.

    Parameters
    ----------
    seconds : float
        Length of the segment the job renders.
    passes : int
        Times it runs a model over the segment (the normal output and each magnitude; each cell of a map).
    base, per_audio, most : float
        ``JOB_TIME_BASE_S``, ``JOB_TIME_PER_AUDIO_S`` and ``JOB_TIMEOUT_S``.
    """
    return float(min(most, base + per_audio * max(0.0, seconds) * max(1, passes)))


def job_limit(request: dict, most: float | None) -> float | None:
    """A stored job's time limit: its own (``time_limit_s``, set when it was accepted), at most ``most``."""
    own = request.get("time_limit_s") if isinstance(request, dict) else None
    if isinstance(own, bool) or not isinstance(own, (int, float)) or not own > 0:
        own = None
    limits = [v for v in (own, most) if v]
    return float(min(limits)) if limits else None


def timeout_error(limit: float) -> str:
    """What the user reads when a job was stopped at its time limit."""
    return (f"the job ran longer than its time limit of {limit:.0f} s (set from the length of its audio) and was "
            "stopped; try a shorter segment or fewer magnitudes")


def deadline_progress(progress: Progress, limit: float | None) -> Progress:
    """``progress`` that raises :class:`JobTimeout` once ``limit`` seconds have passed since this call."""
    if not limit:
        return progress
    deadline = time.monotonic() + float(limit)

    def checked(fraction: float, message: str) -> None:
        if time.monotonic() > deadline:
            raise JobTimeout(timeout_error(limit))
        progress(fraction, message)

    return checked


def new_job_id() -> str:
    """A random, URL-safe job id (128 bits)."""
    return secrets.token_urlsafe(16)


def valid_job_id(job_id: Any) -> bool:
    return isinstance(job_id, str) and JOB_ID_RE.fullmatch(job_id) is not None


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
