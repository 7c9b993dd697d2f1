"""The page: one HTML document; the script in static/ talks to the JSON API."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from senseflosser.recipe import ACTIONS, DEFAULT_TITRATION

bp = Blueprint("pages", __name__)

ACTION_HELP = {
    "fog": "adds Gaussian noise to half of the weights of the conv layers: a haze of artefacts",
    "lapse": "drops a share of the activations after the conv layers: lost detail and holes",
}


@bp.get("/")
def index():
    cfg = current_app.config
    return render_template(
        "index.html",
        actions=[(a, ACTION_HELP.get(a, "")) for a in ACTIONS],
        titration=", ".join(f"{m:g}" for m in DEFAULT_TITRATION),
        max_upload_mb=cfg["MAX_UPLOAD_MB"],
        max_duration_s=cfg["MAX_DURATION_S"],
        poll_interval_ms=cfg["POLL_INTERVAL_MS"],
        result_ttl_min=cfg["RESULT_TTL_S"] / 60,
    )
