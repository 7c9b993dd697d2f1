"""Model configs an attacker might write: a good tiny model's ``config.json``, edited.

Shared by the checker's tests (test_untrusted.py), the web tests of issue 22 and the fuzz test.
"""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path

from senseflosser.spectral import N_BINS


def good_config(good: Path) -> dict:
    """The parsed ``config.json`` of a saved model."""
    with zipfile.ZipFile(good) as z:
        return json.loads(z.read("config.json"))


def rezip(good: Path, dest: Path, config: dict | bytes) -> Path:
    """``good``'s archive with another config.json (its weights kept)."""
    raw = config if isinstance(config, bytes) else json.dumps(config).encode()
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as out:
        for name in src.namelist():
            out.writestr(name, raw if name == "config.json" else src.read(name))
    return dest


def with_layer(config: dict, entry: dict, *, after: str = "conv_a", before: str = "conv_b") -> dict:
    """The tiny model's config with ``entry`` spliced in between two layers (``entry`` takes ``after``'s output)."""
    config = copy.deepcopy(config)
    layers = config["config"]["layers"]
    source = next(layer for layer in layers if layer["name"] == after)
    tensor = {"class_name": "__keras_tensor__", "config": {"shape": [None, None, N_BINS, 4], "dtype": "float32",
                                                            "keras_history": [after, 0, 0]}}
    entry = {"registered_name": None, "build_config": {"input_shape": [None, None, N_BINS, 4]}, **entry,
             "inbound_nodes": [{"args": [tensor], "kwargs": {}}]}
    entry.setdefault("name", entry["config"]["name"])
    layers.insert(layers.index(source) + 1, entry)
    target = next(layer for layer in layers if layer["name"] == before)
    target["inbound_nodes"][0]["args"][0]["config"]["keras_history"] = [entry["name"], 0, 0]
    return config


def conv_entry(name: str, filters: int = 4, **settings) -> dict:
    """A Conv2D layer's config entry (3x3, same padding) for :func:`with_layer`."""
    return {"module": "keras.layers", "class_name": "Conv2D", "name": name,
            "config": {"name": name, "filters": filters, "kernel_size": [3, 3], "padding": "same", **settings}}


LAMBDA_VIA_API_NAME = {"module": "keras", "class_name": "layers.Lambda", "name": "neg",
                       "config": {"name": "neg", "function": {"module": "keras", "class_name": "ops.negative",
                                                              "config": None, "registered_name": None}}}
"""A Lambda named the way Keras' public API names it (``keras`` + ``layers.Lambda``): issue 22, finding 1."""


def lambda_via_api_name(good: Path) -> dict:
    """The good model with a Lambda layer named through Keras' API path."""
    return with_layer(good_config(good), LAMBDA_VIA_API_NAME)


def deep_config(good: Path, depth: int = 100_000) -> bytes:
    """The good model's config.json with a list nested ``depth`` deep in it (finding 2)."""
    config = good_config(good)
    config["config"]["junk"] = "PLACEHOLDER"
    return json.dumps(config).encode().replace(b'"PLACEHOLDER"', b"[" * depth + b"]" * depth)


def wide_conv_config(good: Path, filters: int = 5_000_000) -> dict:
    """The good model with a Conv2D of ``filters`` filters feeding the next conv (finding 3): a 2 kB file."""
    config = with_layer(good_config(good), conv_entry("huge", filters))
    config["config"]["layers"][-2]["build_config"]["input_shape"][-1] = filters
    return config


def renamed_config(good: Path, name: str) -> bytes:
    """The good model with its layer ``conv_b`` renamed to ``name`` (finding 6: 'conv one' fails in TensorFlow)."""
    return json.dumps(good_config(good)).replace('"conv_b"', json.dumps(name)).encode()
