"""The model registry: discover ``models/``, own the model cards, load each model once.

A model is a ``.keras`` file (or a legacy ``.h5``, loaded with ``compile=False``)
with a JSON model card of the same stem beside it. Models are loaded once per
process, on first use, and cached; callers must never mutate them (the actions
always work on copies).

This module is the only writer of model cards: training writes a new card with
:func:`write_card`; evaluation, the sensitivity map and concept code change one
section of an existing card with :meth:`ModelRegistry.update_card`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: cards are then safe against threads only
    fcntl = None  # type: ignore[assignment]

import keras

from . import device  # noqa: F401  (device set-up before the first model is loaded)
from . import bends as _bends  # noqa: F401  (registers the bend layer for loading)
from . import layers as _layers  # noqa: F401  (registers the custom layers for loading)
from .errors import ModelError
from .jsonfile import write_json
from .spectral import N_BINS

log = logging.getLogger(__name__)

MODEL_SUFFIXES = (".keras", ".h5")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")
_DERIVED_SECTIONS = frozenset({"name", "file"})
"""Card entries the registry fills in itself when it reads a card; never stored by an update."""


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
    _bends.Bend,
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


def card_file(model_path: str | os.PathLike) -> Path:
    """The card of a model file: the JSON file of the same stem beside it (it may not exist yet).

    Raises
    ------
    ModelError
        If ``model_path`` is not a ``.keras`` or ``.h5`` file name.
    """
    p = Path(model_path)
    if p.suffix not in MODEL_SUFFIXES:
        raise ModelError(f"{str(p)!r} is not a model file (expected .keras or .h5), so it has no card")
    return p.with_suffix(".json")


def write_card(model_path: str | os.PathLike, card: Mapping[str, Any]) -> Path:
    """Write the whole card of a model file, atomically, as pretty JSON.

    For a new model (training); to change a section of an existing card use
    :meth:`ModelRegistry.update_card`. A non-finite float (an SNR of ``inf``:
    no damage) is stored as ``null``.

    Parameters
    ----------
    model_path : str or os.PathLike
        The model's ``.keras`` (or ``.h5``) file; the card is written beside it.
    card : mapping
        The card's sections.

    Returns
    -------
    pathlib.Path
        The card file written.

    Raises
    ------
    ModelError
        If ``model_path`` is not a model file name.
    """
    return write_json(card_file(model_path), dict(card))


def _read_card_file(path: Path) -> dict[str, Any] | None:
    """The card stored at ``path``; ``None`` when there is no such file.

    Raises
    ------
    ModelError
        If the file cannot be read or does not hold a JSON object.
    """
    if not path.is_file():
        return None
    try:
        loaded = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"model card {str(path)!r} is unreadable ({exc})") from None
    if not isinstance(loaded, dict):
        raise ModelError(f"model card {str(path)!r} holds a JSON {type(loaded).__name__}, not an object")
    return loaded


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


def rank_key(card: dict[str, Any], name: str) -> tuple[float, float, str]:
    """How models are ordered: quality first (median held-out SI-SNR of the normal output, higher first),
    then cost (GFLOP per second of audio, lower first), then name. A card without figures goes last."""
    try:
        quality = float(((card.get("evaluation") or {}).get("normal") or {})["si_snr_db_median"])
    except (KeyError, TypeError, ValueError):
        quality = -math.inf
    forward = card.get("forward") or (card.get("evaluation") or {}).get("forward") or {}
    try:
        cost = float(forward["gflop_per_s_audio"])
    except (KeyError, TypeError, ValueError):
        cost = math.inf
    return (-quality if math.isfinite(quality) else math.inf, cost if math.isfinite(cost) else math.inf, name)


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
        self._stored: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}

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

    def card_path(self, name: str) -> Path:
        """The card file of a model (it may not exist yet).

        Raises
        ------
        ModelError
            If no model of that name is in the folder.
        """
        return card_file(self.path(name))

    def _stored_card(self, name: str) -> dict[str, Any]:
        """:meth:`read_card`, parsed once while its file is unchanged: shared, so never to be mutated.

        A web request ranks every model and reads its model's card a few times; the cards (curves,
        maps, concepts: about 175 kB) take about 2 ms each to parse.
        """
        path = self.card_path(name)
        try:
            st = path.stat()
        except OSError:
            return {}
        stamp = (st.st_size, st.st_mtime_ns)
        with self._lock:
            hit = self._stored.get(str(path))
        if hit is not None and hit[0] == stamp:
            return hit[1]
        card = _read_card_file(path) or {}
        with self._lock:
            self._stored[str(path)] = (stamp, card)
        return card

    def read_card(self, name: str) -> dict[str, Any]:
        """The card of ``name`` exactly as stored (``{}`` when it has none), without derived entries.

        Raises
        ------
        ModelError
            If no model of that name is in the folder, or its card is unreadable.
        """
        return _read_card_file(self.card_path(name)) or {}

    @contextmanager
    def _card_lock(self) -> Iterator[None]:
        """Hold the lock of the folder's cards: one update at a time, across threads and processes."""
        with self._lock:
            if fcntl is None:
                yield
                return
            fd = os.open(self.models_dir, os.O_RDONLY)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except OSError as exc:  # a file system without flock (some network mounts)
                    log.warning("cannot lock %s (%s): card updates are safe against threads only",
                                self.models_dir, exc)
                yield
            finally:
                os.close(fd)  # releases the lock

    def update_card(self, name: str, /, **sections: Any) -> Path:
        """Set sections of a model's card, atomically; the other sections are kept as stored.

        A section already in the card keeps its place; a new one is added at
        the end. A model without a card gets one (``name`` first). The read,
        the change and the write happen under one lock (threads and, where
        ``fcntl`` exists, processes), and the file is replaced in one step, so
        neither a reader nor a concurrent update sees half a card.

        Parameters
        ----------
        name : str
            Model name (positional).
        **sections
            Section name -> its new value (JSON-serialisable; a non-finite
            float is stored as ``null``), e.g. ``evaluation=report``.

        Returns
        -------
        pathlib.Path
            The card file written.

        Raises
        ------
        ModelError
            If the model is unknown, its card is unreadable (it is left as it
            is), no section is given, or a section is one the registry derives
            (``name``, ``file``).
        """
        if not sections:
            raise ModelError(f"no card section given to update for model {name!r}")
        derived = sorted(_DERIVED_SECTIONS & sections.keys())
        if derived:
            raise ModelError(f"card section {derived[0]!r} of model {name!r} is derived by the registry; "
                             "it cannot be updated")
        model_path = self.path(name)
        with self._card_lock():
            card = _read_card_file(card_file(model_path))
            if card is None:
                card = {"name": name}
            card.update(sections)
            path = write_card(model_path, card)
        log.info("updated %s of the card of %s", ", ".join(sections), name)
        return path

    def card(self, name: str) -> dict[str, Any]:
        """The model card of ``name`` as shown to users (a minimal one if its JSON is missing or broken).

        The stored card plus ``name``, ``file`` and, once the model is loaded,
        its conv layers, their channels and its input frames where the card
        lacks them. A new dict, but its nested values are the cached card's:
        read them, do not change them (:meth:`update_card` changes a card).
        """
        p = self.path(name)
        try:
            card = self._stored_card(name)
        except ModelError as exc:
            log.warning("%s", exc)
            card = {}
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
        """Model cards of every model, best first (see :meth:`ranked`)."""
        return [self.card(n) for n in self.ranked()]

    def ranked(self) -> list[str]:
        """Names of the models, best first by the measured figures of their cards (:func:`rank_key`)."""
        def card(name: str) -> dict[str, Any]:
            try:
                return self._stored_card(name)
            except ModelError:  # an unreadable card ranks last; card() says why
                return {}

        return sorted(self.names(), key=lambda n: rank_key(card(n), n))

    def best(self) -> str:
        """The model used wherever none is named: the first of :meth:`ranked`.

        Raises
        ------
        ModelError
            If the folder holds no model.
        """
        ranked = self.ranked()
        if not ranked:
            raise ModelError(f"there is no model in {self.models_dir}; train one with `senseflosser train`")
        return ranked[0]

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
