"""The original tool's users: its command lines and import, as its README writes them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from senseflosser.utils import run_senseflosser

BIN = Path(sys.executable).parent


def _script(name: str, *args: str, cwd: Path, models_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SENSEFLOSSER_MODELS_DIR": str(models_dir), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([str(BIN / name), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_run_senseflosser_command_line(models_dir, wav_file, tmp_path):
    model = str(models_dir / "tiny.keras")
    # python run_senseflosser.py --input ... --model ... --action lapse --magnitude 0.05 --duration 30
    out = _script("run_senseflosser", "--input", str(wav_file), "--model", model, "--action", "lapse",
                  "--magnitude", "0.05", "--duration", "30", cwd=tmp_path, models_dir=models_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "output" / "song_lapse_0.05.wav").exists() and (tmp_path / "output" / "song_normal.wav").exists()
    # --action defaults to fog; --titrate wins over --magnitude, with the original's warning
    out = _script("run_senseflosser", "--input", str(wav_file), "--model", model, "--titrate", "--magnitude", "0.3",
                  "--log", "warn", "--output-dir", "t", cwd=tmp_path, models_dir=models_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Titrate takes precedence over magnitude" in out.stderr
    assert sorted(p.name for p in (tmp_path / "t").glob("song_fog_*.wav")) == [
        f"song_fog_{m}.wav" for m in ("0.01", "0.05", "0.1", "0.2", "0.5")]
    # fog above 1 is accepted, as the original allowed ("maybe what you want"); lapse above 1 is not
    out = _script("run_senseflosser", "--input", str(wav_file), "--model", model, "--magnitude", "2",
                  "--output-dir", "big", "--log", "critical", cwd=tmp_path, models_dir=models_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    out = _script("run_senseflosser", "--input", str(wav_file), "--model", model, "--action", "lapse",
                  "--magnitude", "2", cwd=tmp_path, models_dir=models_dir)
    assert out.returncode == 1 and "lapse magnitude" in out.stderr and "Traceback" not in out.stderr
    out = _script("run_senseflosser", "--input", str(wav_file), "--action", "melt", cwd=tmp_path,
                  models_dir=models_dir)
    assert out.returncode == 1 and "Action must be one of" in out.stderr


def test_build_autoencoder_command_line(tmp_path, wav_file):
    data = tmp_path / "music"
    data.mkdir()
    for i in range(3):
        (data / f"t{i}.wav").write_bytes(wav_file.read_bytes())
    models = tmp_path / "models"
    models.mkdir()
    # python build_autoencoder.py --data-dir ... (with the training kept tiny for the test)
    out = _script("build_autoencoder", "--data-dir", str(data), "--duration", "1", "--var-input",
                  "--percentage", "1.0", "--log", "warn", "--epochs", "1", "--steps-per-epoch", "1",
                  cwd=tmp_path, models_dir=models)
    assert out.returncode == 0, out.stderr[-2000:]
    card = json.loads((models / "1s_audio_autoencoder.json").read_text())
    assert card["training"]["duration"] == 1.0 and card["training"]["var_input"] is True
    assert (models / "1s_audio_autoencoder.keras").exists()
    out = _script("build_autoencoder", "--data-dir", str(tmp_path / "none"), cwd=tmp_path, models_dir=models)
    assert out.returncode == 1 and "build_autoencoder: error:" in out.stderr


def test_utils_import_takes_a_magnitude_list(models_dir, wav_file, tmp_path):
    paths = run_senseflosser(models_dir / "tiny.keras", [0.05, 0.2], "fog", wav_file, tmp_path / "o", None,
                             False, False)
    assert [Path(p).name for p in paths] == ["song_normal.wav", "song_fog_0.05.wav", "song_fog_0.2.wav"]


@pytest.mark.parametrize("action", ["ablate", "bitflip"])
def test_new_actions_through_the_old_entry_point(models_dir, wav_file, tmp_path, action):
    paths = run_senseflosser(models_dir / "tiny.keras", 0.5, action, wav_file, tmp_path / action)
    assert Path(paths[1]).name == f"song_{action}_0.5.wav"
