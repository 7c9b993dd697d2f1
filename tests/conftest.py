"""Shared fixtures (plain helpers live in helpers.py; tests import them from there).

Core section: tiny models and synthesized audio, so tests are fast and need no
download. Web fixtures follow in their own section.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.register_assert_rewrite("helpers")  # its asserts report like the tests' own

# helpers first: it sets TF_CPP_MIN_LOG_LEVEL before Keras (and TensorFlow) are imported.
from helpers import (  # noqa: E402
    CONCEPTS_SECTION,
    JOB_FIELDS,
    REDIS_TEST_QUEUE,
    WEB_WAIT_S,
    ThreadWorker,
    give_direction,
    make_conv1d_model,
    make_tiny_model,
    tone,
    web_wav_bytes,
)

import keras  # noqa: E402
import soundfile as sf  # noqa: E402

# ---------------------------------------------------------------- core section


@pytest.fixture(scope="session")
def tiny_model() -> keras.Model:
    model = make_tiny_model()
    give_direction(model)
    return model


@pytest.fixture(scope="session")
def conv1d_model() -> keras.Model:
    model = make_conv1d_model()
    give_direction(model)
    return model


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """A model registry folder with a variable-length and a fixed-length tiny model."""
    d = tmp_path_factory.mktemp("models")
    make_tiny_model().save(d / "tiny.keras")
    give_direction(make_tiny_model(), d / "tiny.adversarial.npz")
    # Cards list the conv layers and their channels, as trained and shipped models' cards do (a web
    # process on RQ reads them from the card, without loading the model).
    layers = ["conv_a", "conv_b", "conv_out"]
    channels = {"conv_a": 4, "conv_b": 4, "conv_out": 2}
    (d / "tiny.json").write_text(json.dumps({"name": "tiny", "summary": "tiny test model", "conv_layers": layers,
                                             "conv_channels": channels, "input_frames": None}))
    make_tiny_model(frames=24, seed=1, name="tinyfixed").save(d / "tinyfixed.keras")
    (d / "tinyfixed.json").write_text(json.dumps({"name": "tinyfixed", "summary": "fixed 24 frames",
                                                  "conv_layers": layers, "conv_channels": channels,
                                                  "input_frames": 24}))
    return d


@pytest.fixture
def registry(models_dir):
    from senseflosser.models import ModelRegistry

    return ModelRegistry(models_dir)


@pytest.fixture
def concept_dir(models_dir, tmp_path):
    """A copy of the tiny models' folder whose ``tiny`` card has a concepts section (``CONCEPTS_SECTION``)."""
    import shutil

    from senseflosser.models import ModelRegistry

    d = tmp_path / "models"
    shutil.copytree(models_dir, d)
    ModelRegistry(d).update_card("tiny", concepts=CONCEPTS_SECTION)
    return d


@pytest.fixture
def wav_file(tmp_path) -> Path:
    """A 2-second stereo 44.1 kHz 16-bit WAV."""
    p = tmp_path / "song.wav"
    sf.write(p, tone(2.0, 44100, channels=2), 44100, subtype="PCM_16")
    return p


# ----------------------------------------------------------------- web section
# Fixtures of the web app's tests (tests/test_web_*.py). They use the core section's
# tiny models (models_dir) and synthesize audio; every app gets its own data dir.


# ------------------------------------------------------------------ Redis and RQ
# A real redis-server (Debian's package; .ci/run installs it) on a free loopback port,
# without persistence, for the whole session; tests that need it skip when it is absent.


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    from benchmarks.servers import RedisServer

    if not RedisServer.available():
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    server = RedisServer(tmp_path_factory.mktemp("redis") / "redis.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rq_thread_worker(redis_server):
    worker = ThreadWorker(redis_server.url, REDIS_TEST_QUEUE)
    yield worker
    worker.stop()


@pytest.fixture
def web_runner() -> str:
    """Which job runner web apps get: "local" here; test_web_api.py runs with both."""
    return "local"


@pytest.fixture
def make_web_app(models_dir, tmp_path, web_runner, request):
    """Factory of web apps on the tiny models; their job runners are stopped afterwards.

    With ``web_runner`` "rq" the apps queue on the session's Redis and the thread worker runs
    their jobs (with this test's data dir).
    """
    from app import create_app

    apps = []
    rq_config = {}
    if web_runner == "rq":
        from app.engine import Engine
        from app.jobs import JobStore, task

        worker = request.getfixturevalue("rq_thread_worker")
        worker.reset()
        rq_config = {"REDIS_URL": request.getfixturevalue("redis_server").url, "QUEUE_NAME": worker.queue.name}
        store = JobStore(tmp_path / "jobs")
        engine = Engine(models_dir, max_duration=600.0)

        def execute(job_id, state, progress):
            return engine.render(store.root / job_id, state["request"], progress)

        task.install(task.WorkerContext(store=store, execute=execute))

    def make(**overrides):
        config = {
            "MODELS_DIR": str(models_dir),
            "DATA_DIR": str(tmp_path / "jobs"),
            "RATE_LIMIT": "10000/minute",
            "CLEANUP_INTERVAL_S": 3600.0,
            "POLL_INTERVAL_MS": 200,
            **rq_config,
        }
        config.update(overrides)
        app = create_app(config)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["senseflosser"].runner.stop()
    if web_runner == "rq":
        from app.jobs import task

        task.install(None)


@pytest.fixture
def web_app(make_web_app):
    return make_web_app()


@pytest.fixture
def web_client(web_app):
    return web_app.test_client()


_DEFAULT_AUDIO = object()


@pytest.fixture
def web_submit():
    """``web_submit(client, audio=..., filename=..., **fields)`` -> response of POST /api/jobs.

    ``audio`` defaults to a 1.5 s synthesized WAV; ``None`` leaves the file out. Fields
    default to model tiny, fog, magnitude 0.1; a field given as ``None`` is left out.
    """
    import io

    def submit(client, audio=_DEFAULT_AUDIO, filename: str = "song.wav", headers=None, **fields):
        data = dict(JOB_FIELDS)
        data.update(fields)
        data = {k: v for k, v in data.items() if v is not None}
        if audio is _DEFAULT_AUDIO:
            audio = web_wav_bytes()
        if audio is not None:
            data["audio"] = (io.BytesIO(audio), filename)
        return client.post("/api/jobs", data=data, content_type="multipart/form-data", headers=headers or {})

    return submit


@pytest.fixture
def web_wait():
    """``web_wait(client, job_id)`` -> the job's view once it is done or failed."""
    import time

    def wait(client, job_id: str, timeout: float = WEB_WAIT_S) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            r = client.get(f"/api/jobs/{job_id}")
            assert r.status_code == 200, r.get_json()
            view = r.get_json()
            if view["state"] in ("done", "failed"):
                return view
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {view['state']} after {timeout} s")
            time.sleep(0.05)

    return wait
