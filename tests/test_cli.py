"""The command line tool and the original module API."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from senseflosser import run_senseflosser
from senseflosser.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_floss_writes_the_original_names(capsys, models_dir, wav_file, tmp_path):
    out = tmp_path / "o"
    code, stdout, err = _run(capsys, "floss", "--input", str(wav_file), "--models-dir", str(models_dir),
                             "--model", "tiny", "--action", "fog", "--magnitude", "0.05", "--seed", "4",
                             "--output-dir", str(out), "--save-model")
    assert code == 0, err
    assert {"song_normal.wav", "song_fog_0.05.wav", "song_fog_0.05.json", "tiny_fog_0.05.keras"} <= {
        p.name for p in out.iterdir()}
    assert "seed 4" in stdout and "SNR vs normal" in stdout
    assert "100%" in err  # progress is shown


def test_titrate_and_recipe_reproduction(capsys, models_dir, wav_file, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _run(capsys, "floss", "-i", str(wav_file), "--models-dir", str(models_dir), "-m", "tiny",
                "-a", "lapse", "--titrate", "-o", str(a))[0] == 0
    assert len(list(a.glob("song_lapse_*.wav"))) == 5
    code, _, err = _run(capsys, "floss", "-i", str(wav_file), "--models-dir", str(models_dir),
                        "--recipe", str(a / "song_lapse_0.1.json"), "-o", str(b))
    assert code == 0, err
    assert (a / "song_lapse_0.1.wav").read_bytes() == (b / "song_lapse_0.1.wav").read_bytes()
    # The job-wide recipe reproduces the whole titration.
    c = tmp_path / "c"
    assert _run(capsys, "floss", "-i", str(wav_file), "--models-dir", str(models_dir),
                "--recipe", str(a / "song_recipe.json"), "-o", str(c))[0] == 0
    for m in ("0.01", "0.5"):
        assert (a / f"song_lapse_{m}.wav").read_bytes() == (c / f"song_lapse_{m}.wav").read_bytes()


def test_model_by_path_and_layers_and_segment(capsys, models_dir, wav_file, tmp_path):
    code, _, err = _run(capsys, "floss", "-i", str(wav_file), "-m", str(models_dir / "tiny.keras"),
                        "-a", "fog", "-g", "0.1", "--layers", "conv_b", "--offset", "0.5", "--duration", "1",
                        "-o", str(tmp_path / "o"))
    assert code == 0, err
    recipe = json.loads((tmp_path / "o" / "song_fog_0.1.json").read_text())["recipe"]
    assert recipe["layers"] == ["conv_b"] and recipe["offset"] == 0.5 and recipe["duration"] == 1.0
    assert recipe["model"] == "tiny"


@pytest.mark.parametrize("args, message", [
    (["--model", "nope", "--action", "fog"], "unknown model 'nope'"),
    (["--model", "tiny", "--action", "fog", "--seed", "x"], "seed must be a whole number"),
    (["--model", "tiny", "--action", "fog", "--layers", "bogus"], "'bogus' is not a conv layer"),
    (["--model", "tiny", "--action", "fog", "--offset", "99"], "past the end"),
    (["--model", "tiny"], "--action is required"),
    (["--model", "missing/file.keras", "--action", "fog"], "does not exist"),
])
def test_user_errors_exit_non_zero_with_one_line(capsys, models_dir, wav_file, tmp_path, args, message):
    code, _, err = _run(capsys, "floss", "-i", str(wav_file), "--models-dir", str(models_dir),
                        "-o", str(tmp_path / "o"), *args)
    assert code == 1
    assert message in err
    assert err.strip().count("\n") == 0 and "Traceback" not in err


def test_bad_input_file(capsys, models_dir, tmp_path):
    bad = tmp_path / "text.wav"
    bad.write_text("hello")
    code, _, err = _run(capsys, "floss", "-i", str(bad), "--models-dir", str(models_dir), "-m", "tiny", "-a", "fog")
    assert code == 1 and "not an audio file" in err


@pytest.mark.parametrize("argv", [["floss", "-i", "x", "-m", "t", "-a", "blur"],
                                  ["floss", "-i", "x", "-m", "t", "-a", "lapse", "-g", "2"],
                                  ["floss", "-i", "x", "-m", "t", "-a", "fog", "-g", "11"],
                                  ["nonsense"]])
def test_usage_errors_are_one_line(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "error" in err


def test_models_lists_cards(capsys, models_dir):
    code, out, _ = _run(capsys, "models", "--models-dir", str(models_dir))
    assert code == 0 and "tiny: tiny test model" in out
    code, out, _ = _run(capsys, "models", "--models-dir", str(models_dir), "--json")
    assert [c["name"] for c in json.loads(out)] == ["tiny", "tinyfixed"]


def test_run_senseflosser_keeps_the_original_signature(models_dir, wav_file, tmp_path):
    paths = run_senseflosser(str(models_dir / "tiny.keras"), 0.1, "fog", str(wav_file), str(tmp_path / "o"),
                             1.0, False, True)
    assert [p.rsplit("/", 1)[1] for p in paths] == ["song_normal.wav", "song_fog_0.1.wav"]
    assert (tmp_path / "o" / "tiny_fog_0.1.keras").exists()
    assert len(run_senseflosser(str(models_dir / "tiny.keras"), 0.1, "lapse", str(wav_file),
                                str(tmp_path / "t"), None, True, False)) == 6


def test_python_dash_m_entry_point(models_dir):
    out = subprocess.run([sys.executable, "-m", "senseflosser", "models", "--models-dir", str(models_dir)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "tinyfixed: fixed 24 frames" in out.stdout


def test_without_a_model_the_best_one_is_used(capsys, models_dir, wav_file, tmp_path):
    """models_dir's cards carry no figures: the order falls back to the name (tiny before tinyfixed)."""
    code, out, err = _run(capsys, "floss", "-i", str(wav_file), "--models-dir", str(models_dir), "-a", "fog",
                          "-g", "0.1", "-s", "2", "-o", str(tmp_path / "o"))
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "song_fog_0.1.json").read_text())["recipe"]["model"] == "tiny"
