"""Spectrogram images: librosa's mel spectrogram on an absolute dB scale, drawn with axes."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
from PIL import Image

from senseflosser import spectrogram
from helpers import SR


def _sine(freq: float, amp: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("freq", [250.0, 1000.0, 3000.0, 8000.0, 10_500.0])
@pytest.mark.parametrize("amp, level", [(1.0, 0.0), (0.1, -20.0), (0.001, -60.0)])
def test_a_sine_reads_its_level_in_its_own_band(freq, amp, level):
    db = spectrogram.mel_db(_sine(freq, amp))
    assert db.shape[0] == spectrogram.N_MELS
    middle = db[:, db.shape[1] // 2]  # away from the edges' half windows
    band = int(np.argmax(middle))
    centres = librosa.mel_frequencies(n_mels=spectrogram.N_MELS + 2, fmax=SR / 2)
    assert centres[band] <= freq <= centres[band + 2]  # the band's filter spans its neighbours' centres
    # Full level at a band's centre; between two centres the triangles cost up to 6 dB, and
    # in the narrow low bands the window's side bins add up to 2 dB.
    assert level - 6.1 <= middle[band] <= level + 2.0
    on_centre = spectrogram.mel_db(_sine(float(centres[band + 1]), amp))[:, 20]
    assert level - 0.2 <= on_centre.max() <= level + 2.0


def test_silence_is_drawn_at_the_floor(tmp_path):
    db = spectrogram.mel_db(np.zeros(SR, np.float32))
    assert np.all(np.isfinite(db)) and np.all(db == db.min())
    assert db.min() < spectrogram.DB_RANGE[0]
    path = spectrogram.save_spectrogram(np.zeros(SR, np.float32), tmp_path / "silence.png")
    assert Image.open(path).size == (800, 256)


@pytest.mark.parametrize("size", [(800, 256), (640, 200)])
def test_the_image_has_the_asked_size_and_shows_a_click_where_it_is(tmp_path, size):
    # A click at 30 s of a 60 s track: more frames than columns, so columns pool frames,
    # and a click of a few frames must survive that (pooled by the loudest frame).
    y = np.zeros(60 * SR, np.float32)
    y[30 * SR : 30 * SR + 64] = 0.5
    path = spectrogram.save_spectrogram(y, tmp_path / "click.png", width=size[0], height=size[1])
    image = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert image.shape == (size[1], size[0])
    # Look inside the plot only: away from tick labels (left, bottom) and the colour bar (right).
    rows = slice(20, size[1] - 50)
    cols = np.arange(100, size[0] - 120)
    brightness = image[rows, cols].mean(axis=0)
    peak = cols[int(np.argmax(brightness))]
    assert brightness.max() > brightness.mean() + 50
    # Where 30 s falls between the plot's first and last column of the track's colours.
    drawn = cols[brightness > 0]
    left, right = drawn.min(), drawn.max()
    assert abs(peak - (left + right) / 2) < 0.03 * (right - left) + 2


def test_an_image_too_small_for_its_axes_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least 320 x 160 pixels.*got 200 x 256"):
        spectrogram.save_spectrogram(np.zeros(SR, np.float32), tmp_path / "x.png", width=200)
    assert not (tmp_path / "x.png").exists()


def test_images_of_one_length_share_a_figure_and_each_shows_its_own_audio(tmp_path):
    def click_at(seconds):
        y = np.zeros(20 * SR, np.float32)
        y[int(seconds * SR) : int(seconds * SR) + 64] = 0.5
        return y

    def peak_column(path):
        image = np.asarray(Image.open(path).convert("L"), dtype=float)[20:-50, 100:-120]
        return int(np.argmax(image.mean(axis=0)))

    spectrogram._figures.clear()
    first = spectrogram.save_spectrogram(click_at(15.0), tmp_path / "a.png")
    second = spectrogram.save_spectrogram(click_at(5.0), tmp_path / "b.png")
    assert len(spectrogram._figures) == 1  # one drawn figure served both
    assert peak_column(second) < peak_column(first)
    # The shared figure draws what a fresh one draws, pixel for pixel.
    spectrogram._figures.clear()
    fresh = spectrogram.save_spectrogram(click_at(5.0), tmp_path / "c.png")
    np.testing.assert_array_equal(np.asarray(Image.open(second)), np.asarray(Image.open(fresh)))
