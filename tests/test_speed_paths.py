"""The fast paths behave exactly like the plain ones they replace.

Compiled inference shared per architecture, streaming overlap-add, block-wise
metrics and receptive-field context: each is checked
against a direct computation. No timing is asserted.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import pytest

from senseflosser import metrics, spectral
from senseflosser.architectures import build
from senseflosser.models import time_receptive_field
from senseflosser.pipeline import floss
from helpers import tone
from helpers import tiny_recipe as _r


def _probe_reach(model, frames: int = 40) -> int:
    # Change one frame and see how far the output moves.
    x = np.random.default_rng(0).standard_normal((1, frames, spectral.N_BINS, 2)).astype(np.float32)
    x2 = x.copy()
    x2[0, frames // 2] += 1.0
    diff = np.abs(np.asarray(model(x, training=False)) - np.asarray(model(x2, training=False))).max(axis=(0, 2, 3))
    moved = np.nonzero(diff > 0)[0]
    return int(max(frames // 2 - moved.min(), moved.max() - frames // 2))


@pytest.mark.parametrize("arch", ["bottleneck", "deep"])
def test_receptive_field_matches_a_probe(arch):
    model, _ = build(arch, width=4)
    assert time_receptive_field(model) == _probe_reach(model)


def test_receptive_field_of_1d_convs_over_frames_matches_a_probe(conv1d_model):
    assert time_receptive_field(conv1d_model) == _probe_reach(conv1d_model) == 3


def test_receptive_field_of_the_tiny_model_and_unknown_layers(tiny_model):
    import keras

    assert time_receptive_field(tiny_model) == _probe_reach(tiny_model) == 3
    inp = keras.Input(shape=(None, spectral.N_BINS, 2))
    out = keras.layers.Lambda(lambda x: x * 2.0)(keras.layers.Conv2D(2, 3, padding="same")(inp))
    assert time_receptive_field(keras.Model(inp, out)) is None
    strided = keras.layers.Conv2D(2, 3, strides=(2, 1), padding="same")(inp)
    assert time_receptive_field(keras.Model(inp, strided)) is None


def test_default_context_is_seamless(tiny_model):
    y = tone(6.0, seed=2)
    whole = floss(y, tiny_model, [_r()], chunk_frames=10_000)
    chunked = floss(y, tiny_model, [_r()], chunk_frames=24)  # context = the model's reach (3 frames)
    scale = np.abs(whole.normal).max()
    np.testing.assert_allclose(chunked.normal, whole.normal, atol=1e-5 * scale)
    np.testing.assert_allclose(chunked.flossed[0].audio, whole.flossed[0].audio, atol=1e-4 * scale)


def test_warm_jobs_trace_nothing_new(tiny_model):
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("traces are counted on the tensorflow backend")
    from benchmarks.bench import TraceCounter

    floss(tone(1.0), tiny_model, [_r("fog", 0.1, 1), _r("lapse", 0.2, 1)])
    with TraceCounter() as counter:
        # New seeds, new lengths (other chunk shapes), fog and lapse at the same rate.
        for k, seconds in enumerate((0.7, 1.3, 2.9)):
            floss(tone(seconds), tiny_model, [_r("fog", 0.3, 10 + k), _r("lapse", 0.2, 20 + k)], chunk_frames=40)
    assert counter.count == 0, counter.names


def test_compiled_runs_equal_eager_calls(tiny_model):
    import keras

    from senseflosser import actions

    y = tone(1.0)
    res = floss(y, tiny_model, [_r("fog", 0.2, 3)], keep_models=True)
    eager = spectral.process(y, [lambda t, i: keras.ops.convert_to_numpy(tiny_model(t[None], training=False))[0]])[0]
    np.testing.assert_allclose(res.normal, eager, atol=1e-6 * np.abs(eager).max())
    damaged = actions.apply(tiny_model, _r("fog", 0.2, 3))
    np.testing.assert_array_equal(damaged.get_weights()[2], res.flossed[0].model.get_weights()[2])


def _plain_istft(S: np.ndarray, length: int, dtype=np.float32) -> np.ndarray:
    # The textbook weighted overlap-add over one buffer: in float32 as the synthesis computes it (the
    # inverse FFT in single precision, the window-square sum in double, then rounded), or all in float64.
    n = S.shape[0]
    window = spectral._WINDOW.astype(dtype)
    spec = (S[..., 0] + 1j * S[..., 1]).astype(np.complex64 if dtype == np.float32 else np.complex128)
    frames = scipy.fft.irfft(spec, n=spectral.N_FFT, axis=1) * window
    buf = np.zeros((n - 1) * spectral.HOP + spectral.N_FFT, dtype=dtype)
    wss = np.zeros(buf.size)
    for i in range(n):
        buf[i * spectral.HOP : i * spectral.HOP + spectral.N_FFT] += frames[i]
        wss[i * spectral.HOP : i * spectral.HOP + spectral.N_FFT] += spectral._WINDOW**2
    sl = slice(spectral.N_FFT // 2, spectral.N_FFT // 2 + length)
    return (buf[sl] / wss[sl].astype(dtype)).astype(np.float32)


@pytest.mark.parametrize("length", [1, 1000, 1024, 5000, 22050 * 3 + 17])
def test_streaming_overlap_add_equals_the_plain_one_bit_for_bit(length):
    S = np.random.default_rng(length).standard_normal((spectral.n_frames(length), spectral.N_BINS, 2)).astype(np.float32)
    syn = spectral._Synthesis(S.shape[0], length)
    for first in range(0, S.shape[0], 3):  # frames arriving three at a time, as chunks do
        syn.add(S[first : first + 3], first)
    plain = _plain_istft(S, length)
    np.testing.assert_array_equal(syn.result(), plain)
    # Single precision costs nothing audible: within a few float32 steps of the float64 textbook.
    np.testing.assert_allclose(plain, _plain_istft(S, length, np.float64), rtol=0, atol=1e-6 * np.max(np.abs(plain)))
    # librosa's inverse (spectral.istft) is the same overlap-add, in float32.
    np.testing.assert_allclose(spectral.istft(S, length), plain, rtol=0, atol=1e-5 * np.max(np.abs(plain)))
    # Chunk by chunk, in any chunk sizes: the same samples.
    y = tone(length / 22050 + 0.01)[:length]
    ident = spectral.process(y, [lambda t, i: t], chunk_frames=9, context=2)[0]
    np.testing.assert_array_equal(ident, _plain_istft(spectral.stft(y), length))


def test_frames_must_arrive_in_order():
    syn = spectral._Synthesis(10, 5000)
    S = np.zeros((3, spectral.N_BINS, 2), np.float32)
    with pytest.raises(ValueError, match="in order"):
        syn.add(S, 2)
    syn.add(S, 0)
    with pytest.raises(ValueError, match="frames were added"):
        syn.result()


def test_block_wise_metrics_equal_whole_signal_formulas():
    rng = np.random.default_rng(5)
    r = rng.standard_normal(200_000).astype(np.float32)
    e = (r + 0.1 * rng.standard_normal(r.size)).astype(np.float32)
    r64, e64 = r.astype(np.float64), e.astype(np.float64)
    assert metrics.snr_db(r, e) == pytest.approx(10 * np.log10(np.sum(r64**2) / np.sum((r64 - e64) ** 2)), rel=1e-12)
    assert metrics.rms_db(r) == pytest.approx(10 * np.log10(np.mean(r64**2)), rel=1e-12)
    estimates = [e, r, (0.5 * e).astype(np.float32)]
    assert metrics.log_spectral_distances(r, estimates) == [metrics.log_spectral_distance(r, x) for x in estimates]
    assert metrics.log_spectral_distances(r, []) == []
    assert metrics.log_spectral_distance(r, r) == 0.0
    # Half the amplitude is 6.02 dB less power in every bin above the floor.
    assert metrics.log_spectral_distance(r, (0.5 * r).astype(np.float32)) == pytest.approx(20 * np.log10(2), abs=1e-4)


def test_fog_without_a_copy_equals_the_copied_model(tiny_model):
    from senseflosser import actions

    y = tone(2.0)
    lean = floss(y, tiny_model, [_r("fog", 0.2, 5)])
    kept = floss(y, tiny_model, [_r("fog", 0.2, 5)], keep_models=True)
    assert lean.flossed[0].model is None and kept.flossed[0].model is not None
    np.testing.assert_array_equal(lean.flossed[0].audio, kept.flossed[0].audio)
    noisy = actions.fog_weights(tiny_model, magnitude=0.2, seed=5, layers=None)
    for name, arrays in noisy.items():
        for ours, theirs in zip(arrays, kept.flossed[0].model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    assert actions.damaged_weights(tiny_model, _r("lapse", 0.2, 5)) is None


def test_log_spectral_distance_is_the_same_with_or_without_the_kept_spectrum(monkeypatch):
    rng = np.random.default_rng(8)
    r = rng.standard_normal(50_000).astype(np.float32)
    estimates = [(r + 0.2 * rng.standard_normal(r.size)).astype(np.float32), (0.3 * r).astype(np.float32)]
    kept = metrics.log_spectral_distances(r, estimates)
    monkeypatch.setattr(metrics, "_KEEP_BYTES", 0)
    assert metrics.log_spectral_distances(r, estimates) == kept


def _lsd_by_hand(reference: np.ndarray, estimate: np.ndarray) -> float:
    """The log-spectral distance as its docstring defines it, written out with librosa in one piece."""
    import librosa

    def power(y):
        S = librosa.stft(y.astype(np.float32), n_fft=2048, hop_length=1024, window="hann", center=True)
        return np.abs(S.astype(np.complex128)) ** 2

    P, Q = power(reference), power(estimate)
    floor = P.max() * 10 ** (-80 / 10)
    dP, dQ = (10 * np.log10(np.maximum(X, floor) / floor) for X in (P, Q))
    return float(np.mean(np.sqrt(np.mean((dP - dQ) ** 2, axis=0))))


def test_one_sweep_of_distances_equals_each_pair_measured_alone(monkeypatch):
    rng = np.random.default_rng(3)
    y = rng.standard_normal(60_000).astype(np.float32)
    normal = (0.9 * y + 0.05 * rng.standard_normal(y.size)).astype(np.float32)
    flossed = [(normal + 0.3 * rng.standard_normal(y.size)).astype(np.float32), (0.2 * normal).astype(np.float32)]
    pairs = [(0, 1), (1, 2), (1, 3)]
    table = metrics.log_spectral_distance_table([y, normal, *flossed], pairs)
    signals = [y, normal, *flossed]
    assert table == [metrics.log_spectral_distance(signals[a], signals[b]) for a, b in pairs]
    # (the model's own STFT differs from this one-piece librosa STFT at the edges and in precision)
    assert table == pytest.approx([_lsd_by_hand(signals[a], signals[b]) for a, b in pairs], rel=1e-2)
    monkeypatch.setattr(metrics, "_KEEP_BYTES", 0)  # long-track path: two passes, nothing kept
    assert metrics.log_spectral_distance_table(signals, pairs) == table
    with pytest.raises(ValueError, match="differ in length"):
        metrics.log_spectral_distance_table([y, y[:-1]], [(0, 1)])


def test_a_job_measures_its_outputs_as_each_pair_alone(tiny_model):
    y = tone(2.0)
    result = floss(y, tiny_model, [_r("fog", 0.05, 5), _r("fog", 0.2, 5)])
    assert result.normal_metrics["lsd_db"] == metrics.log_spectral_distance(y, result.normal_raw)
    raw = [out.audio / out.metrics["gain"] for out in result.flossed]
    for out, r in zip(result.flossed, raw):
        assert out.metrics["lsd_db"] == pytest.approx(metrics.log_spectral_distance(result.normal_raw, r), abs=1e-9)
