"""Ladder jobs on the web API: rungs as flossed outputs, "render this" (``source=`` + ``performance``), bad input."""

from __future__ import annotations

import io
import math
import shlex

import numpy as np
import pytest
import soundfile as sf

from senseflosser.cli import main
from senseflosser.ladder import RULE, parse_performance
from helpers import web_wav_bytes

# A knob path as the page records it: held, a 5 ms ramp up across three rungs, held, and back down.
PATH = "0:0,0.2:0,0.205:3.4,0.7:3.4,0.705:6.2,1.1:6.2,1.105:1.5"


def _wav(client, url: str) -> np.ndarray:
    r = client.get(url)
    assert r.status_code == 200
    return sf.read(io.BytesIO(r.data), dtype="int16")[0]


def _expected(rungs: list[np.ndarray], text: str, sr: int = 22050) -> np.ndarray:
    """The crossfade of the rungs along ``text``, computed here from the served samples (the design notes' rule)."""
    points = [tuple(map(float, p.split(":"))) for p in text.split(",")]
    t = np.arange(len(rungs[0])) / sr
    p = np.interp(t, [a for a, _ in points], [b for _, b in points])
    out = np.empty(len(t))
    for n, pos in enumerate(p):
        i = min(math.floor(pos), len(rungs) - 2)
        f = pos - i
        out[n] = (1 - f) * rungs[i][n] / 32768 + f * rungs[i + 1][n] / 32768
    return out


def test_a_recorded_path_renders_as_the_crossfade_of_the_served_rungs(web_client, web_submit, web_wait, models_dir,
                                                                      tmp_path, capsys):
    audio = web_wav_bytes(1.5)
    first = web_submit(web_client, audio=audio, magnitude=None, ladder="8", seed="21")
    assert first.status_code == 202, first.get_json()
    live = web_wait(web_client, first.get_json()["id"])
    assert live["state"] == "done", live["error"]
    flossed = live["outputs"]["flossed"]
    mags = [f["magnitude"] for f in flossed]
    assert len(flossed) == 8 and mags == sorted(mags) and live["outputs"]["ladder"]["magnitudes"] == mags
    assert live["outputs"]["ladder"]["rule"] == RULE and live["request"]["ladder"] == 8
    assert "--ladder 8" in live["cli"]
    rungs = [_wav(web_client, f["url"]) for f in flossed]  # what the page decodes and plays

    renders = []
    for _ in range(2):  # "Render this": the same audio again, the ladder and the recorded path
        r = web_submit(web_client, audio=None, source=live["id"], magnitude=None, ladder="8", seed="21",
                       performance=PATH)
        assert r.status_code == 202, r.get_json()
        view = web_wait(web_client, r.get_json()["id"])
        assert view["state"] == "done", view["error"]
        renders.append(view)
    perf = renders[0]["outputs"]["performance"]
    got = _wav(web_client, perf["url"])
    assert np.max(np.abs(got / 32768 - _expected(rungs, PATH))) <= 1 / 32768
    assert web_client.get(renders[1]["outputs"]["performance"]["url"]).data == web_client.get(perf["url"]).data
    assert perf["points"][2] == [0.205, 3.4] and perf["recipe_url"] and perf["peaks"]
    assert renders[0]["request"]["performance"][-1] == [1.105, 1.5]

    # The CLI the job shows, on the same audio, writes the same bytes.
    song = tmp_path / "song.wav"
    song.write_bytes(audio)
    assert main(["floss", "-i", str(song), "--models-dir", str(models_dir), "-m", "tiny", "-a", "fog", "--seed", "21",
                 "--ladder", "8", "--performance", PATH, "-o", str(tmp_path / "cli")]) == 0
    capsys.readouterr()
    words = shlex.split(renders[0]["cli"])
    shown = words[words.index("--performance") + 1]
    assert parse_performance(shown, rungs=8) == parse_performance(PATH, rungs=8)
    cli_file = next((tmp_path / "cli").glob("*_performance.wav"))
    assert cli_file.read_bytes() == web_client.get(perf["url"]).data


def test_the_continuous_render_is_served_with_its_snr(web_client, web_submit, web_wait):
    r = web_submit(web_client, magnitude=None, ladder="8", seed="3", performance="0:0,1:7", performance_envelope="1")
    view = web_wait(web_client, r.get_json()["id"])
    assert view["state"] == "done", view["error"]
    cont = view["outputs"]["performance"]["continuous"]
    assert math.isfinite(cont["metrics"]["snr_db"]) and cont["envelope"][0][0] == 0.0
    assert web_client.get(cont["url"]).status_code == 200
    assert "--performance-envelope" in view["cli"] and view["request"]["performance_envelope"] is True


@pytest.mark.parametrize("fields, message", [
    ({"action": "dream", "ladder": "8", "layers": "conv_a"}, "'dream' does not nest"),
    ({"ladder": "4"}, "ladder must be a whole number of rungs from 8 to 16, got '4'"),
    ({"ladder": "8", "performance": "0:0,1:3,0.5:2"}, "the performance is not sorted"),
    ({"ladder": "8", "performance": "0:0,1:8"}, "position 8 at 1 s is outside the ladder's rungs (0 to 7)"),
    ({"ladder": "8", "performance": "0:0,30:3"}, "point at 30 s is outside the audio"),
    ({"performance": "0:0,1:3"}, "give ladder=K"),
    ({"ladder": "8", "magnitude": "0.1"}, "a ladder chooses its own magnitudes"),
])
def test_bad_ladders_and_paths_are_a_400_with_a_sentence(web_client, web_submit, fields, message):
    r = web_submit(web_client, **{"magnitude": None, **fields})
    assert r.status_code == 400
    assert message in r.get_json()["error"]
