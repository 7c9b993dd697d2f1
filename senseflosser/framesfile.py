"""The activation frames file (``.frames``): compact, deterministic, read by the page, the video and Python.

Layout (all integers little-endian)::

    0   4 bytes   magic b"SFAF"
    4   uint16    version (1)
    6   uint32    header length H
    10  H bytes   header: UTF-8 JSON (keys sorted)
    10+H          blocks, in the header's order, each ``frames x columns`` uint8, frame-major

The header holds ``layer``, ``frames``, ``frame_rate`` (22050 / 1024 frames per
second; frame ``i`` is centred at ``i / frame_rate`` seconds), ``blocks`` (for
each: ``name``, ``columns`` and per-column ``lo`` and ``hi``; a byte ``q`` stands
for ``lo + q / 255 * (hi - lo)``) and ``pca`` (``mean``, ``components``,
``explained``: the principal axes of the *normal* output's channel frames, the
same in every file of a job). The blocks are ``channels`` (each channel's
activation, averaged over frequency), ``profile`` (the activation averaged over
channels in log-spaced frequency bands) and ``components`` (this output's
channels projected on the normal's principal axes), so normal and damaged
outputs are drawn in the same space. Everything is computed from quantised
values where it feeds something else (the axes from the normal's stored
channels), so a job that reuses a stored normal writes the same bytes.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .activations import Frames
from .audio import SAMPLE_RATE
from .errors import InputError
from .spectral import HOP

MAGIC = b"SFAF"
VERSION = 1
SUFFIX = ".frames"
COMPONENTS = 3
"""Principal components stored per output (fewer for a layer with fewer channels)."""
_PREFIX = struct.Struct("<4sHI")


@dataclass(frozen=True)
class Basis:
    """Principal axes of the normal output's channel frames.

    Attributes
    ----------
    mean : np.ndarray, shape (channels,), float32
    components : np.ndarray, shape (k, channels), float32
        Unit rows, the largest-magnitude loading of each positive.
    explained : np.ndarray, shape (k,), float32
        Share of the variance along each.
    """

    mean: np.ndarray
    components: np.ndarray
    explained: np.ndarray

    def project(self, channels: np.ndarray) -> np.ndarray:
        """``(frames, channels) -> (frames, k)`` coordinates on the axes."""
        return ((np.asarray(channels, np.float64) - self.mean) @ self.components.T.astype(np.float64)).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": _floats(self.mean), "components": [_floats(c) for c in self.components],
                "explained": _floats(self.explained)}

    @classmethod
    def from_dict(cls, data: dict) -> Basis:
        mean = np.asarray(data["mean"], np.float32)
        return cls(mean, np.asarray(data["components"], np.float32).reshape(-1, mean.size),
                   np.asarray(data["explained"], np.float32))


@dataclass
class FramesFile:
    """A ``.frames`` file read back: its header and each block dequantised to float32 ``(frames, columns)``."""

    layer: str
    frame_rate: float
    blocks: dict[str, np.ndarray]
    basis: Basis

    @property
    def frames(self) -> int:
        return self.blocks["channels"].shape[0]


def _floats(values) -> list[float]:
    return [float(v) for v in np.asarray(values, np.float32).ravel()]


def quantise(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(frames, columns)`` floats -> ``(bytes uint8, lo, hi)``, each column scaled to its own range."""
    v = np.asarray(values, np.float32)
    if v.shape[0] == 0:
        zeros = np.zeros(v.shape[1], np.float32)
        return np.zeros(v.shape, np.uint8), zeros, zeros
    lo, hi = v.min(axis=0), v.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0).astype(np.float32)
    q = np.rint((v - lo) / span * 255.0)
    return np.clip(q, 0, 255).astype(np.uint8), lo, hi


def dequantise(q: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The floats a block's bytes stand for, ``(frames, columns)`` float32."""
    lo, hi = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
    return (lo + q.astype(np.float32) / np.float32(255.0) * (hi - lo)).astype(np.float32)


def stored_channels(frames: Frames) -> np.ndarray:
    """The channel frames as a file stores them (quantised and back): what the axes are computed from."""
    return dequantise(*quantise(frames.channels))


def pca_basis(normal: Frames, *, k: int = COMPONENTS) -> Basis:
    """The principal axes of the normal output's stored channel frames (deterministic: SVD, signs fixed)."""
    x = stored_channels(normal).astype(np.float64)
    mean = x.mean(axis=0)
    k = max(0, min(k, x.shape[1], x.shape[0]))
    if k == 0:
        return Basis(mean.astype(np.float32), np.zeros((0, x.shape[1]), np.float32), np.zeros(0, np.float32))
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    vt = vt[:k]
    signs = np.where(vt[np.arange(k), np.argmax(np.abs(vt), axis=1)] < 0, -1.0, 1.0)
    vt = vt * signs[:, None]
    var = s ** 2
    explained = var[:k] / var.sum() if var.sum() > 0 else np.zeros(k)
    # Stored as float32 (the header's numbers): a basis read back from a file is this very one.
    return Basis.from_dict(Basis(mean.astype(np.float32), vt.astype(np.float32),
                                 explained.astype(np.float32)).to_dict())


def write(frames: Frames, path: str | os.PathLike, *, basis: Basis) -> Path:
    """Write one output's activation frames, projected on the job's ``basis``.

    Parameters
    ----------
    frames : Frames
        ``channels`` (T, C) and ``profile`` (T, B).
    path : path
    basis : Basis
        From :func:`pca_basis` of the job's normal output (or read from its file).

    Returns
    -------
    Path
    """
    blocks = [("channels", frames.channels), ("profile", frames.profile),
              ("components", basis.project(stored_channels(frames)))]
    header = {"format": "senseflosser activation frames", "version": VERSION, "layer": frames.layer,
              "frames": int(frames.channels.shape[0]), "frame_rate": SAMPLE_RATE / HOP, "hop": HOP,
              "sample_rate": SAMPLE_RATE, "blocks": [], "pca": basis.to_dict()}
    payload = []
    for name, values in blocks:
        q, lo, hi = quantise(values)
        header["blocks"].append({"name": name, "columns": int(q.shape[1]), "lo": _floats(lo), "hi": _floats(hi)})
        payload.append(np.ascontiguousarray(q).tobytes())
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    path = Path(path)
    path.write_bytes(_PREFIX.pack(MAGIC, VERSION, len(text)) + text + b"".join(payload))
    return path


def read(path: str | os.PathLike) -> FramesFile:
    """Read a ``.frames`` file.

    Raises
    ------
    InputError
        If it is not one (naming the file and what is wrong).
    """
    path = Path(path)
    data = path.read_bytes()
    if len(data) < _PREFIX.size:
        raise InputError(f"{path.name}: too short ({len(data)} bytes) to be an activation frames file")
    magic, version, size = _PREFIX.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise InputError(f"{path.name}: not an activation frames file of version {VERSION} "
                         f"(starts {magic!r}, version {version})")
    try:
        header = json.loads(data[_PREFIX.size:_PREFIX.size + size])
        n = int(header["frames"])
        offset = _PREFIX.size + size
        blocks = {}
        for block in header["blocks"]:
            cols = int(block["columns"])
            q = np.frombuffer(data, np.uint8, count=n * cols, offset=offset).reshape(n, cols)
            blocks[block["name"]] = dequantise(q, block["lo"], block["hi"])
            offset += n * cols
        basis = Basis.from_dict(header["pca"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path.name}: a damaged activation frames file ({exc})") from None
    return FramesFile(layer=header["layer"], frame_rate=float(header["frame_rate"]), blocks=blocks, basis=basis)
