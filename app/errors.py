"""Error responses: JSON ``{"error": "<plain sentence>"}`` under /api, a small page elsewhere."""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, current_app, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from senseflosser.errors import SenseflosserError

log = logging.getLogger(__name__)

# Headers of an HTTP error that the JSON response must keep.
_KEEP_HEADERS = ("Allow", "Retry-After")

UNEXPECTED = "the server failed to handle this request; it has been logged, please try again"
"""What the user reads when a request handler raised something it should not have."""


class ApiError(Exception):
    """An error with its HTTP status and a plain-sentence message for the user."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _wants_json() -> bool:
    return request.path == "/api" or request.path.startswith("/api/") or request.path == "/healthz"


def _message(exc: HTTPException) -> str:
    code = exc.code or 500
    if code == 404:
        return "there is nothing at this address"
    if code == 405:
        return f"this address does not accept {request.method} requests"
    if code == 413 and getattr(request, "form_too_large", None) == "field":
        field_kb = current_app.config["MAX_FORM_MEMORY_SIZE"] / 1000
        return (f"a text field of the form is larger than the limit of {field_kb:g} kB per field (or the form has "
                f"more than {current_app.config['MAX_FORM_PARTS']} fields); a job's fields (model, action, "
                "magnitude, layers, ...) are short text: send the audio as a file in the field 'audio'")
    if code == 413:
        limit = current_app.config["MAX_UPLOAD_MB"]
        return (f"the upload is larger than the limit of {limit:g} MB; choose a shorter excerpt "
                "or a compressed format (FLAC, OGG, MP3)")
    if code == 429:
        return (f"too many jobs from your address (limit: {exc.description}); "
                "wait a little and try again")
    if code >= 500:
        return UNEXPECTED
    if code == 400:
        return "the request is malformed; send the job as a multipart form (see the API documentation)"
    return (exc.description or exc.name or "the request failed").rstrip(".")


def _rate_limit_retry_after() -> int:
    """Seconds until the client's rate-limit window resets (60 if unknown)."""
    services = current_app.extensions.get("senseflosser")
    limit = services.limiter.current_limit if services is not None else None
    if limit is None:
        return 60
    return max(1, int(limit.reset_at - time.time()) + 1)


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def handle_api_error(exc: ApiError):
    if _wants_json():
        return json_error(exc.status, exc.message, exc.headers)
    return render_template("error.html", status=exc.status, message=exc.message), exc.status, exc.headers


def handle_user_error(exc: SenseflosserError):
    """Any error a user can cause, raised anywhere below a request: a 400 with its sentence (no traceback logged)."""
    message = str(exc).strip() or type(exc).__name__
    log.info("refused %s %s: %s", request.method, request.path, message)
    if _wants_json():
        return json_error(400, message)
    return render_template("error.html", status=400, message=message), 400


def handle_http_exception(exc: HTTPException):
    # A 500 wrapping an exception was logged already, once: by handle_unexpected, or by Flask itself
    # when the exception escaped an error handler. 4xx are the user's doing and are not logged here.
    code = exc.code or 500
    message = _message(exc)
    headers = {k: v for k, v in exc.get_headers() if k in _KEEP_HEADERS}
    if code == 429:
        headers["Retry-After"] = str(_rate_limit_retry_after())
    if _wants_json():
        return json_error(code, message, headers)
    return render_template("error.html", status=code, message=message), code, headers


def handle_unexpected(exc: Exception):
    """Any other exception escaping a view is a bug: logged once, with its traceback; a sentence for the user."""
    log.error("unhandled error on %s %s", request.method, request.path[:200], exc_info=exc)
    if _wants_json():
        return json_error(500, UNEXPECTED)
    return render_template("error.html", status=500, message=UNEXPECTED), 500


def init_app(app: Flask) -> None:
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(SenseflosserError, handle_user_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
