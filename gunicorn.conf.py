"""gunicorn settings for the senseflosser web demo (``gunicorn -c gunicorn.conf.py wsgi:app``).

Sized for inference: few worker processes (each loads every model and runs one
job at a time on its inference thread), a handful of threads each for the
light requests (status long polls, each holding a thread for up to 10 s; audio
range requests), a long timeout.

This file runs in the gunicorn master: it must not import the app, TensorFlow
or the models. ``preload_app`` stays off so every worker loads the models
itself, after the fork.

Environment: ``HOST`` [127.0.0.1], ``PORT`` [8000], ``SENSEFLOSSER_WORKERS``
[2 on machines with 4 or more cores, else 1], ``SENSEFLOSSER_WORKER_THREADS``
[8], ``SENSEFLOSSER_TIMEOUT`` [120], ``SENSEFLOSSER_FORWARDED_ALLOW_IPS``
[127.0.0.1], ``SENSEFLOSSER_LOG_LEVEL`` [info].
"""

import os


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, got {raw!r}") from None
    if value < 1:
        raise SystemExit(f"{name} must be at least 1, got {value}")
    return value


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_host = os.environ.get("HOST", "127.0.0.1")
_port = _int("PORT", 8000)
bind = [f"[{_host}]:{_port}" if ":" in _host else f"{_host}:{_port}"]

workers = _int("SENSEFLOSSER_WORKERS", 2 if (os.cpu_count() or 1) >= 4 else 1)
worker_class = "gthread"
threads = _int("SENSEFLOSSER_WORKER_THREADS", 8)
preload_app = False
timeout = _int("SENSEFLOSSER_TIMEOUT", 120)
graceful_timeout = 30
keepalive = 5
# Never restart workers on a request count: a restart interrupts the running job.
max_requests = 0

# Heartbeat files in memory (Docker's /tmp may be an overlay on a slow disk).
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

forwarded_allow_ips = os.environ.get("SENSEFLOSSER_FORWARDED_ALLOW_IPS", "127.0.0.1")
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190

# No control socket: its default path ($HOME/.gunicorn/gunicorn.ctl) is shared by every
# gunicorn of the user (tests, load test and server would fight over it), and the app
# needs no runtime management beyond signals.
control_socket_disable = True

accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("SENSEFLOSSER_LOG_LEVEL", "info")
capture_output = False
proc_name = "senseflosser"
