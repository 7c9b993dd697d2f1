"""The page: one HTML document; the script in static/ talks to the JSON API."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from senseflosser.actions import ACTIONS

bp = Blueprint("pages", __name__)


@bp.get("/")
def index():
    return _page()


@bp.get("/jobs/<job_id>")
def job_page(job_id: str):
    """A job's own page: the form and, once it is done, its results (shareable until they expire)."""
    from . import services
    from .errors import ApiError
    from .jobs import valid_job_id

    state = services().runner.get(job_id) if valid_job_id(job_id) else None
    if state is None:
        raise ApiError(404, f"there is no job with id {job_id[:40]!r}; results are kept for "
                               f"{current_app.config['RESULT_TTL_S'] / 60:g} minutes after they finish")
    return _page(job_id=job_id)


def _page(job_id: str | None = None):
    cfg = current_app.config
    return render_template(
        "index.html",
        job_id=job_id,
        actions=[spec.to_dict() for spec in ACTIONS.values()],
        max_upload_mb=cfg["MAX_UPLOAD_MB"],
        max_model_mb=cfg["MAX_MODEL_MB"],
        max_duration_s=cfg["MAX_DURATION_S"],
        poll_interval_ms=cfg["POLL_INTERVAL_MS"],
        result_ttl_min=cfg["RESULT_TTL_S"] / 60,
    )
