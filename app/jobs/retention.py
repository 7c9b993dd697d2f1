"""Retention: finished jobs expire after their lifetime, and the data dir keeps under its size cap.

Used by both runners (the in-process one in its janitor thread, the RQ one in the
web process's janitor thread). Deleting a job folder twice is harmless, so several
processes may run it on one data dir.
"""

from __future__ import annotations

import logging
import time

from .base import ACTIVE, StorageFull
from .store import JobStore

log = logging.getLogger(__name__)

ORPHAN_GRACE_S = 600.0
"""A job folder without a readable state this old is debris of an interrupted upload."""


class Retention:
    """Expiry and size cap of one data dir.

    Parameters
    ----------
    store : JobStore
    result_ttl : float
        Seconds a finished job is kept.
    max_bytes : int
        Size cap of the data dir.
    """

    def __init__(self, store: JobStore, *, result_ttl: float, max_bytes: int) -> None:
        self.store = store
        self.result_ttl = float(result_ttl)
        self.max_bytes = int(max_bytes)

    def expired(self, state: dict, now: float | None = None) -> bool:
        """Whether a finished job is past its lifetime (it reads as gone even before it is deleted)."""
        finished = state.get("finished")
        now = time.time() if now is None else now
        return (state["state"] not in ACTIVE and isinstance(finished, (int, float))
                and finished + self.result_ttl < now)

    def make_room(self) -> None:
        """Before a new job is accepted: evict old results if over the cap.

        Raises :class:`StorageFull` if the cap cannot be met.
        """
        if self.store.usage() > self.max_bytes:
            self.enforce_cap()
            if self.store.usage(max_age=0) > self.max_bytes:
                raise StorageFull()

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
            elif self.expired(state, now):
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
