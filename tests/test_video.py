"""The visualiser as a video: both streams, the clip's length, the same pixels every time, clear failures."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
import soundfile as sf

from helpers import SR, tone
from senseflosser import framesfile, visualiser
from senseflosser.errors import VideoError
from senseflosser.jobspec import Outputs, build_job
from senseflosser.render import floss_to_dir
from senseflosser.video import encode, ffmpeg_exe


def _probe(path) -> str:
    """What ffmpeg says of a file (imageio-ffmpeg ships no ffprobe: ``ffmpeg -i`` prints the same summary)."""
    return subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr


def _pixels(path) -> list[str]:
    """The MD5 of every decoded video frame."""
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0:v",
                          "-f", "framemd5", "-"], capture_output=True, text=True, check=True).stdout
    return [line.rsplit(",", 1)[1].strip() for line in out.splitlines() if line and not line.startswith("#")]


def _seconds(text: str) -> float:
    h, m, s = re.search(r"Duration: (\d+):(\d+):([\d.]+)", text).groups()
    return int(h) * 3600 + int(m) * 60 + float(s)


@pytest.fixture
def video_job(tmp_path, tiny_model):
    src = tmp_path / "in.wav"
    sf.write(src, tone(3.3), SR)
    spec = build_job(model="tiny", action="fog", magnitudes="0.05,0.3", seed=2, outputs=Outputs(video=True))
    return src, spec


def test_the_video_has_both_streams_the_clips_length_and_the_same_pixels(tmp_path, tiny_model, video_job):
    src, spec = video_job
    runs = [floss_to_dir(spec, src, net=tiny_model, output_dir=tmp_path / f"o{k}") for k in range(2)]
    video = tmp_path / "o0" / runs[0]["video"]
    assert video.name == "in_video.mp4" and runs[0]["normal"]["activations"]  # a video implies the frames
    said = _probe(video)
    assert re.search(r"Stream #0:\d.*Video: h264.*640x360.*25 fps", said), said
    assert re.search(r"Stream #0:\d.*Audio: aac", said), said
    assert _seconds(said) == pytest.approx(3.3, abs=0.1)
    frames = _pixels(video)
    assert len(frames) == round(3.3 * visualiser.FPS) and len(set(frames)) > 10  # it moves
    assert frames == _pixels(tmp_path / "o1" / runs[1]["video"])


def test_the_drawn_frames_follow_the_time_and_the_damage(tmp_path, tiny_model, video_job):
    src, spec = video_job
    man = floss_to_dir(spec.with_outputs(video=False, activations=True), src, net=tiny_model, output_dir=tmp_path)
    normal = framesfile.read(tmp_path / man["normal"]["activations"])
    damaged = framesfile.read(tmp_path / man["flossed"][-1]["activations"])
    scene = visualiser.Scene(normal, damaged, ("normal", "fog 0.3"))
    a, b = scene.draw(1.0), scene.draw(1.0)
    assert a.shape == (visualiser.HEIGHT, visualiser.WIDTH, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, scene.draw(2.0))
    same = visualiser.Scene(normal, normal, ("normal", "normal")).draw(1.0)
    half = visualiser.WIDTH // 2
    # the normal beside itself draws the same half twice (labels apart); beside damage, it differs
    assert np.array_equal(same[40:, 1:half - 1], same[40:, half + 1:2 * half - 1])
    assert not np.array_equal(a[40:, 1:half - 1], a[40:, half + 1:2 * half - 1])
    assert visualiser.frame_index(0.0, normal.frame_rate, normal.frames) == 0
    assert visualiser.frame_index(10.0 / normal.frame_rate - 0.01, normal.frame_rate, normal.frames) == 10
    assert visualiser.frame_index(1e6, normal.frame_rate, normal.frames) == normal.frames - 1


def test_an_encoder_failure_is_a_clear_error(tmp_path):
    frames = [np.zeros((visualiser.HEIGHT, visualiser.WIDTH, 3), np.uint8)] * 3
    with pytest.raises(VideoError, match=r"ffmpeg could not encode out.mp4 \(exit status \d+\):.*missing.wav"):
        encode(frames, audio=tmp_path / "missing.wav", out=tmp_path / "out.mp4")
    sf.write(tmp_path / "a.wav", tone(0.2), SR)
    with pytest.raises(VideoError, match=r"must be \(360, 640, 3\) uint8, got \(2, 2, 3\)"):
        encode([np.zeros((2, 2, 3), np.uint8)], audio=tmp_path / "a.wav", out=tmp_path / "out.mp4")


def test_the_video_command(tmp_path, registry, models_dir, monkeypatch):
    from senseflosser.cli import main

    src = tmp_path / "in.wav"
    sf.write(src, tone(2.0), SR)
    out = tmp_path / "clips" / "v.mp4"
    assert main(["video", "-i", str(src), "-m", "tiny", "-a", "fog", "-g", "0.2", "--seed", "1", "-o", str(out),
                 "--models-dir", str(models_dir)]) == 0
    assert _seconds(_probe(out)) == pytest.approx(2.0, abs=0.1)
    assert main(["video", "-i", str(src), "-m", "tiny", "-a", "fog", "-g", "0.2", "--activation-layer", "nope",
                 "-o", str(out), "--models-dir", str(models_dir)]) == 1
