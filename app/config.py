"""Configuration: defaults, then ``SENSEFLOSSER_*`` environment variables, then test config.

Every setting has a default here. :func:`from_environment` reads the matching
``SENSEFLOSSER_<KEY>`` variable and converts it to the default's type, so a typo
such as ``SENSEFLOSSER_QUEUE_SIZE=many`` stops the start with a clear message
instead of surfacing later as a 500.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# key -> (default, help). A default of None means "derived at start" (see resolve()).
DEFAULTS: dict[str, tuple[Any, str]] = {
    "MODELS_DIR": (None, "model registry folder [models/ of this checkout]"),
    "DATA_DIR": (None, "job folders (uploads, results, state) [instance/jobs]"),
    "MAX_UPLOAD_MB": (50.0, "largest accepted upload in MiB"),
    "MAX_MODEL_MB": (50.0, "largest accepted uploaded model file (model_file) in MiB; larger gets 413"),
    "MAX_MODEL_PARAMS": (20_000_000, "most parameters an uploaded model may have"),
    "MAX_DURATION_S": (600.0, "longest audio segment a job may process, in seconds"),
    "QUEUE_SIZE": (16, "jobs that may wait (per web worker process; with Redis, in all); more get 503"),
    "RESULT_TTL_S": (3600.0, "seconds a finished job's files are kept"),
    "MAX_DATA_MB": (2048.0, "size cap of the data dir in MiB; oldest results go first"),
    "CLEANUP_INTERVAL_S": (60.0, "seconds between clean-up rounds (expiry, size cap, recovery)"),
    "MAX_ATTEMPTS": (3, "times a job interrupted by a crash (a worker killed) is started before it is failed"),
    "RATE_LIMIT": ("30/minute", "job submissions per client address (Flask-Limiter syntax)"),
    "RATELIMIT_STORAGE_URI": ("", "Flask-Limiter storage [REDIS_URL if set, else memory:// (per process)]"),
    "REDIS_URL": ("", "Redis URL; set, jobs go to RQ and `make worker` processes run them [in-process runner]"),
    "QUEUE_NAME": ("senseflosser", "RQ queue name (web servers and workers of one site share it)"),
    "JOB_TIMEOUT_S": (1800, "the longest any job may run, in seconds, whatever its length (both runners)"),
    "JOB_TIME_BASE_S": (120.0, "seconds every job may run (start-up, files), plus JOB_TIME_PER_AUDIO_S"),
    "JOB_TIME_PER_AUDIO_S": (20.0, "seconds a job may run per second of audio per pass (the normal output, "
                                   "each magnitude, each layer of a map); a job past its limit is stopped"),
    "WORKER_HEARTBEAT_S": (5.0, "seconds between a worker's heartbeats of its running job"),
    "WORKER_DEAD_AFTER_S": (60.0, "seconds without a heartbeat after which a job's worker counts as dead"),
    "RETRY_AFTER_S": (30, "Retry-After seconds sent with 503 when the queue is full"),
    "SECRET_KEY": ("", "secret key; a random one is generated per process when unset"),
    "TRUSTED_ORIGINS": ("", "extra origins (scheme://host:port, comma-separated) allowed to post"),
    "TRUSTED_PROXIES": (0, "reverse proxies in front of the app whose X-Forwarded-* to trust"),
    "WARM_UP": (True, "load and warm up every model when the worker starts"),
    "SPECTROGRAMS": (True, "draw a spectrogram image for every output"),
    "POLL_INTERVAL_MS": (1000, "how long the page waits before asking for a job's state again after a "
                                "failed request (status requests otherwise wait for a change: a long poll)"),
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A setting has a value the app cannot run with."""


def parse_bool(text: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off/''`` (any case) to a bool; else ValueError."""
    t = str(text).strip().lower()
    if t in _TRUE:
        return True
    if t in _FALSE:
        return False
    raise ValueError(text)


def _convert(key: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            return parse_bool(raw)
        if isinstance(default, int):
            return int(raw.strip())
        if isinstance(default, float):
            value = float(raw.strip())
            if not math.isfinite(value):
                raise ValueError(raw)
            return value
    except ValueError:
        kind = {bool: "1 or 0", int: "a whole number", float: "a number"}[type(default)]
        raise ConfigError(f"SENSEFLOSSER_{key} must be {kind}, got {raw!r}") from None
    return raw


def from_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings given as ``SENSEFLOSSER_<KEY>`` environment variables, converted."""
    environ = os.environ if environ is None else environ
    found: dict[str, Any] = {}
    for key, (default, _help) in DEFAULTS.items():
        raw = environ.get(f"SENSEFLOSSER_{key}")
        if raw is None:
            continue
        found[key] = raw if default is None else _convert(key, raw, default)
    return found


def resolve(config: dict[str, Any], instance_path: str) -> None:
    """Fill derived settings in place and check ranges.

    Raises
    ------
    ConfigError
        If a setting is out of range.
    """
    config["MODELS_DIR"] = Path(config.get("MODELS_DIR") or PROJECT_ROOT / "models")
    config["DATA_DIR"] = Path(config.get("DATA_DIR") or Path(instance_path) / "jobs")
    positive = ("MAX_UPLOAD_MB", "MAX_MODEL_MB", "MAX_MODEL_PARAMS", "MAX_DURATION_S", "QUEUE_SIZE",
                "RESULT_TTL_S", "MAX_DATA_MB", "CLEANUP_INTERVAL_S", "MAX_ATTEMPTS", "RETRY_AFTER_S",
                "POLL_INTERVAL_MS", "JOB_TIMEOUT_S", "JOB_TIME_BASE_S", "WORKER_HEARTBEAT_S",
                "WORKER_DEAD_AFTER_S")
    for key in positive:
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"{key} must be a positive number, got {value!r}")
    per_audio = config["JOB_TIME_PER_AUDIO_S"]
    if isinstance(per_audio, bool) or not isinstance(per_audio, (int, float)) or not per_audio >= 0:
        raise ConfigError(f"JOB_TIME_PER_AUDIO_S must be a number >= 0, got {per_audio!r}")
    if not isinstance(config["TRUSTED_PROXIES"], int) or config["TRUSTED_PROXIES"] < 0:
        raise ConfigError(f"TRUSTED_PROXIES must be a whole number >= 0, got {config['TRUSTED_PROXIES']!r}")
    origins = config["TRUSTED_ORIGINS"]
    if isinstance(origins, str):
        origins = [o.strip() for o in origins.split(",") if o.strip()]
    config["TRUSTED_ORIGINS"] = tuple(o.rstrip("/").lower() for o in origins)
    # The whole multipart body may hold the audio, an uploaded model and the other fields; each file's
    # own limit is checked once it is saved.
    config["MAX_CONTENT_LENGTH"] = int((config["MAX_UPLOAD_MB"] + config["MAX_MODEL_MB"]) * 1024 * 1024) + 256 * 1024
    # Flask-Limiter's headers would put its own Retry-After on every response (a 503 for a
    # full queue included); the 429 handler sets Retry-After itself.
    config["RATELIMIT_HEADERS_ENABLED"] = False
    config["RATELIMIT_STRATEGY"] = config.get("RATELIMIT_STRATEGY", "fixed-window")
    # With Redis, rate limits count in it too (one count per client for every web process).
    config["REDIS_URL"] = str(config.get("REDIS_URL") or "").strip()
    if config["REDIS_URL"] and not config["REDIS_URL"].startswith(("redis://", "rediss://")):
        raise ConfigError(f"REDIS_URL must be a redis:// or rediss:// URL, got {config['REDIS_URL']!r}")
    if not config.get("RATELIMIT_STORAGE_URI"):
        config["RATELIMIT_STORAGE_URI"] = config["REDIS_URL"] or "memory://"
    if config["RATELIMIT_STORAGE_URI"] != "memory://":
        # A storage that is away for a moment must not turn submissions into 500s (the runner says 503).
        config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    # Never debug: FLASK_DEBUG in the environment must not switch it on under gunicorn.
    config["DEBUG"] = False
    _secret_key(config)


def _secret_key(config: dict[str, Any]) -> None:
    """Use the configured key, or generate a strong random one for this process.

    The app keeps no sessions and signs no cookies (cross-site posts are refused
    by an Origin check), so nothing depends on the key today; a per-process
    random key is the safe default, and a short configured key only earns a
    warning.
    """
    key = config.get("SECRET_KEY") or ""
    if not key:
        config["SECRET_KEY"] = secrets.token_hex(32)
        log.info("no SENSEFLOSSER_SECRET_KEY set: generated a random secret key for this process")
        return
    if len(key) < 32:
        log.warning("SENSEFLOSSER_SECRET_KEY is short (%d characters); use at least 32 random characters, "
                    "or leave it unset to have one generated", len(key))
