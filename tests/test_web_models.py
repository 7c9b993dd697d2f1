"""Bring your own model: POST /api/jobs with model_file, checked before the job is accepted."""

from __future__ import annotations

import io

import keras
import numpy as np
import pytest

import senseflosser  # noqa: F401  (registers the custom layers for loading the flossed model)
from helpers import hostile_model_files


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uploads")
    marker = folder / "pwned.txt"
    return hostile_model_files(folder, marker), marker, folder / "good.keras"


def _post(client, web_submit, model_path, **fields):
    data = {"model": None, "model_file": (io.BytesIO(model_path.read_bytes()), model_path.name)}
    data.update(fields)
    return web_submit(client, **data)


def _jobs(app):
    root = app.config["DATA_DIR"]
    return [p for p in root.iterdir() if not p.name.startswith(".")] if root.exists() else []


@pytest.mark.parametrize("kind", ["lambda", "custom", "bomb", "traversal", "truncated", "h5", "shape", "noconv"])
def test_hostile_models_are_refused_with_400(web_app, web_submit, hostile, kind):
    files, marker, _ = hostile
    path, reason = files[kind]
    r = _post(web_app.test_client(), web_submit, path)
    assert r.status_code == 400, r.get_json()
    assert reason in r.get_json()["error"] and path.name in r.get_json()["error"]
    assert not marker.exists(), "a function inside the uploaded model ran"
    assert _jobs(web_app) == []  # nothing kept of a refused job


def test_oversized_model_is_413(make_web_app, web_submit, hostile):
    app = make_web_app(MAX_MODEL_MB=0.01)
    r = _post(app.test_client(), web_submit, hostile[2])
    assert r.status_code == 413 and "limit of 0.01 MB for uploaded models" in r.get_json()["error"]


def test_model_and_model_file_together_are_refused(web_client, web_submit, hostile):
    r = _post(web_client, web_submit, hostile[2], model="tiny")
    assert r.status_code == 400 and "either model" in r.get_json()["error"]


def test_own_model_runs_every_way(web_client, web_submit, web_wait, hostile, tmp_path):
    r = _post(web_client, web_submit, hostile[2], action="ablate", magnitude=None, titrate="1",
              layers="conv_a:1,3", save_model="1")
    assert r.status_code == 202, r.get_json()
    view = web_wait(web_client, r.get_json()["id"])
    assert view["state"] == "done", view
    assert len(view["outputs"]["flossed"]) == 5
    assert view["model_upload"]["filename"] == "good.keras" and len(view["model_upload"]["sha256"]) == 64
    assert view["recipe"]["model"] == "good" and view["recipe"]["model_sha256"] == view["model_upload"]["sha256"]
    assert "supply the same file" in view["recipe"]["model_note"]
    assert "-m good.keras" in view["cli"]
    blob = web_client.get(view["outputs"]["flossed"][0]["model"]).data
    (tmp_path / "f.keras").write_bytes(blob)
    flossed = keras.models.load_model(tmp_path / "f.keras")
    assert np.asarray(flossed(np.zeros((1, 3, 1025, 2), np.float32))).shape == (1, 3, 1025, 2)


def test_own_model_with_a_bad_layer_choice(web_client, web_submit, hostile):
    r = _post(web_client, web_submit, hostile[2], layers="conv_a:9")
    assert r.status_code == 400 and "has 4 channels" in r.get_json()["error"]
