"""Uploaded model files are checked before Keras opens them; nothing in them runs."""

from __future__ import annotations

import numpy as np
import pytest

from senseflosser import untrusted
from senseflosser.errors import ModelError
from helpers import hostile_model_files, make_tiny_model


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    marker = folder / "pwned.txt"
    return hostile_model_files(folder, marker), marker


@pytest.mark.parametrize("kind", ["lambda", "custom", "bomb", "traversal", "truncated", "h5", "shape", "noconv",
                                  "badjson"])
def test_hostile_files_are_refused_with_a_reason(hostile, kind):
    files, marker = hostile
    path, reason = files[kind]
    with pytest.raises(ModelError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        untrusted.load_untrusted(path, limits=untrusted.Limits(max_unpacked_bytes=64 * 2**20))
    assert not marker.exists(), "a function inside the uploaded model ran"


def test_a_good_model_loads(hostile):
    files, _ = hostile
    model = untrusted.load_untrusted(files["lambda"][0].with_name("good.keras"))
    x = np.zeros((1, 3, 1025, 2), np.float32)
    assert np.asarray(model(x)).shape == (1, 3, 1025, 2)


def test_parameter_limit(tmp_path):
    make_tiny_model(name="big").save(tmp_path / "big.keras")
    with pytest.raises(ModelError, match="parameters, more than the 10 accepted"):
        untrusted.load_untrusted(tmp_path / "big.keras", limits=untrusted.Limits(max_parameters=10))


def test_any_file_name_is_judged_by_content(hostile, tmp_path):
    files, _ = hostile
    odd = tmp_path / "upload.bin"
    odd.write_bytes(files["lambda"][0].with_name("good.keras").read_bytes())
    assert untrusted.load_untrusted(odd).name == "good"
    assert odd.exists()  # left where it was


@pytest.mark.parametrize("obj, reason", [
    ({"class_name": "Functional", "module": "keras.src.models.functional", "config": {"layers": [{"class_name": "TFSMLayer", "module": "keras.layers"}]}},
     "layer type TFSMLayer"),
    ({"class_name": "Functional", "module": "keras.src.models.functional", "config": {"f": {"class_name": "function", "module": "os", "config": "system"}}},
     "function 'system' from module 'os'"),
    ({"class_name": "Functional", "module": "keras.src.models.functional", "config": {"x": {"class_name": "__lambda__", "config": {"code": "..."}}}}, "Lambda"),
    ({"class_name": "Functional", "module": "keras.src.models.functional", "config": {"x": {"class_name": "Thing", "module": "builtins"}}}, "module 'builtins'"),
    ([], "does not describe a Keras model"),
])
def test_config_walk(obj, reason):
    with pytest.raises(untrusted.UnsafeModelError, match=reason):
        untrusted.check_config(obj)


def test_unusual_compression_is_refused(hostile, tmp_path):
    import zipfile

    good = hostile[0]["lambda"][0].with_name("good.keras")
    odd = tmp_path / "bzip.keras"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(odd, "w", zipfile.ZIP_BZIP2) as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
    with pytest.raises(untrusted.UnsafeModelError, match="compression method"):
        untrusted.check_archive(odd)
