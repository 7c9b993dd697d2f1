"""Spectrogram images: a mel spectrogram with time and frequency axes and a dB colour bar.

The spectrum comes from the model's own STFT (:func:`~senseflosser.spectral.iter_stft`,
streamed in blocks so a long track never sits whole in memory); librosa maps it
to mel bands (``librosa.feature.melspectrogram``), to decibels
(``librosa.power_to_db``), pools long tracks down to the image's width
(``librosa.util.sync``) and draws it (``librosa.display.specshow``).

Every image uses the same absolute scale, 0 dB being a full-scale sine, so the
normal output and each flossed one can be compared by eye: damage that takes
energy away darkens the image rather than being rescaled out of sight.
"""

from __future__ import annotations

import functools
import os
import tempfile
import threading
from pathlib import Path

import librosa
import numpy as np

from .audio import SAMPLE_RATE
from .spectral import HOP, N_FFT, WINDOW, iter_stft

N_MELS = 128
"""Mel bands of the image."""
DB_RANGE = (-90.0, 0.0)
"""Levels at the ends of the colour bar, in dB relative to a full-scale sine."""
CMAP = "magma"
MIN_SIZE = (320, 160)
"""Smallest image (width, height) in pixels that holds the axes, their labels and the colour bar."""


@functools.cache
def _full_scale() -> float:
    """STFT power of a full-scale sine at its bin: the 0 dB reference.

    A sine of amplitude 1 on a bin gives ``sum(window) / 2`` there.
    """
    return float((librosa.filters.get_window(WINDOW, N_FFT, fftbins=True).sum() / 2) ** 2)


def mel_power(y: np.ndarray, *, n_mels: int = N_MELS) -> np.ndarray:
    """Mel power spectrogram of a waveform on the model's STFT frames.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono waveform at 22050 Hz.
    n_mels : int, keyword-only
        Number of mel bands.

    Returns
    -------
    M : np.ndarray, shape (n_mels, n_frames(n_samples)), float64
        Power per band and frame. The filters are triangles of height 1
        (``norm=None``), so a sine at a band's centre frequency keeps its
        power there wherever it lies; a sine between two centres reads up to
        6 dB lower, and in the narrow low bands, which hold the window's
        side bins too, up to 2 dB higher. (Librosa's default, area-normalised filters, would read a
        full-scale sine at 8 kHz about 12 dB lower than one at 1 kHz.)
    """
    blocks = []
    for S in iter_stft(y):
        power = S[..., 0].astype(np.float64) ** 2 + S[..., 1].astype(np.float64) ** 2
        blocks.append(librosa.feature.melspectrogram(S=power.T, sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels,
                                                     norm=None))
    return np.concatenate(blocks, axis=1)


def mel_db(y: np.ndarray, *, n_mels: int = N_MELS) -> np.ndarray:
    """:func:`mel_power` in dB relative to a full-scale sine, floored at 120 dB below it.

    Returns
    -------
    np.ndarray, shape (n_mels, n_frames)
    """
    return librosa.power_to_db(mel_power(y, n_mels=n_mels), ref=_full_scale(), amin=_full_scale() * 1e-12,
                               top_db=None)


def save_spectrogram(y: np.ndarray, path: str | os.PathLike, *, width: int = 800, height: int = 256,
                     dpi: int = 100) -> Path:
    """Draw a waveform's mel spectrogram with axes and a dB colour bar, as PNG.

    Parameters
    ----------
    y : np.ndarray, shape (n_samples,)
        Mono waveform at 22050 Hz.
    path : str or os.PathLike
        Where to write the PNG.
    width, height : int, keyword-only
        Image size in pixels, at least :data:`MIN_SIZE`. Tracks with more frames than ``width`` are
        pooled to at most ``width`` columns by their loudest frame, so short
        transients stay visible.
    dpi : int, keyword-only
        Resolution the text is laid out for.

    Returns
    -------
    pathlib.Path
        The path written.

    Notes
    -----
    A job draws several images of one length (the original, the normal output,
    each damaged one): they share one drawn figure, and only its spectrogram
    is drawn again (the axes, their text and the colour bar are two thirds of
    the cost of an image).
    """
    if width < MIN_SIZE[0] or height < MIN_SIZE[1]:
        raise ValueError(f"a spectrogram image needs at least {MIN_SIZE[0]} x {MIN_SIZE[1]} pixels for its axes "
                         f"and colour bar, got {width} x {height}")
    db = mel_db(y)
    frames = db.shape[1]
    first = np.arange(frames + 1)  # first frame of each column, and the end
    if frames > width:
        first = np.unique(np.linspace(0, frames, width + 1).astype(int))
        db = librosa.util.sync(db, first, aggregate=np.max, pad=False)
    # Each column drawn at the middle of its frames (frame k is centred on sample k * HOP).
    times = (first[:-1] + first[1:] - 1) / 2 * HOP / SAMPLE_RATE
    key = (frames, width, height, dpi)
    with _figures_lock:
        figure = _figures.pop(key, None) or _Figure(db, times, width=width, height=height, dpi=dpi)
        _figures[key] = figure  # most recently used last
        while len(_figures) > _FIGURES_MAX:
            _figures.pop(next(iter(_figures)))
        return figure.paint(db, Path(path))


_FIGURES_MAX = 4
"""Drawn figures kept per process, one per image shape and track length."""
_figures: dict[tuple, _Figure] = {}
_figures_lock = threading.Lock()


class _Figure:
    """One drawn spectrogram figure (axes, labels, colour bar) whose spectrogram is redrawn per image."""

    def __init__(self, db: np.ndarray, times: np.ndarray, *, width: int, height: int, dpi: int) -> None:
        # Matplotlib's object API (no pyplot): no global state, safe in a threaded server.
        import librosa.display
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        # Fixed margins in pixels (room for the tick labels) instead of a layout engine, which
        # would draw the figure twice; the colour bar takes the right-hand strip.
        fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
        self.canvas = FigureCanvasAgg(fig)
        left, right, bottom, top, bar_w, gap = 74, 96, 40, 10, 12, 10
        self.ax = fig.add_axes([left / width, bottom / height, 1 - (left + right) / width,
                                1 - (bottom + top) / height])
        cax = fig.add_axes([1 - (right - gap) / width, bottom / height, bar_w / width, 1 - (bottom + top) / height])
        lo, hi = DB_RANGE
        self.mesh = librosa.display.specshow(db, x_coords=times, x_axis="time", y_axis="mel", sr=SAMPLE_RATE,
                                             hop_length=HOP, n_fft=N_FFT, fmax=SAMPLE_RATE / 2, cmap=CMAP,
                                             vmin=lo, vmax=hi, ax=self.ax)
        self.ax.set_xlabel("time")
        self.ax.set_ylabel("frequency (Hz)")
        bar = fig.colorbar(self.mesh, cax=cax, format="%+.0f dB")
        bar.set_label("dB re full-scale sine", fontsize="small")
        # Everything but the spectrogram, drawn once.
        self.mesh.set_visible(False)
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(fig.bbox)
        self.mesh.set_visible(True)

    def paint(self, db: np.ndarray, path: Path) -> Path:
        from PIL import Image

        self.mesh.set_array(db)
        self.canvas.restore_region(self.background)
        self.ax.draw_artist(self.mesh)
        for spine in self.ax.spines.values():  # the frame stays on top, as in a full draw
            self.ax.draw_artist(spine)
        # Written beside its final name and moved there: a reader never sees half an image.
        part = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
        try:
            Image.fromarray(np.asarray(self.canvas.buffer_rgba())).save(part, format="PNG")
            os.replace(part, path)
        finally:
            part.unlink(missing_ok=True)
        return path


def spectrogram_of_wav(wav: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Draw the spectrogram of a WAV this library wrote (an output drawn when first asked for).

    Parameters
    ----------
    wav : str or os.PathLike
        A 22050 Hz mono WAV (an output of :func:`senseflosser.render.floss_to_dir`).
    path : str or os.PathLike
        Where to write the PNG; written whole or not at all, so concurrent
        requests for one image each see a complete file.

    Returns
    -------
    pathlib.Path
        The path written: the image :func:`save_spectrogram` draws of the samples as written (16-bit).

    Raises
    ------
    AudioError
        If the WAV cannot be read.
    """
    from .audio import load

    return save_spectrogram(load(wav), path)


def warm_up() -> None:
    """Draw one small spectrogram, so a server's first job does not pay for fonts and imports."""
    with tempfile.TemporaryDirectory(prefix="senseflosser-warm-") as tmp:
        save_spectrogram(np.zeros(4 * HOP, np.float32), Path(tmp) / "warm.png")
