"""Ladders and performances in the core and the CLI: rung spacing, nesting, the crossfade's exactness, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf

from senseflosser import actions, ladder
from senseflosser.cli import main
from senseflosser.errors import RecipeError
from senseflosser.jobspec import build_job, job_from_recipe
from senseflosser.performance import render_performance
from senseflosser.render import floss_file

PATH = "0:0,0.3:2.5,0.31:2.5,0.9:7,1.2:4.75,1.6:0.4"


def _crossfade_by_hand(rungs: list[np.ndarray], points: list[tuple[float, float]], sr: int) -> np.ndarray:
    """The design notes' rule, sample by sample, written out here rather than taken from the library."""
    times = [t for t, _ in points]
    pos = [p for _, p in points]
    out = np.empty(len(rungs[0]))
    k = len(rungs)
    j = 0
    for n in range(len(out)):
        t = n / sr
        if t <= times[0]:
            p = pos[0]
        elif t >= times[-1]:
            p = pos[-1]
        else:
            while times[j + 1] < t:
                j += 1
            p = pos[j] + (pos[j + 1] - pos[j]) * (t - times[j]) / (times[j + 1] - times[j])
        i = min(math.floor(p), k - 2)
        f = p - i
        out[n] = (1 - f) * rungs[i][n] + f * rungs[i + 1][n]
    return out


def _ladder_job(registry, wav_file, out_dir, *, performance=PATH, continuous=False, seed=11):
    spec = build_job(model="tiny", action="fog", ladder=8, performance=performance, continuous=continuous, seed=seed)
    return floss_file(spec, wav_file, registry=registry, output_dir=out_dir)


def test_rungs_are_evenly_spaced_on_the_calibrated_scale():
    calib = {"levels_db": [15.0, 10.0, 5.0, 0.0, -10.0],
             "magnitudes": {"fog": [0.01, 0.02, 0.04, 0.08, 0.32], "ablate": [None, 0.03, 0.05, None, None]}}
    mags = ladder.ladder_magnitudes("fog", 8, calibration=calib)
    assert len(mags) == 8 and list(mags) == sorted(mags) and mags[0] == 0.01 and mags[-1] == 0.32
    # Each rung's SNR on the card's curve (log-magnitude interpolation read backwards): 25 dB / 7 apart.
    levels = np.interp(np.log(mags), np.log(calib["magnitudes"]["fog"]), calib["levels_db"])
    np.testing.assert_allclose(np.diff(levels), -25 / 7, atol=0.01)
    # Only the levels the card crossed are used; without a calibration the titration's span, in log.
    part = ladder.ladder_magnitudes("ablate", 8, calibration=calib)
    assert part[0] == 0.03 and part[-1] == 0.05
    plain = ladder.ladder_magnitudes("fog", 10)
    t = actions.get("fog").magnitude.titration
    assert plain[0] == t[0] and plain[-1] == t[-1]
    np.testing.assert_allclose(np.diff(np.log(plain)), np.log(t[-1] / t[0]) / 9, rtol=2e-3)  # 4 digits kept


def test_every_registered_action_says_whether_it_nests_and_a_ladder_refuses_those_that_do_not():
    assert {n for n in actions.names() if not actions.get(n).nests} == {"dream"}
    assert actions.get("fog").to_dict()["nests"] is True
    with pytest.raises(RecipeError, match="'dream' does not nest.*a ladder takes one of: fog"):
        build_job(model="tiny", action="dream", ladder=8, layers="conv_a")


@pytest.mark.parametrize("fields, message", [
    ({"ladder": 7}, "ladder must be a whole number of rungs from 8 to 16, got 7"),
    ({"ladder": "17"}, "from 8 to 16, got '17'"),
    ({"ladder": "eight"}, "got 'eight'"),
    ({"ladder": 8, "magnitudes": "0.1"}, "a ladder chooses its own magnitudes"),
    ({"performance": "0:1"}, "give ladder=K"),
    ({"ladder": 8, "performance": "0:0,2:3,1:4"}, "not sorted: .* 1 s comes after 2 s"),
    ({"ladder": 8, "performance": "0:0,1:7.5"}, "position 7.5 at 1 s is outside the ladder's rungs \\(0 to 7\\)"),
    ({"ladder": 8, "performance": "0:-1"}, "position -1 at 0 s is outside"),
    ({"ladder": 8, "performance": "-1:0"}, "time -1 s is negative"),
    ({"ladder": 8, "performance": "0:0,1"}, "'1' is not 'seconds:position'"),
    ({"ladder": 8, "performance": "0:x"}, "is not two finite numbers"),
    ({"ladder": 8, "continuous": True}, "continuous render is of a performance"),
])
def test_bad_ladders_and_paths_get_a_sentence_naming_the_value(fields, message):
    with pytest.raises(RecipeError, match=message):
        build_job(model="tiny", action="fog", seed=1, **fields)


def test_a_path_outside_the_audio_is_refused_once_its_length_is_known():
    spec = build_job(model="tiny", action="fog", ladder=8, performance="0:0,3:7", seed=1)
    with pytest.raises(RecipeError, match="point at 3 s is outside the audio, which is 2.00 s long"):
        spec.fixed(2.0)
    assert spec.fixed(3.0).performance == spec.performance


def test_the_performance_is_the_crossfade_of_the_rung_wavs_as_served(registry, wav_file, tmp_path):
    manifest = _ladder_job(registry, wav_file, tmp_path / "a")
    out = tmp_path / "a"
    assert [f["magnitude"] for f in manifest["flossed"]] == manifest["ladder"]["magnitudes"]
    rungs = [sf.read(out / f["file"], dtype="int16")[0] / 32768.0 for f in manifest["flossed"]]
    got, sr = sf.read(out / manifest["performance"]["file"], dtype="int16")
    points = [tuple(p) for p in manifest["performance"]["points"]]
    expected = _crossfade_by_hand(rungs, points, sr)
    assert np.max(np.abs(got / 32768.0 - expected)) <= 1 / 32768
    # The knob moved: it is neither rung 0 nor any one rung throughout.
    assert all(np.max(np.abs(got / 32768.0 - r)) > 1e-3 for r in rungs)
    again = _ladder_job(registry, wav_file, tmp_path / "b")
    assert ((tmp_path / "b" / again["performance"]["file"]).read_bytes()
            == (out / manifest["performance"]["file"]).read_bytes())
    # Chunk edges do not show: a tiny chunk gives the same bytes.
    small, _ = render_performance([out / f["file"] for f in manifest["flossed"]],
                                  ladder.parse_performance(PATH, rungs=8), tmp_path / "small.wav", chunk_samples=1000)
    assert small.read_bytes() == (out / manifest["performance"]["file"]).read_bytes()


def test_the_recipe_records_the_performance_and_reproduces_it_on_the_cli(capsys, registry, models_dir, wav_file,
                                                                          tmp_path):
    manifest = _ladder_job(registry, wav_file, tmp_path / "job", seed=5)
    job_recipe = json.loads((tmp_path / "job" / manifest["recipe_file"]).read_text())
    perf = job_recipe["performance"]
    assert perf["kind"] == ladder.KIND and perf["rule"] == ladder.RULE
    assert perf["rungs"] == job_recipe["magnitudes"] and perf["points"] == [list(p) for p in
                                                                             ladder.parse_performance(PATH, rungs=8).points]
    served = (tmp_path / "job" / manifest["performance"]["file"]).read_bytes()

    flags = ["floss", "-i", str(wav_file), "--models-dir", str(models_dir), "-m", "tiny", "-a", "fog", "--seed", "5",
             "--ladder", "8", "--performance", PATH]
    assert main([*flags, "-o", str(tmp_path / "cli")]) == 0
    assert "performance:" in capsys.readouterr().out
    assert (tmp_path / "cli" / manifest["performance"]["file"]).read_bytes() == served

    for name in (manifest["recipe_file"], manifest["performance"]["recipe_file"]):
        target = tmp_path / f"from-{name}"
        assert main(["floss", "-i", str(wav_file), "--models-dir", str(models_dir), "--recipe",
                     str(tmp_path / "job" / name), "-o", str(target)]) == 0
        assert (target / manifest["performance"]["file"]).read_bytes() == served
    spec = job_from_recipe((tmp_path / "job" / manifest["recipe_file"]).read_text())
    assert spec.ladder and spec.performance == ladder.parse_performance(PATH, rungs=8)


def test_a_recipe_whose_performance_does_not_fit_its_rungs_is_refused(registry, wav_file, tmp_path):
    manifest = _ladder_job(registry, wav_file, tmp_path / "job")
    data = json.loads((tmp_path / "job" / manifest["recipe_file"]).read_text())
    data["performance"]["rungs"] = data["performance"]["rungs"][:-1]
    with pytest.raises(RecipeError, match="performance is over the rungs"):
        job_from_recipe(json.dumps(data))
    data = json.loads((tmp_path / "job" / manifest["recipe_file"]).read_text())
    data["performance"]["kind"] = "points"
    with pytest.raises(RecipeError, match="of kind 'ladder-crossfade', got 'points'"):
        job_from_recipe(json.dumps(data))


@pytest.mark.parametrize("argv, message", [
    (["--ladder", "3"], "ladder must be a whole number of rungs from 8 to 16, got '3'"),
    (["-a", "dream", "--ladder", "8", "-l", "conv_a"], "'dream' does not nest"),
    (["--ladder", "8", "--performance", "0:0,1:2,0.5:1"], "the performance is not sorted"),
    (["--ladder", "8", "--performance", "0:0,9:3"], "point at 9 s is outside the audio"),
    (["--ladder", "8", "--performance", "0:9"], "position 9 at 0 s is outside the ladder's rungs"),
])
def test_cli_bad_ladders_exit_with_one_line(capsys, models_dir, wav_file, tmp_path, argv, message):
    base = ["floss", "-i", str(wav_file), "--models-dir", str(models_dir), "-m", "tiny", "-o", str(tmp_path / "o")]
    code = main([*base, *(["-a", "fog"] if "-a" not in argv else []), *argv])
    err = capsys.readouterr().err
    assert code == 1 and message in err and err.strip().count("\n") == 0


def test_the_continuous_render_follows_the_path_in_magnitude_and_reports_its_snr(registry, wav_file, tmp_path):
    manifest = _ladder_job(registry, wav_file, tmp_path / "c", continuous=True)
    cont = manifest["performance"]["continuous"]
    mags = manifest["ladder"]["magnitudes"]
    env = cont["envelope"]
    assert env[0] == [0.0, mags[0]] and max(m for _, m in env) == pytest.approx(mags[7])
    # A point at 0.9 s sits on rung 7; one where the path crosses rung 3 on its way up takes rung 3's magnitude.
    assert [0.9, mags[7]] in env
    crossing = 0.31 + (0.9 - 0.31) * (3 - 2.5) / (7 - 2.5)
    assert any(abs(t - crossing) < 1e-9 and abs(m - mags[3]) < 1e-12 for t, m in env)
    snr = cont["metrics"]["snr_db"]
    assert math.isfinite(snr)
    y, _ = sf.read(tmp_path / "c" / cont["file"], dtype="float32")
    ref, _ = sf.read(tmp_path / "c" / manifest["performance"]["file"], dtype="float32")
    assert snr == pytest.approx(10 * np.log10(np.sum(ref.astype(np.float64) ** 2)
                                              / np.sum((ref.astype(np.float64) - y) ** 2)), abs=1e-3)


def test_a_ladders_rungs_are_heard_not_pictured(registry, wav_file, tmp_path):
    from senseflosser.jobspec import Outputs

    spec = build_job(model="tiny", action="fog", ladder=8, seed=2, outputs=Outputs(spectrograms=True, peaks=True))
    manifest = floss_file(spec, wav_file, registry=registry, output_dir=tmp_path)
    assert manifest["normal"]["spectrogram"] and (tmp_path / manifest["normal"]["spectrogram"]).is_file()
    assert all("spectrogram" not in f and f["peaks"] for f in manifest["flossed"])


def test_the_crossfade_streams_a_chunk_of_each_rung_at_a_time(registry, wav_file, tmp_path, monkeypatch):
    manifest = _ladder_job(registry, wav_file, tmp_path / "job")
    rungs = [tmp_path / "job" / f["file"] for f in manifest["flossed"]]
    reads = []
    real = sf.SoundFile.read

    def counting(self, frames=-1, *args, **kwargs):
        reads.append(frames)
        return real(self, frames, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", counting)
    path, _ = render_performance(rungs, ladder.parse_performance(PATH, rungs=8), tmp_path / "p.wav", chunk_samples=4096)
    frames = sf.info(str(rungs[0])).frames
    assert reads and all(0 < n <= 4096 for n in reads) and sum(reads) == 8 * frames
    assert path.read_bytes() == (tmp_path / "job" / manifest["performance"]["file"]).read_bytes()
