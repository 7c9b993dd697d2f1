"""``GET /healthz``: device, models and queue figures of this web process (with Redis: of the shared queue)."""

from __future__ import annotations

import os

from flask import Blueprint, jsonify

from senseflosser.runners import compiled_stats

from . import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    svc = services()
    engine = svc.engine
    queue = svc.runner.stats()
    if queue.get("runner") == "rq":
        # The workers load the models and own the devices (this process never touches one); it serves
        # the registry's cards and needs Redis.
        loaded = engine.model_names()
        runner_ok = queue.get("redis") == "ok"
        devices = svc.runner.devices()
        device = "; ".join(sorted(set(devices.values()))) or "no worker is running"
    else:
        loaded = [n for n in engine.loaded() if n not in engine.broken]
        runner_ok = getattr(svc.runner, "alive", True)
        device = engine.device()
    ok = bool(loaded) and runner_ok
    body = {
        "status": "ok" if ok else "unavailable",
        "device": device,
        "models": loaded,
        "broken_models": sorted(engine.broken),
        "queue": queue,
        "pid": os.getpid(),
        "compiled": compiled_stats(),
    }
    if not loaded:
        body["reason"] = "no model is loaded; put .keras models with their cards in the models folder"
    elif not runner_ok:
        body["reason"] = ("the job queue (Redis) cannot be reached" if queue.get("runner") == "rq"
                          else "the job worker has stopped")
    response = jsonify(body)
    response.status_code = 200 if ok else 503
    response.headers["Cache-Control"] = "no-store"
    return response
