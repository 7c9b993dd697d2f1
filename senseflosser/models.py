"""The model registry: discover ``models/``, read model cards, load each model once.

A model is a ``.keras`` file (or a legacy ``.h5``, loaded with ``compile=False``)
with a JSON model card of the same stem beside it. Models are loaded once per
process, on first use, and cached; callers must never mutate them (the actions
always work on copies).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
from pathlib import Path
from typing import Any

import keras

from . import device  # noqa: F401  (device set-up before the first model is loaded)
from . import layers as _layers  # noqa: F401  (registers the custom layers for loading)
from .errors import ModelError
from .spectral import N_BINS

log = logging.getLogger(__name__)

MODEL_SUFFIXES = (".keras", ".h5")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")


def default_models_dir() -> Path:
    """``$SENSEFLOSSER_MODELS_DIR``, else the ``models/`` folder of this checkout."""
    env = os.environ.get("SENSEFLOSSER_MODELS_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "models"


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


CONV_LAYERS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose)
"""The layer types every action damages."""


def conv_layer_names(model: keras.Model) -> list[str]:
    """Names of the conv layers (:data:`CONV_LAYERS`) of a model, in graph order."""
    return [layer.name for layer in model.layers if isinstance(layer, CONV_LAYERS)]


def conv_channels(model: keras.Model) -> dict[str, int]:
    """A model's conv layer names, in graph order, -> their output channel (filter) counts."""
    return {layer.name: int(layer.filters) for layer in model.layers if isinstance(layer, CONV_LAYERS)}


def input_frames(model: keras.Model) -> int | None:
    """Fixed number of frames the model takes, or ``None`` if it takes any length."""
    return model.inputs[0].shape[1]


_TIME_NEUTRAL_LAYERS = (
    keras.layers.InputLayer,
    keras.layers.Activation,
    keras.layers.Dense,
    keras.layers.Dropout,
    keras.layers.BatchNormalization,
    keras.layers.Add,
    keras.layers.Multiply,
    keras.layers.Concatenate,
    keras.layers.Identity,
    _layers.SpectralCompress,
    _layers.SpectralExpand,
    _layers.Lapse,
    _layers.ChannelGate,
)
"""Layers that act on each frame on its own (at inference)."""


def time_receptive_field(model: keras.Model) -> int | None:
    """How many frames on either side of a frame can change the model's output at that frame.

    Summed over every layer that mixes frames (so an upper bound for a
    branching graph). Chunked processing needs at least this much context for
    its output to equal a single pass.

    Returns
    -------
    int or None
        ``None`` when a layer's reach along time is not known (a stride or
        padding on the time axis, or a layer type not recognised).
    """
    reach = 0
    for layer in model.layers:
        if isinstance(layer, CONV_LAYERS):  # time is the first axis after the batch, in 1-D and 2-D
            if layer.data_format != "channels_last" or layer.strides[0] != 1:
                return None
            span = (layer.kernel_size[0] - 1) * layer.dilation_rate[0]
            reach += -(-span // 2) if layer.padding == "same" else span
        elif isinstance(layer, keras.layers.Reshape):
            # Frames kept as the first axis (bins as channels and back) mix nothing along time.
            target = tuple(layer.target_shape)
            if not target or target[0] != -1 or None in target[1:] or -1 in target[1:]:
                return None
            if math.prod(target[1:]) != math.prod(layer.input.shape[2:]):
                return None
        elif isinstance(layer, keras.layers.ZeroPadding2D):
            if layer.data_format != "channels_last" or any(layer.padding[0]):
                return None
        elif isinstance(layer, keras.layers.Cropping2D):
            if layer.data_format != "channels_last" or any(layer.cropping[0]):
                return None
        elif not isinstance(layer, _TIME_NEUTRAL_LAYERS):
            return None
    return reach


def load_model_file(path: str | os.PathLike, *, label: str | None = None) -> keras.Model:
    """Load a model file and check that it maps ``(frames, 1025, 2)`` to the same shape.

    ``.keras`` files load in Keras' safe mode (no arbitrary code is run);
    legacy ``.h5`` files load with ``compile=False``.

    Parameters
    ----------
    path : str or os.PathLike
    label : str or None, keyword-only
        Name used in messages (default: the file's name).

    Returns
    -------
    keras.Model

    Raises
    ------
    ModelError
        If the file is missing, unreadable, or the model has the wrong shape.
    """
    p = Path(path)
    label = label or p.name
    if p.suffix not in MODEL_SUFFIXES:
        raise ModelError(f"{label}: not a model file (expected .keras or .h5)")
    if not p.is_file():
        raise ModelError(f"model file {str(p)!r} does not exist")
    try:
        model = keras.models.load_model(p, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a corrupt file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{label}: the model file could not be loaded ({first[:200]})") from None
    check_model(model, label)
    return model


def check_model(model: Any, label: str = "model") -> None:
    """Raise :class:`ModelError` unless ``model`` is a Keras model on ``(frames, 1025, 2)``."""
    if not isinstance(model, keras.Model):
        raise ModelError(f"{label}: expected a Keras model, got {type(model).__name__}")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(f"{label}: expected one input and one output")
    shape_in = tuple(model.inputs[0].shape)
    shape_out = tuple(model.outputs[0].shape)
    if len(shape_in) != 4 or shape_in[2:] != (N_BINS, 2):
        raise ModelError(f"{label}: input shape {shape_in} is not (batch, frames, {N_BINS}, 2)")
    if shape_out[2:] != (N_BINS, 2) or shape_out[1] != shape_in[1]:
        raise ModelError(f"{label}: output shape {shape_out} does not match input shape {shape_in}")


class ModelRegistry:
    """The models of one folder.

    Parameters
    ----------
    models_dir : str or os.PathLike or None
        Folder of ``*.keras`` / ``*.h5`` files with ``*.json`` cards; default
        :func:`default_models_dir`.
    """

    def __init__(self, models_dir: str | os.PathLike | None = None) -> None:
        self.models_dir = Path(models_dir) if models_dir is not None else default_models_dir()
        self._lock = threading.RLock()
        self._models: dict[str, keras.Model] = {}
        self._hashes: dict[tuple[str, int, int], str] = {}

    def _files(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        if not self.models_dir.is_dir():
            return found
        for suffix in MODEL_SUFFIXES:  # .keras wins over a legacy .h5 of the same name
            for p in sorted(self.models_dir.glob(f"*{suffix}")):
                if p.is_file() and _NAME_RE.fullmatch(p.stem) and p.stem not in found:
                    found[p.stem] = p
        return found

    def names(self) -> list[str]:
        """Names of the models found, sorted."""
        return sorted(self._files())

    def path(self, name: str) -> Path:
        """File of a model.

        Raises
        ------
        ModelError
            If no model of that name is in the folder.
        """
        files = self._files()
        if not isinstance(name, str) or name not in files:
            known = ", ".join(sorted(files)) or "none"
            raise ModelError(f"unknown model {name!r}; available: {known}")
        return files[name]

    def sha256(self, name: str) -> str:
        """SHA-256 of a model's file (cached while the file is unchanged)."""
        p = self.path(name)
        st = p.stat()
        key = (str(p), st.st_size, st.st_mtime_ns)
        with self._lock:
            if key not in self._hashes:
                self._hashes[key] = file_sha256(p)
            return self._hashes[key]

    def card(self, name: str) -> dict[str, Any]:
        """The model card of ``name`` (a minimal one if its JSON is missing or broken)."""
        p = self.path(name)
        card_path = p.with_suffix(".json")
        card: dict[str, Any] = {}
        if card_path.is_file():
            try:
                loaded = json.loads(card_path.read_text())
                card = loaded if isinstance(loaded, dict) else {}
            except (OSError, json.JSONDecodeError) as exc:
                log.warning("model card %s is unreadable: %s", card_path, exc)
        card = {**card, "name": name, "file": p.name}
        card.setdefault("summary", "no model card")
        with self._lock:
            model = self._models.get(name)
        if model is not None:
            card.setdefault("conv_layers", conv_layer_names(model))
            card.setdefault("conv_channels", conv_channels(model))
            card.setdefault("input_frames", input_frames(model))
        return card

    def cards(self) -> list[dict[str, Any]]:
        """Model cards of every model, sorted by name."""
        return [self.card(n) for n in self.names()]

    def load(self, name: str) -> keras.Model:
        """Load a model by name, once per process; later calls return the cached model."""
        path = self.path(name)
        with self._lock:
            model = self._models.get(name)
            if model is None:
                log.info("loading model %s from %s", name, path)
                model = load_model_file(path)
                self._models[name] = model
            return model

    def loaded(self) -> list[str]:
        """Names of the models loaded so far."""
        with self._lock:
            return sorted(self._models)

    def resolve(self, name_or_path: str, *, allow_paths: bool = False) -> tuple[str, keras.Model, str]:
        """Find a model by registry name or, when ``allow_paths``, by file path.

        Returns
        -------
        name : str
            Registry name, or the file's stem.
        model : keras.Model
        sha256 : str
            Hash of the model file.
        """
        if allow_paths and (os.sep in name_or_path or name_or_path.endswith(MODEL_SUFFIXES)):
            p = Path(name_or_path)
            if p.is_file():
                return p.stem, load_model_file(p), file_sha256(p)
            if name_or_path.endswith(MODEL_SUFFIXES) or os.sep in name_or_path:
                raise ModelError(f"model file {name_or_path!r} does not exist")
        return name_or_path, self.load(name_or_path), self.sha256(name_or_path)
