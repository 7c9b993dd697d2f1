"""The senseflosser web demo: upload audio, damage a model, listen to the result.

``create_app()`` builds the Flask app: configuration (defaults, then
``SENSEFLOSSER_*`` environment, then ``test_config``), security headers and the
cross-site check, rate limiting, the page, the JSON API and the health check,
the models and the job runner.

Two job runners: with ``SENSEFLOSSER_REDIS_URL`` unset (the default) jobs run in
this process (:class:`~app.jobs.local.LocalJobRunner`; the models are loaded and
warmed up once per process); set, jobs go to RQ and ``make worker`` processes run
them (:class:`~app.jobs.rq_runner.RQJobRunner`; this process never loads a model,
it only reads the registry's cards).

Under gunicorn each worker process calls ``create_app()`` itself (``wsgi.py``;
no preloading), so no model or TensorFlow work happens in the master.
"""

from __future__ import annotations

import atexit
import logging
import tempfile
from dataclasses import dataclass
from typing import IO, Any

from flask import Flask, Request, current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import parse_many
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wsgi import LimitedStream

from . import errors, security
from .config import DEFAULTS, PROJECT_ROOT, ConfigError, from_environment, resolve
from .engine import Engine
from .jobs import JobRunner, JobStore, LocalJobRunner

log = logging.getLogger(__name__)

__all__ = ["Services", "create_app", "services"]


@dataclass
class Services:
    """What the views use, kept in ``app.extensions["senseflosser"]``."""

    engine: Engine
    store: JobStore
    runner: JobRunner
    limiter: Limiter


class UploadRequest(Request):
    """A request whose uploads spool into the data dir, never into the system's temp dir.

    A form that cannot be parsed (a multipart body without its boundary, cut short, or
    with part headers that are not UTF-8) reads as empty, as in plain Werkzeug, but the
    reason is kept in :attr:`form_error` so the API can say what was wrong with it.
    """

    form_error: str | None = None
    form_too_large: str | None = None
    """Why the form was refused as too large (413): ``"upload"`` (the whole body) or ``"field"``
    (one text field over ``MAX_FORM_MEMORY_SIZE``, or more parts than ``MAX_FORM_PARTS``)."""

    def make_form_data_parser(self):
        parser = super().make_form_data_parser()
        parser.silent = False
        return parser

    def _load_form_data(self) -> None:
        try:
            super()._load_form_data()
        except RequestEntityTooLarge:
            self.form_too_large = "upload" if self._body_too_large() else "field"
            raise
        except ValueError as exc:
            self.form_error = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            empty = self.parameter_storage_class()
            self.__dict__.update(form=empty, files=self.parameter_storage_class())
            log.info("unreadable form on %s %s: %s", self.method, self.path, self.form_error)

    def _body_too_large(self) -> bool:
        """Whether the whole body is over ``MAX_CONTENT_LENGTH`` (not one field of it)."""
        limit = self.max_content_length
        if limit is None:
            return False
        if self.content_length is not None:
            return self.content_length > limit
        # A chunked body is cut off once it has delivered the limit: a stream read to its end was too large.
        stream = self.__dict__.get("stream")
        return not isinstance(stream, LimitedStream) or stream.is_exhausted

    def _get_file_stream(self, total_content_length: int | None, content_type: str | None,
                         filename: str | None = None, content_length: int | None = None) -> IO[bytes]:
        spool = current_app.config["DATA_DIR"] / ".uploads"
        spool.mkdir(parents=True, exist_ok=True)
        return tempfile.SpooledTemporaryFile(max_size=512 * 1024, mode="rb+", dir=spool)


def services() -> Services:
    """The current app's :class:`Services`."""
    return current_app.extensions["senseflosser"]


def _use_gunicorn_logging() -> None:
    """Under gunicorn, send our log records where gunicorn sends its own."""
    gunicorn_log = logging.getLogger("gunicorn.error")
    if not gunicorn_log.handlers:
        return
    for name in ("app", "senseflosser"):
        logger = logging.getLogger(name)
        logger.handlers = list(gunicorn_log.handlers)
        logger.setLevel(gunicorn_log.level)
        logger.propagate = False


def _make_runner(config: dict[str, Any], engine: Engine, store: JobStore) -> JobRunner:
    """The RQ runner when a Redis URL is configured, else the in-process runner (models warmed up here)."""
    common = dict(
        queue_size=config["QUEUE_SIZE"],
        result_ttl=config["RESULT_TTL_S"],
        max_bytes=int(config["MAX_DATA_MB"] * 1024 * 1024),
        cleanup_interval=config["CLEANUP_INTERVAL_S"],
        max_attempts=config["MAX_ATTEMPTS"],
    )
    if config["REDIS_URL"]:
        from .jobs.rq_runner import RQJobRunner

        return RQJobRunner(store, config["REDIS_URL"], queue_name=config["QUEUE_NAME"],
                           job_timeout=config["JOB_TIMEOUT_S"], **common)
    if config["WARM_UP"]:
        engine.warm_up()

    def execute(job_id: str, state: dict, progress) -> dict:
        return engine.render(store.root / job_id, state["request"], progress)

    return LocalJobRunner(store, execute, job_timeout=config["JOB_TIMEOUT_S"], **common)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the web app.

    Parameters
    ----------
    test_config : dict or None
        Settings that override the defaults and the environment (keys as in
        :data:`app.config.DEFAULTS`, e.g. ``MODELS_DIR``, ``DATA_DIR``, ``QUEUE_SIZE``).

    Raises
    ------
    ConfigError
        If a setting is invalid.
    """
    app = Flask(
        __name__,
        instance_path=str(PROJECT_ROOT / "instance"),
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    app.request_class = UploadRequest
    config: dict[str, Any] = {key: default for key, (default, _help) in DEFAULTS.items()}
    config.update(from_environment())
    if test_config:
        config.update(test_config)
    resolve(config, app.instance_path)
    try:
        parse_many(config["RATE_LIMIT"])
    except ValueError:
        raise ConfigError(f"RATE_LIMIT {config['RATE_LIMIT']!r} is not a rate such as '30/minute'") from None
    app.config.update(config)
    _use_gunicorn_logging()

    proxies = app.config["TRUSTED_PROXIES"]
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies, x_port=proxies)

    errors.init_app(app)
    security.init_app(app)
    limiter = Limiter(get_remote_address, app=app)

    from .api import bp as api_bp
    from .health import bp as health_bp
    from .pages import bp as pages_bp

    app.register_blueprint(pages_bp)
    app.register_blueprint(api_bp)
    app.register_blueprint(health_bp)
    limiter.limit(lambda: current_app.config["RATE_LIMIT"], methods=["POST"])(api_bp)

    engine = Engine(app.config["MODELS_DIR"], max_duration=app.config["MAX_DURATION_S"],
                    spectrograms=app.config["SPECTROGRAMS"], normal_cache_ttl=app.config["RESULT_TTL_S"])
    store = JobStore(app.config["DATA_DIR"])
    runner = _make_runner(app.config, engine, store)
    runner.start()
    atexit.register(runner.stop, 2.0)
    app.extensions["senseflosser"] = Services(engine=engine, store=store, runner=runner, limiter=limiter)
    log.info("senseflosser web app ready: models %s, data dir %s",
             ", ".join(engine.model_names()) or "none", store.root)
    return app
