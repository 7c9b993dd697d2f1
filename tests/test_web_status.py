"""A job's status as a long poll, and spectrograms drawn when first asked for.

Every test runs with the in-process job runner and with jobs on RQ (a real
redis-server, the model-warm worker on a thread of the test process).
"""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from helpers import block, job_executor


@pytest.fixture(params=["local", "rq"])
def web_runner(request) -> str:
    return request.param


def _out_dir(app, job_id: str):
    return app.extensions["senseflosser"].store.root / job_id / "out"


# ------------------------------------------------------------------ long poll


def test_a_waiting_status_request_answers_as_soon_as_the_job_changes(make_web_app, web_submit, web_wait):
    app = make_web_app()
    client = app.test_client()
    started, release = block(job_executor(app))
    try:
        job_id = web_submit(client).get_json()["id"]
        assert started.wait(30)
        seen = client.get(f"/api/jobs/{job_id}").get_json()
        assert seen["state"] == "running" and seen["playable"] is False and len(seen["version"]) == 12
        # Nothing changes while the work is held: the request waits its time out, then answers the same.
        t0 = time.monotonic()
        same = client.get(f"/api/jobs/{job_id}?wait=0.5&version={seen['version']}").get_json()
        assert 0.45 <= time.monotonic() - t0 < 5
        assert same["version"] == seen["version"] and same["state"] == "running"
        # Released, the job runs to its end; a waiting request answers with each change, at once.
        answers = []

        def ask():
            answers.append((client.get(f"/api/jobs/{job_id}?wait=10&version={seen['version']}").get_json(),
                            time.monotonic()))

        waiter = threading.Thread(target=ask)
        waiter.start()
        time.sleep(0.3)
        released = time.monotonic()
        release.set()
        waiter.join(30)
        changed, at = answers[0]
        assert changed["version"] != seen["version"]
        assert at - released < 5  # not the 10 s wait
    finally:
        release.set()
    done = web_wait(client, job_id)
    assert done["state"] == "done" and done["playable"] is True
    # A finished job answers at once whatever version is named.
    t0 = time.monotonic()
    again = client.get(f"/api/jobs/{job_id}?wait=10&version={done['version']}").get_json()
    assert time.monotonic() - t0 < 2 and again["version"] == done["version"]


def test_the_audio_is_playable_and_served_before_the_job_is_done(make_web_app, web_submit, web_wait,
                                                                  monkeypatch):
    import senseflosser.render as render

    app = make_web_app()
    client = app.test_client()
    measuring, release = threading.Event(), threading.Event()
    real = render.measure_distances

    def held(result):  # the job stops after its audio is written, before it measures it
        measuring.set()
        release.wait(60)
        return real(result)

    monkeypatch.setattr(render, "measure_distances", held)
    try:
        job_id = web_submit(client, original="1", peaks="1").get_json()["id"]
        assert measuring.wait(60)
        deadline = time.monotonic() + 10
        view = client.get(f"/api/jobs/{job_id}").get_json()
        while not view["playable"] and time.monotonic() < deadline:  # RQ: its progress reaches Redis
            time.sleep(0.05)
            view = client.get(f"/api/jobs/{job_id}").get_json()
        assert view["state"] == "running" and view["playable"] is True
        out = view["outputs"]
        assert out["complete"] is False and out["normal"]["metrics"] is None and out["normal"]["peaks"] is None
        assert [f["magnitude"] for f in out["flossed"]] == [0.1]
        for entry in (out["original"], out["normal"], out["flossed"][0]):
            wav = client.get(entry["url"])
            assert wav.status_code == 200 and wav.data[:4] == b"RIFF"
        # Only the audio: what is not written yet is refused with a sentence.
        early = client.get(f"/api/jobs/{job_id}/files/audio_normal.peaks.json")
        assert early.status_code == 404 and "only its audio is ready" in early.get_json()["error"]
    finally:
        release.set()
    done = web_wait(client, job_id)
    assert done["state"] == "done" and done["outputs"]["complete"] is True
    assert done["outputs"]["normal"]["url"] == out["normal"]["url"]
    assert done["outputs"]["flossed"][0]["metrics"]["snr_db"] is not None and done["outputs"]["normal"]["peaks"]
    # The same bytes as the early download (written once).
    assert client.get(out["flossed"][0]["url"]).data == wav.data


def test_a_waiting_request_learns_of_the_audio_at_once_not_when_the_job_is_done(make_web_app, web_submit,
                                                                                 web_wait, monkeypatch):
    # A runner writes progress at most every 0.2 s; a tiny job's steps come faster, so the step that
    # says "the audio is ready" must not be the one held back (the page would hear it only at the end).
    import senseflosser.render as render

    app = make_web_app()
    client = app.test_client()
    started, release_start = block(job_executor(app))
    release_measure = threading.Event()
    real = render.measure_distances
    monkeypatch.setattr(render, "measure_distances", lambda result: (release_measure.wait(60), real(result))[1])
    try:
        job_id = web_submit(client).get_json()["id"]
        assert started.wait(30)
        view = client.get(f"/api/jobs/{job_id}").get_json()
        assert view["playable"] is False
        release_start.set()
        t0 = time.monotonic()
        while not view["playable"] and time.monotonic() - t0 < 20:  # long polls, as the page makes them
            view = client.get(f"/api/jobs/{job_id}?wait=10&version={view['version']}").get_json()
        assert view["state"] == "running" and view["playable"] is True
        assert time.monotonic() - t0 < 5  # the audio, not a 10 s wait's end
    finally:
        release_start.set()
        release_measure.set()
    assert web_wait(client, job_id)["state"] == "done"


def test_a_state_written_in_this_process_wakes_a_waiting_request_at_once(tmp_path):
    from app.jobs import JobStore
    from app.jobs.base import new_state

    store = JobStore(tmp_path / "data")
    job_id, _ = store.create()
    store.write(new_state(job_id, {"filename": "x.wav"}, owner="test"))
    writer = threading.Timer(0.2, lambda: store.write({**store.read(job_id), "progress": 0.5}))
    t0 = time.monotonic()
    writer.start()
    store.wait_for_write(10.0)
    assert 0.15 < time.monotonic() - t0 < 5  # woken by the write, not by the 10 s timeout
    writer.join()
    t0 = time.monotonic()
    store.wait_for_write(0.1)  # nothing written: the timeout ends it
    assert time.monotonic() - t0 >= 0.09


@pytest.mark.parametrize("wait", ["abc", "-1", "11", "nan", "1e400"])
def test_a_bad_wait_is_refused_in_a_sentence(web_client, web_submit, web_wait, wait):
    job_id = web_submit(web_client).get_json()["id"]
    r = web_client.get(f"/api/jobs/{job_id}?wait={wait}&version=x")
    assert r.status_code == 400
    error = r.get_json()["error"]
    assert "wait" in error and ("seconds" in error or "finite" in error), error
    web_wait(web_client, job_id)


def test_a_waiting_request_for_an_unknown_job_is_404(web_client):
    r = web_client.get("/api/jobs/AAAAAAAAAAAAAAAAAAAAAA?wait=5&version=abc")
    assert r.status_code == 404 and "no job" in r.get_json()["error"]


# ------------------------------------------------------------------ spectrograms when asked for


def test_a_done_job_draws_no_image_until_one_is_asked_for(make_web_app, web_submit, web_wait):
    from senseflosser.audio import load
    from senseflosser.spectrogram import save_spectrogram

    app = make_web_app()
    client = app.test_client()
    view = web_wait(client, web_submit(client).get_json()["id"])
    assert view["state"] == "done" and view["playable"] is True
    out = _out_dir(app, view["id"])
    assert sorted(p.name for p in out.glob("*.png")) == []  # the audio was ready without them
    entry = view["outputs"]["flossed"][0]
    name = entry["spectrogram"].rsplit("/", 1)[1]
    png = client.get(entry["spectrogram"])
    assert png.status_code == 200 and png.mimetype == "image/png"
    assert (out / name).is_file() and sorted(p.name for p in out.glob("*.png")) == [name]
    # The image of the WAV as served: the same pixels as drawing the written samples directly.
    wav = out / entry["url"].rsplit("/", 1)[1]
    save_spectrogram(load(wav), out.parent / "direct.png")
    drawn = np.asarray(Image.open(io.BytesIO(png.data)))
    assert np.array_equal(drawn, np.asarray(Image.open(out.parent / "direct.png")))
    # Asked again, it is served from disk, unchanged.
    assert client.get(entry["spectrogram"]).data == png.data


def test_images_asked_for_at_once_are_each_whole(make_web_app, web_submit, web_wait):
    app = make_web_app()
    view = web_wait(app.test_client(), web_submit(app.test_client()).get_json()["id"])
    urls = [view["outputs"][k]["spectrogram"] for k in ("original", "normal")] + \
        [view["outputs"]["flossed"][0]["spectrogram"]]
    got: list = []

    def fetch(url):
        got.append(app.test_client().get(url))

    threads = [threading.Thread(target=fetch, args=(u,)) for u in urls * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == 6
    for r in got:
        assert r.status_code == 200
        Image.open(io.BytesIO(r.data)).verify()  # a whole PNG, never a half-written one
    assert not list(_out_dir(app, view["id"]).glob(".*.part"))


def test_an_image_whose_audio_is_gone_is_404(make_web_app, web_submit, web_wait):
    app = make_web_app()
    client = app.test_client()
    view = web_wait(client, web_submit(client).get_json()["id"])
    normal = view["outputs"]["normal"]
    (_out_dir(app, view["id"]) / normal["url"].rsplit("/", 1)[1]).unlink()
    r = client.get(normal["spectrogram"])
    assert r.status_code == 404 and "no job" in r.get_json()["error"]


# ------------------------------------------------------------------ one decode


def test_the_job_reads_the_segment_decoded_when_the_upload_was_checked(make_web_app, web_submit, web_wait,
                                                                         monkeypatch):
    from senseflosser import audio

    app = make_web_app()
    client = app.test_client()
    started, release = block(job_executor(app))
    try:
        job_id = web_submit(client, offset="0.25").get_json()["id"]
        assert started.wait(30)
        segment = np.load(_out_dir(app, job_id).parent / "input" / "segment.npy")
        assert segment.dtype == np.float32 and len(segment) / 22050 == pytest.approx(1.25, abs=0.01)
        decodes = []
        real = audio.load
        monkeypatch.setattr(audio, "load", lambda *a, **k: decodes.append(a) or real(*a, **k))
    finally:
        release.set()
    view = web_wait(client, job_id)
    assert view["state"] == "done", view
    assert decodes == []  # the worker did not decode the upload again
    assert view["outputs"]["duration"] == pytest.approx(len(segment) / 22050)
