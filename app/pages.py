"""The page: one HTML document; the script in static/ talks to the JSON API."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from senseflosser.actions import ACTIONS

bp = Blueprint("pages", __name__)


@bp.get("/")
def index():
    cfg = current_app.config
    return render_template(
        "index.html",
        actions=[spec.to_dict() for spec in ACTIONS.values()],
        max_upload_mb=cfg["MAX_UPLOAD_MB"],
        max_model_mb=cfg["MAX_MODEL_MB"],
        max_duration_s=cfg["MAX_DURATION_S"],
        poll_interval_ms=cfg["POLL_INTERVAL_MS"],
        result_ttl_min=cfg["RESULT_TTL_S"] / 60,
    )
