"""End to end: gunicorn started for real on a free loopback port, one job through HTTP."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from benchmarks import servers

from helpers import web_wav_bytes

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 240.0
JOB_TIMEOUT_S = 180.0


@pytest.fixture
def gunicorn_server(models_dir, tmp_path):
    pytest.importorskip("requests")
    log_path = tmp_path / "gunicorn.log"
    server = servers.gunicorn(models_dir, tmp_path / "jobs", log_path, workers=1, rate_limit="100/minute",
                              extra_env={"SENSEFLOSSER_WORKER_THREADS": "4"}).start()
    try:
        try:
            server.wait_healthy(START_TIMEOUT_S, poll_s=0.5)
        except RuntimeError as exc:
            pytest.fail(str(exc))
        yield server.base, server.proc, log_path
    finally:
        server.stop(60)


def _maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


def test_one_job_through_gunicorn(gunicorn_server):
    import requests

    base, master, log_path = gunicorn_server
    health = requests.get(f"{base}/healthz", timeout=10).json()
    assert health["status"] == "ok" and health["models"] == ["tiny", "tinyfixed"]
    worker = health["pid"]
    assert worker != master.pid  # answered by a worker process, not the master

    if Path(f"/proc/{master.pid}/maps").exists():
        # The models live in the worker; the master never loads TensorFlow.
        assert "tensorflow" in _maps(worker)
        assert "tensorflow" not in _maps(master.pid)

    page = requests.get(f"{base}/", timeout=10)
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]

    refused = requests.post(f"{base}/api/jobs", headers={"Origin": "https://evil.example"},
                            files={"audio": ("a.wav", web_wav_bytes(1.0))},
                            data={"model": "tiny", "action": "fog", "magnitude": "0.1"}, timeout=30)
    assert refused.status_code == 403

    r = requests.post(f"{base}/api/jobs", files={"audio": ("e2e song.wav", web_wav_bytes(1.5), "audio/wav")},
                      data={"model": "tiny", "action": "lapse", "magnitude": "0.2", "save_model": "1"},
                      timeout=60)
    assert r.status_code == 202, r.text
    status_url = base + r.json()["status_url"]
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        view = requests.get(status_url, timeout=10).json()
        if view["state"] in ("done", "failed"):
            break
        assert time.monotonic() < deadline, view
        time.sleep(0.2)
    assert view["state"] == "done", view

    flossed = view["outputs"]["flossed"][0]
    full = requests.get(base + flossed["url"], timeout=30)
    assert full.status_code == 200 and full.content[:4] == b"RIFF"
    part = requests.get(base + flossed["url"], headers={"Range": "bytes=0-1023"}, timeout=30)
    assert part.status_code == 206 and part.content == full.content[:1024]
    download = requests.get(base + flossed["download_url"], timeout=30)
    assert download.headers["Content-Disposition"] == "attachment; filename=e2e_song_lapse_0.2.wav"
    model = requests.get(base + view["outputs"]["model"], timeout=30)
    assert model.status_code == 200 and model.content[:2] == b"PK"

    # A graceful stop ends master and worker.
    master.send_signal(signal.SIGTERM)
    assert master.wait(60) == 0
    log = log_path.read_text()
    assert "Traceback" not in log, log[-3000:]


def test_user_errors_write_no_traceback_to_the_log(gunicorn_server, tmp_path):
    """Issue 22: every hostile request of the report answered 4xx in words; the log holds no traceback."""
    import io

    import requests

    from helpers import make_tiny_model
    from helpers import deep_config, lambda_via_api_name, renamed_config, rezip, wide_conv_config

    base, master, log_path = gunicorn_server
    good = tmp_path / "mine.keras"
    make_tiny_model(name="mine").save(good)
    models = {
        "lambda.keras": rezip(good, tmp_path / "lambda.keras", lambda_via_api_name(good)),
        "deep.keras": rezip(good, tmp_path / "deep.keras", deep_config(good)),
        "names.keras": rezip(good, tmp_path / "names.keras", renamed_config(good, "conv one")),
        "wide.keras": rezip(good, tmp_path / "wide.keras", wide_conv_config(good)),
        "notzip.keras": tmp_path / "song.wav",
    }
    models["notzip.keras"].write_bytes(web_wav_bytes(0.5))
    audio = web_wav_bytes(1.0)
    fields = {"model": "tiny", "action": "fog", "magnitude": "0.1"}
    answers = []
    for name, path in models.items():
        answers.append(requests.post(f"{base}/api/jobs", data={"action": "fog", "magnitude": "0.1"},
                                     files={"audio": ("a.wav", audio), "model_file": (name, path.read_bytes())},
                                     timeout=120))
    for path, extra in (("/api/jobs", {"envelope": "lfo:0,0.05,1e-320", "magnitude": ""}),
                        ("/api/maps", {"seeds": "²"}), ("/api/maps", {"envelope": "0:0,1:0.1", "magnitude": ""}),
                        ("/api/jobs", {"magnitude": "inf"}), ("/api/jobs", {"layers": "conv_a," * 100_000}),
                        ("/api/jobs", {"source": "x" * 22 + "\n"}), ("/api/jobs", {"model": "../tiny"})):
        answers.append(requests.post(f"{base}{path}", data={**fields, **extra},
                                     files={"audio": ("a.wav", io.BytesIO(audio))}, timeout=60))
    answers += [requests.get(f"{base}/api/jobs/{'x' * 22}%0A", timeout=10),
                requests.put(f"{base}/api/jobs", timeout=10),
                requests.post(f"{base}/api/jobs", data=b"x", headers={"Content-Type": "multipart/form-data"},
                              timeout=10)]
    for r in answers:
        assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
        assert set(r.json()) == {"error"}, r.text[:300]
    assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
    master.send_signal(signal.SIGTERM)
    assert master.wait(60) == 0
    log = log_path.read_text()
    assert "Traceback" not in log, log[-3000:]
    assert "unhandled error" not in log and "[ERROR]" not in log, log[-3000:]  # gunicorn's format of error records
