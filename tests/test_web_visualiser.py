"""The web side of the visualiser: each output's activation frames URL, ``video=1``, a bad layer refused."""

from __future__ import annotations

import io

import soundfile as sf

from senseflosser import framesfile
from senseflosser.spectral import n_frames


def test_every_output_lists_its_activation_frames_served_with_range(web_client, web_submit, web_wait, tmp_path):
    view = web_wait(web_client, web_submit(web_client, magnitudes="0.1,0.2", magnitude=None).get_json()["id"])
    assert view["state"] == "done", view
    out = view["outputs"]
    assert out["activations"]["layer"] == "conv_b" and out["activations"]["format"] == "SFAF 1"
    assert out["original"]["activations"] is None and out["video"] is None
    for entry in (out["normal"], *out["flossed"]):
        url = entry["activations"]
        assert url.startswith(f"/api/jobs/{view['id']}/files/") and url.endswith(".frames")
        full = web_client.get(url)
        assert full.status_code == 200 and full.data[:4] == b"SFAF"
        part = web_client.get(url, headers={"Range": "bytes=0-9"})
        assert part.status_code == 206 and part.data == full.data[:10]
        (tmp_path / "x.frames").write_bytes(full.data)
        assert framesfile.read(tmp_path / "x.frames").frames == n_frames(int(1.5 * 22050))  # every model frame


def test_video_field_adds_the_mp4_and_a_chosen_layer(web_client, web_submit, web_wait):
    view = web_wait(web_client, web_submit(web_client, video="1", activation_layer="conv_a").get_json()["id"])
    assert view["state"] == "done", view
    out = view["outputs"]
    assert out["activations"]["layer"] == "conv_a"
    assert "--activation-layer conv_a --video" in view["cli"]
    r = web_client.get(out["video"])
    assert r.status_code == 200 and r.mimetype == "video/mp4" and r.data[4:8] == b"ftyp"
    wav = web_client.get(out["flossed"][0]["url"])
    assert abs(sf.info(io.BytesIO(wav.data)).duration - 1.5) < 0.01


def test_a_bad_activation_layer_is_refused_before_the_job_runs(web_client, web_submit):
    r = web_submit(web_client, activation_layer="expand")
    assert r.status_code == 400
    assert r.get_json()["error"] == ("model 'tiny' has no conv layer 'expand' to take activation frames from; "
                                     "choose one of: conv_a, conv_b, conv_out")
