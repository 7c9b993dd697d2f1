"""The sensitivity map: each conv layer damaged alone, at each magnitude, against normal."""

from __future__ import annotations

import csv
import json

import pytest

from senseflosser import actions
from senseflosser.errors import RecipeError
from senseflosser.pipeline import floss
from senseflosser.recipe import Recipe
from senseflosser.sensitivity import sensitivity_map, write_map
from helpers import tone


@pytest.mark.parametrize("action", ["fog", "lapse", "adversarial"])
def test_map_cells_match_single_runs(tiny_model, action, tmp_path):
    y = tone(1.0)
    seen = []
    report = sensitivity_map(y, tiny_model, model_name="tiny", action=action, seeds=2,
                             progress=lambda f, m: seen.append(f))
    mags = list(actions.get(action).magnitude.titration)
    assert report["layers"] == ["conv_a", "conv_b", "conv_out"] and report["magnitudes"] == mags
    assert seen[-1] == 1.0 and seen == sorted(seen)
    cell = report["cells"]["conv_b"][2]
    alone = [floss(y, tiny_model, [Recipe("tiny", "", action, mags[2], s, layers=("conv_b",))]).flossed[0]
             for s in (0, 1)]
    snrs = sorted(o.metrics["snr_db"] for o in alone)
    assert cell["snr_db"]["min"] == pytest.approx(snrs[0], abs=0.01)
    assert cell["snr_db"]["max"] == pytest.approx(snrs[1], abs=0.01)
    assert set(report["most_sensitive"]) == set(report["layers"])
    files = write_map(report, tmp_path)
    assert json.loads((tmp_path / files["json"]).read_text())["cells"]["conv_b"][2] == cell
    rows = list(csv.DictReader(open(tmp_path / files["csv"])))
    assert len(rows) == 3 * 5 and rows[0]["layer"] == "conv_a"
    assert (tmp_path / files["png"]).read_bytes()[:4] == b"\x89PNG"


def test_map_refuses_what_it_cannot_do(tiny_model):
    with pytest.raises(RecipeError, match="seeds"):
        sensitivity_map(tone(0.5), tiny_model, model_name="tiny", seeds=0)
    with pytest.raises(RecipeError, match="'nope' is not a conv layer"):
        sensitivity_map(tone(0.5), tiny_model, model_name="tiny", layers=["nope"])
    with pytest.raises(RecipeError, match="lapse magnitude"):
        sensitivity_map(tone(0.5), tiny_model, model_name="tiny", action="lapse", magnitudes="0.1,3")


def test_map_cli(capsys, models_dir, wav_file, tmp_path):
    from senseflosser.cli import main

    code = main(["map", "-i", str(wav_file), "-m", "tiny", "--models-dir", str(models_dir), "--seeds", "1",
                 "--magnitudes", "0.05,0.2", "-o", str(tmp_path / "m")])
    out = capsys.readouterr().out
    assert code == 0 and "3 layers x 2 magnitudes x 1 seeds" in out and "most sensitive first" in out
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"map.json", "map.csv", "map.png"}


def test_channel_ranking_is_checked_by_real_ablation(tiny_model):
    from senseflosser.sensitivity import channel_ranking

    ranked = channel_ranking(tone(1.5), tiny_model, model_name="tiny", check=1)
    assert set(ranked) == {"conv_a", "conv_b", "conv_out"}
    for layer, entry in ranked.items():
        assert sorted(entry["ranking"]) == list(range(tiny_model.get_layer(layer).filters))
        assert entry["estimate"] == sorted(entry["estimate"], reverse=True)
        assert entry["checked"][0]["rank"] == 0 and len(entry["checked"]) == 2
        silenced = floss(tone(1.5), tiny_model, [Recipe("tiny", "", "ablate", 1.0, 0,
                                                         layers=(f"{layer}:{entry['ranking'][0]}",))])
        assert entry["checked"][0]["snr_db"] == pytest.approx(silenced.flossed[0].metrics["snr_db"], abs=0.01)
    assert ranked["conv_a"]["confirmed"] and ranked["conv_b"]["confirmed"]


def test_maps_are_kept_per_action_and_the_first_is_the_reference(capsys, models_dir, wav_file, tmp_path):
    import shutil

    from senseflosser.cli import main
    from senseflosser.models import ModelRegistry

    folder = tmp_path / "models"
    shutil.copytree(models_dir, folder)
    run = ["map", "-i", str(wav_file), "-m", "tiny", "--models-dir", str(folder), "--seeds", "1",
           "--magnitudes", "0.05,0.2", "--update-card"]
    assert main(run + ["-a", "fog", "-o", str(tmp_path / "fog")]) == 0
    assert main(run + ["-a", "gain", "-o", str(tmp_path / "gain")]) == 0
    card = ModelRegistry(folder).card("tiny")
    assert set(card["maps"]) == {"fog", "gain"} and card["maps"]["gain"]["action"] == "gain"
    assert card["sensitivity"]["action"] == "fog" and card["sensitivity"]["plot"] == "tiny.map.png"
    assert card["sensitivity"]["cells"] == card["maps"]["fog"]["cells"] != card["maps"]["gain"]["cells"]
    assert (folder / "tiny.map.png").read_bytes()[:4] == b"\x89PNG"
