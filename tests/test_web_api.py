"""The JSON API through Flask's test client: every endpoint and its error paths.

Every test runs twice: with the in-process job runner, and with jobs on RQ (a real
redis-server, the model-warm worker on a thread of the test process).
"""

from __future__ import annotations

from senseflosser import actions

import io
import re

import pytest
import soundfile as sf

from helpers import block, fail_first, job_executor, web_wav_bytes


@pytest.fixture(params=["local", "rq"])
def web_runner(request) -> str:
    return request.param


def error_of(response) -> str:
    body = response.get_json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert isinstance(body["error"], str) and body["error"]
    return body["error"]


# ------------------------------------------------------------------ models, health, page


def test_models_lists_the_registry_with_cards(web_client):
    r = web_client.get("/api/models")
    assert r.status_code == 200
    cards = {c["name"]: c for c in r.get_json()["models"]}
    assert set(cards) == {"tiny", "tinyfixed"}
    assert cards["tiny"]["summary"] == "tiny test model"
    assert cards["tiny"]["conv_layers"] == ["conv_a", "conv_b", "conv_out"]


def test_healthz_reports_device_and_loaded_models(web_client):
    r = web_client.get("/healthz")
    assert r.status_code == 200
    body = r.get_json()
    assert body["status"] == "ok"
    assert "CPU" in body["device"] or "GPU" in body["device"]
    assert body["models"] == ["tiny", "tinyfixed"]
    assert body["queue"]["capacity"] == 16 and body["queue"]["worker_alive"] is True


def test_healthz_is_503_without_models(make_web_app, tmp_path):
    empty = tmp_path / "no-models"
    empty.mkdir()
    client = make_web_app(MODELS_DIR=str(empty)).test_client()
    r = client.get("/healthz")
    assert r.status_code == 503
    assert r.get_json()["status"] == "unavailable" and r.get_json()["models"] == []
    assert client.get("/api/models").get_json() == {"models": []}
    r = client.post("/api/jobs", data={"audio": (io.BytesIO(web_wav_bytes()), "a.wav"), "model": "tiny",
                                       "action": "fog", "magnitude": "0.1"})
    assert r.status_code == 400 and "model" in error_of(r)


def test_a_broken_model_file_is_left_out_not_fatal(make_web_app, models_dir, tmp_path, web_runner):
    if web_runner == "rq":
        pytest.skip("with RQ the workers load the models; the web process only reads their cards")
    import shutil

    d = tmp_path / "models"
    d.mkdir()
    shutil.copy(models_dir / "tiny.keras", d / "tiny.keras")
    (d / "broken.keras").write_bytes(b"this is not a zip file")
    client = make_web_app(MODELS_DIR=str(d)).test_client()
    body = client.get("/healthz").get_json()
    assert body["models"] == ["tiny"] and body["broken_models"] == ["broken"]
    assert [c["name"] for c in client.get("/api/models").get_json()["models"]] == ["tiny"]


def test_page_has_the_form_and_no_inline_script_or_style(web_client):
    r = web_client.get("/")
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    for needle in ('id="audio"', 'name="model"', 'value="fog"', 'value="lapse"', 'type="range"',
                   'name="titrate"', 'name="seed"', 'name="save_model"', 'id="progress"'):
        assert needle in html
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag, tag
    assert re.search(r"<script\b[^>]*>\s*[^<\s]", html) is None  # no inline script bodies
    assert "<style" not in html and " style=" not in html
    assert re.search(r"\son[a-z]+=", html) is None  # no inline event handlers
    assert "http://" not in html and "https://" not in html  # nothing from other hosts


def test_static_files_are_served(web_client):
    js = web_client.get("/static/js/app.js")
    assert js.status_code == 200 and "javascript" in js.mimetype
    assert web_client.get("/static/css/style.css").mimetype == "text/css"
    js.close()


def test_unknown_api_address_and_method_are_json(web_client):
    r = web_client.get("/api/nothing")
    assert r.status_code == 404 and error_of(r)
    r = web_client.get("/api/jobs")
    assert r.status_code == 405 and "POST" in r.headers["Allow"] and "GET" in error_of(r)
    r = web_client.delete("/api/models")
    assert r.status_code == 405


def test_unknown_page_is_html(web_client):
    r = web_client.get("/no/such/page")
    assert r.status_code == 404 and r.mimetype == "text/html"
    assert "nothing at this address" in r.get_data(as_text=True)


# ------------------------------------------------------------------ a job from start to finish


def test_job_runs_to_done_with_all_outputs(web_client, web_submit, web_wait):
    r = web_submit(web_client, filename="My Song (live).wav", save_model="1", seed="42")
    assert r.status_code == 202, r.get_json()
    body = r.get_json()
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", body["id"])
    assert body["status_url"] == f"/api/jobs/{body['id']}" == r.headers["Location"]
    assert body["state"] == "queued" and body["position"] >= 1

    view = web_wait(web_client, body["id"])
    assert view["state"] == "done", view
    assert view["progress"] == 1.0 and view["error"] is None and view["position"] is None
    assert view["filename"] == "My_Song_live.wav"
    recipe = view["recipe"]
    assert recipe["model"] == "tiny" and recipe["action"] == "fog"
    assert recipe["magnitudes"] == [0.1] and recipe["seed"] == 42
    assert len(recipe["model_sha256"]) == 64
    assert view["cli"] == ("senseflosser floss -i My_Song_live.wav -m tiny -a fog -g 0.1 --seed 42 "
                           "--save-model --spectrograms")
    out = view["outputs"]
    assert out["seed"] == 42 and out["duration"] == pytest.approx(1.5, abs=0.01)
    assert len(out["flossed"]) == 1
    flossed = out["flossed"][0]
    assert flossed["magnitude"] == 0.1
    assert set(flossed["metrics"]) >= {"snr_db", "lsd_db", "gain", "peak"}
    assert out["model"] == flossed["model"]
    for entry in (out["original"], out["normal"], flossed):
        wav = web_client.get(entry["url"])
        assert wav.status_code == 200 and wav.mimetype == "audio/wav"
        data, sr = sf.read(io.BytesIO(wav.data))
        assert sr == 22050 and data.ndim == 1 and abs(len(data) / sr - 1.5) < 0.01
        png = web_client.get(entry["spectrogram"])
        assert png.status_code == 200 and png.data[:8] == b"\x89PNG\r\n\x1a\n"
    model = web_client.get(out["model"])
    assert model.status_code == 200 and model.data[:2] == b"PK"  # .keras is a zip
    assert "attachment" in model.headers["Content-Disposition"]
    assert "My_Song_live_tiny_fog_0.1.keras" in model.headers["Content-Disposition"]
    recipe_file = web_client.get(flossed["recipe_url"])
    assert recipe_file.get_json()["recipe"]["seed"] == 42
    assert web_client.get(out["recipe"]).status_code == 200


def test_no_model_download_unless_asked(web_client, web_submit, web_wait):
    view = web_wait(web_client, web_submit(web_client).get_json()["id"])
    assert view["state"] == "done"
    assert "model" not in view["outputs"]
    assert "model" not in view["outputs"]["flossed"][0]
    assert "--save-model" not in view["cli"]


def test_titrate_gives_five_outputs(web_client, web_submit, web_wait):
    view = web_wait(web_client, web_submit(web_client, titrate="1", magnitude=None).get_json()["id"])
    assert view["state"] == "done", view
    titration = actions.get("fog").magnitude.titration
    assert [f["magnitude"] for f in view["outputs"]["flossed"]] == list(titration)
    assert "--magnitudes " + ",".join(repr(m) for m in titration) in view["cli"]


def test_magnitude_list_layers_and_segment(web_client, web_submit, web_wait):
    r = web_submit(web_client, audio=web_wav_bytes(2.0), action="lapse", magnitude=None,
                   magnitudes="0.2, 0.05", layers="conv_a", offset="0.5", duration="1")
    view = web_wait(web_client, r.get_json()["id"])
    assert view["state"] == "done", view
    assert [f["magnitude"] for f in view["outputs"]["flossed"]] == [0.2, 0.05]
    assert view["recipe"]["layers"] == ["conv_a"]
    assert view["recipe"]["offset"] == 0.5 and view["recipe"]["duration"] == 1.0
    assert view["outputs"]["duration"] == pytest.approx(1.0, abs=0.01)
    assert "--layers conv_a --offset 0.5 --duration 1.0" in view["cli"]


def test_layers_may_repeat_as_fields(web_client, web_wait):
    data = {"audio": (io.BytesIO(web_wav_bytes()), "a.wav"), "model": "tiny", "action": "fog",
            "magnitude": "0.1", "layers": ["conv_a", "conv_b"]}
    r = web_client.post("/api/jobs", data=data)
    assert r.status_code == 202, r.get_json()
    assert web_wait(web_client, r.get_json()["id"])["recipe"]["layers"] == ["conv_a", "conv_b"]


def test_same_seed_same_output(web_client, web_submit, web_wait):
    urls = []
    for _ in range(2):
        view = web_wait(web_client, web_submit(web_client, seed="7").get_json()["id"])
        urls.append(view["outputs"]["flossed"][0]["url"])
    assert urls[0] != urls[1]
    assert web_client.get(urls[0]).data == web_client.get(urls[1]).data


def test_other_formats_and_rates_are_accepted(web_client, web_submit, web_wait):
    flac = web_wav_bytes(1.0, 44100, channels=2, fmt="FLAC", subtype="PCM_16")
    view = web_wait(web_client, web_submit(web_client, audio=flac, filename="x.flac").get_json()["id"])
    assert view["state"] == "done"
    assert view["outputs"]["duration"] == pytest.approx(1.0, abs=0.01)


def test_fixed_length_model(web_client, web_submit, web_wait):
    view = web_wait(web_client, web_submit(web_client, model="tinyfixed").get_json()["id"])
    assert view["state"] == "done", view


# ------------------------------------------------------------------ bad fields


BAD_FIELDS = [
    ({"model": "nope"}, "unknown model"),
    ({"model": "../../etc/passwd"}, "unknown model"),
    ({"model": "/work/main/models/tiny.keras"}, "unknown model"),
    ({"action": None}, "choose an action"),
    ({"action": "melt"}, "unknown action"),
    ({"magnitude": None}, "give a magnitude"),
    ({"magnitude": "abc"}, "magnitude"),
    ({"magnitude": "-1"}, "from 0 to 10"),
    ({"magnitude": "11"}, "from 0 to 10"),
    ({"action": "lapse", "magnitude": "1.5"}, "from 0 to 1"),
    ({"magnitude": "nan"}, "from 0 to 10"),
    ({"layers": "conv_a:9"}, "has 4 channels"),
    ({"layers": "conv_a:x"}, "not a whole number"),
    ({"magnitude": None, "magnitudes": "0.1,0.1"}, "only once"),
    ({"magnitude": None, "magnitudes": "0.1,x"}, "magnitude"),
    ({"seed": "abc"}, "seed"),
    ({"seed": "-1"}, "seed"),
    ({"seed": str(2**32)}, "seed"),
    ({"offset": "abc"}, "offset"),
    ({"offset": "-1"}, "offset"),
    ({"duration": "0"}, "duration"),
    ({"duration": "-2"}, "duration"),
    ({"duration": "inf"}, "duration"),
    ({"save_model": "maybe"}, "save_model"),
    ({"titrate": "perhaps"}, "titrate"),
    ({"layers": "conv_a,not_a_layer"}, "not_a_layer"),
    ({"seed": "1" * 2000}, "too long"),
]


@pytest.mark.parametrize(("fields", "expected"), BAD_FIELDS, ids=[str(f) for f, _ in BAD_FIELDS])
def test_bad_fields_are_400_with_a_message(web_app, web_submit, fields, expected):
    client = web_app.test_client()
    r = web_submit(client, **fields)
    assert r.status_code == 400
    assert expected in error_of(r)
    assert web_app.extensions["senseflosser"].store.ids() == []  # nothing kept


def test_missing_file_is_400(web_client, web_submit):
    r = web_submit(web_client, audio=None)
    assert r.status_code == 400 and "audio" in error_of(r)
    r = web_client.post("/api/jobs", json={"model": "tiny"})
    assert r.status_code == 400 and "audio" in error_of(r)


@pytest.mark.parametrize(("audio", "fields", "expected"), [
    (b"", {}, "empty"),
    (b"just some text, not audio at all\n" * 10, {}, "not an audio file"),
    (web_wav_bytes(1.0)[:30], {}, "song.wav"),
    (web_wav_bytes(1.0), {"offset": "5"}, "past the end"),
], ids=["empty", "text", "truncated-header", "offset-past-end"])
def test_bad_audio_is_400_naming_the_users_file(web_client, web_submit, audio, fields, expected):
    r = web_submit(web_client, audio=audio, **fields)
    assert r.status_code == 400
    message = error_of(r)
    assert expected in message and "song.wav" in message
    assert "audio.wav" not in message  # the stored name is never shown


def test_too_long_audio_is_400(make_web_app, web_submit):
    client = make_web_app(MAX_DURATION_S=1.0).test_client()
    r = web_submit(client, audio=web_wav_bytes(2.0))
    assert r.status_code == 400 and "at most 1 s" in error_of(r)
    r = web_submit(client, audio=web_wav_bytes(2.0), duration="0.8")
    assert r.status_code == 202


def test_oversized_upload_is_413(make_web_app, web_submit):
    client = make_web_app(MAX_UPLOAD_MB=0.05).test_client()
    r = web_submit(client, audio=web_wav_bytes(3.0))  # ~130 kB
    assert r.status_code == 413
    assert "50 MB" not in error_of(r) and "0.05 MB" in error_of(r)
    assert web_submit(client, audio=web_wav_bytes(0.5)).status_code == 202
    r = web_submit(client, audio=web_wav_bytes(10.0))  # ~440 kB: refused before it is read
    assert r.status_code == 413 and "0.05 MB" in error_of(r)


def test_upload_name_never_becomes_a_path(web_app, web_submit, web_wait, tmp_path):
    client = web_app.test_client()
    r = web_submit(client, filename="../../../../tmp/evil\x00name.wav")
    assert r.status_code == 202
    view = web_wait(client, r.get_json()["id"])
    assert view["filename"] == "evil_name.wav"
    data_dir = web_app.extensions["senseflosser"].store.root
    inputs = list(data_dir.glob("*/input/*"))
    assert sorted(p.name for p in inputs) == ["audio.wav", "segment.npy"]  # the upload and its decoded segment
    assert not (tmp_path / "tmp").exists()


# ------------------------------------------------------------------ queue full, failures


@pytest.fixture
def blocked_runner(web_app):
    """The app's runner, blocked until the end of the test (see :func:`block`)."""
    runner = job_executor(web_app)
    started, release = block(runner)
    yield runner, started, release
    release.set()


def test_queue_full_is_503_with_retry_after(make_web_app, web_submit, web_wait):
    app = make_web_app(QUEUE_SIZE=1, RETRY_AFTER_S=7)
    runner = job_executor(app)
    client = app.test_client()
    started, release = block(runner)
    try:
        first = web_submit(client).get_json()["id"]
        assert started.wait(30)
        second = web_submit(client)
        assert second.status_code == 202 and second.get_json()["position"] == 1
        assert client.get(second.headers["Location"]).get_json()["position"] == 1
        running = client.get(f"/api/jobs/{first}").get_json()
        assert running["state"] == "running" and running["position"] is None
        third = web_submit(client)
        assert third.status_code == 503
        assert third.headers["Retry-After"] == "7"
        assert "queue is full" in error_of(third)
        assert len(app.extensions["senseflosser"].store.ids()) == 2  # the refused upload is gone
    finally:
        release.set()
    assert web_wait(client, first)["state"] == "done"
    assert web_wait(client, second.get_json()["id"])["state"] == "done"


def test_a_crashing_job_fails_with_a_message_and_the_worker_goes_on(web_app, web_submit, web_wait):
    runner = job_executor(web_app)
    client = web_app.test_client()
    calls = fail_first(runner, RuntimeError("simulated fault"))
    first = web_submit(client).get_json()["id"]
    second = web_submit(client).get_json()["id"]
    failed = web_wait(client, first)
    assert failed["state"] == "failed" and failed["outputs"] is None
    assert "internal error" in failed["error"] and "RuntimeError" in failed["error"]
    assert "simulated fault" not in failed["error"]  # internals stay in the log
    assert calls.count(first) == 1  # failed at once, never retried
    assert web_wait(client, second)["state"] == "done"
    assert client.get("/healthz").get_json()["queue"]["failed"] == 1


def test_a_user_error_found_while_running_is_shown(web_app, web_submit, web_wait):
    client = web_app.test_client()
    r = web_submit(client)
    job_id = r.get_json()["id"]
    view = web_wait(client, job_id)
    assert view["state"] == "done"
    # Same input, but the stored file (and the segment decoded when it was checked) is damaged before a
    # second job runs: the job decodes the file again, and says what is wrong with it.
    runner = job_executor(web_app)
    real = runner.execute
    store = web_app.extensions["senseflosser"].store

    def execute(job_id, state, progress):
        for name in (state["request"]["input"], "segment.npy"):
            (store.root / job_id / "input" / name).write_bytes(b"garbage")
        return real(job_id, state, progress)

    runner.execute = execute
    view = web_wait(client, web_submit(client, filename="take2.wav").get_json()["id"])
    assert view["state"] == "failed"
    assert view["error"].startswith("take2.wav: ")


# ------------------------------------------------------------------ status and file routes


@pytest.mark.parametrize("job_id", ["AAAAAAAAAAAAAAAAAAAAAA", "short", "a" * 300, "bad id!", "..", "%2e%2e"])
def test_unknown_job_is_404(web_client, job_id):
    for url in (f"/api/jobs/{job_id}", f"/api/jobs/{job_id}/files/audio_normal.wav"):
        r = web_client.get(url)
        assert r.status_code == 404
        assert error_of(r)


@pytest.fixture
def done_job(web_client, web_submit, web_wait):
    view = web_wait(web_client, web_submit(web_client, filename="Song.wav", save_model="1").get_json()["id"])
    assert view["state"] == "done"
    return view


@pytest.mark.parametrize("name", ["state.json", "manifest.json", "..", "...", "audio.wav", "unknown.wav",
                                  "%2e%2e%2fstate.json", "..%2F..%2Fetc%2Fpasswd", ".state.json"])
def test_unknown_or_sneaky_file_names_are_404(web_client, done_job, name):
    r = web_client.get(f"/api/jobs/{done_job['id']}/files/{name}")
    assert r.status_code == 404
    assert r.is_json


def test_files_of_an_unfinished_job_are_404(web_app, web_submit, blocked_runner):
    runner, started, release = blocked_runner
    client = web_app.test_client()
    job_id = web_submit(client).get_json()["id"]
    assert started.wait(30)
    r = client.get(f"/api/jobs/{job_id}/files/audio_normal.wav")
    assert r.status_code == 404 and "running" in error_of(r)


def test_range_requests_get_206(web_client, done_job):
    url = done_job["outputs"]["flossed"][0]["url"]
    full = web_client.get(url)
    assert full.headers["Accept-Ranges"] == "bytes"
    r = web_client.get(url, headers={"Range": "bytes=100-199"})
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes 100-199/{len(full.data)}"
    assert r.data == full.data[100:200]
    r = web_client.get(url, headers={"Range": "bytes=-10"})
    assert r.status_code == 206 and r.data == full.data[-10:]
    r = web_client.get(url, headers={"Range": f"bytes={len(full.data) + 10}-"})
    assert r.status_code == 416


def test_conditional_get_gives_304(web_client, done_job):
    url = done_job["outputs"]["normal"]["url"]
    etag = web_client.get(url).headers["ETag"]
    assert web_client.get(url, headers={"If-None-Match": etag}).status_code == 304


def test_download_header(web_client, done_job):
    out = done_job["outputs"]
    inline = web_client.get(out["flossed"][0]["url"])
    assert inline.headers["Content-Disposition"].startswith("inline")
    r = web_client.get(out["flossed"][0]["download_url"])
    assert r.headers["Content-Disposition"] == "attachment; filename=Song_fog_0.1.wav"
    r = web_client.get(out["normal"]["download_url"])
    assert r.headers["Content-Disposition"] == "attachment; filename=Song_normal.wav"
    r = web_client.get(out["model"])
    assert r.headers["Content-Disposition"] == "attachment; filename=Song_tiny_fog_0.1.keras"
    assert r.mimetype == "application/octet-stream"
    r = web_client.get(out["normal"]["url"] + "?download=sure")
    assert r.status_code == 400


def test_results_survive_a_restart(make_web_app, web_submit, web_wait):
    first = make_web_app()
    client = first.test_client()
    view = web_wait(client, web_submit(client).get_json()["id"])
    first.extensions["senseflosser"].runner.stop()
    second = make_web_app().test_client()
    again = second.get(f"/api/jobs/{view['id']}").get_json()
    assert again["state"] == "done" and again["outputs"] == view["outputs"]
    assert second.get(view["outputs"]["flossed"][0]["url"]).status_code == 200


def test_expired_job_is_gone(make_web_app, web_submit, web_wait):
    app = make_web_app(RESULT_TTL_S=0.2)
    client = app.test_client()
    view = web_wait(client, web_submit(client).get_json()["id"])
    import time

    time.sleep(0.3)
    r = client.get(f"/api/jobs/{view['id']}")
    assert r.status_code == 404 and "kept for" in error_of(r)
    assert client.get(view["outputs"]["normal"]["url"]).status_code == 404
    app.extensions["senseflosser"].runner.cleanup()
    assert app.extensions["senseflosser"].store.ids() == []


def test_uploads_spool_inside_the_data_dir(web_app, web_wait, monkeypatch, tmp_path):
    import tempfile

    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(method="POST", data={
        "audio": (io.BytesIO(web_wav_bytes(15.0)), "long.wav"),  # ~660 kB: spooled to disk
        "model": "tiny", "action": "fog", "magnitude": "0.1", "duration": "1"}).get_environ()
    body, content_type = environ["wsgi.input"].read(), environ["CONTENT_TYPE"]
    # From here on the system's temp dir is unusable: the upload must not need it.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-system-temp"))
    client = web_app.test_client()
    r = client.post("/api/jobs", data=body, content_type=content_type)
    assert r.status_code == 202, r.get_json()
    assert web_wait(client, r.get_json()["id"])["state"] == "done"
    assert (web_app.extensions["senseflosser"].store.root / ".uploads").is_dir()


def test_actions_endpoint_is_the_registry(web_client):
    r = web_client.get("/api/actions")
    assert r.status_code == 200
    body = r.get_json()
    assert [a["name"] for a in body] == list(actions.ACTION_NAMES)
    for entry in body:
        spec = actions.get(entry["name"])
        assert entry["description"] == spec.description
        assert entry["changes"] == spec.changes
        assert entry["magnitude"]["min"] == spec.magnitude.min and entry["magnitude"]["max"] == spec.magnitude.max
        assert entry["magnitude"]["default"] == spec.magnitude.default and entry["magnitude"]["meaning"]


def test_page_lists_every_action(web_client):
    from markupsafe import escape

    html = web_client.get("/").get_data(as_text=True)
    for spec in actions.ACTIONS.values():
        assert f'id="action-{spec.name}"' in html and str(escape(spec.description)) in html


@pytest.mark.parametrize("action", actions.ACTION_NAMES)
def test_every_action_runs_as_a_web_job_with_channels(web_client, web_submit, web_wait, action):
    r = web_submit(web_client, action=action, magnitude=str(actions.get(action).magnitude.titration[-1]),
                   layers="conv_a:0,2", save_model="1")
    assert r.status_code == 202, r.get_json()
    view = web_wait(web_client, r.get_json()["id"])
    assert view["state"] == "done", view
    assert view["recipe"]["layers"] == ["conv_a:0,2"]
    assert "--layers conv_a:0,2" in view["cli"]
    # An input action (dream) changes the audio, not the model: there is no damaged model to save.
    assert bool(view["outputs"]["flossed"][0].get("model")) == (actions.get(action).kind != "input")


def test_adversarial_on_input_through_the_api(web_client, web_submit, web_wait):
    r = web_submit(web_client, action="adversarial", magnitude="0.01", adversarial_on_input="1", seed="5")
    assert r.status_code == 202, r.get_json()
    view = web_wait(web_client, r.get_json()["id"])
    assert view["state"] == "done", view
    assert view["recipe"]["params"] == {"on_input": True} and "--on-input" in view["cli"]
    assert view["outputs"]["flossed"][0]["url"].endswith("adversarial-input_0.01.wav")
    r = web_submit(web_client, action="fog", adversarial_on_input="1")
    assert r.status_code == 400 and "on_input" in r.get_json()["error"]


def test_map_through_the_api(web_client, web_wait):
    import io

    r = web_client.post("/api/maps", data={"audio": (io.BytesIO(web_wav_bytes(1.5)), "song.wav"), "model": "tiny",
                                            "action": "ablate", "seeds": "2"}, content_type="multipart/form-data")
    assert r.status_code == 202, r.get_json()
    assert r.get_json()["status_url"].startswith("/api/maps/")
    job_id = r.get_json()["id"]
    web_wait(web_client, job_id)
    view = web_client.get(f"/api/maps/{job_id}").get_json()
    assert view["state"] == "done", view
    assert view["map"]["layers"] == ["conv_a", "conv_b", "conv_out"] and view["map"]["seeds"] == 2
    assert view["map"]["magnitudes"] == list(actions.get("ablate").magnitude.titration)
    png = web_client.get(view["files"]["png"])
    assert png.status_code == 200 and png.data[:4] == b"\x89PNG"
    assert web_client.get(f"/api/maps/{job_id}").status_code == 200
    r = web_client.post("/api/maps", data={"audio": (io.BytesIO(web_wav_bytes(1.5)), "song.wav"), "model": "tiny",
                                            "action": "fog", "seeds": "9"}, content_type="multipart/form-data")
    assert r.status_code == 400 and "seeds" in r.get_json()["error"]


def test_envelope_through_the_api(web_client, web_submit, web_wait):
    r = web_submit(web_client, magnitude=None, envelope="ramp:0,0.2", seed="3")
    assert r.status_code == 202, r.get_json()
    view = web_wait(web_client, r.get_json()["id"])
    assert view["state"] == "done", view
    assert view["recipe"]["envelope"][0] == [0.0, 0.0] and view["recipe"]["envelope"][-1][1] == 0.2
    assert "--envelope 0.0:0.0," in view["cli"] and "-g " not in view["cli"]
    assert view["outputs"]["flossed"][0]["url"].endswith("fog_envelope.wav")
    r = web_submit(web_client, magnitude=None, envelope="0:0,90:0.1")
    assert r.status_code == 400 and "beyond the end of the audio" in r.get_json()["error"]
    r = web_submit(web_client, magnitude=None, envelope="5:0,1:0.1")
    assert r.status_code == 400 and "must increase" in r.get_json()["error"]


def test_a_web_job_checks_its_magnitude_once(web_client, web_submit, web_wait, monkeypatch):
    """The spec is built once at the edge; the worker takes it as it is (no second check)."""
    from senseflosser.actions import base

    calls = []
    original = base.MagnitudeSpec.validate
    monkeypatch.setattr(base.MagnitudeSpec, "validate", lambda self, m, a: calls.append(m) or original(self, m, a))
    r = web_submit(web_client, action="lapse", magnitude="0.2", seed="3", save_model="1")
    assert r.status_code == 202, r.get_json()
    assert web_wait(web_client, r.get_json()["id"])["state"] == "done"
    assert calls == ["0.2"]


def test_a_user_error_raised_below_the_form_is_one_400_with_its_sentence(web_client, web_submit):
    """A SenseflosserError from the core is answered once, as it was raised (no wrapper, no 500)."""
    r = web_submit(web_client, action="fog", layers="conv_a:99")
    assert r.status_code == 400 and r.get_json() == {"error": r.get_json()["error"]}
    assert "conv_a" in r.get_json()["error"] and "99" in r.get_json()["error"]
    r = web_submit(web_client, action="lapse", magnitude="١")
    assert r.status_code == 400 and "lapse magnitude" in r.get_json()["error"]


def test_a_job_without_a_model_gets_the_best_and_models_are_listed_best_first(web_client, web_submit, web_wait):
    from senseflosser.models import rank_key

    cards = web_client.get("/api/models").get_json()["models"]
    assert [c["name"] for c in cards] == [c["name"] for c in sorted(cards, key=lambda c: rank_key(c, c["name"]))]
    r = web_submit(web_client, model=None)
    assert r.status_code == 202, r.get_json()
    view = web_wait(web_client, r.get_json()["id"])
    assert view["state"] == "done" and view["recipe"]["model"] == cards[0]["name"]
