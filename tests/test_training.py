"""Training on a tiny synthesized corpus, resuming, evaluating; the shipped models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from senseflosser import actions

from senseflosser import metrics
from senseflosser.architectures import build
from senseflosser.cli import main
from senseflosser.audio import find_audio
from senseflosser.errors import AudioError, TrainingError
from senseflosser.actions.worst_case import find_universal
from senseflosser.evaluation import evaluate, update_card
from senseflosser.models import ModelRegistry, default_models_dir, file_sha256
from senseflosser.pipeline import floss
from senseflosser.training import TrainConfig, read_history, split_files, train
from helpers import SR, tone

DAMAGING = tuple(a for a, spec in actions.ACTIONS.items() if spec.kind != "input")
"""The actions a card's damage curves cover (an input action, dream, changes the audio, not the model)."""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    (d / "sub").mkdir()
    for i in range(4):
        sf.write(d / ("sub" if i % 2 else ".") / f"t{i}.wav", tone(3.0, 44100, freqs=(110.0 * (i + 1), 550.0), seed=i), 44100)
    sf.write(d / "t4.flac", tone(3.0, SR, seed=9), SR)
    (d / "notes.txt").write_text("not audio")
    (d / "broken.wav").write_bytes(b"RIFF nonsense")
    return d


def _cfg(**kw):
    base = dict(name="mini", duration=0.5, epochs=1, steps_per_epoch=2, batch_size=2, width=4,
                val_split=0.25, var_input=True)
    base.update(kw)
    return TrainConfig(**base)


def test_find_and_split(corpus):
    files = find_audio(corpus)
    assert len(files) == 6  # recursive, any format; broken.wav is found and skipped later
    train_files, val_files = split_files(files, val_split=0.25, percentage=100, seed=0)
    assert len(val_files) == 2 and not set(train_files) & set(val_files)
    assert len(sum(split_files(files, val_split=0, percentage=50, seed=0), [])) == 3


def test_train_writes_model_card_and_resumes(corpus, tmp_path):
    models, work = tmp_path / "models", tmp_path / "work"
    first = train(corpus, _cfg(), models_dir=models, work_dir=work, verbose=0)
    assert first.model_path.exists() and first.card_path.exists()
    card = json.loads(first.card_path.read_text())
    assert card["corpus"]["files"] == 5 and card["training"]["epochs_run"] == 1
    assert card["parameters"] > 0 and card["training"]["history"][0]["loss"] > 0
    epoch0 = read_history(work / "loss.csv")[0]["loss"]
    # Asking for more epochs resumes from the checkpoint instead of starting over.
    second = train(corpus, _cfg(epochs=2), models_dir=models, work_dir=work, verbose=0)
    hist = read_history(work / "loss.csv")
    assert [h["epoch"] for h in hist] == [0, 1] and hist[0]["loss"] == epoch0
    assert second.card["training"]["epochs_run"] == 2
    # A different recipe in the same work dir is refused, unless started fresh.
    with pytest.raises(TrainingError, match="other settings"):
        train(corpus, _cfg(epochs=2, width=8), models_dir=models, work_dir=work, verbose=0)
    train(corpus, _cfg(width=8), models_dir=models, work_dir=work, fresh=True, verbose=0)
    assert len(read_history(work / "loss.csv")) == 1


def test_fixed_length_model_and_cli(corpus, tmp_path, capsys):
    code = main(["train", "--data-dir", str(corpus), "--name", "fixed", "--duration", "0.5", "--epochs", "1",
                 "--steps-per-epoch", "1", "--batch-size", "2", "--width", "4",
                 "--models-dir", str(tmp_path / "m"), "--work-dir", str(tmp_path / "w")])
    assert code == 0, capsys.readouterr().err
    card = json.loads((tmp_path / "m" / "fixed.json").read_text())
    assert card["input_frames"] == 12


@pytest.mark.parametrize("kw, match", [({"arch": "nope"}, "architecture"), ({"name": "../x"}, "plain file name"),
                                       ({"epochs": 0}, "epochs"), ({"duration": -1}, "duration")])
def test_bad_settings(corpus, tmp_path, kw, match):
    with pytest.raises(TrainingError, match=match):
        train(corpus, _cfg(**kw), models_dir=tmp_path, verbose=0)


def test_empty_data_dir(tmp_path):
    with pytest.raises(AudioError, match="no audio files"):
        train(tmp_path, _cfg(), models_dir=tmp_path / "m", verbose=0)


@pytest.mark.parametrize("arch", ["bottleneck", "deep", "original", "bands"])
def test_architectures_keep_the_tensor_contract(arch):
    model, train_model = build(arch, width=4)
    x = np.zeros((1, 5, 1025, 2), np.float32)
    assert model(x).shape == (1, 5, 1025, 2) and train_model(x).shape == (1, 5, 1025, 2)


def test_the_original_architecture_is_the_originals():
    """Built for 15 s (321 frames) as its build_autoencoder.py does: 777,794 parameters, 1.53 GFLOP per second."""
    from senseflosser.architectures import original_strides
    from senseflosser.evaluation import forward_flops_per_frame

    assert original_strides(321) == ((3, 5), (1, 5)) and original_strides(105) == ((3, 5), (5, 5))
    assert original_strides(None) == ((1, 5), (1, 5))
    for frames in (321, 105, None):
        model, _ = build("original", frames=frames)
        assert model.count_params() == 777_794
        n = frames or 7
        assert model(np.zeros((1, n, 1025, 2), np.float32)).shape == (1, n, 1025, 2)
    model, _ = build("original", frames=321)
    assert forward_flops_per_frame(model) * SR / 1024 / 1e9 == pytest.approx(1.526, abs=0.005)


@pytest.mark.parametrize("band, depth, front", [(8, 2, 0), (16, 1, 0), (1, 0, 0), (5, 3, 0), (4, 2, 3), (8, 0, 2)])
def test_bands_architecture(band, depth, front):
    from senseflosser.models import conv_layer_names, time_receptive_field

    model, _ = build("bands", width=4, band=band, depth=depth, front=front)
    x = np.random.default_rng(0).standard_normal((1, 7, 1025, 2)).astype(np.float32)
    assert model(x).shape == (1, 7, 1025, 2)
    # Conv2D / Conv2DTranspose only, time stride 1: the actions and chunking know them.
    mids = [f"mid{i}" for i in range(depth)]
    if front:
        assert conv_layer_names(model) == ["conv_in", "bands_in", *mids, "bands_out", "to_stft"]
        assert time_receptive_field(model) == depth + 2  # band layers are (1, band) kernels
    else:
        assert conv_layer_names(model) == ["bands_in", *mids, "to_stft"]
        assert time_receptive_field(model) == depth + 2
    with pytest.raises(TrainingError, match="band"):
        build("bands", width=4, band=0)


def test_forward_cost_counts_flops():
    from senseflosser.evaluation import FRAMES_PER_SECOND, forward_cost, forward_flops_per_frame

    model, _ = build("bands", width=4, band=8, depth=1)
    # bands_in: 3x16 kernel, 2 -> 4 channels at 129 bands; mid0: 3x3, 4 -> 4 at 129;
    # to_stft: 3x16, 4 -> 2 per input position (129 bands).
    expected = 2 * (3 * 16 * 2 * 4 * 129 + 3 * 3 * 4 * 4 * 129 + 3 * 16 * 4 * 2 * 129)
    assert forward_flops_per_frame(model) == expected
    cost = forward_cost(model, seconds=2.0, rounds=1)
    assert cost["gflop_per_s_audio"] == round(expected * FRAMES_PER_SECOND / 1e9, 3)
    assert cost["forward_ms_per_s_audio"] > 0


def test_evaluate_writes_figures_and_plot(models_dir, tmp_path):
    held = tmp_path / "held"
    held.mkdir()
    for i in range(2):
        sf.write(held / f"h{i}.wav", tone(2.5, seed=i), SR)
    import shutil

    reg_dir = tmp_path / "reg"
    shutil.copytree(models_dir, reg_dir)
    reg = ModelRegistry(reg_dir)
    (reg_dir / "tiny.adversarial.npz").unlink()
    report = evaluate(reg, "tiny", held, clip_seconds=1.0, max_clips=3)
    assert report["normal"]["clips"] == 3
    assert set(report["dose_response"]) == set(DAMAGING) - {"adversarial"}  # no direction stored
    assert len(report["dose_response"]["fog"]["snr_db_median"]) == 5
    assert report["forward"]["gflop_per_s_audio"] > 0 and report["forward"]["forward_ms_per_s_audio"] > 0
    path, info = find_universal(reg, "tiny", held, excerpts=2, seconds=1.0, steps=2)
    assert path == reg_dir / "tiny.adversarial.npz" and info["loss_end"] > info["loss_start"]
    assert json.loads((reg_dir / "tiny.json").read_text())["adversarial"]["sha256"] == info["sha256"]
    report = evaluate(reg, "tiny", held, clip_seconds=1.0, max_clips=3)
    assert set(report["dose_response"]) == set(DAMAGING)
    assert [row["magnitude"] for row in report["adversarial_vs_fog"]] == list(
        actions.get("adversarial").magnitude.titration)
    cal = report["calibration"]
    assert cal["levels_db"] == [15.0, 10.0, 5.0, 0.0, -10.0] and set(cal["magnitudes"]) == set(DAMAGING)
    assert all(len(v) == 5 for v in cal["magnitudes"].values())
    card_path, plot = update_card(reg, "tiny", report)
    card = json.loads(card_path.read_text())
    assert card["evaluation"]["normal"]["si_snr_db_median"] == report["normal"]["si_snr_db_median"]
    assert card["conv_layers"] == ["conv_a", "conv_b", "conv_out"]
    assert plot.stat().st_size > 1000


# --------------------------------------------------------------- shipped models

SHIPPED = ModelRegistry(default_models_dir())


def test_at_least_two_models_are_shipped_with_cards():
    names = SHIPPED.names()
    assert len(names) >= 2, f"models/ holds {names}"
    for name in names:
        card = SHIPPED.card(name)
        ev = card["evaluation"]
        assert ev["normal"]["si_snr_db_median"] >= 15 and ev["normal"]["lsd_db_median"] <= 2
        for action in DAMAGING:  # every action's held-out dose-response falls with magnitude
            curve = ev["dose_response"][action]
            assert curve["monotone"] and curve["snr_db_median"][-1] <= 20, (name, action, curve)
            assert len(ev["calibration"]["magnitudes"][action]) == 5
        worse = {row["magnitude"]: row["worse_by_db"] for row in ev["adversarial_vs_fog"]}
        assert worse[0.0003] >= 6 and worse[0.001] >= 6, (name, worse)
        assert card["adversarial"]["sha256"] == file_sha256(SHIPPED.path(name).with_name(f"{name}.adversarial.npz"))
        assert SHIPPED.path(name).stat().st_size <= 20 * 2**20
        assert card["sha256"] == SHIPPED.sha256(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED.names())
def test_shipped_model_reconstructs_a_short_clip(name):
    y = tone(3.0, freqs=(196.0, 392.0, 587.0, 880.0), amp=0.3)
    res = floss(y, SHIPPED.load(name), [])
    assert metrics.si_snr_db(y, res.normal) > 10


def test_calibration_interpolates_in_log_magnitude():
    from senseflosser.evaluation import calibration, calibration_grid

    curve = [(0.01, 20.0), (0.1, 0.0), (1.0, -20.0)]
    assert calibration(curve, (10.0, 0.0, -10.0, 30.0, -30.0)) == [pytest.approx(0.03162, rel=1e-3), 0.1,
                                                                     pytest.approx(0.3162, rel=1e-3), None, None]
    grid = calibration_grid("fog")
    assert len(grid) == 11 and grid == tuple(sorted(grid))


def test_evaluate_some_actions_merges_them_into_the_card(capsys, models_dir, tmp_path):
    import shutil

    from senseflosser.cli import main

    held = tmp_path / "held"
    held.mkdir()
    sf.write(held / "h.wav", tone(2.5, seed=3), SR)
    reg_dir = tmp_path / "reg"
    shutil.copytree(models_dir, reg_dir)
    base = ["evaluate", "-m", "tiny", "--data-dir", str(held), "--clip-seconds", "1", "--clips", "2",
            "--models-dir", str(reg_dir)]
    assert main(base + ["--actions", "fog"]) == 1  # nothing to merge into: measured on other clips
    assert "cannot merge evaluations measured on different clips" in capsys.readouterr().err
    assert main(base) == 0
    before = ModelRegistry(reg_dir).card("tiny")["evaluation"]
    assert main(base + ["--actions", "gate,lapse"]) == 0
    after = ModelRegistry(reg_dir).card("tiny")["evaluation"]
    assert after["forward"] == before["forward"] and after["normal"] == before["normal"]
    assert after["dose_response"] == before["dose_response"]  # the same clips and seed: the same figures
    assert after["calibration"] == before["calibration"]
    with pytest.raises(SystemExit) as exit_:
        main(base + ["--actions", "gate,nope"])
    assert exit_.value.code == 2 and "unknown action 'nope'" in capsys.readouterr().err
