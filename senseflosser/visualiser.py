"""The visualiser drawn in numpy: normal beside damaged, frame by frame, for the video.

Each half of a frame is one output: on top the *shapes* view (a closed curve
whose radius around the circle follows the frequency profile, low bands at the
right, mirrored to the left; its size follows the first principal component,
its hue the second, its brightness the third), below it the *channels* strip
(every channel of the layer, one row each, the last :data:`STRIP_FRAMES` model
frames scrolling to the left, the newest at the right edge). Both outputs are
scaled by the *normal* output's ranges, so damage shows as a change of shape,
size and colour. The page draws the same views (``static/js/visualiser.js``).
Pixels depend only on the frames files and the time: the same recipe gives the
same pixels.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from .framesfile import FramesFile

WIDTH, HEIGHT = 640, 360
"""Frame size of the video (both halves)."""
FPS = 25
STRIP_FRAMES = 96
"""Model frames the channels strip shows (about 4.5 s)."""
_SHAPES_H = 240
_BACKGROUND = np.array([12, 12, 18], np.float32)


def frame_index(t: float, frame_rate: float, frames: int) -> int:
    """The model frame shown at ``t`` seconds: the nearest frame centre (frame ``i`` is centred at ``i / frame_rate``)."""
    return int(min(frames - 1, max(0, np.floor(t * frame_rate + 0.5))))


def _unit(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    span = np.where(hi > lo, hi - lo, 1.0)
    return (values - lo) / span


def soft(u: np.ndarray) -> np.ndarray:
    """A value on the normal's scale (its range is [0, 1]) kept drawable beyond it: 1 + (1 - 1/u) above, bounded by 2;
    below 0, down to -0.5 at most. Damage that leaves the normal's range shows, without clipping everything."""
    u = np.asarray(u, np.float32)
    above = 2.0 - 1.0 / np.maximum(u, 1.0)
    below = -0.5 * (1.0 - 1.0 / (1.0 - np.minimum(u, 0.0)))
    return np.where(u > 1.0, above, np.where(u < 0.0, below, u)).astype(np.float32)


def strip_level(u: np.ndarray) -> np.ndarray:
    """Where a channel's value falls on the palette: the normal's range on its lower three quarters, beyond on the rest."""
    return np.clip(np.where(u > 1.0, 0.75 + 0.25 * (soft(u) - 1.0), 0.75 * u), 0.0, 1.0)


def _magma() -> np.ndarray:
    from matplotlib import colormaps

    return (colormaps["magma"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)


def _label(text: str, width: int, height: int = 18) -> np.ndarray:
    """``text`` rendered once by matplotlib's Agg, as an ``(height, width)`` float mask in [0, 1]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width / 100, height / 100), dpi=100)
    fig.patch.set_facecolor("black")
    fig.text(0.02, 0.5, text, color="white", fontsize=9, va="center", family="DejaVu Sans")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())[:height, :width]
    return rgba[..., 0].astype(np.float32) / 255.0


@dataclass
class _Side:
    frames: FramesFile
    strip: np.ndarray  # (T, C, 3) uint8, the channels coloured on the normal's scale
    profile: np.ndarray  # (T, B) in normal units
    components: np.ndarray  # (T, K) in normal units
    label: np.ndarray


class Scene:
    """Precomputed colours and geometry of one video: ``normal`` beside ``damaged``.

    Parameters
    ----------
    normal, damaged : FramesFile
        The two outputs' frames (same layer and length).
    labels : (str, str)
        Written above each half.
    """

    def __init__(self, normal: FramesFile, damaged: FramesFile, labels: tuple[str, str]) -> None:
        self.half = WIDTH // 2
        self.n = min(normal.frames, damaged.frames)
        self.frame_rate = normal.frame_rate
        ref = normal.blocks
        ranges = {name: (block.min(axis=0), block.max(axis=0)) for name, block in ref.items()}
        lut = _magma()

        def side(f: FramesFile, text: str) -> _Side:
            ch = strip_level(_unit(f.blocks["channels"], *ranges["channels"]))
            return _Side(f, lut[np.rint(ch * 255).astype(np.int64)],
                         _unit(f.blocks["profile"], *ranges["profile"]),
                         _unit(f.blocks["components"], *ranges["components"]), _label(text, self.half))

        self.sides = [side(normal, labels[0]), side(damaged, labels[1])]
        # Pixel geometry of the shapes view: each pixel's radius and place along the profile.
        h, w = _SHAPES_H, self.half
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        cx, cy = (w - 1) / 2, (h - 1) / 2 + 8
        self.radius = np.hypot(xx - cx, yy - cy)
        angle = np.abs(np.arctan2(-(yy - cy), xx - cx))  # 0 at the right, pi at the left, mirrored
        bands = max(1, ref["profile"].shape[1])
        self.band_pos = angle / np.pi * (bands - 1)
        self.scale = min(w, h) / 2 - 14
        c = self.sides[0].strip.shape[1]
        strip_h = HEIGHT - _SHAPES_H
        self.strip_rows = np.minimum(np.arange(strip_h) * c // strip_h, c - 1)
        self.strip_cols = np.arange(w) * STRIP_FRAMES // w

    def _shapes(self, s: _Side, i: int) -> np.ndarray:
        prof = s.profile[i] if s.profile.shape[1] else np.zeros(1, np.float32)
        pcs = np.zeros(3, np.float32)
        pcs[: s.components.shape[1]] = s.components[i, :3]
        lo = np.floor(self.band_pos).astype(np.int64)
        hi = np.minimum(lo + 1, prof.size - 1)
        frac = self.band_pos - lo
        shape = soft(prof)[lo] * (1 - frac) + soft(prof)[hi] * frac
        size = 0.3 + 0.2 * float(soft(pcs[0]))
        edge = self.scale * np.clip(size + 0.15 * shape, 0.05, 1.0)
        inside = np.clip((edge - self.radius) / 3.0 + 1.0, 0.0, 1.0)
        glow = np.clip(1.0 - (self.radius - edge) / 18.0, 0.0, 1.0) * (self.radius > edge) * 0.45
        hue = 0.55 + 0.3 * float(soft(pcs[1]))  # the normal's range: blue to magenta; beyond it, on to orange
        value = 0.6 + 0.2 * float(soft(pcs[2]))
        colour = np.array(colorsys.hsv_to_rgb(hue % 1.0, 0.75, value), np.float32) * 255
        mix = np.maximum(inside, glow)[..., None]
        return _BACKGROUND * (1 - mix) + colour * mix

    def _strip(self, s: _Side, i: int) -> np.ndarray:
        first = i - STRIP_FRAMES + 1
        window = np.zeros((STRIP_FRAMES,) + s.strip.shape[1:], np.uint8)
        lo = max(0, first)
        window[lo - first:] = s.strip[lo:i + 1]
        return window[self.strip_cols][:, self.strip_rows].transpose(1, 0, 2).astype(np.float32)

    def draw(self, t: float) -> np.ndarray:
        """The frame at ``t`` seconds, ``(HEIGHT, WIDTH, 3)`` uint8."""
        i = frame_index(t, self.frame_rate, self.n)
        halves = []
        for s in self.sides:
            top = self._shapes(s, i)
            lab = s.label[..., None]
            top[: lab.shape[0]] = top[: lab.shape[0]] * (1 - lab) + 230 * lab
            halves.append(np.concatenate([top, self._strip(s, i)], axis=0))
        frame = np.concatenate(halves, axis=1)
        frame[:, self.half - 1: self.half + 1] = 60  # the divider
        return np.clip(np.rint(frame), 0, 255).astype(np.uint8)
