"""Start and stop the servers the benchmarks, the load test and the tests need, on loopback only.

One helper for all of them:

- :class:`Server`: a process (gunicorn with the web app, or a model-warm worker)
  with its log file, started in its own session, stopped with SIGTERM (then
  SIGKILL to its whole group), or killed outright for fault tests;
- :func:`gunicorn` and :func:`worker`: the two kinds, with the environment
  they need (models dir, data dir, Redis URL, ...);
- :class:`RedisServer`: a throw-away ``redis-server`` on a free loopback port,
  without persistence;
- :func:`free_port` and :func:`wait_healthy`.

Nothing here talks to anything but 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a server the caller starts right away)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(server: subprocess.Popen, base: str, timeout: float, *, poll_s: float = 0.1) -> dict[str, Any]:
    """Wait until a server started as ``server`` answers ``GET {base}/healthz`` with 200.

    Returns
    -------
    dict
        The health report.

    Raises
    ------
    RuntimeError
        If the process exits first or ``timeout`` seconds pass.
    """
    import requests

    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with status {server.returncode}")
        try:
            r = requests.get(f"{base}/healthz", timeout=5)
            if r.status_code == 200:
                return r.json()
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server did not answer /healthz within {timeout:g} s")
        time.sleep(poll_s)


class Server:
    """A server process with its log file; a context manager that stops it on exit.

    Parameters
    ----------
    cmd : list of str
    env : mapping
        Added to this process's environment.
    log_path : pathlib.Path
        stdout and stderr go here (appended).
    base : str
        ``http://127.0.0.1:<port>`` for a web server, ``""`` otherwise.
    """

    def __init__(self, cmd: list[str], env: Mapping[str, str], log_path: Path, base: str = "") -> None:
        self.cmd, self.env, self.log_path, self.base = list(cmd), dict(env), Path(log_path), base
        self.proc: subprocess.Popen | None = None

    def start(self) -> Server:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"), **self.env}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_healthy(self, timeout: float = 300.0, poll_s: float = 0.2) -> dict[str, Any]:
        """For a web server: wait for ``/healthz`` (RuntimeError with the log's tail if it never comes)."""
        assert self.proc is not None and self.base
        try:
            return wait_healthy(self.proc, self.base, timeout, poll_s=poll_s)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; log {self.log_path}:\n{self.log()}") from None

    def wait_log(self, text: str, timeout: float = 300.0) -> None:
        """Wait until ``text`` appears in the log (a worker says it is ready)."""
        deadline = time.monotonic() + timeout
        while text not in self.log(100_000):
            if not self.running():
                raise RuntimeError(f"{self.cmd[:4]} exited with status {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{text!r} not in the log within {timeout:g} s:\n{self.log()}")
            time.sleep(0.2)

    def log(self, tail: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL the process (a crash: nothing of it runs any clean-up)."""
        if self.running():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, then SIGKILL to the process group after ``timeout``; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    def __enter__(self) -> Server:
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def app_env(models_dir: Path | str, data_dir: Path | str, *, redis_url: str = "",
            **settings: Any) -> dict[str, str]:
    """``SENSEFLOSSER_*`` variables for a web server or worker: ``settings`` as ``KEY=value``."""
    env = {"SENSEFLOSSER_MODELS_DIR": str(models_dir), "SENSEFLOSSER_DATA_DIR": str(data_dir),
           "SENSEFLOSSER_REDIS_URL": redis_url}
    for key, value in settings.items():
        env[f"SENSEFLOSSER_{key.upper()}"] = str(value)
    return env


def gunicorn(models_dir: Path | str, data_dir: Path | str, log_path: Path, *, workers: int = 1,
             redis_url: str = "", extra_env: Mapping[str, str] | None = None, **settings: Any) -> Server:
    """gunicorn with the web app on a free loopback port (not started yet)."""
    port = free_port()
    env = {**app_env(models_dir, data_dir, redis_url=redis_url, **settings), "HOST": "127.0.0.1",
           "PORT": str(port), "SENSEFLOSSER_WORKERS": str(workers), **(extra_env or {})}
    env.setdefault("SENSEFLOSSER_RATE_LIMIT", "100000/minute")
    cmd = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "wsgi:app"]
    return Server(cmd, env, log_path, base=f"http://127.0.0.1:{port}")


WORKER_READY = "ready: models"
"""What a worker logs once its models are warm and it takes jobs."""


def worker(models_dir: Path | str, data_dir: Path | str, log_path: Path, *, redis_url: str,
           name: str | None = None, extra_env: Mapping[str, str] | None = None, **settings: Any) -> Server:
    """A model-warm RQ worker (``python -m app.worker``; not started yet)."""
    env = {**app_env(models_dir, data_dir, redis_url=redis_url, **settings), **(extra_env or {})}
    cmd = [sys.executable, "-m", "app.worker"] + (["--name", name] if name else [])
    return Server(cmd, env, log_path)


class RedisServer:
    """``redis-server`` on a free loopback port, no persistence, for one test session or benchmark."""

    def __init__(self, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("redis-server") is not None

    def start(self, timeout: float = 20.0) -> RedisServer:
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--protected-mode", "yes", "--loglevel", "warning"]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            if self.log_path:
                out.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with status {self.proc.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on port {self.port} within {timeout:g} s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
