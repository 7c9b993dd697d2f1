"""Issue 22: what an attacker found, through the web API; each finding refused in a sentence, never a 500.

1. a Lambda named ``keras`` + ``layers.Lambda`` in an uploaded model; 2. a config.json nested 100,000 deep;
3. a 2 kB upload declaring a Conv2D of 5,000,000 filters (the worker's memory must not grow);
4. ``envelope=lfo:0,0.05,1e-320``; 5. ``seeds=²`` for a map; 6. layer names TensorFlow refuses;
7. user errors leave no traceback in the log, a 500 is logged once; 8. a job id with a newline, a 413
for one oversized field, a map with an envelope, and a time limit for in-process jobs.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from pathlib import Path

import pytest

from helpers import job_executor, make_tiny_model, web_wav_bytes
from helpers import deep_config, lambda_via_api_name, renamed_config, rezip, wide_conv_config

GOOD = {"action": "fog", "magnitude": "0.1"}


@pytest.fixture(scope="module")
def good_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("upload") / "mine.keras"
    make_tiny_model(name="mine").save(path)
    return path


def post_model(client, model: Path, **fields):
    data = {**GOOD, **fields, "audio": (io.BytesIO(web_wav_bytes(1.0)), "song.wav"),
            "model_file": (io.BytesIO(model.read_bytes()), "mine.keras")}
    return client.post("/api/jobs", data=data, content_type="multipart/form-data")


def refused(r, status: int = 400) -> str:
    assert r.status_code == status, (r.status_code, r.get_data(as_text=True)[:500])
    body = r.get_json()
    assert set(body) == {"error"} and "Traceback" not in body["error"], body
    return body["error"]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_growth(action) -> tuple[float, object]:
    """``(peak growth of this process's resident memory in MB while action() ran, its result)``."""
    base, peak, done = rss_mb(), [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_mb())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = action()
    finally:
        done.set()
        sampler.join()
    return max(0.0, peak[0] - base), result


def test_uploaded_models_that_name_code_or_are_too_big_are_refused(make_web_app, good_model, tmp_path):
    app = make_web_app()
    client = app.test_client()
    lam = rezip(good_model, tmp_path / "lambda.keras", lambda_via_api_name(good_model))
    assert "Lambda layers" in refused(post_model(client, lam))                                   # finding 1
    deep = rezip(good_model, tmp_path / "deep.keras", deep_config(good_model))
    assert "nested 100002 levels deep" in refused(post_model(client, deep))                      # finding 2
    for name in ("conv one", "<img src=x onerror=alert(1)>"):                                    # finding 6
        odd = rezip(good_model, tmp_path / "names.keras", renamed_config(good_model, name))
        assert "is not accepted; name layers and models with letters" in refused(post_model(client, odd))
    wide = rezip(good_model, tmp_path / "wide.keras", wide_conv_config(good_model))              # finding 3
    assert wide.stat().st_size < 4096
    growth, r = peak_rss_growth(lambda: post_model(client, wide))
    assert "parameters, more than the 20,000,000 accepted" in refused(r)
    assert growth < 100, f"the refused upload made the server grow by {growth:.0f} MB"
    assert app.extensions["senseflosser"].store.ids() == []
    r = post_model(client, good_model)
    assert r.status_code == 202, r.get_json()


def test_a_job_on_an_uploaded_model_never_fails_with_an_internal_error(make_web_app, good_model, web_wait):
    app = make_web_app()
    client = app.test_client()
    r = post_model(client, good_model, magnitudes="0.05,0.1")
    assert r.status_code == 202, r.get_json()
    view = web_wait(client, r.get_json()["id"])
    assert view["state"] == "done", view


@pytest.mark.parametrize("fields, path, expected", [
    ({"envelope": "lfo:0,0.05,1e-320", "magnitude": None}, "/api/jobs", "the lfo period must be at least"),  # 4
    ({"envelope": "0:0,1e999:0.1", "magnitude": None}, "/api/jobs", "envelope point"),
    ({"seeds": "²"}, "/api/maps", "seeds must be a whole number from 1 to 5, got '²'"),               # finding 5
    ({"seeds": "١"}, "/api/maps", "seeds must be a whole number"),
    ({"magnitude": "٠.١"}, "/api/jobs", "magnitude"),
    ({"seed": "１２"}, "/api/jobs", "seed"),
    ({"offset": "1_0"}, "/api/jobs", "offset must be a number of seconds"),
    ({"duration": "²"}, "/api/maps", "duration"),
    ({"layers": "conv_a:²"}, "/api/jobs", "not a whole number"),
    ({"envelope": "0:0,1:0.1", "magnitude": None}, "/api/maps", "a map measures each layer at fixed magnitudes, "
                                                                "so it takes no envelope"),  # finding 8
])
def test_every_number_goes_through_one_parser(make_web_app, fields, path, expected):
    client = make_web_app().test_client()
    data = {"model": "tiny", **GOOD, **fields, "audio": (io.BytesIO(web_wav_bytes(1.0)), "song.wav")}
    data = {k: v for k, v in data.items() if v is not None}
    r = client.post(path, data=data, content_type="multipart/form-data")
    assert expected in refused(r)


def test_job_ids_match_whole(make_web_app, web_submit, web_wait):
    from app.jobs import valid_job_id

    client = make_web_app().test_client()
    job_id = web_submit(client).get_json()["id"]
    assert web_wait(client, job_id)["state"] == "done"
    assert valid_job_id(job_id) and not valid_job_id(job_id + "\n") and not valid_job_id("\n" + job_id)
    assert "there is no job" in refused(client.get(f"/api/jobs/{job_id}%0A"), 404)
    assert "there is no job" in refused(client.get(f"/api/maps/{job_id}%0A"), 404)


def test_a_413_for_one_field_speaks_of_the_field(make_web_app, tmp_path):
    client = make_web_app().test_client()
    data = {"model": "tiny", **GOOD, "layers": "conv_a," * 100_000,
            "audio": (io.BytesIO(web_wav_bytes(0.5)), "song.wav")}
    message = refused(client.post("/api/jobs", data=data, content_type="multipart/form-data"), 413)
    assert "a text field of the form is larger than the limit of 500 kB per field" in message
    assert "MB" not in message
    small = make_web_app(MAX_UPLOAD_MB=0.01, DATA_DIR=str(tmp_path / "small")).test_client()
    data = {"model": "tiny", **GOOD, "audio": (io.BytesIO(web_wav_bytes(2.0)), "song.wav")}
    assert "the upload is larger than the limit of 0.01 MB" in refused(
        small.post("/api/jobs", data=data, content_type="multipart/form-data"), 413)


@pytest.mark.parametrize("web_runner, reports", [("local", True), ("rq", True), ("rq", False)],
                         ids=["in-process", "rq", "rq-stuck-between-progress-steps"])
def test_jobs_have_a_time_limit_and_the_worker_goes_on(make_web_app, web_submit, web_wait, reports):
    app = make_web_app(JOB_TIME_BASE_S=1.0, JOB_TIME_PER_AUDIO_S=0.0)
    client = app.test_client()
    executor = job_executor(app)
    real = executor.execute

    def slow(job_id, state, progress):
        for i in range(400):  # 20 s of work, reporting as it goes (or not: then RQ stops it)
            if reports:
                progress(i / 400, "working")
            time.sleep(0.05)
        return real(job_id, state, progress)

    executor.execute = slow
    r = web_submit(client)
    assert r.status_code == 202
    t0 = time.monotonic()
    view = web_wait(client, r.get_json()["id"])
    assert view["state"] == "failed" and time.monotonic() - t0 < 15, view
    assert view["error"].startswith("the job ran longer than its time limit of 1 s"), view["error"]
    executor.execute = real
    app.config.update(JOB_TIME_BASE_S=120.0, JOB_TIME_PER_AUDIO_S=20.0)
    r = web_submit(client)
    view = web_wait(client, r.get_json()["id"])
    assert view["state"] == "done", view
    spec = app.extensions["senseflosser"].store.read(view["id"])["request"]
    assert spec["time_limit_s"] == pytest.approx(120.0 + 20.0 * 1.5 * 2)


def test_the_default_time_limit_follows_the_audio(make_web_app, web_submit, tmp_path):
    app = make_web_app()
    app.extensions["senseflosser"].runner.stop()  # parked: only the accepted request is looked at
    client = app.test_client()
    store = app.extensions["senseflosser"].store
    one = web_submit(client, audio=web_wav_bytes(1.0)).get_json()["id"]
    five = web_submit(client, audio=web_wav_bytes(3.0), magnitude=None, titrate="1").get_json()["id"]
    assert store.read(one)["request"]["time_limit_s"] == pytest.approx(120 + 20 * 1.0 * 2)
    assert store.read(five)["request"]["time_limit_s"] == pytest.approx(120 + 20 * 3.0 * 6)
    capped = make_web_app(JOB_TIMEOUT_S=130, DATA_DIR=str(tmp_path / "capped")).test_client()
    job = web_submit(capped, audio=web_wav_bytes(3.0)).get_json()["id"]
    assert capped.application.extensions["senseflosser"].store.read(job)["request"]["time_limit_s"] == 130


def test_user_errors_log_no_traceback_and_a_500_is_logged_once(make_web_app, caplog, good_model, tmp_path):
    app = make_web_app()
    client = app.test_client()
    caplog.set_level(logging.INFO)
    deep = rezip(good_model, tmp_path / "deep.keras", deep_config(good_model))
    for r in (post_model(client, deep), client.post("/api/maps", data={"seeds": "²"}),
              client.get("/api/jobs/nope"), client.put("/api/jobs"),
              client.post("/api/jobs", data={"model": "tiny", **GOOD, "envelope": "lfo:0,0.05,1e-320",
                                             "audio": (io.BytesIO(web_wav_bytes(1.0)), "a.wav")})):
        assert 400 <= r.status_code < 500
    assert [rec for rec in caplog.records if rec.exc_info or rec.levelno >= logging.ERROR] == []

    def broken():
        raise RuntimeError("a bug")

    app.extensions["senseflosser"].engine.cards = broken
    caplog.clear()
    r = client.get("/api/models")
    assert r.status_code == 500 and "it has been logged" in r.get_json()["error"]
    logged = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(logged) == 1 and logged[0].exc_info[0] is RuntimeError, [rec.getMessage() for rec in logged]
    page = client.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 200  # still serving
