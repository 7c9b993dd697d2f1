"""Re-running on the same audio: the normal-output cache, peaks files, ``source=`` and ``/jobs/<id>``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from senseflosser.normal_cache import NormalCache
from senseflosser.peaks import peaks
from senseflosser.pipeline import floss
from helpers import floss_into, tone
from helpers import tiny_recipe as _r


def test_peaks_are_min_and_max_of_each_slice_never_normalised():
    y = np.zeros(1000, np.float32)
    y[10], y[990] = 0.25, -0.5
    p = peaks(y, bins=10)
    assert p["bins"] == 10 and p["samples"] == 1000 and p["duration"] == pytest.approx(1000 / 22050)
    assert p["max"][0] == 0.25 and p["min"][9] == -0.5
    assert p["max"][1:] == [0.0] * 9 and p["min"][:9] == [0.0] * 9
    assert peaks(y[:3], bins=10)["bins"] == 3


def test_a_precomputed_normal_gives_the_same_outputs_bit_for_bit(tiny_model):
    y = tone(2.0)
    first = floss(y, tiny_model, [_r(magnitude=0.05), _r(magnitude=0.2)])
    again = floss(y, tiny_model, [_r(magnitude=0.2)], normal=(first.normal_raw, first.normal_metrics))
    np.testing.assert_array_equal(again.normal, first.normal)
    np.testing.assert_array_equal(again.flossed[0].audio, first.flossed[1].audio)
    assert again.flossed[0].metrics == first.flossed[1].metrics
    assert again.normal_metrics == first.normal_metrics


def test_a_precomputed_normal_of_another_length_is_refused(tiny_model):
    from senseflosser.errors import AudioError

    with pytest.raises(AudioError, match="precomputed normal"):
        floss(tone(1.0), tiny_model, [_r()], normal=(np.zeros(10, np.float32), {}))


def test_floss_to_dir_reuses_the_cached_normal_and_writes_peaks(registry, wav_file, tmp_path, monkeypatch):
    cache = NormalCache(tmp_path / "cache")
    kw = dict(registry=registry, model="tiny", action="fog", seed=3, spectrograms=True, write_original=True,
              peaks=True, normal_cache=cache, stem="audio")
    first = floss_into(wav_file, magnitudes=[0.1], output_dir=tmp_path / "a", **kw)
    assert first["normal_cached"] is False
    for label in ("original", "normal"):
        assert first[label]["peaks"] == f"audio_{label}.peaks.json"
    data = json.loads((tmp_path / "a" / first["flossed"][0]["peaks"]).read_text())
    assert data["bins"] == 800 and len(data["min"]) == len(data["max"]) == 800

    from senseflosser import runners

    normal_runs = []
    real = runners.Runner.__init__

    def counting(self, model, *a, **k):
        normal_runs.append(model)
        return real(self, model, *a, **k)

    monkeypatch.setattr(runners.Runner, "__init__", counting)
    second = floss_into(wav_file, magnitudes=[0.1], output_dir=tmp_path / "b", **kw)
    assert second["normal_cached"] is True
    assert len(normal_runs) == 1  # the damaged pass only
    for label in ("original", "normal"):
        for key in ("file", "spectrogram", "peaks"):
            assert (tmp_path / "a" / first[label][key]).read_bytes() == (tmp_path / "b" / second[label][key]).read_bytes()
    assert ((tmp_path / "a" / first["flossed"][0]["file"]).read_bytes()
            == (tmp_path / "b" / second["flossed"][0]["file"]).read_bytes())
    # another segment is another entry
    third = floss_into(wav_file, magnitudes=[0.1], output_dir=tmp_path / "c", offset=0.5, **kw)
    assert third["normal_cached"] is False


def test_cache_keeps_at_most_max_entries(tmp_path):
    cache = NormalCache(tmp_path / "c", max_entries=2)
    src = tmp_path / "f.wav"
    src.write_bytes(b"x")
    for i in range(4):
        cache.put(f"k{i}", np.zeros(4, np.float32), {"snr_db": 1.0}, {"normal": {".wav": src}},
                  home=tmp_path / f"run{i}")
    assert len([p for p in (tmp_path / "c").iterdir()]) == 2
    got = cache.get("k3")
    assert got is not None and got.metrics == {"snr_db": 1.0} and got.files["normal"][".wav"].read_bytes() == b"x"
    assert cache.get("k0") is None


def test_an_entry_goes_with_the_outputs_it_belongs_to(tmp_path):
    import shutil

    cache = NormalCache(tmp_path / "c")
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        (tmp_path / run / "normal.wav").write_bytes(run.encode())
    cache.put("k", np.ones(4, np.float32), {}, {"normal": {".wav": tmp_path / "a" / "normal.wav"}},
              home=tmp_path / "a" / ".normal")
    cache.put("k", np.ones(4, np.float32), {}, {"normal": {".wav": tmp_path / "b" / "normal.wav"}},
              home=tmp_path / "b" / ".normal")
    shutil.rmtree(tmp_path / "a")  # the older run expires: the newest serves
    assert cache.get("k").files["normal"][".wav"].read_bytes() == b"b"
    shutil.rmtree(tmp_path / "b")
    assert cache.get("k") is None and not (tmp_path / "c" / "k").exists()


# ------------------------------------------------------------------ web


def test_rerun_with_source_uses_the_stored_upload_and_the_cached_normal(web_app, web_submit, web_wait):
    client = web_app.test_client()
    first = web_submit(client, filename="My Song.wav", seed="5", magnitude="0.05")
    assert first.status_code == 202
    view1 = web_wait(client, first.get_json()["id"])
    assert view1["state"] == "done" and view1["outputs"]["normal_cached"] is False
    assert view1["page_url"] == f"/jobs/{view1['id']}"
    assert view1["request"]["magnitudes"] == [0.05]
    peaks_url = view1["outputs"]["flossed"][0]["peaks"]
    r = client.get(peaks_url)
    assert r.status_code == 200 and r.mimetype == "application/json" and r.get_json()["bins"] > 0

    second = web_submit(client, audio=None, source=view1["id"], seed="5", magnitude="0.2")
    assert second.status_code == 202, second.get_json()
    view2 = web_wait(client, second.get_json()["id"])
    assert view2["state"] == "done", view2
    assert view2["filename"] == "My_Song.wav" and view2["outputs"]["normal_cached"] is True
    assert view2["recipe"]["magnitudes"] == [0.2]
    same = [client.get(view1["outputs"][k]["url"]).data == client.get(view2["outputs"][k]["url"]).data
            for k in ("original", "normal")]
    assert same == [True, True]
    # the new job keeps its own copy of the audio: it outlives its source
    web_app.extensions["senseflosser"].store.delete(view1["id"])
    third = web_submit(client, audio=None, source=view2["id"], magnitude="0.1")
    assert third.status_code == 202, third.get_json()
    view3 = web_wait(client, third.get_json()["id"])
    assert view3["state"] == "done" and view3["outputs"]["normal_cached"] is True  # kept by the re-run too
    gone = web_submit(client, audio=None, source=view1["id"])
    assert gone.status_code == 400 and "upload the file again" in gone.get_json()["error"]


@pytest.mark.parametrize("source, expected", [
    ("../../etc", "source must be the id of an earlier job"),
    ("A" * 22, "there is no job with id"),
])
def test_bad_source_is_400(web_client, web_submit, source, expected):
    r = web_submit(web_client, audio=None, source=source)
    assert r.status_code == 400 and expected in r.get_json()["error"]


def test_source_and_audio_together_are_400(web_client, web_submit):
    r = web_submit(web_client, source="A" * 22)
    assert r.status_code == 400 and "not both" in r.get_json()["error"]


def test_a_map_takes_source_too(web_app, web_submit, web_wait):
    client = web_app.test_client()
    view = web_wait(client, web_submit(client).get_json()["id"])
    r = client.post("/api/maps", data={"source": view["id"], "model": "tiny", "action": "fog",
                                       "magnitudes": "0.1", "seeds": "1"}, content_type="multipart/form-data")
    assert r.status_code == 202, r.get_json()
    done = web_wait(client, r.get_json()["id"])
    assert done["state"] == "done" and done["map"]["layers"]


def test_job_page_has_its_own_url(web_client, web_submit, web_wait):
    view = web_wait(web_client, web_submit(web_client).get_json()["id"])
    r = web_client.get(f"/jobs/{view['id']}")
    assert r.status_code == 200 and f'data-job-id="{view["id"]}"' in r.get_data(as_text=True)
    missing = web_client.get("/jobs/" + "B" * 22)
    assert missing.status_code == 404 and "there is no job with id" in missing.get_data(as_text=True).lower()
    assert "data-job-id" not in web_client.get("/").get_data(as_text=True)


def test_cache_drops_entries_unused_for_max_age(tmp_path):
    import os
    import time

    cache = NormalCache(tmp_path / "c", max_age_s=60)
    src = tmp_path / "f.wav"
    src.write_bytes(b"x")
    cache.put("old", np.zeros(4, np.float32), {}, {"normal": {".wav": src}}, home=tmp_path / "h1")
    past = time.time() - 120
    os.utime(tmp_path / "c" / "old", (past, past))
    cache.put("new", np.zeros(4, np.float32), {}, {"normal": {".wav": src}}, home=tmp_path / "h2")
    assert cache.get("old") is None and cache.get("new") is not None
