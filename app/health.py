"""``GET /healthz``: device, loaded models and queue figures of this worker process."""

from __future__ import annotations

import os

from flask import Blueprint, jsonify

from senseflosser.pipeline import compiled_stats

from . import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    svc = services()
    engine = svc.engine
    loaded = [n for n in engine.loaded() if n not in engine.broken]
    runner_ok = getattr(svc.runner, "alive", True)
    ok = bool(loaded) and runner_ok
    body = {
        "status": "ok" if ok else "unavailable",
        "device": engine.device(),
        "models": loaded,
        "broken_models": sorted(engine.broken),
        "queue": svc.runner.stats(),
        "pid": os.getpid(),
        "compiled": compiled_stats(),
    }
    if not loaded:
        body["reason"] = "no model is loaded; put .keras models with their cards in the models folder"
    elif not runner_ok:
        body["reason"] = "the job worker has stopped"
    response = jsonify(body)
    response.status_code = 200 if ok else 503
    response.headers["Cache-Control"] = "no-store"
    return response
