"""Security headers on every response, and refusal of cross-site posts.

The page has no inline script or style, so the Content-Security-Policy can be
strict. Cross-site request forgery is stopped by checking where a state-changing
request comes from: a browser always sends ``Origin`` (or at least
``Sec-Fetch-Site``) with a cross-site post, and a page cannot forge either.
Scripts and curl send neither and may use the API directly.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, request

from .errors import ApiError

log = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",
    "img-src 'self'",
    "media-src 'self' blob:",  # blob: lets the page read a chosen file's duration before upload
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _origin_allowed(origin: str) -> bool:
    origin = origin.strip().lower().rstrip("/")
    if origin in current_app.config["TRUSTED_ORIGINS"]:
        return True
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    # Compare host[:port] only: behind a TLS-terminating proxy the app sees http while the
    # browser says https; a foreign page cannot put this server's host into its Origin.
    return parts.netloc == request.host.lower()


def check_origin() -> None:
    """Refuse a state-changing request that a browser sent from another site (403)."""
    if request.method not in UNSAFE_METHODS:
        return
    origin = request.headers.get("Origin")
    if origin is not None:
        if _origin_allowed(origin):
            return
        log.warning("refused a %s to %s from origin %r", request.method, request.path, origin[:200])
        raise ApiError(403, "this request came from another web site and was refused; "
                            "use the page on this server, or call the API without an Origin header")
    if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        log.warning("refused a cross-site %s to %s without Origin", request.method, request.path)
        raise ApiError(403, "this request came from another web site and was refused")


def add_security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def init_app(app: Flask) -> None:
    app.before_request(check_origin)
    app.after_request(add_security_headers)
