"""Uploaded model files are checked before Keras opens them; nothing in them runs."""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from senseflosser import untrusted
from senseflosser.errors import ModelError
from senseflosser.spectral import N_BINS
from helpers import hostile_model_files, make_tiny_model
from helpers import (LAMBDA_VIA_API_NAME, conv_entry, deep_config, good_config, lambda_via_api_name,
                             renamed_config, rezip, wide_conv_config, with_layer)


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


# ------------------------------------------------------------------ the allowlist, limits and test run (issue 22)

@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("good") / "good.keras"
    make_tiny_model(name="good").save(path)
    return path


@pytest.mark.parametrize("entry, reason", [
    (LAMBDA_VIA_API_NAME, "Lambda layers"),
    ({"module": "keras", "class_name": "layers.TFSMLayer", "name": "sm",
      "config": {"name": "sm", "filepath": "/tmp/x"}}, "layer type TFSMLayer"),
    ({"module": "keras.src.layers.core.lambda_layer", "class_name": "Lambda", "name": "lam2",
      "config": {"name": "lam2"}}, "Lambda"),
    ({"module": "keras.layers", "class_name": "Conv2D", "registered_name": "senseflosser>ChannelGate",
      "name": "gate", "config": {"name": "gate", "channels": 4}}, None),  # Keras resolves the registry first
    ({**conv_entry("init"), "config": {**conv_entry("init")["config"], "kernel_initializer": "senseflosser>Lapse"}},
     "kernel_initializer 'senseflosser>Lapse' is not one of Keras' built-in initializers"),
    ({**conv_entry("act"), "config": {**conv_entry("act")["config"], "activation": "senseflosser>Lapse"}},
     "activation 'senseflosser>Lapse'"),
    ({**conv_entry("quant"), "config": {**conv_entry("quant")["config"], "dtype": "int8_from_float32"}},
     "dtype 'int8_from_float32'"),
    ({"module": "keras.layers", "class_name": "TorchModuleWrapper", "name": "t", "config": {"name": "t"}},
     "TorchModuleWrapper"),
    ({"module": "keras.src.utils.torch_utils", "class_name": "TorchModuleWrapper", "name": "t2",
      "config": {"name": "t2"}}, "not accepted"),
    ({**conv_entry("x"), "config": {**conv_entry("x")["config"], "bias_initializer": {
        "module": "keras.initializers", "class_name": "STFT", "config": {}}}}, "STFT"),
])
def test_names_resolve_as_keras_resolves_them_and_only_the_allowlist_passes(good, entry, reason):
    """Keras reads ``keras`` + ``layers.Lambda`` as ``keras.layers.Lambda``: so does the checker (issue 22, 1)."""
    config = with_layer(good_config(good), entry)
    if reason is None:  # a ChannelGate in Conv2D's clothes: judged (and counted) as the ChannelGate it is
        report = untrusted.check_config(config)
        assert report.parameters == make_tiny_model().count_params() + 4
        return
    with pytest.raises(untrusted.UnsafeModelError, match=reason):
        untrusted.check_config(config)


def test_a_lambda_named_through_the_api_never_runs(good, tmp_path):
    path = rezip(good, tmp_path / "neg.keras", lambda_via_api_name(good))
    with pytest.raises(untrusted.UnsafeModelError, match="Lambda layers"):
        untrusted.load_untrusted(path)


def test_a_config_nested_100000_deep_is_refused_in_a_sentence(good, tmp_path):
    """No RecursionError: the depth is measured before the JSON is parsed (issue 22, 2)."""
    path = rezip(good, tmp_path / "deep.keras", deep_config(good))
    with pytest.raises(untrusted.UnsafeModelError, match="nested 100002 levels deep; at most 64"):
        untrusted.check_archive(path)
    deep: object = {}
    for _ in range(100_000):
        deep = {"x": deep}
    with pytest.raises(untrusted.UnsafeModelError, match="nested too deeply"):
        untrusted.check_config({"class_name": "Functional", "module": "keras.src.models.functional", "config": deep})
    # brackets inside strings are text, not nesting
    assert untrusted.json_depth(b'{"a": "[[[[[[[[", "b": ["\\"]]]"]}') == 2


def test_a_huge_config_is_refused_before_it_is_parsed(good, tmp_path, monkeypatch):
    config = good_config(good)
    config["config"]["name"] = "x" * (5 * 2**20)
    path = rezip(good, tmp_path / "huge.keras", config)

    def no_parsing(*args, **kwargs):
        raise AssertionError("config.json was parsed")

    monkeypatch.setattr(untrusted.json, "loads", no_parsing)
    with pytest.raises(untrusted.UnsafeModelError, match=r"config.json is 5.0 MiB; at most 4 MiB"):
        untrusted.check_archive(path)


def test_size_limits_are_checked_before_keras_builds_anything(good, tmp_path, monkeypatch):
    """A 2 kB upload declaring a Conv2D of 5,000,000 filters allocates nothing (issue 22, 3)."""
    monkeypatch.setattr(untrusted, "load_model_file", lambda *a, **k: pytest.fail("Keras was asked to build it"))
    config = good_config(good)
    path = rezip(good, tmp_path / "huge.keras", wide_conv_config(good))
    assert path.stat().st_size < 4096
    with pytest.raises(untrusted.UnsafeModelError, match=r"parameters, more than the 20,000,000 accepted"):
        untrusted.load_untrusted(path)
    # A declared build shape counts too: Keras allocates weights for it before it connects the layer.
    lying = copy.deepcopy(config)
    conv_b = next(layer for layer in lying["config"]["layers"] if layer["name"] == "conv_b")
    conv_b["build_config"]["input_shape"][-1] = 10_000_000
    with pytest.raises(untrusted.UnsafeModelError, match="parameters"):
        untrusted.check_config(lying)


def test_compute_and_activation_size_come_from_the_config(good):
    """Few parameters, huge compute: an UpSampling2D chain is refused as well (issue 22, 8)."""
    config = good_config(good)
    up = {"module": "keras.layers", "class_name": "UpSampling2D", "name": "up",
          "config": {"name": "up", "size": [4, 256], "interpolation": "nearest"}}
    down = {"module": "keras.layers", "class_name": "MaxPooling2D", "name": "down",
            "config": {"name": "down", "pool_size": [4, 256], "strides": [4, 256], "padding": "valid"}}
    chain = with_layer(with_layer(config, up), down, after="up")
    assert len(json.dumps(chain)) - len(json.dumps(config)) < 1500
    with pytest.raises(untrusted.UnsafeModelError, match=r"outputs 90.4 million values per second of audio, more "
                                                         r"than the 16 million"):
        untrusted.check_config(chain)
    mixed = with_layer(with_layer(with_layer(config, up), conv_entry("mix", kernel_size=[7, 7]), after="up"), down,
                      after="mix")
    with pytest.raises(untrusted.UnsafeModelError, match="GFLOP per second of audio, more than the 20 GFLOP"):
        untrusted.check_config(mixed, limits=untrusted.Limits(max_activations_per_second=1e12))
    assert untrusted.check_config(mixed, limits=untrusted.Limits(max_activations_per_second=1e12,
                                                                  max_flops_per_second=1e12)).parameters < 3000


def test_every_shipped_model_is_within_the_default_limits():
    root = Path(__file__).resolve().parent.parent / "models"
    shipped = sorted(root.glob("*.keras"))
    assert shipped
    limits = untrusted.Limits()
    for path in shipped:
        config = untrusted.check_archive(path)
        report = untrusted.check_config(config)
        with zipfile.ZipFile(path) as z:
            assert len(z.read("config.json")) < limits.max_config_bytes / 100
        assert report.parameters <= limits.max_parameters / 100, path.name
        assert report.flops_per_second <= limits.max_flops_per_second / 5, path.name
        assert report.activations_per_second <= limits.max_activations_per_second / 10, path.name
        card = json.loads(path.with_suffix(".json").read_text())
        assert report.parameters == card["parameters"], path.name  # counted exactly as Keras counts them
        assert report.input_frames == card.get("input_frames")


@pytest.mark.parametrize("name", ["conv one", "<b onmouseover=alert(1)>x", "ü", "a" * 101, ""])
def test_layer_names_the_backend_refuses_are_refused_at_upload(good, tmp_path, name):
    """'conv one' loads, then fails every job in TensorFlow's name scope (issue 22, 6)."""
    path = rezip(good, tmp_path / "names.keras", renamed_config(good, name))
    with pytest.raises(untrusted.UnsafeModelError, match="layer name .* is not accepted; name layers"):
        untrusted.load_untrusted(path)


def test_a_model_that_cannot_run_is_refused_with_a_sentence(monkeypatch, good):
    """The test run goes through the pipeline's compiled call; whatever fails there is a ModelError."""
    model = untrusted.load_untrusted(good)

    def broken(*args, **kwargs):
        raise ValueError("'conv one' is not a valid root scope name")

    from senseflosser import runners

    monkeypatch.setattr(runners, "compiled_call", lambda m: broken)
    with pytest.raises(ModelError, match=r"good.keras: the model cannot run \('conv one' is not a valid root scope"):
        untrusted.try_run(model, label="good.keras")


def test_a_sequential_model_is_checked_and_counted(tmp_path):
    from senseflosser.layers import SpectralCompress, SpectralExpand

    model = keras.Sequential([keras.Input((None, N_BINS, 2)), SpectralCompress(0.3),
                              keras.layers.Conv2D(3, 3, padding="same", activation="relu"),
                              keras.layers.BatchNormalization(), keras.layers.Conv2D(2, (1, 5), padding="same"),
                              SpectralExpand(0.3)], name="seq")
    model.save(tmp_path / "seq.keras")
    config = untrusted.check_archive(tmp_path / "seq.keras")
    assert untrusted.check_config(config).parameters == model.count_params()
    assert untrusted.load_untrusted(tmp_path / "seq.keras").count_params() == model.count_params()


def test_nested_models_and_subclassed_models_are_refused(good):
    config = good_config(good)
    nested = with_layer(config, {"module": "keras.src.models.functional", "class_name": "Functional",
                                 "name": "inner", "config": copy.deepcopy(config["config"])})
    with pytest.raises(untrusted.UnsafeModelError, match="models nested inside the model"):
        untrusted.check_config(nested)
    with pytest.raises(untrusted.UnsafeModelError, match="does not describe a Keras model"):
        untrusted.check_config({**config, "module": "keras.src.models.model", "class_name": "Model"})
