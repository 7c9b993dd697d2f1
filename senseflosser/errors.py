"""Exception types raised by senseflosser.

Every error a user can cause derives from :class:`SenseflosserError`, so the
command line and the web app can turn it into one plain sentence instead of a
traceback.
"""

from __future__ import annotations


class SenseflosserError(Exception):
    """Base class for every error a user of senseflosser can cause."""


class AudioError(SenseflosserError, ValueError):
    """The audio input cannot be read or does not fit the request."""


class ModelError(SenseflosserError):
    """A model is unknown, unreadable or of the wrong shape."""


class RecipeError(SenseflosserError, ValueError):
    """A damage recipe (action, magnitude, seed, layers, segment) is invalid."""


class TrainingError(SenseflosserError):
    """Training or evaluation cannot run with the given data or settings."""


class MagnitudeError(RecipeError):
    """A magnitude is not a number in its action's range (the command line calls it a usage error)."""


class InputError(SenseflosserError, ValueError):
    """A value a user typed (a form field, a command-line option) is missing, malformed or out of range."""


class VideoError(SenseflosserError):
    """A video cannot be rendered (no activation frames to draw, or the encoder failed)."""
