"""STFT / ISTFT and chunked overlap-add."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from senseflosser import metrics, spectral
from helpers import SR, tone


def test_tensor_shape_matches_the_models_contract():
    S = spectral.stft(tone(1.0))
    assert S.shape == (spectral.n_frames(SR), 1025, 2)
    assert S.dtype == np.float32


def test_identity_path_reconstructs_at_50_db_including_the_edges():
    y = tone(5.0, seed=3)
    r = spectral.istft(spectral.stft(y), len(y))
    assert metrics.snr_db(y, r) >= 50
    assert metrics.snr_db(y[:SR], r[:SR]) >= 50
    assert metrics.snr_db(y[-SR:], r[-SR:]) >= 50


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 5000))
def test_identity_for_any_length(n):
    y = np.random.default_rng(n).uniform(-0.5, 0.5, n).astype(np.float32)
    r = spectral.istft(spectral.stft(y), n)
    assert r.shape == (n,)
    assert np.max(np.abs(y - r)) < 1e-4


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 5000), chunk=st.integers(3, 700), context=st.integers(0, 40), exact=st.booleans())
def test_chunk_plan_tiles_every_frame_once(n, chunk, context, exact):
    if chunk <= 2 * context:
        with pytest.raises(ValueError):
            spectral.plan_chunks(n, chunk_frames=chunk, context=context)
        return
    chunks = spectral.plan_chunks(n, chunk_frames=chunk, context=context, exact=exact)
    if exact:
        assert all(c.stop - c.start == min(n, chunk) for c in chunks)
    kept = [(c.keep_start, c.keep_stop) for c in chunks]
    assert kept[0][0] == 0 and kept[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(kept, kept[1:]))
    for c in chunks:
        assert c.stop - c.start <= chunk
        assert c.start <= c.keep_start < c.keep_stop <= c.stop
        # Inner edges carry the full context (or reach the signal's own edge).
        if c.keep_start > 0:
            assert c.keep_start - c.start >= context or c.start == 0
        if c.keep_stop < n:
            assert c.stop - c.keep_stop >= context or c.stop == n


def _model_transform(model):
    import keras

    return lambda t, i: keras.ops.convert_to_numpy(model(t[None], training=False))[0]


def test_chunked_model_output_equals_one_pass(tiny_model):
    y = tone(6.0, seed=1)
    whole = spectral.process(y, [_model_transform(tiny_model)], chunk_frames=10_000)[0]
    chunked = spectral.process(y, [_model_transform(tiny_model)], chunk_frames=40, context=8)[0]
    np.testing.assert_allclose(chunked, whole, atol=1e-5 * np.abs(whole).max())


def test_chunk_seams_make_no_clicks(tiny_model):
    # A steady tone through a model: the sample-to-sample step at every seam is
    # no larger than the largest step anywhere else.
    y = tone(8.0, freqs=(330.0,), amp=0.5)
    y[:] = 0.5 * np.sin(2 * np.pi * 330 * np.arange(len(y)) / SR)
    out = spectral.process(y, [_model_transform(tiny_model)], chunk_frames=48, context=8)[0]
    chunks = spectral.plan_chunks(spectral.n_frames(len(y)), chunk_frames=48, context=8)
    seams = [c.keep_start * spectral.HOP - spectral.N_FFT // 2 for c in chunks[1:]]
    steps = np.abs(np.diff(out))
    interior = steps[SR : -SR].max()
    for s in seams:
        if SR < s < len(y) - SR:
            assert steps[s - 1024 : s + 1024].max() <= interior * 1.05


def test_process_calls_every_transform_per_chunk_and_reports_progress():
    y = tone(3.0)
    calls, seen = [], []
    outs = spectral.process(
        y,
        [lambda t, i: t, lambda t, i: (calls.append(i), t * 0.5)[1]],
        chunk_frames=20, context=2, on_chunk=lambda d, n: seen.append((d, n)),
    )
    n = len(spectral.plan_chunks(spectral.n_frames(len(y)), chunk_frames=20, context=2))
    assert calls == list(range(n))
    assert seen[-1] == (n, n)
    np.testing.assert_allclose(outs[1], outs[0] * 0.5, atol=1e-6)


def test_a_transform_that_changes_shape_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        spectral.process(tone(0.5), [lambda t, i: t[:-1]])


@pytest.mark.filterwarnings("ignore:n_fft=2048 is too large")
@pytest.mark.parametrize("n", [1, 1023, 1024, 1025, 22050 * 2 + 7])
def test_the_analysis_is_librosas_centred_stft(n):
    import librosa

    y = np.random.default_rng(n).uniform(-0.5, 0.5, n).astype(np.float32)
    ours = spectral.stft(y)
    theirs = librosa.stft(y, n_fft=spectral.N_FFT, hop_length=spectral.HOP, window="hann", center=True,
                          pad_mode="constant")
    k = theirs.shape[1]
    # Ours has one frame more where the last samples would lie under one window only.
    assert ours.shape[0] in (k, k + 1)
    np.testing.assert_allclose(ours[:k, :, 0] + 1j * ours[:k, :, 1], theirs.T, rtol=0, atol=1e-5)


def test_iter_stft_matches_stft():
    y = tone(3.0)
    np.testing.assert_array_equal(np.concatenate(list(spectral.iter_stft(y, block=7))), spectral.stft(y))
