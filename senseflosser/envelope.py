"""Envelopes: the magnitude of damage over the output's time.

An envelope is a list of ``(seconds, magnitude)`` points, linear between them
and held before the first and after the last. Text forms (CLI ``--envelope``,
the web form's ``envelope`` field):

- ``"0:0,30:0.1,60:0"``: the points themselves;
- ``"ramp:A,B"``: from A at the start to B at the end of the audio;
- ``"lfo:LOW,HIGH,PERIOD"``: a sine between LOW and HIGH with PERIOD seconds,
  starting at LOW, drawn with :data:`LFO_POINTS_PER_PERIOD` points a period.

The shortcuts become points once the audio's length is known, and the points
are what a recipe records, so an envelope reproduces bit for bit.

How it is rendered is :func:`senseflosser.pipeline.floss`'s business: the
damage pattern is fixed by the seed and only its size follows the envelope.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .errors import RecipeError
from .parsing import parse_float

MAX_POINTS = 512
LFO_POINTS_PER_PERIOD = 16
MIN_LFO_PERIOD_S = 0.1
"""Shortest lfo period: about two STFT frames (the damage cannot change faster than once a frame)."""

Points = tuple[tuple[float, float], ...]


def parse_points(spec: Any) -> Points:
    """Points from ``"t:m,t:m,..."`` text or a sequence of pairs; times strictly increasing, from 0.

    Raises
    ------
    RecipeError
        For a malformed point, unsorted or negative times, non-finite values or too many points.
    """
    return parse_timed(spec, noun="envelope", value="magnitude", example="0:0,30:0.1,60:0", origin="output",
                       most=MAX_POINTS, bad_point="is not two numbers (seconds:magnitude), both finite")


def parse_timed(spec: Any, *, noun: str, value: str, example: str, origin: str, most: int,
                bad_point: str) -> Points:
    """``(seconds, value)`` points from ``"t:v,t:v,..."`` text or a sequence of pairs, times strictly
    increasing from 0: the one parser of an envelope's points and a performance's knob path.

    Parameters
    ----------
    noun, value : str, keyword-only
        What the points are and what their second number is, for messages ("envelope", "magnitude").
    example : str, keyword-only
        Points to show in a message.
    origin : str, keyword-only
        What the times count from ("output", "audio").
    most : int, keyword-only
        Most points.
    bad_point : str, keyword-only
        What a point that is not two finite numbers is said to be.

    Raises
    ------
    RecipeError
        For a malformed point, unsorted or negative times, non-finite values or too many points.
    """
    if isinstance(spec, str):
        pairs = []
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            t, colon, v = part.partition(":")
            if not colon:
                raise RecipeError(f"{noun} point {part[:40]!r} is not 'seconds:{value}' (e.g. {example})")
            pairs.append((t, v))
    elif isinstance(spec, Sequence):
        pairs = list(spec)
    else:
        raise RecipeError(f"{'an' if noun[0] in 'aeiou' else 'a'} {noun} is 'seconds:{value}' points, got {spec!r}")
    if not pairs:
        short = ",".join(example.split(",")[:2])
        raise RecipeError(f"the {noun} has no points; give 'seconds:{value}' pairs such as {short}")
    if len(pairs) > most:
        raise RecipeError(f"the {noun} has {len(pairs)} points; at most {most}")
    points = []
    for pair in pairs:
        try:
            t, v = (parse_float(x, field=f"{noun} point") for x in pair)
        except (TypeError, ValueError):
            raise RecipeError(f"{noun} point {_shorten(pair)} {bad_point}") from None
        if not (math.isfinite(t) and math.isfinite(v)):
            raise RecipeError(f"{noun} point {t:g}:{v:g} is not finite")
        if t < 0:
            raise RecipeError(f"{noun} time {t:g} s is negative; times count from the start of the {origin}")
        if points and t <= points[-1][0]:
            raise RecipeError(f"the {noun} is not sorted: its times must increase, and {t:g} s comes after "
                              f"{points[-1][0]:g} s")
        points.append((t, v))
    return tuple(points)


@dataclass(frozen=True)
class Shape:
    """An envelope as a user gave it: points, or a ``ramp``/``lfo`` shortcut not yet fixed to an audio length.

    :func:`parse` makes one from text (the only place envelope text is read);
    :meth:`fix` turns it into the points a recipe records once the audio's
    length is known: pure arithmetic on checked numbers, nothing parsed again.

    Attributes
    ----------
    kind : {"points", "ramp", "lfo"}
    values : tuple of float
        ``ramp``: ``(A, B)``; ``lfo``: ``(LOW, HIGH, PERIOD_S)``; ``points``: empty.
    points : Points or None
        For ``kind="points"``.
    """

    kind: Literal["points", "ramp", "lfo"]
    values: tuple[float, ...] = ()
    points: Points | None = None

    @property
    def magnitudes(self) -> tuple[float, ...]:
        """Every magnitude the envelope takes at a point, or the bounds it moves between (to check once)."""
        if self.kind == "points":
            return tuple(m for _, m in self.points)
        return tuple(self.values[:2])

    @property
    def peak(self) -> float:
        """The largest magnitude it reaches (what a recipe's ``magnitude`` records)."""
        return max(self.magnitudes)

    def fix(self, duration: float) -> Points:
        """The points over ``duration`` seconds of audio; values stay within :attr:`magnitudes`' bounds."""
        if self.kind == "points":
            return self.points
        end = max(float(duration), 1e-3)
        if self.kind == "ramp":
            return ((0.0, self.values[0]), (end, self.values[1]))
        low, high, period = self.values
        n = min(MAX_POINTS, max(2, int(math.ceil(min(duration / period, MAX_POINTS) * LFO_POINTS_PER_PERIOD)) + 1))
        times = np.linspace(0.0, end, n)
        mags = low + (high - low) * 0.5 * (1 - np.cos(2 * np.pi * times / period))
        lo, hi = min(low, high), max(low, high)
        return tuple((float(t), min(hi, max(lo, float(f"{m:.6g}")))) for t, m in zip(times, mags))

    def to_text(self) -> str:
        """The text :func:`parse` reads back."""
        if self.kind == "points":
            return to_text(self.points)
        return f"{self.kind}:{','.join(repr(v) for v in self.values)}"


def parse(spec: Any) -> Shape:
    """An envelope's :class:`Shape` from its text (``"0:0,30:0.1"``, ``"ramp:A,B"``, ``"lfo:LOW,HIGH,PERIOD"``),
    a sequence of pairs, or a :class:`Shape`.

    Raises
    ------
    RecipeError
        For a malformed shortcut or point (see :func:`parse_points`).
    """
    if isinstance(spec, Shape):
        return spec
    if isinstance(spec, str) and spec.strip().lower().startswith(("ramp:", "lfo:")):
        kind, _, rest = spec.strip().partition(":")
        kind = kind.lower()
        try:
            values = tuple(parse_float(v, field=kind) for v in rest.split(","))
        except ValueError:
            raise RecipeError(f"{kind} takes numbers: {rest[:60]!r}") from None
        if not all(math.isfinite(v) for v in values):
            raise RecipeError(f"{kind} takes finite numbers, got {rest[:60]!r}")
        if kind == "ramp":
            if len(values) != 2:
                raise RecipeError(f"ramp takes two magnitudes, from start to end (ramp:A,B), got {rest[:60]!r}")
            return Shape("ramp", values)
        if len(values) != 3:
            raise RecipeError(f"lfo takes LOW,HIGH,PERIOD_S (lfo:0,0.1,8), got {rest[:60]!r}")
        period = values[2]
        if not period > 0:
            raise RecipeError(f"the lfo period must be more than 0 seconds, got {period:g}")
        if period < MIN_LFO_PERIOD_S:
            raise RecipeError(f"the lfo period must be at least {MIN_LFO_PERIOD_S:g} seconds (the damage changes "
                              f"at most once per STFT frame), got {period:g}")
        return Shape("lfo", values)
    return Shape("points", points=parse_points(spec))


def resolve(spec: Any, duration: float) -> Points:
    """Points of any envelope form, given the audio's length in seconds (for ``ramp:`` and ``lfo:``)."""
    return parse(spec).fix(duration)


def _shorten(pair: Any) -> str:
    text = repr(tuple(pair)) if isinstance(pair, (list, tuple)) else repr(pair)
    return text if len(text) <= 60 else text[:60] + "…"


def values_at(points: Points, times: np.ndarray) -> np.ndarray:
    """The envelope at ``times`` (seconds): linear between points, held outside them."""
    t = np.array([p[0] for p in points])
    m = np.array([p[1] for p in points])
    return np.interp(np.asarray(times, dtype=np.float64), t, m)


def check_within(points: Points, duration: float) -> None:
    """Refuse points beyond the end of the audio (``duration`` seconds, a frame's worth of slack)."""
    last = points[-1][0]
    if last > duration + 0.05:
        raise RecipeError(f"envelope point at {last:g} s is beyond the end of the audio ({duration:.1f} s)")


def to_text(points: Points) -> str:
    """The ``t:m,...`` text of points (for the command line that reproduces a job)."""
    return ",".join(f"{t!r}:{m!r}" for t, m in points)
