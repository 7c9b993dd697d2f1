"""Autoencoder architectures.

Every model maps an STFT tensor ``(frames, 1025, 2)`` to the same shape. No
skip connection carries the input around the conv layers to the output: the
sound must pass through the network, or damaging the network would mean
nothing.
"""

from __future__ import annotations

import keras

from .errors import TrainingError
from .layers import SpectralCompress, SpectralExpand
from .spectral import N_BINS

ARCHITECTURES = ("bottleneck", "deep", "original", "bands")


def build(
    arch: str = "bottleneck",
    *,
    frames: int | None = None,
    width: int = 32,
    power: float = 0.3,
    band: int = 8,
    depth: int = 2,
    front: int = 0,
    name: str | None = None,
) -> tuple[keras.Model, keras.Model]:
    """Build an autoencoder.

    Parameters
    ----------
    arch : {"bottleneck", "deep", "original", "bands"}
        ``"bottleneck"``: full-resolution conv, one stride-2 step on frequency,
        back up, GELU, no normalisation (the design that trained best on a CPU
        budget). ``"deep"``: two stride-2 frequency steps (a narrower, more
        coloured bottleneck). ``"original"``: the original tool's encoder-decoder
        (Conv 32/64/128/256, frequency strides 5 and 5, BatchNorm; its time
        strides for a fixed length, see :func:`original_strides`), kept for
        comparison. ``"bands"``: the spectrum cut into overlapping bands of
        ``band`` bins (a Conv2D with a ``(3, 2 * band)`` kernel and stride
        ``band`` on frequency, so every bin is seen twice), ``width`` channels
        per band, ``depth`` 3x3 Conv2D layers over (time, band), and a
        Conv2DTranspose of the same shape back to the bins: wide channels at a
        coarse frequency grid, a fraction of the full-resolution net's FLOPs.
        With ``front > 0`` a 3x3 Conv2D of ``front`` channels at full
        resolution comes first and last, and the bands are cut without overlap
        (kernel ``(1, band)``): the full-resolution layers see each bin's
        neighbours, the band layers carry the width.
    frames : int or None, keyword-only
        Fixed number of frames, or ``None`` for a model that takes any length
        (the original's ``--var-input``).
    width : int, keyword-only
        Channels of the full-resolution layers (bottleneck layers get twice).
    power : float, keyword-only
        Compression exponent of the spectral scaling layers (``"original"``
        uses none).
    band : int, keyword-only
        Bins per band (``"bands"`` only).
    depth : int, keyword-only
        Conv layers between the band encoder and decoder (``"bands"`` only).
    front : int, keyword-only
        Channels of the full-resolution first and last layers (``"bands"``
        only; 0: none).
    name : str or None, keyword-only
        Model name.

    Returns
    -------
    model : keras.Model
        STFT tensor in, STFT tensor out: the model that is saved and shipped.
    train_model : keras.Model
        The same layers from the STFT input to the *compressed* output (with
        exponent ``power``), for training with a loss in the compressed domain
        against targets compressed the same way.
    """
    if arch not in ARCHITECTURES:
        raise TrainingError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    if frames is not None and frames <= 0:
        raise TrainingError(f"frames must be positive or None, got {frames}")
    inputs = keras.Input(shape=(frames, N_BINS, 2), name="stft")
    if arch == "original":
        model = _original(inputs, name or "original", frames)
        compressed_out = SpectralCompress(power, name="compress_out")(model.output)
        return model, keras.Model(inputs, compressed_out, name=f"{model.name}_train")
    L = keras.layers
    conv = dict(kernel_size=3, padding="same", activation="gelu")
    compressed = SpectralCompress(power, name="compress")(inputs)
    if arch == "bands":
        core_out = _bands(compressed, width=width, band=band, depth=depth, front=front)
        outputs = SpectralExpand(power, name="expand")(core_out)
        model = keras.Model(inputs, outputs, name=name or arch)
        return model, keras.Model(inputs, core_out, name=f"{model.name}_train")
    x = L.Conv2D(width, name="conv_in", **conv)(compressed)
    if arch == "bottleneck":
        x = L.ZeroPadding2D(((0, 0), (0, 1)), name="pad_freq")(x)  # 1025 -> 1026 bins
        x = L.Conv2D(2 * width, strides=(1, 2), name="down", **conv)(x)  # 513 bins
        x = L.Conv2D(2 * width, name="mid", **conv)(x)
        x = L.Conv2DTranspose(width, strides=(1, 2), name="up", **conv)(x)  # 1026 bins
        x = L.Cropping2D(((0, 0), (0, 1)), name="crop_freq")(x)
    else:  # deep: 1025 -> 1028 -> 514 -> 257 -> 514 -> 1028 -> 1025
        x = L.ZeroPadding2D(((0, 0), (0, 3)), name="pad_freq")(x)
        x = L.Conv2D(2 * width, strides=(1, 2), name="down1", **conv)(x)
        x = L.Conv2D(4 * width, strides=(1, 2), name="down2", **conv)(x)
        x = L.Conv2D(4 * width, name="mid", **conv)(x)
        x = L.Conv2DTranspose(2 * width, strides=(1, 2), name="up2", **conv)(x)
        x = L.Conv2DTranspose(width, strides=(1, 2), name="up1", **conv)(x)
        x = L.Cropping2D(((0, 0), (0, 3)), name="crop_freq")(x)
    x = L.Conv2D(width, name="conv_out", **conv)(x)
    core_out = L.Conv2D(2, kernel_size=3, padding="same", name="to_stft")(x)
    outputs = SpectralExpand(power, name="expand")(core_out)
    model = keras.Model(inputs, outputs, name=name or f"{arch}")
    train_model = keras.Model(inputs, core_out, name=f"{model.name}_train")
    return model, train_model


def original_strides(frames: int | None, bins: int = N_BINS) -> tuple[tuple[int, int], tuple[int, int]]:
    """The two downsampling strides the original tool chose: for each axis, the smallest factor from 2 to 8
    that divides what is left of it, else 1 (frequency: 1025 -> 205 -> 41, strides 5 and 5).

    Its time strides follow the training length's frame count (105 frames of 5 s: 3 then 5). A model that
    takes any length (``frames=None``) keeps time stride 1: its output must have its input's frames.
    """

    def factors(n: int | None) -> list[int]:
        out = []
        for _ in range(2):
            f = next((k for k in range(2, 9) if n is not None and n % k == 0), 1)
            out.append(f)
            n = n // f if n is not None else None
        return out

    t, f = factors(frames), factors(bins)
    return (t[0], f[0]), (t[1], f[1])


def _original(inputs, name: str, frames: int | None) -> keras.Model:
    # The original build_autoencoder: raw STFT in, BatchNorm after every conv but the bottleneck and the output,
    # the two downsampling steps on the 64- and 128-channel encoder layers, undone by the 128- and 64-channel
    # decoder layers.
    L = keras.layers
    first, second = original_strides(frames)
    relu = dict(kernel_size=3, padding="same", activation="relu")
    x = L.BatchNormalization()(L.Conv2D(32, **relu)(inputs))
    x = L.BatchNormalization()(L.Conv2D(64, strides=first, **relu)(x))
    x = L.BatchNormalization()(L.Conv2D(128, strides=second, **relu)(x))
    x = L.Conv2D(256, **relu)(x)  # the bottleneck
    x = L.BatchNormalization()(L.Conv2DTranspose(128, strides=second, **relu)(x))
    x = L.BatchNormalization()(L.Conv2DTranspose(64, strides=first, **relu)(x))
    x = L.BatchNormalization()(L.Conv2DTranspose(32, **relu)(x))
    outputs = L.Conv2D(2, 3, padding="same", name="to_stft")(x)
    return keras.Model(inputs, outputs, name=name)


def _bands(x, *, width: int, band: int, depth: int, front: int = 0):
    """Band encoder, ``depth`` 3x3 layers over (time, band), band decoder; linear output."""
    if band < 1 or depth < 0 or front < 0:
        raise TrainingError(f"band must be >= 1, depth and front >= 0; got band={band}, depth={depth}, front={front}")
    L = keras.layers
    n_bands = -(-N_BINS // band)
    pad = n_bands * band - N_BINS
    if front:
        x = L.Conv2D(front, 3, padding="same", activation="gelu", name="conv_in")(x)
        kernel = (1, band)
    else:
        kernel = (3, 2 * band if band > 1 else 3)
    if pad:
        x = L.ZeroPadding2D(((0, 0), (0, pad)), name="pad_freq")(x)
    x = L.Conv2D(width, kernel, strides=(1, band), padding="same", activation="gelu", name="bands_in")(x)
    for i in range(depth):
        x = L.Conv2D(width, 3, padding="same", activation="gelu", name=f"mid{i}")(x)
    if front:
        x = L.Conv2DTranspose(front, kernel, strides=(1, band), padding="same", activation="gelu", name="bands_out")(x)
    else:
        x = L.Conv2DTranspose(2, kernel, strides=(1, band), padding="same", name="to_stft")(x)
    if pad:
        x = L.Cropping2D(((0, 0), (0, pad)), name="crop_freq")(x)
    if front:
        x = L.Conv2D(2, 3, padding="same", name="to_stft")(x)
    return x
