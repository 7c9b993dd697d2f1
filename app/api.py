"""The JSON API: models, job submission, job status (long polls) and job files; the answers' JSON is :mod:`app.views`'s."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from flask import Blueprint, current_app, jsonify, request, send_file, url_for
from werkzeug.exceptions import RequestEntityTooLarge

from senseflosser.actions import ACTIONS, get
from senseflosser.errors import InputError
from senseflosser.normal_cache import link_or_copy
from senseflosser.parsing import parse_float, parse_int
from senseflosser.sensitivity import DEFAULT_DURATION, DEFAULT_SEEDS

from . import services
from .config import parse_bool
from .engine import MODEL_FILE, OUTPUT_STEM, PLAYABLE_FILE
from .errors import ApiError
from .forms import parse_job_form, split_filename
from .jobs import QueueFull, StorageFull, time_limit, valid_job_id
from .views import drawn_later, job_view, manifest_files, map_view, playable_files, state_version

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api")

MIMETYPES = {
    ".wav": "audio/wav",
    ".png": "image/png",
    ".json": "application/json",
    ".keras": "application/octet-stream",
    ".mp4": "video/mp4",
}


def _no_job(job_id: str) -> ApiError:
    ttl = current_app.config["RESULT_TTL_S"]
    return ApiError(404, f"there is no job with id {job_id[:40]!r}; results are kept for "
                         f"{ttl / 60:g} minutes after they finish, then deleted")


def _busy(message: str) -> ApiError:
    retry = str(int(current_app.config["RETRY_AFTER_S"]))
    return ApiError(503, f"{message}; please try again in {retry} seconds", headers={"Retry-After": retry})


@bp.get("/models")
def list_models():
    return jsonify(models=services().engine.cards())


@bp.get("/actions")
def list_actions():
    """The action registry: ``[{"name", "description", "magnitude": {...}, "changes", ...}]``."""
    return jsonify([spec.to_dict() for spec in ACTIONS.values()])


@bp.post("/jobs")
def create_job():
    return _create("job")


@bp.post("/maps")
def create_map():
    """A sensitivity map of the uploaded clip: each conv layer damaged alone (queued like a job)."""
    return _create("map")


def _create(kind: str):
    svc = services()
    upload = request.files.get("audio")  # a body over MAX_CONTENT_LENGTH raises 413 here
    form = request.form
    source = None
    if form.get("source"):
        if upload is not None and upload.filename:
            raise ApiError(400, "send either an audio file in 'audio' or the id of an earlier job in 'source', "
                                "not both")
        source = _source_input(form["source"])
        upload = None
    elif upload is None and request.form_error:
        raise ApiError(400, "the form could not be read: send a multipart/form-data body whose field and "
                            "file names are UTF-8, with the file in the field 'audio' "
                            f"(the parser said: {request.form_error})")
    if upload is None and source is None:
        raise ApiError(400, "attach an audio file (WAV, FLAC, OGG or MP3) in the form field 'audio', "
                            "or name an earlier job whose audio to use again in 'source'")
    filename = source[1] if source else upload.filename
    model_upload = request.files.get("model_file")
    if model_upload is not None and not model_upload.filename:
        model_upload = None  # a browser's empty file field
    if kind == "map":
        form = _map_form(form)
    if model_upload is None:
        job = _job_form(form, filename)
        if kind == "map":
            _check_map(job)
    if not svc.runner.has_room():
        raise _busy("the queue is full")

    job_id, job_dir = svc.store.create()
    try:
        (job_dir / "input").mkdir()
        model_spec: dict[str, Any] = {}
        if model_upload is not None:
            model_spec, name, channels, sha = _save_model(model_upload, job_dir / "input")
            job = _job_form(form, filename, uploaded=(name, channels, sha))
            if kind == "map":
                _check_map(job)
        else:
            channels = svc.engine.conv_layers(job.model)
        dest = job_dir / "input" / f"{OUTPUT_STEM}{job.extension}"
        if source is not None:
            link_or_copy(source[0], dest)  # the source job may expire first: this job keeps its own
        else:
            upload.save(dest)
        size = dest.stat().st_size
        if size > current_app.config["MAX_UPLOAD_MB"] * 1024 * 1024:
            raise RequestEntityTooLarge()
        info = svc.engine.check_audio(dest, offset=job.offset, duration=job.duration, display_name=job.filename)
        spec = {**job.to_dict(), "input": dest.name, "bytes": size, **info, **model_spec}
        spec["spec"] = job.spec.fixed(info["segment_duration"]).to_dict()  # envelope points now the audio is known
        passes = len(job.magnitudes) + 1
        if job.spec.performance is not None and job.spec.performance.continuous:
            passes += 5  # the envelope renderer's passes and its own normal
        if kind == "map":
            spec.update(kind="map", seeds=_map_seeds(form))
            passes = len(job.magnitudes) * spec["seeds"] * max(1, len(channels or {})) + 1
        config = current_app.config
        spec["time_limit_s"] = time_limit(seconds=info["segment_duration"], passes=passes,
                                          base=config["JOB_TIME_BASE_S"], per_audio=config["JOB_TIME_PER_AUDIO_S"],
                                          most=config["JOB_TIMEOUT_S"])
        state = svc.runner.submit(job_id, spec)
    except QueueFull as exc:
        svc.store.delete(job_id)
        raise _busy(str(exc) or "the queue is full") from None
    except StorageFull:
        svc.store.delete(job_id)
        raise _busy("the server has no room for more results right now") from None
    except BaseException:
        svc.store.delete(job_id)
        raise
    status_url = url_for("api.map_status" if kind == "map" else "api.job_status", job_id=job_id)
    response = jsonify(id=job_id, status_url=status_url, state=state["state"], position=state["position"])
    response.status_code = 202
    response.headers["Location"] = status_url
    return response


def _source_input(job_id: str):
    """The stored upload of an earlier job (``source=<id>``): ``(path, the user's file name)``."""
    job_id = job_id.strip()
    if not valid_job_id(job_id):
        raise ApiError(400, f"source must be the id of an earlier job (22 letters, digits, - or _), "
                            f"got {job_id[:40]!r}")
    svc = services()
    state = svc.runner.get(job_id)
    spec = state.get("request") if state else None
    path = svc.store.root / job_id / "input" / spec["input"] if spec and spec.get("input") else None
    if path is None or not path.is_file():
        ttl = current_app.config["RESULT_TTL_S"]
        raise ApiError(400, f"source: there is no job with id {job_id!r} (any more); a job's audio is kept "
                            f"for {ttl / 60:g} minutes after it finishes: upload the file again")
    return path, spec.get("filename") or path.name


MAP_MAX_SECONDS = 30.0
"""Longest excerpt a map job measures (each cell is one pass over it)."""
MAP_MAX_SEEDS = 5


def _map_form(form):
    """A map's form is a job's, with the action's titration and a 10 s excerpt unless told otherwise."""
    from werkzeug.datastructures import MultiDict

    fields = MultiDict(form)
    if (form.get("envelope") or "").strip():
        raise ApiError(400, "a map measures each layer at fixed magnitudes, so it takes no envelope: leave "
                            "envelope out, and give magnitudes (or nothing, for the action's titration)")
    if not (form.get("magnitude") or form.get("magnitudes")):
        fields["titrate"] = "1"
    if not form.get("duration"):
        fields["duration"] = str(DEFAULT_DURATION)
    fields.setlist("layers", [])
    return fields


def _check_map(job) -> None:
    """What a map's spec may not hold: an envelope, or more than :data:`MAP_MAX_SECONDS` of audio."""
    if get(job.spec.base.action).kind == "input":
        raise InputError(f"a map damages each layer alone, and {job.spec.base.action} changes the audio, not the "
                         "model: choose an action that damages the model")
    if job.spec.enveloped:
        raise InputError("a map damages each layer at fixed magnitudes: send magnitudes (or none for the "
                         "action's titration), not an envelope")
    if job.duration is not None and job.duration > MAP_MAX_SECONDS:
        raise InputError(f"a map measures at most {MAP_MAX_SECONDS:g} seconds of audio; got duration {job.duration:g}")


def _map_seeds(form) -> int:
    text = (form.get("seeds") or "").strip() or str(DEFAULT_SEEDS)
    return parse_int(text, field="seeds", minimum=1, maximum=MAP_MAX_SEEDS)  # an InputError is answered as a 400


def _job_form(form, filename: str | None, *, uploaded: tuple[str, dict[str, int], str] | None = None):
    """The job's spec from its form (any :class:`~senseflosser.errors.SenseflosserError` is answered as a 400)."""
    svc = services()
    limit = current_app.config["MAX_DURATION_S"]
    if uploaded is None:
        return parse_job_form(form, form.getlist, filename=filename, model_names=svc.engine.model_names(),
                              conv_layers=svc.engine.conv_layers, clusters=svc.engine.clusters,
                              concepts=svc.engine.concepts, calibration=svc.engine.calibration,
                              max_duration=limit,
                              outputs=svc.engine.outputs())
    name, channels, sha = uploaded
    return parse_job_form(form, form.getlist, filename=filename, model_names=[name], conv_layers=lambda _: channels,
                          max_duration=limit, uploaded_model=name, model_sha256=sha, outputs=svc.engine.outputs())


def _save_model(part, folder) -> tuple[dict[str, Any], str, dict[str, int], str]:
    """Store an uploaded model beside the job's audio and check it; ``(spec fields, name, conv channels, sha256)``."""
    display = split_filename(part.filename)[0]
    dest = folder / MODEL_FILE
    part.save(dest)
    limit = current_app.config["MAX_MODEL_MB"]
    if dest.stat().st_size > limit * 1024 * 1024:
        raise ApiError(413, f"the model file is larger than the limit of {limit:g} MB for uploaded models")
    info = services().engine.check_uploaded_model(dest, display_name=display,
                                                  max_parameters=current_app.config["MAX_MODEL_PARAMS"])
    spec = {"model_file": MODEL_FILE, "model_filename": display, "model_sha256": info["model_sha256"],
            "model_parameters": info["parameters"]}
    return spec, info["model_name"], info["conv_channels"], info["model_sha256"]


MAX_WAIT_S = 10.0
"""Longest a status request may wait for a change (``?wait=``): a long poll holds one server thread."""

WAIT_STEP_S = 0.02
"""How often a waiting status request looks at the job again when nothing written by this process wakes
it first (a job the in-process runner runs wakes it at once: see ``JobStore.wait_for_write``)."""


def _watched_state(job_id: str, *, kind: str | None) -> dict:
    """The job's state; with ``?wait=S&version=V``, the first one whose version differs from ``V``
    (or the last one after ``S`` seconds): a long poll, so a page learns of a change within
    :data:`WAIT_STEP_S` instead of its next poll. (The step that writes a job's audio is a
    :class:`~app.jobs.Milestone`, written whatever the progress throttle holds back, so the audio
    changes the version.)"""
    if not valid_job_id(job_id):
        raise _no_job(job_id)
    wait = parse_float(request.args.get("wait", "0"), field="wait", minimum=0.0, maximum=MAX_WAIT_S,
                       what="a number of seconds")
    since = request.args.get("version")
    runner = services().runner
    deadline = time.monotonic() + wait
    while True:
        state = runner.get(job_id)
        if state is None or (kind is not None and state["request"].get("kind") != kind):
            raise _no_job(job_id)
        if (since is None or state_version(state) != since or state["state"] in ("done", "failed")
                or time.monotonic() >= deadline):
            return state
        services().store.wait_for_write(min(WAIT_STEP_S, max(0.0, deadline - time.monotonic())))


def _playable(job_id: str, state: dict) -> dict | None:
    """A running job's audio written so far (its ``playable.json``: original, normal, damaged), or ``None``."""
    if state["state"] != "running":
        return None
    try:
        data = json.loads((services().store.root / job_id / "out" / PLAYABLE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _status_response(view: dict[str, Any], state: dict):
    response = jsonify({**view, "version": state_version(state)})
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/jobs/<job_id>")
def job_status(job_id: str):
    state = _watched_state(job_id, kind=None)
    if state["request"].get("kind") == "map":
        return _status_response(map_view(state), state)
    return _status_response(job_view(state, playable=_playable(job_id, state)), state)


@bp.get("/maps/<job_id>")
def map_status(job_id: str):
    state = _watched_state(job_id, kind="map")
    return _status_response(map_view(state), state)


def download_name(request_spec: dict, name: str) -> str:
    """The name a file is downloaded under: the user's stem instead of the internal one."""
    stem = request_spec.get("stem") or "audio"
    if name.startswith(f"{OUTPUT_STEM}_"):
        return f"{stem}{name[len(OUTPUT_STEM):]}"
    return f"{stem}_{name}"


@bp.get("/jobs/<job_id>/files/<name>")
def job_file(job_id: str, name: str):
    if not valid_job_id(job_id):
        raise _no_job(job_id)
    svc = services()
    state = svc.runner.get(job_id)
    if state is None:
        raise _no_job(job_id)
    if state["state"] != "done":
        early = _playable(job_id, state)
        if early is None:
            raise ApiError(404, f"the job is {state['state']}; its files appear when it is done")
        if name not in playable_files(early):
            raise ApiError(404, f"the job is running; of its files only its audio is ready ({name[:80]!r} is not)")
    elif name not in manifest_files(state.get("manifest")):
        raise ApiError(404, f"this job has no file named {name[:80]!r}")
    path = svc.store.root / job_id / "out" / name
    if not path.is_file():
        wav = drawn_later(state.get("manifest"), name)
        if wav is None or not (path.parent / wav).is_file():
            raise _no_job(job_id)
        svc.engine.spectrogram(path.parent / wav, path)
    try:
        attach = parse_bool(request.args.get("download", "0"))
    except ValueError:
        raise ApiError(400, "download must be 1 or 0") from None
    response = send_file(
        path,
        mimetype=MIMETYPES.get(path.suffix, "application/octet-stream"),
        as_attachment=attach,
        download_name=download_name(state["request"], name),
        conditional=True,
        etag=True,
        max_age=300,
    )
    response.headers["Cache-Control"] = "private, max-age=300"
    return response


