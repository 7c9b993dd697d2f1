"""The page: one HTML document; the ES modules in static/js/ talk to the JSON API.

Every rule of the server the page needs (limits, the sample rate, the job id's form, ...) is
rendered into the template's data attributes here, from the Python value where it is defined;
the scripts read them (static/js/config.js) and never repeat one.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, render_template

from senseflosser import audio, envelope, ladder, sensitivity
from senseflosser.actions import ACTIONS, KINDS, MAX_SEED
from senseflosser.explanations import NOTES as EXPLANATION_NOTES

from . import api, engine, jobs

bp = Blueprint("pages", __name__)

MIB = 1024 * 1024
"""The server's MB limits are MiB (see app/config.py)."""


@bp.get("/")
def index():
    return _page()


@bp.get("/jobs/<job_id>")
def job_page(job_id: str):
    """A job's own page: the form and, once it is done, its results (shareable until they expire)."""
    from . import services
    from .errors import ApiError

    state = services().runner.get(job_id) if jobs.valid_job_id(job_id) else None
    if state is None:
        raise ApiError(404, f"there is no job with id {job_id[:40]!r}; results are kept for "
                               f"{current_app.config['RESULT_TTL_S'] / 60:g} minutes after they finish")
    return _page(job_id=job_id)


def page_settings() -> dict[str, Any]:
    """The server's rules as the page gets them (read at each request, so a changed value shows)."""
    cfg = current_app.config
    return {
        "max_upload_mb": cfg["MAX_UPLOAD_MB"],
        "max_upload_bytes": int(cfg["MAX_UPLOAD_MB"] * MIB),
        "max_model_mb": cfg["MAX_MODEL_MB"],
        "max_model_bytes": int(cfg["MAX_MODEL_MB"] * MIB),
        "max_duration_s": cfg["MAX_DURATION_S"],
        "min_duration_s": engine.MIN_SEGMENT_S,
        "poll_interval_ms": cfg["POLL_INTERVAL_MS"],
        "status_wait_s": api.MAX_WAIT_S,
        "result_ttl_min": cfg["RESULT_TTL_S"] / 60,
        "sample_rate": audio.SAMPLE_RATE,
        "job_id_pattern": jobs.JOB_ID_RE.pattern,
        "map_max_s": api.MAP_MAX_SECONDS,
        "map_default_s": sensitivity.DEFAULT_DURATION,
        "max_seed": MAX_SEED,
        "envelope_max_points": envelope.MAX_POINTS,
        "ladder_rungs": ladder.MIN_RUNGS,
        "performance_max_points": ladder.MAX_POINTS,
        "crossfade_rule": ladder.RULE,
    }


def _page(job_id: str | None = None):
    return render_template(
        "index.html",
        job_id=job_id,
        actions=[spec.to_dict() for spec in ACTIONS.values()],
        action_kinds=KINDS,
        explanations=EXPLANATION_NOTES,
        **page_settings(),
    )
