"""Model files from people we do not know: checked before Keras opens them.

A ``.keras`` file is a zip archive holding ``config.json`` (the architecture),
``metadata.json`` and ``model.weights.h5``. Keras rebuilds the architecture
from the config, and a config can name code: a ``Lambda`` layer's function, a
custom class from any module. :func:`load_untrusted` therefore

1. checks the archive itself: a readable zip (not truncated, every member's
   checksum right), at most a few members with the expected names (no
   folders, absolute paths or ``..``; no extra "assets"), a bounded total
   size once unpacked (no zip bomb), and a ``config.json`` (and
   ``metadata.json``) small and shallow enough to parse before it is parsed;
2. walks the config (iteratively, to a bounded depth) and resolves every
   ``module`` / ``class_name`` / ``registered_name`` the way Keras'
   deserializer would (its registry of custom objects first, then Keras'
   public API names such as ``keras`` + ``layers.Lambda``, then the module's
   own attribute, without importing anything). Only the objects of an
   explicit allowlist are accepted, compared by the resolved object, not by
   its name: :data:`ALLOWED_LAYERS` (and senseflosser's layers), the models
   ``Functional`` and ``Sequential`` at the top, and the activations,
   initializers, regularizers, constraints and dtype policies in
   :data:`ALLOWED_SETTINGS`. Strings that Keras turns into objects
   (``"activation": "gelu"``, ``"kernel_initializer": "zeros"``,
   ``"dtype": "float32"``) are checked the same way. Layer names must be
   plain (letters, digits, ``_ . -``), since TensorFlow refuses others when
   the model runs;
3. follows the graph with the shapes the config declares, before anything
   is built: the parameter count (of the declared and the connected shapes,
   whichever is larger, since Keras allocates weights for the declared
   ones), the compute per second of audio and the largest activation per
   second of audio must be within :class:`Limits`, and the model must map
   ``(frames, 1025, 2)`` to the same shape;
4. only then loads it with Keras' ``safe_mode=True``, checks that every
   layer built is of an allowed type, that it has a conv layer to damage, and
   runs it once on a short test input through the same compiled call the
   pipeline uses, so a model that cannot run is refused here, with a
   sentence, and never fails a job.

Legacy ``.h5`` files are refused: their configs can carry marshalled Python
code that Keras' legacy loader does not guard as strictly.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from . import bends as our_bends
from . import layers as our_layers
from .audio import SAMPLE_RATE
from .errors import ModelError
from .models import check_model, conv_layer_names, load_model_file
from .spectral import HOP, N_BINS

MEMBERS = ("config.json", "metadata.json", "model.weights.h5")
"""The only names a ``.keras`` archive may hold."""

_L = keras.layers
ALLOWED_LAYERS: frozenset[type] = frozenset({
    _L.InputLayer, _L.Conv1D, _L.Conv2D, _L.Conv1DTranspose, _L.Conv2DTranspose, _L.SeparableConv1D,
    _L.SeparableConv2D, _L.DepthwiseConv1D, _L.DepthwiseConv2D, _L.Dense, _L.Activation, _L.ReLU, _L.LeakyReLU,
    _L.PReLU, _L.ELU, _L.Softmax, _L.ZeroPadding1D, _L.ZeroPadding2D, _L.Cropping1D, _L.Cropping2D, _L.Reshape,
    _L.Permute, _L.BatchNormalization, _L.LayerNormalization, _L.GroupNormalization, _L.Dropout,
    _L.SpatialDropout1D, _L.SpatialDropout2D, _L.GaussianNoise, _L.Add, _L.Subtract, _L.Multiply, _L.Average,
    _L.Maximum, _L.Minimum, _L.Concatenate, _L.Identity, _L.MaxPooling1D, _L.MaxPooling2D, _L.AveragePooling1D,
    _L.AveragePooling2D, _L.UpSampling1D, _L.UpSampling2D,
})
"""Keras built-in layers an uploaded model may use: convolution, dense, activation, padding, cropping,
reshaping, normalization, pooling, up-sampling, merging and dropout layers. No Lambda, no wrappers,
no layers that load or run anything else (TFSMLayer, TorchModuleWrapper, ...)."""

OUR_LAYERS: frozenset[type] = frozenset({our_layers.SpectralCompress, our_layers.SpectralExpand, our_layers.Lapse,
                                         our_layers.ChannelGate, our_bends.Bend})
"""senseflosser's own layers (all of them keep their input's shape)."""

_ACTIVATION_NAMES = ("celu", "elu", "exponential", "gelu", "glu", "hard_shrink", "hard_sigmoid", "hard_silu",
                     "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "log_softmax", "mish", "relu", "relu6",
                     "selu", "sigmoid", "silu", "soft_shrink", "softmax", "softplus", "softsign", "sparse_plus",
                     "sparse_sigmoid", "sparsemax", "squareplus", "tanh", "tanh_shrink", "threshold")
_I, _R, _C = keras.initializers, keras.regularizers, keras.constraints
ALLOWED_SETTINGS: dict[str, frozenset] = {
    "activation": frozenset(getattr(keras.activations, n) for n in _ACTIVATION_NAMES),
    "initializer": frozenset({_I.Zeros, _I.Ones, _I.Constant, _I.RandomNormal, _I.RandomUniform, _I.TruncatedNormal,
                              _I.GlorotUniform, _I.GlorotNormal, _I.HeUniform, _I.HeNormal, _I.LecunUniform,
                              _I.LecunNormal, _I.VarianceScaling, _I.Orthogonal, _I.Identity}),
    "regularizer": frozenset({_R.L1, _R.L2, _R.L1L2, _R.OrthogonalRegularizer}),
    "constraint": frozenset({_C.MaxNorm, _C.MinMaxNorm, _C.NonNeg, _C.UnitNorm}),
    "dtype": frozenset({keras.DTypePolicy, keras.dtype_policies.FloatDTypePolicy}),
}
"""The objects a layer's settings may name, by kind (Keras' own; none of them runs code of the file's)."""

DTYPE_NAMES = frozenset({"float16", "bfloat16", "float32", "float64", "mixed_float16", "mixed_bfloat16"})
"""Dtype policies an uploaded model may name (no quantized policies: they expect weights of another layout)."""

_STRUCTURAL = frozenset({"__keras_tensor__"})
"""Objects Keras' deserializer makes itself, from plain values (a symbolic tensor of the graph)."""
_IGNORED_KEYS = frozenset({"compile_config"})  # not deserialized: models load with compile=False
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", re.ASCII)
ANALYSIS_FRAMES = 32
"""Frames a variable-length model is analysed with (about 1.5 s); its costs are given per second."""
TEST_FRAMES = 16
"""Frames of the test input a variable-length model is run on once (a fixed-length model gets its own)."""


def _functional_class() -> type:
    from keras.src.models.functional import Functional

    return Functional


MODEL_CLASSES = frozenset({_functional_class(), keras.Sequential})
"""Models an upload may be: a functional graph or a stack of layers (no subclassed models, no nesting)."""


@dataclass(frozen=True)
class Limits:
    """What an uploaded model may be.

    The defaults take every model in ``models/`` with room to spare (the
    largest there has 84,322 parameters, about 2 GFLOP and 0.7 million
    activation values per second of audio).

    Attributes
    ----------
    max_members : int
        Entries in the zip archive.
    max_unpacked_bytes : int
        Total size of the members once unpacked.
    max_config_bytes : int
        Size of ``config.json`` (and of ``metadata.json``), checked before either is parsed.
    max_depth : int
        Nesting of objects and lists in ``config.json``.
    max_layers : int
        Layers of the model.
    max_parameters : int
        Weights of the model.
    max_flops_per_second : float
        Floating-point operations for one second of audio (22050 Hz, hop 1024), counted from the config.
    max_activations_per_second : float
        Values in the largest output of any one layer for one second of audio (the pipeline holds a few of
        these, for chunks of up to 24 s).
    max_frames : int
        Frames a fixed-length model may take at once.
    """

    max_members: int = len(MEMBERS)
    max_unpacked_bytes: int = 256 * 1024 * 1024
    max_config_bytes: int = 4 * 1024 * 1024
    max_depth: int = 64
    max_layers: int = 512
    max_parameters: int = 20_000_000
    max_flops_per_second: float = 20e9
    max_activations_per_second: float = 16e6
    max_frames: int = 512


@dataclass(frozen=True)
class ConfigReport:
    """What :func:`check_config` measured of a model's config.

    Attributes
    ----------
    parameters : int
        Weights Keras will allocate (of the declared shapes, or the connected ones if larger).
    flops_per_second : float
        Floating-point operations per second of audio.
    activations_per_second : float
        Values in the largest layer output per second of audio.
    input_frames : int or None
        The fixed number of frames the model takes, or ``None``.
    layers : int
    """

    parameters: int
    flops_per_second: float
    activations_per_second: float
    input_frames: int | None
    layers: int


class UnsafeModelError(ModelError):
    """An uploaded model file is refused; the message says why."""


# ------------------------------------------------------------------ the archive


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
            names = {i.filename for i in infos}
            missing = [m for m in ("config.json", "model.weights.h5") if m not in names]
            if missing:
                raise UnsafeModelError(f"{label}: the archive lacks {', '.join(missing)}")
            if len(names) != len(infos):
                raise UnsafeModelError(f"{label}: the archive holds an entry twice")
            for info in infos:
                if info.filename != "model.weights.h5" and info.file_size > limits.max_config_bytes:
                    raise UnsafeModelError(
                        f"{label}: {info.filename} is {info.file_size / 2**20:.1f} MiB; at most "
                        f"{limits.max_config_bytes / 2**20:g} MiB is accepted (a model's architecture takes "
                        "kilobytes)")
            bad = z.testzip()  # reads every member (bounded by the sizes above) and checks its CRC
            if bad is not None:
                raise UnsafeModelError(f"{label}: the archive is damaged ({bad} fails its checksum)")
            config = parse_config(z.read("config.json"), limits=limits, label=label)
            if "metadata.json" in names:  # Keras parses it too
                parse_config(z.read("metadata.json"), limits=limits, label=label, what="metadata.json")
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise UnsafeModelError(f"{label}: the archive cannot be read ({exc})") from None
    check_config(config, label=label, limits=limits)
    return config


def parse_config(raw: bytes, *, limits: Limits = Limits(), label: str = "model", what: str = "config.json") -> Any:
    """Parse the JSON of ``config.json`` once its size and nesting are known to be bounded.

    Python's JSON parser recurses once per level: a file nested 100,000 deep
    would exhaust the stack, so the depth is measured first, without parsing.

    Raises
    ------
    UnsafeModelError
        For a file too large, nested too deeply, or not JSON.
    """
    if len(raw) > limits.max_config_bytes:
        raise UnsafeModelError(f"{label}: {what} is {len(raw) / 2**20:.1f} MiB; at most "
                               f"{limits.max_config_bytes / 2**20:g} MiB is accepted")
    depth = json_depth(raw)
    if depth > limits.max_depth:
        raise UnsafeModelError(f"{label}: {what} is nested {depth} levels deep; at most {limits.max_depth} "
                               "are accepted")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # JSONDecodeError, or an integer of 5,000 digits
        raise UnsafeModelError(f"{label}: {what} is not valid JSON") from None


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def json_depth(raw: bytes) -> int:
    """How deeply the arrays and objects of JSON text nest (brackets inside strings not counted)."""
    skeleton = _JSON_STRING.sub(b"", raw)
    codes = np.frombuffer(skeleton, dtype=np.uint8)
    steps = (np.isin(codes, (ord("["), ord("{"))).astype(np.int64)
             - np.isin(codes, (ord("]"), ord("}"))).astype(np.int64))
    return int(np.cumsum(steps).max(initial=0))


# ------------------------------------------------------------------ resolving names as Keras does


class _Unresolved:
    """Why a config object names nothing this process can accept."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def resolve_object(obj: dict) -> Any:
    """The class or function Keras' deserializer would make of a config object, found without importing.

    Follows ``keras.src.saving.serialization_lib._retrieve_class_or_fn``:
    the registry of custom objects (by ``registered_name``, or by name for a
    function) first, then Keras' public API names (``module`` + ``.`` +
    ``class_name``, so ``keras`` + ``layers.Lambda`` is ``keras.layers.Lambda``),
    then the built-in modules for a ``builtins`` function, then the attribute
    of an already imported Keras module. Returns an :class:`_Unresolved` for
    anything else (Keras would import a module, or fail).
    """
    from keras.src import api_export
    from keras.src.saving import object_registration
    from keras.src.saving.keras_saveable import KerasSaveable
    from keras.src.saving.serialization_lib import BUILTIN_MODULES

    class_name = obj.get("class_name")
    module = obj.get("module")
    registered = obj.get("registered_name", class_name)
    if not isinstance(class_name, str) or not isinstance(module, (str, type(None))) \
            or not isinstance(registered, (str, type(None))):
        return _Unresolved("malformed")
    if class_name == "function":
        name = obj.get("config")
        if not isinstance(name, str):
            return _Unresolved("malformed")
        found = object_registration.get_registered_object(name)
    else:
        name = class_name
        found = object_registration.get_registered_object(registered) if registered is not None else None
    if found is not None:
        return found
    if module is not None and (module == "keras" or module.startswith("keras.")):
        symbol = api_export.get_symbol_from_name(f"{module}.{name}")
        if symbol is not None:
            explicit = obj.get("registered_name")
            if explicit and explicit not in (name, class_name):
                return _Unresolved("malformed")  # Keras refuses a registered name on a built-in
            return symbol
    if class_name == "function" and module == "builtins":
        for builtin in sorted(BUILTIN_MODULES):
            symbol = api_export.get_symbol_from_name(f"keras.{builtin}.{name}")
            if symbol is not None:
                return symbol
        if ">" not in name:
            for custom_name, custom in object_registration.GLOBAL_CUSTOM_OBJECTS.items():
                if custom_name.endswith(f">{name}"):
                    return custom
    if module is not None and module.split(".", 1)[0] in ("keras", "keras_hub", "keras_cv", "keras_nlp"):
        loaded = sys.modules.get(module)
        if loaded is None:
            return _Unresolved("unimported")
        symbol = vars(loaded).get(name)
        if isinstance(symbol, type) and issubclass(symbol, KerasSaveable):
            return symbol
    return _Unresolved("unknown")


def _setting_kind(key: str) -> str | None:
    """The kind of object a layer setting of this name is deserialized into, if any."""
    if key.endswith("activation"):
        return "activation"
    for kind in ("initializer", "regularizer", "constraint"):
        if key.endswith(f"_{kind}"):
            return kind
    return "dtype" if key == "dtype" else None


def _resolve_setting_name(kind: str, text: str) -> Any:
    """What Keras makes of a setting given as a string (``"gelu"``, ``"zeros"``, ``"float32"``)."""
    from keras.src import activations, constraints, initializers, regularizers
    from keras.src.saving import object_registration

    if kind == "dtype":
        return keras.DTypePolicy if text in DTYPE_NAMES else None
    if kind == "activation":  # activations.get looks strings up in its own table only
        return activations.ALL_OBJECTS_DICT.get(text)
    if object_registration.get_registered_object(text) is not None:
        return object_registration.get_registered_object(text)  # Keras' deserializer looks here first
    table = {"initializer": initializers, "regularizer": regularizers, "constraint": constraints}[kind]
    return table.ALL_OBJECTS_DICT.get(text)


def _describe(value: Any) -> str:
    return getattr(value, "__name__", None) or type(value).__name__


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


# ------------------------------------------------------------------ the walk


def check_config(config: Any, *, label: str = "model", limits: Limits = Limits()) -> ConfigReport:
    """Refuse a Keras config that names anything outside the allowlist, or is too large to build.

    Nothing is built and no weights are allocated: the walk is iterative and
    bounded, and the sizes come from the shapes the config declares.

    Returns
    -------
    ConfigReport

    Raises
    ------
    UnsafeModelError
        Naming the first object refused and why, or the limit exceeded.
    """
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise UnsafeModelError(f"{label}: config.json does not describe a Keras model")
    if resolve_object(config) not in MODEL_CLASSES:
        raise UnsafeModelError(f"{label}: config.json does not describe a Keras model of the kinds accepted (a "
                               f"functional or sequential one), it holds {_short(config.get('class_name'))}")
    for node in _walk(config, label, limits):
        _check_object(node, label)
    return _Graph(config, label, limits).report()


def _walk(root: Any, label: str, limits: Limits) -> Iterator[dict]:
    """Every object (a dict with ``class_name``) in the config, after checking its settings; depth-bounded."""
    stack: list[tuple[Any, int]] = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > limits.max_depth:
            raise UnsafeModelError(f"{label}: config.json is nested too deeply (more than {limits.max_depth} levels)")
        if isinstance(node, list):
            stack.extend((item, depth + 1) for item in node)
            continue
        if not isinstance(node, dict):
            continue
        if "class_name" in node:
            yield node
        for key, value in node.items():
            if key in _IGNORED_KEYS:
                continue
            kind = _setting_kind(key) if isinstance(key, str) else None
            if kind is not None and isinstance(value, str):
                _check_setting_name(kind, key, value, label)
            stack.append((value, depth + 1))


def _check_setting_name(kind: str, key: str, value: str, label: str) -> None:
    resolved = _resolve_setting_name(kind, value)
    if resolved is None or resolved not in ALLOWED_SETTINGS[kind]:
        raise UnsafeModelError(f"{label}: {key} {_short(value, 40)} is not one of Keras' built-in {kind}s "
                               "accepted in uploaded models")


def _check_object(obj: dict, label: str) -> None:
    cls = obj.get("class_name")
    module = obj.get("module")
    if not isinstance(cls, str):
        raise UnsafeModelError(f"{label}: config.json holds a malformed object (a class_name that is not text)")
    if cls in _STRUCTURAL and module is None and obj.get("registered_name") is None:
        return
    if cls in ("Lambda", "__lambda__") or (isinstance(cls, str) and cls.endswith(".Lambda")):
        raise UnsafeModelError(f"{label}: Lambda layers and serialized Python functions are refused (they run "
                               "arbitrary code); rebuild the model from built-in layers")
    if isinstance(cls, str) and cls.startswith("__") and cls.endswith("__"):
        raise UnsafeModelError(f"{label}: config.json holds a serialized value of type {_short(cls, 30)}, which "
                               "uploaded models may not carry")
    resolved = resolve_object(obj)
    if isinstance(resolved, _Unresolved):
        if resolved.reason == "malformed":
            raise UnsafeModelError(f"{label}: config.json holds a malformed object ({_short(cls, 40)})")
        if cls == "function":
            raise UnsafeModelError(f"{label}: function {_short(obj.get('config'), 40)} from module "
                                   f"{_short(module, 60)} is refused; use Keras' built-in activations")
        registered = obj.get("registered_name")
        if isinstance(registered, str) and ">" in registered:
            raise UnsafeModelError(f"{label}: custom object {_short(registered, 60)} is not one of Keras' or "
                                   "senseflosser's; only built-in layers and senseflosser's layers are accepted")
        raise UnsafeModelError(f"{label}: object {_short(cls, 60)} from module {_short(module, 60)} is not accepted "
                               "in uploaded models")
    if resolved is _L.Lambda:
        raise UnsafeModelError(f"{label}: Lambda layers and serialized Python functions are refused (they run "
                               "arbitrary code); rebuild the model from built-in layers")
    allowed = ALLOWED_LAYERS | OUR_LAYERS | MODEL_CLASSES | frozenset().union(*ALLOWED_SETTINGS.values())
    if resolved in allowed:
        return
    if isinstance(resolved, type) and issubclass(resolved, keras.layers.Layer):
        registered = obj.get("registered_name")
        if isinstance(registered, str) and ">" in registered and not registered.startswith("keras"):
            raise UnsafeModelError(f"{label}: custom object {_short(registered, 60)} is not one of Keras' or "
                                   "senseflosser's; only built-in layers and senseflosser's layers are accepted")
        raise UnsafeModelError(f"{label}: layer type {resolved.__name__} is not accepted in uploaded models "
                               f"(named {_short(cls, 40)} in module {_short(module, 40)}); accepted: Keras' "
                               "convolution, dense, activation, padding, cropping, reshaping, normalization, "
                               "pooling, up-sampling, merging and dropout layers")
    if callable(resolved) and not isinstance(resolved, type):
        raise UnsafeModelError(f"{label}: function {_describe(resolved)} is refused; use Keras' built-in activations")
    raise UnsafeModelError(f"{label}: object {_describe(resolved)} (named {_short(cls, 40)} in module "
                           f"{_short(module, 40)}) is not accepted in uploaded models")


# ------------------------------------------------------------------ sizes from the declared shapes


Shape = tuple  # of int or None


def _elements(shape: Shape) -> int:
    """Values in one example of a tensor (the batch axis left out; unknown axes count as 1)."""
    return math.prod(int(d) if isinstance(d, int) and d > 0 else 1 for d in shape[1:])


def _dim(shape: Shape, axis: int) -> int:
    d = shape[axis]
    return int(d) if isinstance(d, int) and d > 0 else 0


def _axes(axis: Any) -> list[int]:
    return [int(a) for a in (axis if isinstance(axis, (list, tuple)) else [axis])]


def layer_cost(layer: keras.layers.Layer, inputs: Shape | list[Shape], output: Shape) -> tuple[int, int]:
    """``(weights, flops)`` of one call of a built-in layer on ``inputs`` giving ``output`` (batch of one).

    Weights are what Keras allocates when the layer is built for these
    inputs; FLOPs count a multiply-add as two and every other value written
    as one. Unknown sizes count as 0 weights.
    """
    from keras.src.layers.convolutional.base_conv import BaseConv
    from keras.src.layers.convolutional.base_conv_transpose import BaseConvTranspose
    from keras.src.layers.convolutional.base_depthwise_conv import BaseDepthwiseConv
    from keras.src.layers.convolutional.base_separable_conv import BaseSeparableConv

    shapes = inputs if isinstance(inputs, list) else [inputs]
    first = shapes[0]
    written = _elements(output)
    reads = sum(_elements(s) for s in shapes)
    if isinstance(layer, (BaseConv, BaseConvTranspose, BaseSeparableConv, BaseDepthwiseConv)):
        channel_axis = -1 if layer.data_format == "channels_last" else 1
        cin = _dim(first, channel_axis)
        spatial_out = written // max(1, _dim(output, channel_axis) or 1)
        spatial_in = _elements(first) // max(1, cin or 1)
        k = math.prod(int(s) for s in layer.kernel_size)
        bias = bool(getattr(layer, "use_bias", True))
        if isinstance(layer, BaseSeparableConv):
            dm, filters = int(layer.depth_multiplier), int(layer.filters)
            weights = k * cin * dm + cin * dm * filters + bias * filters
            flops = 2 * (k * cin * dm + cin * dm * filters) * spatial_out
        elif isinstance(layer, BaseDepthwiseConv):
            dm = int(layer.depth_multiplier)
            weights = k * cin * dm + bias * cin * dm
            flops = 2 * k * cin * dm * spatial_out
        elif isinstance(layer, BaseConvTranspose):
            filters = int(layer.filters)
            weights = k * filters * cin + bias * filters
            flops = 2 * k * filters * cin * spatial_in
        else:
            filters, groups = int(layer.filters), max(1, int(layer.groups))
            weights = k * (cin // groups) * filters + bias * filters
            flops = 2 * k * (cin // groups) * filters * spatial_out
        return weights, flops + 2 * written
    if isinstance(layer, _L.Dense):
        cin, units = _dim(first, -1), int(layer.units)
        rows = _elements(first) // max(1, cin or 1)
        return cin * units + bool(layer.use_bias) * units, 2 * cin * units * rows + 2 * written
    if isinstance(layer, _L.BatchNormalization):
        c = math.prod(_dim(first, a) for a in _axes(layer.axis))
        return c * (int(layer.center) + int(layer.scale) + 2), 4 * written
    if isinstance(layer, _L.LayerNormalization):
        c = math.prod(_dim(first, a) for a in _axes(layer.axis))
        per = 1 if getattr(layer, "rms_scaling", False) else int(layer.center) + int(layer.scale)
        return c * per, 6 * written
    if isinstance(layer, _L.GroupNormalization):
        c = _dim(first, int(layer.axis))
        return c * (int(layer.center) + int(layer.scale)), 6 * written
    if isinstance(layer, _L.PReLU):
        shared = {int(a) for a in (layer.shared_axes or [])}
        dims = [1 if i in shared else _dim(first, i) for i in range(1, len(first))]
        return math.prod(dims), 2 * written
    if isinstance(layer, (_L.MaxPooling1D, _L.MaxPooling2D, _L.AveragePooling1D, _L.AveragePooling2D)):
        return 0, math.prod(int(s) for s in layer.pool_size) * written
    return 0, max(reads, written)


def _our_layer_cost(cls: type, config: dict, shape: Shape, label: str, name: str) -> tuple[int, int]:
    """``(weights, flops)`` of senseflosser's layers, read from their config (they are not made here)."""
    written = _elements(shape)
    if cls is our_layers.ChannelGate:
        channels = config.get("channels")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels != _dim(shape, -1):
            raise UnsafeModelError(f"{label}: layer {name!r} gates {_short(channels, 20)} channels, but its input "
                                   f"has {_dim(shape, -1)}")
        return channels, written
    if cls is our_layers.Lapse:
        channels = config.get("channels")
        if channels is not None and (not isinstance(channels, list) or len(channels) > max(1, _dim(shape, -1))):
            raise UnsafeModelError(f"{label}: layer {name!r} lapses more channels than its input has")
        return 2, 3 * written
    if cls is our_bends.Bend:
        channels = config.get("channels")
        if channels is not None and (not isinstance(channels, list) or len(channels) > max(1, _dim(shape, -1))):
            raise UnsafeModelError(f"{label}: layer {name!r} bends more channels than its input has")
        if config.get("transform") not in our_bends.TRANSFORMS:
            raise UnsafeModelError(f"{label}: layer {name!r} names an unknown bend "
                                   f"{_short(config.get('transform'), 20)}")
        return 2, (4 * our_bends.MAX_RADIUS + 4) * written  # dilate and erode: the costliest
    return 0, 8 * written  # SpectralCompress, SpectralExpand: a norm and a power per bin


def _node_refs(value: Any, label: str, depth: int = 0) -> Any:
    """The structure of a node's arguments with each symbolic tensor replaced by its ``(layer, node, index)``."""
    if depth > 8:
        raise UnsafeModelError(f"{label}: a layer's inputs are nested too deeply")
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        history = (value.get("config") or {}).get("keras_history") if isinstance(value.get("config"), dict) else None
        if (not isinstance(history, list) or len(history) != 3 or not isinstance(history[0], str)
                or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 10_000 for v in history[1:])):
            raise UnsafeModelError(f"{label}: config.json holds a tensor without a valid origin")
        return tuple(history)
    if isinstance(value, list):
        return [_node_refs(v, label, depth + 1) for v in value]
    if isinstance(value, dict) and value.get("class_name") == "__tuple__":
        return [_node_refs(v, label, depth + 1) for v in (value.get("config") or {}).get("value", [])]
    return None


def _flat_refs(structure: Any) -> list[tuple]:
    if isinstance(structure, tuple):
        return [structure]
    if isinstance(structure, list):
        return [r for item in structure for r in _flat_refs(item)]
    return []


class _Graph:
    """A model's config followed layer by layer with concrete shapes; nothing is built."""

    def __init__(self, config: dict, label: str, limits: Limits) -> None:
        self.label = label
        self.limits = limits
        self.root_class = resolve_object(config)
        inner = config.get("config")
        if not isinstance(inner, dict) or not isinstance(inner.get("layers"), list):
            raise UnsafeModelError(f"{label}: config.json describes a model without a list of layers")
        self.config = inner
        self.entries: list[dict] = inner["layers"]
        if len(self.entries) > limits.max_layers:
            raise UnsafeModelError(f"{label}: the model has {len(self.entries)} layers; at most {limits.max_layers} "
                                   "are accepted")
        _check_name(inner.get("name", "model"), label, "model")
        self.outputs: dict[str, list[Shape]] = {}  # layer name -> output shape of each of its calls
        self.weights: dict[str, int] = {}
        self.flops = 0
        self.largest = 0
        self.frames: int | None = None
        self.input_shape: Shape | None = None

    # -------------------------------------------------------------- entry

    def report(self) -> ConfigReport:
        names = set()
        for entry in self.entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
                raise UnsafeModelError(f"{self.label}: config.json holds a layer without its settings")
            cls = resolve_object(entry)
            if cls in MODEL_CLASSES:
                raise UnsafeModelError(f"{self.label}: models nested inside the model are not accepted; save it as "
                                       "one flat functional or sequential model")
            if cls not in ALLOWED_LAYERS and cls not in OUR_LAYERS:  # the walk let no other object through
                raise UnsafeModelError(f"{self.label}: {_short(entry.get('class_name'), 40)} is not a layer")
            name = entry.get("name", entry["config"].get("name"))
            _check_name(name, self.label, "layer")
            if name in names:
                raise UnsafeModelError(f"{self.label}: two layers are named {name!r}")
            names.add(name)
        if self.root_class is keras.Sequential:
            output = self._sequential()
        else:
            output = self._functional()
        self._check_shapes(output)
        parameters = sum(self.weights.values())
        seconds = (self.frames or ANALYSIS_FRAMES) * HOP / SAMPLE_RATE
        report = ConfigReport(parameters=parameters, flops_per_second=self.flops / seconds,
                              activations_per_second=self.largest / seconds, input_frames=self.frames,
                              layers=len(self.entries))
        self._check_limits(report)
        return report

    def _check_limits(self, report: ConfigReport) -> None:
        label, limits = self.label, self.limits
        if report.parameters > limits.max_parameters:
            raise UnsafeModelError(f"{label}: the model has {report.parameters:,} parameters, more than the "
                                   f"{limits.max_parameters:,} accepted here")
        if report.flops_per_second > limits.max_flops_per_second:
            raise UnsafeModelError(f"{label}: the model needs {report.flops_per_second / 1e9:,.1f} GFLOP per second "
                                   f"of audio, more than the {limits.max_flops_per_second / 1e9:g} GFLOP accepted "
                                   "here")
        if report.activations_per_second > limits.max_activations_per_second:
            raise UnsafeModelError(f"{label}: one of the model's layers outputs "
                                   f"{report.activations_per_second / 1e6:,.1f} million values per second of audio, "
                                   f"more than the {limits.max_activations_per_second / 1e6:g} million accepted here")

    def _input(self, batch_shape: Any) -> Shape:
        """The model's input shape with a concrete frame count, after checking the STFT contract."""
        label = self.label
        shown = tuple(batch_shape) if isinstance(batch_shape, list) else batch_shape
        if (not isinstance(batch_shape, list) or len(batch_shape) != 4 or batch_shape[2:] != [N_BINS, 2]
                or batch_shape[0] is not None
                or not (batch_shape[1] is None or (isinstance(batch_shape[1], int)
                                                   and not isinstance(batch_shape[1], bool)))):
            raise ModelError(f"{label}: input shape {_short(shown, 80)} is not (batch, frames, {N_BINS}, 2)")
        frames = batch_shape[1]
        if frames is not None and not 1 <= frames <= self.limits.max_frames:
            raise UnsafeModelError(f"{label}: the model takes {frames} frames at once; from 1 to "
                                   f"{self.limits.max_frames} are accepted")
        if self.input_shape is not None and batch_shape[1] != self.frames:
            raise UnsafeModelError(f"{label}: expected one input")
        self.frames = frames
        self.input_shape = (None, frames, N_BINS, 2)
        return (None, frames or ANALYSIS_FRAMES, N_BINS, 2)

    def _check_shapes(self, output: Shape) -> None:
        frames = self.frames or ANALYSIS_FRAMES
        if tuple(output[1:]) != (frames, N_BINS, 2):
            shown = (None, self.frames) + tuple(output[2:]) if len(output) == 4 and output[1] == frames else output
            raise ModelError(f"{self.label}: output shape {_short(tuple(shown), 80)} does not match input shape "
                             f"{self.input_shape}")

    # -------------------------------------------------------------- graphs

    def _sequential(self) -> Shape:
        entries = self.entries
        if entries and resolve_object(entries[0]) is _L.InputLayer:
            shape = self._input(_batch_shape(entries[0]["config"]))
            self.outputs[entries[0].get("name", entries[0]["config"].get("name"))] = [shape]
            entries = entries[1:]
        else:
            shape = self._input(self.config.get("build_input_shape"))
        for entry in entries:
            shape = self._call(entry, shape)
        return shape

    def _functional(self) -> Shape:
        pending = list(self.entries)
        while pending:
            progressed = False
            waiting = []
            for entry in pending:
                if self._ready(entry):
                    self._layer(entry)
                    progressed = True
                else:
                    waiting.append(entry)
            if not progressed:
                names = ", ".join(repr(e.get("name")) for e in waiting[:3])
                raise UnsafeModelError(f"{self.label}: the layers {names} take inputs that no layer makes")
            pending = waiting
        if self.input_shape is None:
            raise ModelError(f"{self.label}: the model declares no input")
        outputs = _layer_refs(self.config.get("output_layers"))
        if len(outputs) != 1 or len(_layer_refs(self.config.get("input_layers"))) != 1:
            raise ModelError(f"{self.label}: expected one input and one output")
        return self._tensor(outputs[0])

    def _ready(self, entry: dict) -> bool:
        nodes = entry.get("inbound_nodes")
        for node in nodes if isinstance(nodes, list) else []:  # not a list: _layer says so
            for ref in _flat_refs(_node_refs(node.get("args") if isinstance(node, dict) else None, self.label)):
                if ref[0] not in self.outputs or ref[1] >= len(self.outputs[ref[0]]):
                    return False
        return True

    def _tensor(self, ref: tuple) -> Shape:
        name, node, index = ref
        calls = self.outputs.get(name)
        if calls is None or node >= len(calls) or index != 0:
            raise UnsafeModelError(f"{self.label}: a layer's input refers to {_short(list(ref), 60)}, which no "
                                   "layer makes")
        return calls[node]

    def _layer(self, entry: dict) -> None:
        name = entry.get("name", entry["config"].get("name"))
        if resolve_object(entry) is _L.InputLayer:
            self.outputs[name] = [self._input(_batch_shape(entry["config"]))]
            return
        nodes = entry.get("inbound_nodes")
        if not isinstance(nodes, list) or not nodes:
            raise UnsafeModelError(f"{self.label}: layer {name!r} is not connected to the model")
        for node in nodes:
            if not isinstance(node, dict):
                raise UnsafeModelError(f"{self.label}: layer {name!r} has a malformed connection")
            kwargs = node.get("kwargs") or {}
            if not isinstance(kwargs, dict) or _flat_refs(_node_refs(list(kwargs.values()), self.label)):
                raise UnsafeModelError(f"{self.label}: layer {name!r} takes tensors as keyword arguments, which "
                                       "uploaded models may not do")
            args = _node_refs(node.get("args"), self.label)
            if not isinstance(args, list) or not args:
                raise UnsafeModelError(f"{self.label}: layer {name!r} is called without an input")
            structure = args[0]
            if isinstance(structure, tuple):
                inputs: Shape | list[Shape] = self._tensor(structure)
            elif isinstance(structure, list) and structure and all(isinstance(r, tuple) for r in structure):
                inputs = [self._tensor(r) for r in structure]
            else:
                raise UnsafeModelError(f"{self.label}: layer {name!r} is called on something that is not a tensor")
            self._call(entry, inputs)

    # -------------------------------------------------------------- one call

    def _call(self, entry: dict, inputs: Shape | list[Shape]) -> Shape:
        label = self.label
        cls = resolve_object(entry)
        config = entry["config"]
        name = entry.get("name", config.get("name"))
        if cls is _L.InputLayer:
            raise UnsafeModelError(f"{label}: layer {name!r} is an input in the middle of the model")
        if cls in OUR_LAYERS:
            if isinstance(inputs, list):
                raise UnsafeModelError(f"{label}: layer {name!r} takes one input")
            output = inputs
            weights, flops = _our_layer_cost(cls, config, inputs, label, name)
            declared = weights
        else:
            layer = self._instance(cls, config, name)
            try:
                output = layer.compute_output_shape(inputs)
            except Exception as exc:  # noqa: BLE001  (Keras raises many types for shapes it cannot take)
                raise UnsafeModelError(f"{label}: layer {name!r} ({cls.__name__}) cannot take an input of shape "
                                       f"{_short(inputs, 80)}: {_first_line(exc)}") from None
            output = _shape(output, label, name)
            try:
                weights, flops = layer_cost(layer, inputs, output)
                declared = self._declared_weights(layer, entry)
            except UnsafeModelError:
                raise
            except Exception as exc:  # noqa: BLE001  (an axis or size that does not fit the shapes)
                raise UnsafeModelError(f"{label}: layer {name!r} ({cls.__name__}) has settings that do not fit its "
                                       f"input of shape {_short(inputs, 80)}: {_first_line(exc)}") from None
        previous = self.weights.get(name, 0)
        self.weights[name] = max(previous, weights, declared)
        self.flops += flops
        self.largest = max(self.largest, _elements(output))
        self.outputs.setdefault(name, []).append(output)
        if self.weights[name] > self.limits.max_parameters:  # stop before following a huge model any further
            self._check_limits(ConfigReport(sum(self.weights.values()), 0, 0, self.frames, len(self.entries)))
        return output

    def _instance(self, cls: type, config: dict, name: str) -> keras.layers.Layer:
        """The layer made from its config (Keras makes no weights before a layer is built)."""
        from keras.src.saving.serialization_lib import SafeModeScope

        cache = self.__dict__.setdefault("_instances", {})
        if name in cache:
            return cache[name]
        try:
            with SafeModeScope(True):
                layer = cls.from_config(dict(config))
        except Exception as exc:  # noqa: BLE001  (settings Keras refuses)
            raise UnsafeModelError(f"{self.label}: layer {name!r} ({cls.__name__}) has settings Keras refuses: "
                                   f"{_first_line(exc)}") from None
        cache[name] = layer
        return layer

    def _declared_weights(self, layer: keras.layers.Layer, entry: dict) -> int:
        """Weights Keras allocates for the input shape the config declares (``build_config``), if it declares one."""
        build = entry.get("build_config")
        shape = build.get("input_shape") if isinstance(build, dict) else None
        if shape is None:
            return 0
        try:
            if not isinstance(shape, list) or not shape:
                raise UnsafeModelError("not a list")
            declared = [_shape(s, self.label, layer.name) for s in shape] if isinstance(shape[0], list) \
                else _shape(shape, self.label, layer.name)
        except UnsafeModelError:
            raise UnsafeModelError(f"{self.label}: layer {layer.name!r} declares an input shape that is not one "
                                   f"({_short(shape, 60)})") from None
        return layer_cost(layer, declared, declared if not isinstance(declared, list) else declared[0])[0]


def _is_triple(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 10_000 for v in value[1:]))


def _layer_refs(value: Any) -> list[tuple]:
    """A functional config's ``input_layers`` / ``output_layers``: one ``[name, node, index]`` or a list of them."""
    if _is_triple(value):
        return [tuple(value)]
    if isinstance(value, list) and all(_is_triple(v) for v in value):
        return [tuple(v) for v in value]
    return []


def _batch_shape(config: dict) -> Any:
    shape = config.get("batch_shape", config.get("batch_input_shape"))
    if shape is None and isinstance(config.get("shape"), list):
        shape = [None, *config["shape"]]
    return shape


def _shape(value: Any, label: str, name: Any) -> Shape:
    """A shape as a tuple of ints (or None), refusing anything else."""
    if isinstance(value, (list, tuple)) and 1 <= len(value) <= 8 and all(
            d is None or (isinstance(d, int) and not isinstance(d, bool) and d >= 0) for d in value):
        return tuple(value)
    raise UnsafeModelError(f"{label}: layer {name!r} gives an output of shape {_short(value, 60)}, which is not a "
                           "shape of one tensor")


def _check_name(name: Any, label: str, what: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise UnsafeModelError(f"{label}: {what} name {_short(name, 60)} is not accepted; name layers and models with "
                               "letters, digits, '_', '.' and '-' only (at most 100 characters, starting with a "
                               "letter or digit)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line[:200]


# ------------------------------------------------------------------ loading


def load_untrusted(path: str | os.PathLike, *, limits: Limits = Limits(), label: str | None = None) -> keras.Model:
    """Check a model file from an untrusted source, then load it safely, check what it is and run it once.

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
        same shape, has no conv layer, is too large, or cannot run.
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
    for layer in model.layers:  # what was built, whatever the config said
        if type(layer) not in ALLOWED_LAYERS and type(layer) not in OUR_LAYERS:
            raise UnsafeModelError(f"{label}: layer {layer.name!r} is a {type(layer).__name__}, which uploaded "
                                   "models may not hold")
    if not conv_layer_names(model):
        raise ModelError(f"{label}: the model has no Conv1D, Conv2D, Conv1DTranspose or Conv2DTranspose layer to damage")
    params = model.count_params()
    if params > limits.max_parameters:
        raise ModelError(f"{label}: the model has {params:,} parameters, more than the {limits.max_parameters:,} "
                         "accepted here")
    check_model(model, label)
    try_run(model, label=label)
    return model


def try_run(model: keras.Model, *, label: str) -> None:
    """Run a model once on a short test input through the pipeline's compiled call.

    Raises
    ------
    ModelError
        If it cannot run, or gives values that are not finite.
    """
    from .runners import Runner

    frames = model.inputs[0].shape[1] or TEST_FRAMES
    x = np.random.default_rng(0).normal(0.0, 1.0, (frames, N_BINS, 2)).astype(np.float32)
    try:
        runner = Runner(model)
        y = runner(x, 0)
        runner.finish()
    except Exception as exc:  # noqa: BLE001  (whatever the backend raises: the model cannot be used)
        raise ModelError(f"{label}: the model cannot run ({_first_line(exc)})") from None
    if y.shape != x.shape:
        raise ModelError(f"{label}: on {frames} frames the model gives an output of shape {y.shape}")
    if runner.nonfinite:
        raise ModelError(f"{label}: the model's output on a test input is not finite (NaN or infinite values); "
                         "check its weights")
