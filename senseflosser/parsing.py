"""Numbers typed by people: one parser for the web form, the command line and the core.

Python's own ``int()`` and ``float()`` are generous in ways a form field must
not be: they take digits of every script (``int("١٢") == 12``; ``"²".isdigit()``
is true but ``int("²")`` fails), underscores (``"1_0"``), ``"nan"``, ``"inf"``
and numbers of thousands of digits. :func:`parse_float` and :func:`parse_int`
accept plain ASCII decimal notation only, refuse non-finite and out-of-range
values, and say which field was wrong in every message.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

from .errors import InputError

__all__ = ["MAX_NUMBER_CHARS", "parse_float", "parse_int"]

MAX_NUMBER_CHARS = 64
"""Longest text taken as a number (a float64 needs 24 characters; an int up to 2**64 needs 20)."""

_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_INT_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)


def _show(value: Any) -> str:
    if not isinstance(value, str):
        return repr(value)[:40]
    return repr(value if len(value) <= 40 else value[:40] + "…")


def _range_text(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f" from {minimum:g} to {maximum:g}"
    if minimum is not None:
        return f" of at least {minimum:g}"
    if maximum is not None:
        return f" of at most {maximum:g}"
    return ""


def parse_float(value: Any, *, field: str, minimum: float | None = None, maximum: float | None = None,
                what: str = "a number") -> float:
    """A finite float from ASCII decimal text (or a real number), optionally within a range.

    Parameters
    ----------
    value : str or number
        ``"0.5"``, ``" -1e-3 "``, ``2``; never ``"nan"``, ``"inf"``, ``"1_0"``,
        ``"0x10"`` or digits of other scripts.
    field : str, keyword-only
        The name the user knows the value by, used in messages.
    minimum, maximum : float or None, keyword-only
        Inclusive bounds.
    what : str, keyword-only
        What the field holds, for messages ("a number of seconds").

    Returns
    -------
    float

    Raises
    ------
    InputError
        Naming ``field`` and the value.
    """
    bad = InputError(f"{field} must be {what}{_range_text(minimum, maximum)}, got {_show(value)}")
    if isinstance(value, bool):
        raise bad
    if isinstance(value, str):
        text = value.strip()
        if len(text) > MAX_NUMBER_CHARS or not _FLOAT_RE.fullmatch(text):
            raise bad
        number = float(text)
    elif isinstance(value, numbers.Real):
        try:
            number = float(value)
        except (OverflowError, ValueError):
            raise bad from None
    else:
        raise bad
    if not math.isfinite(number):
        raise InputError(f"{field} must be a finite number, got {_show(value)}")
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise bad
    return number


def parse_int(value: Any, *, field: str, minimum: int | None = None, maximum: int | None = None,
              what: str = "a whole number") -> int:
    """A whole number from ASCII decimal digits (or an integral number), optionally within a range.

    ``"12"``, ``"+3"``, ``7`` and ``7.0`` are accepted; ``"1.5"``, ``"²"``,
    ``"١"``, ``"1e3"`` and text of more than :data:`MAX_NUMBER_CHARS` characters are not.

    Raises
    ------
    InputError
        Naming ``field`` and the value.
    """
    bad = InputError(f"{field} must be {what}{_range_text(minimum, maximum)}, got {_show(value)}")
    if isinstance(value, bool):
        raise bad
    if isinstance(value, str):
        text = value.strip()
        if len(text) > MAX_NUMBER_CHARS or not _INT_RE.fullmatch(text):
            raise bad
        number = int(text)
    elif isinstance(value, numbers.Integral):
        number = int(value)
    elif isinstance(value, numbers.Real):
        if not math.isfinite(value) or not float(value).is_integer():
            raise bad
        number = int(value)
    else:
        raise bad
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise bad
    return number
