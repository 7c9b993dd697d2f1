"""Job folders and their ``state.json`` under one data dir.

Every job lives in ``<data_dir>/<id>/`` under a random id: ``input/`` holds the
upload, ``out/`` the results and ``state.json`` the job's state, written
atomically. The state on disk is the truth, so any process that mounts the data
dir (a web worker, an RQ worker on another host) can answer for any job, and
finished results survive restarts.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import threading
import time
from pathlib import Path

from .base import STATES, new_job_id, valid_job_id

STATE_FILE = "state.json"


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
        self._written = threading.Condition()

    def wait_for_write(self, timeout: float) -> None:
        """Block until this process writes any job's state, or ``timeout`` seconds pass.

        What a waiting status request sleeps on: a job run in this process (the in-process
        runner) wakes it at once; a change written elsewhere (an RQ worker, Redis) is seen
        when the timeout ends and the request looks again.
        """
        with self._written:
            self._written.wait(timeout)

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
        with self._written:
            self._written.notify_all()

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
