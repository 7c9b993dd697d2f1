"""Files the tool writes are strict JSON: an SNR of inf (no damage) is stored as null and shown in words."""

from __future__ import annotations

import json

import pytest

from senseflosser.evaluation import markdown_tables
from senseflosser.jsonfile import write_json


def _strict(text: str):
    def refuse(constant):
        pytest.fail(f"{constant} is not JSON a browser can parse")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_are_written_as_null(tmp_path):
    path = write_json(tmp_path / "x.json", {"snr": [float("inf"), 1.5, float("nan")], "t": (float("-inf"),), "n": 2})
    assert _strict(path.read_text()) == {"snr": [None, 1.5, None], "t": [None], "n": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary file left


def test_a_magnitude_that_changes_nothing_reads_no_change_in_the_readme_tables(tmp_path):
    card = {"name": "m", "evaluation": {"dose_response": {"ablate": {
        "magnitudes": [0.01, 0.02], "snr_db_median": [float("inf"), 14.61], "monotone": True}}}}
    path = write_json(tmp_path / "m.json", card)
    stored = _strict(path.read_text())
    assert stored["evaluation"]["dose_response"]["ablate"]["snr_db_median"] == [None, 14.61]
    for c in (card, stored):
        assert "| `m` | ablate | 0.01 / 0.02 | no change / 14.6 |" in markdown_tables([c])
