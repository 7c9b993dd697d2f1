"""Layer selections: which conv layers (and which of their channels) an action damages.

The text form is ``down:0,5,9,mid``: channels 0, 5 and 9 of layer ``down`` and
every channel of ``mid``. Commas separate both layers and channels: a number
adds a channel to the layer named last with a colon, a name starts a new
layer. A selection is kept as a tuple of canonical entries
(``("down:0,5,9", "mid")``) in recipes and their JSON.

``down:cluster2`` names the channels of cluster 2 of ``down`` (the model
card's clusters, see :mod:`senseflosser.clusters`); :func:`expand_clusters`
turns it into channel numbers at the edge, so recipes hold channels only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import keras
import numpy as np

from ..errors import ModelError, RecipeError
from ..parsing import parse_int
from ..models import conv_channels

MAX_NAME = 200
_CLUSTER_RE = re.compile(r"cluster(\S*)")

Resolved = dict[str, "tuple[int, ...] | None"]
"""Layer name -> chosen output channels (``None``: all of them), in the model's layer order."""


def parse_layers(layers: Any) -> tuple[str, ...] | None:
    """Normalise a layer selection: ``None`` (the action's default) or canonical entries.

    Accepts the text form, or a sequence of entries each of which may itself
    be text (``["down:0,5", "mid"]``). Channels are sorted and deduplicated;
    a layer named twice has its channels merged (all channels win).

    Raises
    ------
    RecipeError
        For an empty name, a bad channel number, or channels with no layer.
    """
    if layers is None:
        return None
    if isinstance(layers, str):
        layers = [layers]
    if not isinstance(layers, Iterable):
        raise RecipeError(f"layers must be layer names like 'down:0,5,9,mid', got {layers!r}")
    chosen: dict[str, set[int] | None] = {}
    current: str | None = None
    for entry in layers:
        if not isinstance(entry, str):
            raise RecipeError(f"invalid layer name {entry!r}")
        for token in (t.strip() for t in entry.split(",")):
            if not token:
                continue
            if token.lstrip("-").isdigit():
                if current is None or chosen[current] is None:
                    raise RecipeError(
                        f"channel {token} follows no 'layer:channel' entry; write e.g. 'down:{token}'"
                    )
                chosen[current].add(_channel(token, current))
                continue
            name, colon, first = token.partition(":")
            name = name.strip()
            if not name or len(name) > MAX_NAME or any(c in name for c in " :"):
                raise RecipeError(f"invalid layer name {name!r}")
            if not colon:
                chosen[name] = None
                current = None
                continue
            if not first.strip():
                raise RecipeError(f"layer {name!r}: give channel numbers after the colon, e.g. '{name}:0,5'")
            channels = chosen.get(name, set())
            if name in chosen and channels is None:
                current = None  # all channels already chosen
                continue
            channels.add(_channel(first.strip(), name))
            chosen[name] = channels
            current = name
    out = tuple(name if ch is None else f"{name}:{','.join(str(c) for c in sorted(ch))}" for name, ch in chosen.items())
    return out or None


def expand_clusters(layers: Any, clusters: Mapping[str, Sequence[Sequence[int]]] | None, *,
                    model_name: str) -> Any:
    """Replace every cluster in a selection by its channels: ``down:cluster1,mid`` -> ``["down:2,3", "mid"]``.

    ``clusterN`` (N counting from 0) stands where a channel number may: after
    ``LAYER:`` or after a channel of that layer (``down:0,cluster2``).

    Parameters
    ----------
    layers : selection or None
        Any form :func:`parse_layers` takes.
    clusters : mapping or None
        The model's clusters: layer name -> list of channel lists (the card's
        ``clusters.layers``); ``None`` for a model without them.
    model_name : str
        For messages.

    Returns
    -------
    selection or None
        ``layers`` itself when it names no cluster; otherwise a list of text
        entries with channel numbers in place of the clusters.

    Raises
    ------
    RecipeError
        For a cluster on a model or layer without clusters, a cluster number
        the layer lacks, or a cluster that follows no layer.
    """
    if layers is None:
        return None
    entries = [layers] if isinstance(layers, str) else layers
    if not isinstance(entries, Iterable) or not any(
            isinstance(e, str) and "cluster" in e for e in entries):
        return layers
    out: list[str] = []
    current: str | None = None  # the layer a channel (or cluster) belongs to, as parse_layers reads it
    for entry in entries:
        if not isinstance(entry, str):
            out.append(entry)  # parse_layers refuses it
            continue
        tokens: list[str] = []
        for token in (t.strip() for t in entry.split(",")):
            name, colon, rest = token.partition(":")
            if colon:
                current = name.strip()
            match = _CLUSTER_RE.fullmatch(rest.strip() if colon else token)
            if match is None or (not colon and not match.group(1).isdigit()):  # a bare 'clusterx' may be a layer
                if not colon and not token.lstrip("-").isdigit():
                    current = None  # a bare layer name: all its channels
                tokens.append(token)
                continue
            if current is None:
                raise RecipeError(f"{token!r} follows no layer; write the layer first, e.g. 'down:{token}'")
            channels = _cluster_channels(current, match.group(1), clusters, model_name)
            tokens.append(f"{current}:{channels[0]}" if colon else str(channels[0]))
            tokens.extend(str(c) for c in channels[1:])
        out.append(",".join(tokens))
    return out


def _cluster_channels(layer: str, number: str, clusters: Mapping[str, Sequence[Sequence[int]]] | None,
                      model_name: str) -> list[int]:
    """The channels of cluster ``number`` (text after ``cluster``) of ``layer``."""
    if not clusters:
        raise RecipeError(f"model {model_name!r} has no clusters: run `senseflosser clusters -m {model_name} "
                          f"--data-dir AUDIO` first (for a model of the registry), or choose channel numbers")
    groups = clusters.get(layer)
    if not groups:
        raise RecipeError(f"layer {layer!r} of model {model_name!r} has no clusters; layers with clusters: "
                          f"{', '.join(n for n, g in clusters.items() if g)}")
    if not number.isdigit() or not number.isascii():
        raise RecipeError(f"layer {layer!r}: cluster{number} is not a cluster; write cluster0 to "
                          f"cluster{len(groups) - 1}")
    n = int(number)
    if n >= len(groups):
        raise RecipeError(f"{layer} has clusters 0 to {len(groups) - 1} on model {model_name!r}; "
                          f"cluster{n} does not exist")
    channels = [int(c) for c in groups[n]]
    if not channels:
        raise RecipeError(f"cluster{n} of layer {layer!r} of model {model_name!r} is empty; "
                          "recompute the clusters with `senseflosser clusters`")
    return channels


def _channel(text: str, layer: str) -> int:
    try:
        value = parse_int(text, field="channel")
    except ValueError:
        raise RecipeError(f"layer {layer!r}: channel {text!r} is not a whole number") from None
    if value < 0:
        raise RecipeError(f"layer {layer!r}: channel {value} is negative; channels count from 0")
    return value


def split_entry(entry: str) -> tuple[str, tuple[int, ...] | None]:
    """``"down:0,5"`` -> ``("down", (0, 5))``; ``"mid"`` -> ``("mid", None)``."""
    name, colon, rest = entry.partition(":")
    if not colon:
        return name, None
    return name, tuple(int(c) for c in rest.split(","))


def channel_axis(layer: keras.layers.Layer, weight_index: int, weight: np.ndarray) -> int:
    """Axis of a conv layer's weight array that runs over output channels.

    Kernels of Conv1D/Conv2D are ``(..., in, out)``; those of the transposed
    convolutions ``(..., out, in)``; a bias is ``(out,)``.
    """
    if weight.ndim == 1:
        return 0
    if isinstance(layer, (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose)):
        return weight.ndim - 2
    return weight.ndim - 1


def check(entries: tuple[str, ...] | None, convs: Mapping[str, int | None], *, default: Sequence[str],
          model_name: str) -> Resolved:
    """Check canonical entries against a model's conv layers.

    Parameters
    ----------
    entries : tuple of str or None
        From :func:`parse_layers`; ``None`` gives ``default`` (all channels).
    convs : mapping
        The model's conv layer names, in order, -> their output channel counts
        (``None`` where unknown: channels are then checked when the model runs).
    default : sequence of str
        The action's default layers.
    model_name : str
        For messages.

    Returns
    -------
    dict
        Layer name -> chosen channels or ``None`` (all), in the model's conv order.

    Raises
    ------
    RecipeError
        If a name is not a conv layer of the model, or a channel is out of range
        (the message names the layer's channel count).
    """
    if not convs:
        raise ModelError(f"model {model_name!r} has no conv layers to damage")
    wanted: dict[str, tuple[int, ...] | None] = (
        {name: None for name in default} if entries is None else dict(split_entry(e) for e in entries)
    )
    unknown = [n for n in wanted if n not in convs]
    if unknown:
        raise RecipeError(
            f"layer {unknown[0]!r} is not a conv layer of model {model_name!r}; choose from: {', '.join(convs)}"
        )
    for name, channels in wanted.items():
        if channels is None:
            continue
        count = convs[name]
        if count is None:
            continue
        bad = [c for c in channels if c >= count]
        if bad:
            raise RecipeError(
                f"layer {name!r} of model {model_name!r} has {count} channels (0 to {count - 1}); "
                f"channel {bad[0]} does not exist"
            )
    return {name: wanted[name] for name in convs if name in wanted}


def resolve(model: keras.Model, layers: Sequence[str] | str | None, *, default: Sequence[str]) -> Resolved:
    """Check a selection (any form :func:`parse_layers` takes) against a model; see :func:`check`."""
    return check(parse_layers(layers), conv_channels(model), default=default, model_name=model.name)


def canonical(chosen: Resolved) -> tuple[str, ...]:
    """Resolved targets back in canonical text entries."""
    return tuple(name if ch is None else f"{name}:{','.join(map(str, ch))}" for name, ch in chosen.items())


def channel_mask(layer: keras.layers.Layer, weight_index: int, weight: np.ndarray,
                 channels: tuple[int, ...] | None) -> np.ndarray | None:
    """Boolean mask of the entries of ``weight`` that belong to ``channels`` (``None``: all of them)."""
    if channels is None:
        return None
    axis = channel_axis(layer, weight_index, weight)
    shape = [1] * weight.ndim
    shape[axis] = weight.shape[axis]
    on = np.zeros(weight.shape[axis], bool)
    on[list(channels)] = True
    return np.broadcast_to(on.reshape(shape), weight.shape)
