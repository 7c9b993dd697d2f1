"""Model files from people we do not know: checked before Keras opens them.

A ``.keras`` file is a zip archive holding ``config.json`` (the architecture),
``metadata.json`` and ``model.weights.h5``. Keras rebuilds the architecture
from the config, and a config can name code: a ``Lambda`` layer's function, a
custom class from any module. :func:`load_untrusted` therefore

1. checks the archive itself: a readable zip (not truncated, every member's
   checksum right), at most a few members with the expected names (no
   folders, absolute paths or ``..``; no extra "assets"), and a bounded total
   size once unpacked (no zip bomb);
2. walks the config: every object must be a Keras built-in layer, initializer,
   regularizer, constraint or dtype policy, or one of senseflosser's
   registered layers; ``Lambda``, serialized functions (``__lambda__``) and
   custom objects are refused, naming what was found;
3. only then loads it with Keras' ``safe_mode=True`` and checks the STFT
   contract, that it has a conv layer to damage, and its size.

Legacy ``.h5`` files are refused: their configs can carry marshalled Python
code that Keras' legacy loader does not guard as strictly.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from .errors import ModelError
from .models import check_model, conv_layer_names, load_model_file

MEMBERS = ("config.json", "metadata.json", "model.weights.h5")
"""The only names a ``.keras`` archive may hold."""

ALLOWED_LAYERS = frozenset({
    "InputLayer", "Conv1D", "Conv2D", "Conv1DTranspose", "Conv2DTranspose", "SeparableConv1D", "SeparableConv2D",
    "DepthwiseConv1D", "DepthwiseConv2D", "Dense", "EinsumDense", "Activation", "ReLU", "LeakyReLU", "PReLU",
    "ELU", "Softmax", "ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D", "Reshape", "Permute",
    "BatchNormalization", "LayerNormalization", "GroupNormalization", "Dropout", "SpatialDropout1D",
    "SpatialDropout2D", "GaussianNoise", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
    "Concatenate", "Identity", "MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D",
    "UpSampling1D", "UpSampling2D",
})
"""Keras built-in layers an uploaded model may use (no Lambda, no wrappers of foreign code)."""

MODEL_CLASSES = frozenset({"Functional", "Sequential", "Model"})
OUR_LAYERS = frozenset({"SpectralCompress", "SpectralExpand", "Lapse", "ChannelGate"})
SUPPORT_MODULES = ("keras", "keras.initializers", "keras.regularizers", "keras.constraints")
"""Modules whose objects (dtype policies, initializers, ...) carry settings, not code."""
_STRUCTURAL = frozenset({"__keras_tensor__", "__tuple__"})
_IGNORED_KEYS = frozenset({"compile_config"})  # not deserialized: models load with compile=False


@dataclass(frozen=True)
class Limits:
    """What an uploaded model may be.

    Attributes
    ----------
    max_members : int
        Entries in the zip archive.
    max_unpacked_bytes : int
        Total size of the members once unpacked.
    max_parameters : int
        Weights of the model.
    """

    max_members: int = len(MEMBERS)
    max_unpacked_bytes: int = 256 * 1024 * 1024
    max_parameters: int = 20_000_000


class UnsafeModelError(ModelError):
    """An uploaded model file is refused; the message says why."""


def check_archive(path: str | os.PathLike, *, limits: Limits = Limits(), label: str | None = None) -> dict:
    """Check a ``.keras`` archive and its config without running any of it.

    Returns
    -------
    dict
        The parsed ``config.json``.

    Raises
    ------
    UnsafeModelError
    """
    p = Path(path)
    label = label or p.name
    with open(p, "rb") as f:
        head = f.read(8)
    if head.startswith(b"\x89HDF"):
        raise UnsafeModelError(f"{label}: this is an HDF5 (.h5) file, not a .keras archive; legacy .h5 models are "
                               "not accepted (load it in Keras and save it again as .keras)")
    if not zipfile.is_zipfile(p):
        raise UnsafeModelError(f"{label}: not a .keras file (a .keras file is a zip archive) or the file is cut short")
    try:
        with zipfile.ZipFile(p) as z:
            infos = z.infolist()
            for info in infos[: limits.max_members + 1]:
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise UnsafeModelError(f"{label}: the archive uses a compression method Keras does not write "
                                           f"({info.compress_type}); save the model again with Keras")
                name = info.filename
                if name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/") or ":" in name:
                    raise UnsafeModelError(f"{label}: the archive holds an unsafe path {name[:80]!r}")
                if name not in MEMBERS:
                    raise UnsafeModelError(f"{label}: unexpected entry {name[:80]!r} in the archive; only "
                                           f"{', '.join(MEMBERS)} are accepted (no assets or external files)")
            if len(infos) > limits.max_members:
                raise UnsafeModelError(f"{label}: the archive holds {len(infos)} entries; a .keras model has at most "
                                       f"{limits.max_members} ({', '.join(MEMBERS)})")
            unpacked = sum(info.file_size for info in infos)
            if unpacked > limits.max_unpacked_bytes:
                raise UnsafeModelError(f"{label}: the archive unpacks to {unpacked / 2**20:.0f} MiB, more than the "
                                       f"{limits.max_unpacked_bytes / 2**20:.0f} MiB allowed")
            missing = [m for m in ("config.json", "model.weights.h5") if m not in {i.filename for i in infos}]
            if missing:
                raise UnsafeModelError(f"{label}: the archive lacks {', '.join(missing)}")
            bad = z.testzip()  # reads every member (bounded by the sizes above) and checks its CRC
            if bad is not None:
                raise UnsafeModelError(f"{label}: the archive is damaged ({bad} fails its checksum)")
            try:
                config = json.loads(z.read("config.json"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise UnsafeModelError(f"{label}: config.json is not valid JSON") from None
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise UnsafeModelError(f"{label}: the archive cannot be read ({exc})") from None
    check_config(config, label=label)
    return config


def check_config(config: Any, *, label: str = "model") -> None:
    """Refuse a Keras config that names anything but built-in layers and ours.

    Raises
    ------
    UnsafeModelError
        Naming the first object refused and why.
    """
    if not isinstance(config, dict) or config.get("class_name") not in MODEL_CLASSES:
        raise UnsafeModelError(f"{label}: config.json does not describe a Keras model")
    _walk(config, label, depth=0)


def _walk(node: Any, label: str, depth: int) -> None:
    if depth > 64:
        raise UnsafeModelError(f"{label}: config.json is nested too deeply")
    if isinstance(node, list):
        for item in node:
            _walk(item, label, depth + 1)
        return
    if not isinstance(node, dict):
        return
    if "class_name" in node:
        _check_object(node, label)
    for key, value in node.items():
        if key not in _IGNORED_KEYS:
            _walk(value, label, depth + 1)


def _check_object(obj: dict, label: str) -> None:
    cls = obj.get("class_name")
    module = obj.get("module")
    registered = obj.get("registered_name")
    if cls in _STRUCTURAL and module is None:
        return
    if cls == "Lambda" or cls == "__lambda__":
        raise UnsafeModelError(f"{label}: Lambda layers and serialized Python functions are refused (they run "
                               "arbitrary code); rebuild the model from built-in layers")
    if not isinstance(cls, str) or not (module is None or isinstance(module, str)):
        raise UnsafeModelError(f"{label}: config.json holds a malformed object")
    if module == "senseflosser.layers" or (isinstance(registered, str) and registered.startswith("senseflosser>")):
        if cls in OUR_LAYERS and registered == f"senseflosser>{cls}":
            return
        raise UnsafeModelError(f"{label}: unknown senseflosser object {cls!r}")
    if registered is not None and registered != cls:  # built-ins record no name, or their class name
        raise UnsafeModelError(f"{label}: custom object {registered!r} is not one of Keras' or senseflosser's; "
                               "only built-in layers and senseflosser's layers are accepted")
    if cls == "function":
        if module in ("keras.activations", "keras.src.activations.activations"):
            return
        raise UnsafeModelError(f"{label}: function {obj.get('config')!r} from module {module!r} is refused; "
                               "use Keras' built-in activations")
    if module == "keras.layers":
        if cls in ALLOWED_LAYERS:
            return
        raise UnsafeModelError(f"{label}: layer type {cls} is not accepted in uploaded models; accepted: "
                               "Keras' convolution, dense, activation, padding, cropping, reshaping, normalization, "
                               "pooling, merging and dropout layers")
    if cls in MODEL_CLASSES and module in ("keras", "keras.models", "keras.src.models.functional",
                                           "keras.src.models.sequential", "keras.src.models.model"):
        return
    if module in SUPPORT_MODULES:
        return
    raise UnsafeModelError(f"{label}: object {cls!r} from module {module!r} is not accepted in uploaded models")


def load_untrusted(path: str | os.PathLike, *, limits: Limits = Limits(), label: str | None = None) -> keras.Model:
    """Check a model file from an untrusted source, then load it safely and check what it is.

    Parameters
    ----------
    path : str or os.PathLike
        The uploaded file (any name; its content decides).
    limits : Limits, keyword-only
    label : str or None, keyword-only
        Name used in messages (default: the file's name).

    Returns
    -------
    keras.Model

    Raises
    ------
    UnsafeModelError
        If the archive or its config is refused.
    ModelError
        If Keras cannot load it, or it does not map ``(frames, 1025, 2)`` to the
        same shape, has no conv layer, or is too large.
    """
    p = Path(path)
    label = label or p.name
    check_archive(p, limits=limits, label=label)
    # Keras picks the loader by suffix; the checks above decided this is a .keras archive.
    target = p if p.suffix == ".keras" else p.with_suffix(".keras")
    if target != p:
        os.replace(p, target)
    try:
        model = load_model_file(target, label=label)
    finally:
        if target != p:
            os.replace(target, p)
    if not conv_layer_names(model):
        raise ModelError(f"{label}: the model has no Conv1D, Conv2D, Conv1DTranspose or Conv2DTranspose layer to damage")
    params = model.count_params()
    if params > limits.max_parameters:
        raise ModelError(f"{label}: the model has {params:,} parameters, more than the {limits.max_parameters:,} "
                         "accepted here")
    check_model(model, label)
    return model
