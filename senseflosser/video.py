"""The visualiser as an MP4: normal beside damaged, with the damaged output's audio (H.264 + AAC).

Frames are drawn by :class:`senseflosser.visualiser.Scene` and piped raw to the
ffmpeg that the ``imageio-ffmpeg`` wheel ships (a requirement of the project: no
download at run time). The video has ``round(duration * FPS)`` frames, so its
length is the clip's within half a video frame; encoder settings are fixed and
bit-exact flags set, so the same frames give the same pixels.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from . import framesfile
from .errors import VideoError
from .visualiser import FPS, HEIGHT, WIDTH, Scene

log = logging.getLogger(__name__)

VIDEO_NAME = "{stem}_video.mp4"
"""The video's file name in a job's folder."""


def ffmpeg_exe() -> str:
    """The ffmpeg binary of the ``imageio-ffmpeg`` package.

    Raises
    ------
    VideoError
        If the package (a requirement) is missing or its binary cannot be found.
    """
    try:
        import imageio_ffmpeg
    except ImportError:
        raise VideoError("rendering a video needs the imageio-ffmpeg package: pip install -r requirements.txt") from None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:
        raise VideoError(f"imageio-ffmpeg has no ffmpeg binary for this platform ({exc})") from None


def encode(frames: Iterable[np.ndarray], *, audio: str | os.PathLike, out: str | os.PathLike,
           fps: int = FPS, width: int = WIDTH, height: int = HEIGHT) -> Path:
    """Encode RGB frames and an audio file as an MP4 (H.264 yuv420p, AAC).

    Parameters
    ----------
    frames : iterable of np.ndarray, each shape (height, width, 3), uint8
    audio : path
        A WAV (the soundtrack, whole).
    out : path
        The MP4 written.
    fps, width, height : int, keyword-only

    Returns
    -------
    Path

    Raises
    ------
    VideoError
        If ffmpeg fails (with the end of what it said).
    """
    out = Path(out)
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0",
           "-i", str(audio), "-map", "0:v:0", "-map", "1:a:0",
           "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p", "-threads", "2",
           "-c:a", "aac", "-b:a", "128k", "-map_metadata", "-1", "-fflags", "+bitexact",
           "-flags:v", "+bitexact", "-flags:a", "+bitexact", "-movflags", "+faststart", str(out)]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors)
        try:
            for frame in frames:
                if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
                    raise VideoError(f"a video frame must be ({height}, {width}, 3) uint8, got {frame.shape} "
                                     f"{frame.dtype}")
                proc.stdin.write(frame.tobytes())
        except BrokenPipeError:
            pass  # ffmpeg stopped: its message follows
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            if proc.stdin and not proc.stdin.closed:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
        rc = proc.wait()
        errors.seek(0)
        said = errors.read().decode(errors="replace").strip()
    if rc != 0 or not out.is_file():
        tail = said.splitlines()[-3:] if said else ["(nothing)"]
        raise VideoError(f"ffmpeg could not encode {out.name} (exit status {rc}): {' / '.join(tail)}")
    return out


def render(normal: str | os.PathLike, damaged: str | os.PathLike, *, audio: str | os.PathLike,
           duration: float, out: str | os.PathLike, labels: tuple[str, str] = ("normal", "damaged"),
           fps: int = FPS) -> Path:
    """Render the visualiser of two ``.frames`` files beside each other, with ``audio``, as an MP4.

    Parameters
    ----------
    normal, damaged : path
        Activation frames files of one job (see :mod:`senseflosser.framesfile`).
    audio : path
        The soundtrack (a WAV of ``duration`` seconds).
    duration : float, keyword-only
        Seconds: the video has ``round(duration * fps)`` frames.
    out : path, keyword-only
    labels : (str, str), keyword-only
    fps : int, keyword-only

    Returns
    -------
    Path
    """
    scene = Scene(framesfile.read(normal), framesfile.read(damaged), labels)
    count = max(1, int(round(duration * fps)))
    t0 = time.perf_counter()
    path = encode((scene.draw(k / fps) for k in range(count)), audio=audio, out=out, fps=fps)
    log.info("rendered %s: %d frames in %.1f s", path.name, count, time.perf_counter() - t0)
    return path


def render_job_video(manifest: dict[str, Any], out_dir: str | os.PathLike) -> Path:
    """The video of a job folder: its normal beside its last flossed output with activation frames.

    Raises
    ------
    VideoError
        If the job has no flossed output with activation frames.
    """
    out_dir = Path(out_dir)
    damaged = [e for e in manifest.get("flossed") or [] if e.get("activations")]
    if not manifest.get("normal", {}).get("activations") or not damaged:
        raise VideoError("the video needs the normal and a damaged output with activation frames; "
                         "an input action's output (dream) has none")
    last = damaged[-1]
    recipe = last.get("recipe") or {}
    label = f"{recipe.get('action', 'damaged')} {last.get('magnitude')}" if last.get("magnitude") is not None \
        else str(recipe.get("action", "damaged"))
    return render(out_dir / manifest["normal"]["activations"], out_dir / last["activations"],
                  audio=out_dir / last["file"], duration=float(manifest["duration"]),
                  out=out_dir / VIDEO_NAME.format(stem=manifest["stem"]), labels=("normal", label))
