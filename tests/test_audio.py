"""Audio input: any format libsndfile reads, any rate and channel count, clear errors."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile as sf

from senseflosser import audio
from senseflosser.errors import AudioError
from helpers import SR, tone


@pytest.mark.parametrize(
    "fmt, subtype, ext",
    [
        ("WAV", "PCM_U8", "wav"),
        ("WAV", "PCM_16", "wav"),
        ("WAV", "PCM_24", "wav"),
        ("WAV", "PCM_32", "wav"),
        ("WAV", "FLOAT", "wav"),
        ("WAV", "DOUBLE", "wav"),
        ("FLAC", "PCM_16", "flac"),
        ("OGG", "VORBIS", "ogg"),
    ],
)
def test_reads_formats_and_bit_depths(tmp_path, fmt, subtype, ext):
    p = tmp_path / f"x.{ext}"
    sf.write(p, tone(1.0, 44100), 44100, format=fmt, subtype=subtype)
    y = audio.load(p)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - SR) <= 2
    assert 0.05 < np.abs(y).max() <= 1.0


def test_reads_mp3_when_libsndfile_supports_it(tmp_path):
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile has no MP3 support")
    p = tmp_path / "x.mp3"
    sf.write(p, tone(1.0, 44100), 44100, format="MP3", subtype="MPEG_LAYER_III")
    y = audio.load(p)
    assert abs(len(y) - SR) < SR * 0.1


@pytest.mark.parametrize(
    "rate, channels, offset, duration",
    [(44100, 2, 0.0, None), (48000, 1, 1.5, 2.0), (22050, 2, 0.25, None), (8000, 1, 0.0, 1.0), (96000, 6, 2.0, None)],
)
def test_streaming_load_gives_librosas_samples(tmp_path, rate, channels, offset, duration):
    # Our block-by-block decode and soxr stream (kept for memory, see the README) must give
    # what librosa.load gives: the same mix-down and the same soxr HQ resampler.
    import librosa

    p = tmp_path / "x.flac"
    sf.write(p, tone(4.0, rate, channels=channels), rate)
    ours = audio.load(p, offset=offset, duration=duration)
    theirs, sr = librosa.load(p, sr=SR, mono=True, offset=offset, duration=duration, res_type="soxr_hq")
    assert sr == SR and ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000, 96000, 192000])
def test_resamples_any_rate_to_22050(tmp_path, rate):
    p = tmp_path / "x.wav"
    sf.write(p, tone(0.5, rate, freqs=(440.0,)), rate)
    y = audio.load(p)
    assert abs(len(y) - SR // 2) <= 2
    # The tone stays at 440 Hz: the resampler preserved pitch.
    spec = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spec) * SR / len(y) - 440) < 5


@pytest.mark.parametrize("channels", [1, 2, 6, 8])
def test_mixes_channels_to_mono(tmp_path, channels):
    p = tmp_path / "x.wav"
    data = tone(0.5, SR, channels=channels)
    sf.write(p, data, SR, subtype="FLOAT")
    y = audio.load(p)
    expected = data if channels == 1 else data.mean(axis=1)
    np.testing.assert_allclose(y, expected, atol=1e-6)


def test_offset_and_duration_select_a_segment(tmp_path):
    p = tmp_path / "ramp.wav"
    ramp = np.linspace(-1, 1, 3 * SR, dtype=np.float32)
    sf.write(p, ramp, SR, subtype="FLOAT")
    y = audio.load(p, offset=1.0, duration=0.5)
    np.testing.assert_allclose(y, ramp[SR : SR + SR // 2], atol=1e-7)
    assert len(audio.load(p, offset=2.5)) == SR // 2


def test_probe_reports_header(wav_file):
    info = audio.probe(wav_file)
    assert (info.samplerate, info.channels) == (44100, 2)
    assert info.duration == pytest.approx(2.0)


def _write(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda t: t / "missing.wav", "no such file"),
        (lambda t: _write(t, "empty.wav", b""), "empty"),
        (lambda t: _write(t, "notes.wav", b"this is a text file, not audio\n" * 20), "not an audio file"),
        (lambda t: _write(t, "head.wav", b"RIFF\x24\x00\x00\x00WAVEfmt "), "not an audio file"),
    ],
)
def test_unreadable_files_get_one_clear_message(tmp_path, make, expected):
    with pytest.raises(AudioError, match=expected) as err:
        audio.load(make(tmp_path))
    assert "\n" not in str(err.value)


def test_truncated_wav_is_reported(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, tone(2.0), SR, subtype="PCM_16")
    raw = good.read_bytes()
    p = _write(tmp_path, "cut.wav", raw[: len(raw) // 2])
    with pytest.raises(AudioError, match=r"truncated .*promises 2\.0 s of audio, the file holds 1\.0 s"):
        audio.load(p)


def test_header_claiming_gigabytes_does_not_allocate_them(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, tone(0.5), SR, subtype="PCM_16")
    raw = bytearray(good.read_bytes())
    data_at = raw.index(b"data")
    raw[data_at + 4 : data_at + 8] = struct.pack("<I", 0xFFFFFF00)
    p = _write(tmp_path, "huge.wav", bytes(raw))
    with pytest.raises(AudioError, match="truncated or its header is wrong"):
        audio.probe(p)


def test_streaming_placeholder_size_is_accepted(tmp_path):
    good = tmp_path / "good.wav"
    sf.write(good, tone(0.5), SR, subtype="PCM_16")
    raw = bytearray(good.read_bytes())
    data_at = raw.index(b"data")
    raw[data_at + 4 : data_at + 8] = struct.pack("<I", 0xFFFFFFFF)
    assert abs(len(audio.load(_write(tmp_path, "stream.wav", bytes(raw)))) - SR // 2) <= 1


def test_offset_past_the_end_names_the_length(tmp_path):
    p = tmp_path / "x.wav"
    sf.write(p, tone(8.5), SR)
    with pytest.raises(AudioError, match=r"offset 10 s is past the end of the 8\.5 s file"):
        audio.load(p, offset=10)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused(tmp_path, bad):
    p = tmp_path / "x.wav"
    data = tone(0.5)
    data[100] = bad
    sf.write(p, data, SR, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite"):
        audio.load(p)


@pytest.mark.parametrize("kw, match", [
    ({"offset": -1}, "offset"), ({"offset": float("nan")}, "offset"),
    ({"duration": 0}, "duration"), ({"duration": -2}, "duration"), ({"duration": "abc"}, "duration"),
])
def test_bad_segment_values(wav_file, kw, match):
    with pytest.raises(AudioError, match=match):
        audio.load(wav_file, **kw)


def test_huge_offset_and_duration_are_handled(wav_file):
    with pytest.raises(AudioError, match="past the end"):
        audio.load(wav_file, offset=1e308)
    assert len(audio.load(wav_file, duration=1e308)) == 2 * SR


def test_max_duration_refuses_long_segments(wav_file):
    with pytest.raises(AudioError, match="at most 1 s"):
        audio.load(wav_file, max_duration=1.0)
    assert len(audio.load(wav_file, duration=1.0, max_duration=1.0)) == SR


def test_one_sample_file_is_readable(tmp_path):
    p = tmp_path / "one.wav"
    sf.write(p, np.array([0.5], np.float32), SR)
    assert audio.load(p).shape == (1,)


def test_a_16_bit_wav_holds_the_nearest_step_of_every_sample(tmp_path):
    rng = np.random.default_rng(3)
    y = np.concatenate([rng.uniform(-1, 1, 100_000), rng.standard_normal(10_000) * 1e-4,
                        [1.0, -1.0, 0.0, 0.5 / 32768, 1.5 / 32768, -0.5 / 32768]]).astype(np.float32)
    back, _ = sf.read(audio.write_wav(tmp_path / "q.wav", y), dtype="float32")
    top = 32767 / 32768
    assert np.abs(back - np.minimum(y, top)).max() <= 0.5 / 32768 + 1e-9  # nearest step (+1.0: the top one)
    assert back[-6] == top and back[-5] == -1.0 and back[-4] == 0.0
    assert sf.info(str(tmp_path / "q.wav")).subtype == "PCM_16"


def test_write_wav_roundtrip_and_refuses_to_clip(tmp_path):
    y = tone(0.5)
    p = audio.write_wav(tmp_path / "o.wav", y)
    back, sr = sf.read(p, dtype="float32")
    assert sr == SR
    np.testing.assert_allclose(back, y, atol=1 / 32768 + 1e-6)
    with pytest.raises(AudioError, match="clip"):
        audio.write_wav(tmp_path / "loud.wav", y * 10)
    with pytest.raises(AudioError, match="NaN"):
        audio.write_wav(tmp_path / "nan.wav", np.array([np.nan], np.float32))
