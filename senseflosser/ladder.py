"""Ladders and performances: K magnitudes of one action at one seed, and a knob's path across them.

A **ladder** is K magnitudes ("rungs") of one action at one seed, rendered in
one job (the normal pass and the STFT shared, as a titration shares them).
It needs an action that *nests* (:attr:`senseflosser.actions.ActionSpec.nests`):
at one seed a larger magnitude damages a superset of what a smaller one does,
so adjacent rungs are strongly correlated and a linear crossfade between them
holds the level. :func:`ladder_magnitudes` spaces the rungs evenly on the model
card's calibrated scale (SNR against normal, dB), a few dB apart.

A **performance** is a knob path over the audio's time: ``(seconds, position)``
points, the position a fractional rung index 0..K-1, linear between points and
held before the first and after the last. It is rendered as, per sample,

    (1 - f) * rung[floor(p)] + f * rung[floor(p) + 1],   f = p - floor(p)

over the rung outputs exactly as served (:data:`RULE`; see
:mod:`senseflosser.performance`). A recipe records it as an envelope of kind
:data:`KIND` (:meth:`Performance.to_dict`), which reads back with
:func:`performance_from_dict`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .actions import ActionSpec, get, names
from .envelope import parse_timed
from .errors import RecipeError
from .parsing import parse_int

MIN_RUNGS = 8
"""Fewest rungs a ladder has (adjacent rungs then stay a few dB apart on the calibrated scale)."""

MAX_RUNGS = 16
"""Most rungs a ladder has (the page holds every rung decoded: see the README's page memory)."""

MAX_POINTS = 16384
"""Most points a recorded performance may have (the page thins its recording to fit)."""

KIND = "ladder-crossfade"
"""The kind of envelope a recipe records a performance as."""

RULE = "(1 - f) * rung[floor(p)] + f * rung[floor(p) + 1], f = p - floor(p)"
"""The crossfade of a performance at position ``p`` (equal gain, linear), per sample."""

CONTINUOUS_POINTS = 512
"""Most points of the continuous envelope a performance becomes (:meth:`Performance.envelope`)."""

__all__ = ["CONTINUOUS_POINTS", "KIND", "MAX_POINTS", "MAX_RUNGS", "MIN_RUNGS", "RULE", "Performance",
           "check_nests", "ladder_magnitudes", "parse_performance", "parse_rungs", "performance_from_dict"]


def parse_rungs(value: Any) -> int:
    """The number of rungs of a ladder (``ladder=K``), from text or a number.

    Raises
    ------
    RecipeError
        If it is not a whole number from :data:`MIN_RUNGS` to :data:`MAX_RUNGS`.
    """
    bad = RecipeError(f"ladder must be a whole number of rungs from {MIN_RUNGS} to {MAX_RUNGS}, got {value!r}")
    if isinstance(value, bool):
        raise bad
    try:
        k = parse_int(value, field="ladder")
    except (TypeError, ValueError):
        raise bad from None
    if not MIN_RUNGS <= k <= MAX_RUNGS:
        raise bad
    return k


def check_nests(action: str) -> ActionSpec:
    """The registry entry of ``action`` if it nests (a ladder's rungs can be crossfaded).

    Raises
    ------
    RecipeError
        If the action does not nest; the message names those that do.
    """
    spec = get(action)
    if not spec.nests:
        nesting = ", ".join(n for n in names() if get(n).nests)
        raise RecipeError(f"action {spec.name!r} does not nest (at one seed a larger magnitude does not damage a "
                          f"superset of what a smaller one does), so its rungs cannot be crossfaded; a ladder takes "
                          f"one of: {nesting}")
    return spec


def ladder_magnitudes(action: str, rungs: int, *, calibration: Mapping[str, Any] | None = None) -> tuple[float, ...]:
    """The magnitudes of a ladder of ``rungs`` rungs, evenly spaced on the calibrated scale.

    Parameters
    ----------
    action : str
        A registered action that nests.
    rungs : int
        Checked (see :func:`parse_rungs`).
    calibration : mapping or None, keyword-only
        A model card's ``evaluation.calibration`` section: ``levels_db`` (SNR
        against normal) and, per action, the magnitudes at which the median
        SNR falls to each level (``None`` where it does not). The rungs lie at
        SNRs evenly spaced from the first calibrated level to the last
        (magnitudes interpolated in log), so adjacent rungs are
        ``span / (rungs - 1)`` dB apart (25 dB over 8 rungs: 3.6 dB). With
        fewer than two calibrated levels for the action (or no card), the
        rungs are spaced evenly in log over the action's default titration.

    Returns
    -------
    tuple of float, shape (rungs,)
        Strictly increasing, within the action's range, four significant digits.
    """
    m = check_nests(action).magnitude
    points = _calibrated(action, calibration)
    if len(points) >= 2:
        levels = np.array([db for db, _ in points])
        logs = np.maximum.accumulate(np.log([mag for _, mag in points]))  # more damage never costs less
        wanted = np.linspace(levels[0], levels[-1], rungs)
        raw = np.exp(np.interp(-wanted, -levels, logs))
    else:
        raw = np.geomspace(m.titration[0], m.titration[-1], rungs)
    mags = tuple(min(m.max, max(m.min, float(f"{v:.4g}"))) for v in raw)
    if len(set(mags)) < rungs or list(mags) != sorted(mags):
        raw = np.geomspace(m.titration[0], m.titration[-1], rungs)  # a flat calibration: the titration's span
        mags = tuple(min(m.max, max(m.min, float(f"{v:.4g}"))) for v in raw)
    return mags


def _calibrated(action: str, calibration: Mapping[str, Any] | None) -> list[tuple[float, float]]:
    """``(level_db, magnitude)`` pairs of a card's calibration for ``action``, levels falling."""
    if not isinstance(calibration, Mapping):
        return []
    levels = calibration.get("levels_db") or []
    mags = (calibration.get("magnitudes") or {}).get(action) or []
    out = []
    for db, mag in zip(levels, mags):
        if isinstance(db, (int, float)) and isinstance(mag, (int, float)) and mag > 0 and math.isfinite(mag):
            out.append((float(db), float(mag)))
    return sorted(out, reverse=True)


@dataclass(frozen=True)
class Performance:
    """A knob path over the audio's time across a ladder's rungs (checked by :func:`parse_performance`).

    Attributes
    ----------
    points : tuple of (seconds, position)
        Times strictly increasing from 0; positions fractional rung indices
        ``0..K-1``; linear between points, held outside them.
    continuous : bool
        Also render the path as a continuous envelope (positions mapped to
        magnitudes, the envelope renderer) and report its SNR against the
        ladder's crossfade.
    """

    points: tuple[tuple[float, float], ...]
    continuous: bool = False

    @property
    def end(self) -> float:
        """The time of the last point, in seconds."""
        return self.points[-1][0]

    def positions(self, times: np.ndarray) -> np.ndarray:
        """The position at ``times`` (seconds), shape as ``times``, float64."""
        t = np.array([p[0] for p in self.points], dtype=np.float64)
        p = np.array([p[1] for p in self.points], dtype=np.float64)
        return np.interp(np.asarray(times, dtype=np.float64), t, p)

    def check_within(self, seconds: float) -> None:
        """Refuse a path that runs past the end of ``seconds`` of audio (a frame's worth of slack).

        Raises
        ------
        RecipeError
        """
        if self.end > seconds + 0.05:
            raise RecipeError(f"the performance's point at {self.end:g} s is outside the audio, which is "
                              f"{seconds:.2f} s long; record it over this clip")

    def envelope(self, magnitudes: Sequence[float]) -> tuple[tuple[float, float], ...]:
        """The path as a magnitude envelope: each position mapped to the magnitude between its rungs.

        A position ``i + f`` becomes ``(1 - f) * magnitudes[i] + f * magnitudes[i + 1]``;
        the points are the path's own plus one where it crosses a rung, thinned
        (evenly in time) to :data:`CONTINUOUS_POINTS` when there are more.
        """
        times = [t for t, _ in self.points]
        for (t0, p0), (t1, p1) in zip(self.points, self.points[1:]):
            lo, hi = sorted((p0, p1))
            for k in range(math.floor(lo) + 1, math.ceil(hi)):
                times.append(t0 + (t1 - t0) * (k - p0) / (p1 - p0))
        times = sorted(set(times))
        if len(times) > CONTINUOUS_POINTS:
            times = list(np.linspace(times[0], times[-1], CONTINUOUS_POINTS))
        mags = _magnitudes_at(self.positions(np.array(times)), magnitudes)
        return tuple((float(t), float(m)) for t, m in zip(times, mags))

    def to_text(self) -> str:
        """The ``t:p,...`` text :func:`parse_performance` reads back (every float exactly)."""
        return ",".join(f"{t!r}:{p!r}" for t, p in self.points)

    def to_dict(self, magnitudes: Sequence[float]) -> dict[str, Any]:
        """The recipe's record: an envelope of kind :data:`KIND` over the rungs' magnitudes."""
        return {"kind": KIND, "rule": RULE, "rungs": [float(m) for m in magnitudes],
                "points": [[t, p] for t, p in self.points], "continuous": self.continuous}


def _magnitudes_at(positions: np.ndarray, magnitudes: Sequence[float]) -> np.ndarray:
    mags = np.asarray(magnitudes, dtype=np.float64)
    lo = np.minimum(np.floor(positions), len(mags) - 2).astype(int)
    f = positions - lo
    return np.clip((1 - f) * mags[lo] + f * mags[lo + 1], mags.min(), mags.max())  # rounding stays in range


def parse_performance(spec: Any, *, rungs: int, continuous: bool = False) -> Performance:
    """A :class:`Performance` from ``"t:p,t:p,..."`` text or a sequence of pairs (the one place it is read).

    Parameters
    ----------
    spec : str or sequence of (seconds, position)
    rungs : int, keyword-only
        The ladder's K: positions must lie in ``0..K-1``.
    continuous : bool, keyword-only

    Raises
    ------
    RecipeError
        For a malformed point, times that do not increase or are negative,
        a position outside the rungs, or too many points.
    """
    points = parse_timed(spec, noun="performance", value="position", example="0:0,4.5:3.25,9:7", origin="audio",
                         most=MAX_POINTS, bad_point="is not two finite numbers (seconds:position)")
    for t, p in points:
        if not 0 <= p <= rungs - 1:
            raise RecipeError(f"performance position {p:g} at {t:g} s is outside the ladder's rungs "
                              f"(0 to {rungs - 1})")
    return Performance(points=tuple(points), continuous=bool(continuous))


def performance_from_dict(data: Any, *, magnitudes: Sequence[float]) -> Performance:
    """The performance a recipe recorded (:meth:`Performance.to_dict`), checked against the job's rungs.

    Raises
    ------
    RecipeError
        If it is not of kind :data:`KIND`, its rungs are not the job's
        magnitudes, or a point is bad (see :func:`parse_performance`).
    """
    if not isinstance(data, Mapping) or data.get("kind") != KIND:
        kind = data.get("kind") if isinstance(data, Mapping) else data
        raise RecipeError(f"the recipe's performance must be an envelope of kind {KIND!r}, got {kind!r}")
    rungs = data.get("rungs")
    if not isinstance(rungs, list) or [float(m) for m in rungs if isinstance(m, (int, float))] != list(magnitudes):
        raise RecipeError(f"the recipe's performance is over the rungs {rungs!r}, but its magnitudes are "
                          f"{list(magnitudes)!r}")
    continuous = data.get("continuous", False)
    if not isinstance(continuous, bool):
        raise RecipeError(f"the performance's continuous must be true or false, got {continuous!r}")
    return parse_performance(data.get("points") or [], rungs=len(magnitudes), continuous=continuous)
