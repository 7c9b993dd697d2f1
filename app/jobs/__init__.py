"""Jobs: storage, retention, the runners and the job function.

- :mod:`app.jobs.base`: states, ids, errors and the :class:`JobRunner` interface;
- :mod:`app.jobs.store`: job folders and their ``state.json`` in the data dir;
- :mod:`app.jobs.retention`: expiry and the data dir's size cap (both runners);
- :mod:`app.jobs.local`: the in-process runner, the embedded default;
- :mod:`app.jobs.rq_runner`: the RQ runner, used when ``SENSEFLOSSER_REDIS_URL`` is set
  (the web side: enqueue, positions and progress from Redis, recovery);
- :mod:`app.jobs.task`: the job function RQ workers run (``app.jobs.task.run``).

The RQ modules import ``rq`` and ``redis``; nothing here imports them until a
runner on Redis is configured, so ``make run`` needs neither.
"""

from __future__ import annotations

from .base import (ACTIVE, JOB_ID_RE, RQ_OWNER, STATES, Execute, JobFailed, JobRunner, JobTimeout, Milestone,
                   Progress, QueueFull, StorageFull, new_job_id, time_limit, valid_job_id)
from .local import LocalJobRunner
from .retention import ORPHAN_GRACE_S, Retention
from .store import STATE_FILE, JobStore

__all__ = ["ACTIVE", "JOB_ID_RE", "ORPHAN_GRACE_S", "RQ_OWNER", "STATES", "STATE_FILE", "Execute", "JobFailed",
           "JobRunner", "JobStore", "JobTimeout", "LocalJobRunner", "Milestone", "Progress", "QueueFull", "Retention", "StorageFull",
           "new_job_id", "time_limit", "valid_job_id"]
