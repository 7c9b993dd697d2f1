"""Validation of the job submission form (``POST /api/jobs``).

Every problem becomes a :class:`FormError` whose message says what is wrong and
how to fix it; the core's validators supply the rules for recipes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from senseflosser.errors import RecipeError
from senseflosser.parsing import parse_float
from senseflosser import envelope as envelope_mod
from senseflosser.actions import ACTION_NAMES, parse_layers
from senseflosser.recipe import build_recipes
from senseflosser.render import safe_stem

from .config import parse_bool

MAX_FIELD_CHARS = 1000
MAX_LAYERS = 64
_EXT_RE = re.compile(r"\.[a-z0-9]{1,8}", re.ASCII)


class FormError(ValueError):
    """A form field is missing or wrong; ``str(exc)`` is a plain sentence."""


@dataclass(frozen=True)
class JobRequest:
    """A validated job submission (without the audio file itself)."""

    model: str
    action: str
    magnitudes: tuple[float, ...]
    seed: int
    layers: tuple[str, ...] | None
    offset: float
    duration: float | None
    save_model: bool
    filename: str
    stem: str
    extension: str
    on_input: bool = False
    envelope: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["magnitudes"] = list(self.magnitudes)
        d["layers"] = list(self.layers) if self.layers is not None else None
        return d


def _show(value: str, limit: int = 40) -> str:
    """A user's value quoted for a message, shortened."""
    text = value if len(value) <= limit else value[:limit] + "…"
    return repr(text)


def _text(form: Mapping[str, str], key: str) -> str:
    value = form.get(key, "")
    if value is None:
        return ""
    if len(value) > MAX_FIELD_CHARS:
        raise FormError(f"{key} is too long (at most {MAX_FIELD_CHARS} characters)")
    return value.strip()


def _flag(form: Mapping[str, str], key: str) -> bool:
    value = _text(form, key)
    try:
        return parse_bool(value)
    except ValueError:
        raise FormError(f"{key} must be 1 or 0 (yes or no), got {_show(value)}") from None


def _seconds(form: Mapping[str, str], key: str, *, allow_zero: bool) -> float | None:
    value = _text(form, key)
    if not value:
        return None
    try:
        seconds = parse_float(value, field=key)
    except ValueError:
        raise FormError(f"{key} must be a number of seconds, got {_show(value)}") from None
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        bound = "0 or more" if allow_zero else "more than 0"
        raise FormError(f"{key} must be a finite number of seconds, {bound}; got {_show(value)}")
    return seconds


def split_filename(raw: str | None) -> tuple[str, str, str]:
    """``(display name, safe stem, extension)`` of an uploaded file's name.

    The name is only ever used for downloads and messages, never as a path:
    folders, control characters and odd characters are dropped.
    """
    name = raw or ""
    name = PureWindowsPath(PurePosixPath(name).name).name  # drop any folders, / or \
    stem = safe_stem(name, default="upload")
    suffix = PurePosixPath(name).suffix.lower()
    ext = suffix if _EXT_RE.fullmatch(suffix) else ""
    return stem + ext, stem, ext


def parse_job_form(
    form: Mapping[str, str],
    getlist: Callable[[str], list[str]],
    *,
    filename: str | None,
    model_names: list[str],
    conv_layers: Callable[[str], Mapping[str, int] | None],
    max_duration: float | None = None,
    uploaded_model: str | None = None,
) -> JobRequest:
    """Check the fields of a job submission.

    Parameters
    ----------
    form : mapping
        The form fields (first value of each).
    getlist : callable
        All values of a field (``layers`` may repeat).
    filename : str or None
        The uploaded file's name as the client sent it.
    model_names : list of str
        Models the server offers.
    conv_layers : callable
        ``conv_layers(model)``: the model's conv layer names -> channel counts, or ``None`` if unknown.
    max_duration : float or None
        Longest segment (seconds) the server processes; a longer ``duration`` is refused.
    uploaded_model : str or None
        The name of a model uploaded with the job (``model_file``), checked
        already; the form must then not also name a registry model.

    Raises
    ------
    FormError
    """
    model = _text(form, "model")
    if uploaded_model is not None:
        if model:
            raise FormError("send either model (a name from /api/models) or model_file (your own .keras), not both")
        model, model_names = uploaded_model, [uploaded_model]
    if not model:
        raise FormError(f"choose a model: {', '.join(model_names) or 'none is installed'}")
    if model not in model_names:
        raise FormError(f"unknown model {_show(model)}; choose one of: {', '.join(model_names) or 'none'}")

    action = _text(form, "action")
    if not action:
        raise FormError(f"choose an action: {', '.join(ACTION_NAMES)}")
    if action not in ACTION_NAMES:
        raise FormError(f"unknown action {_show(action)}; choose one of: {', '.join(ACTION_NAMES)}")
    titrate = _flag(form, "titrate")
    magnitudes = _text(form, "magnitudes") or _text(form, "magnitude") or None
    envelope_text = _text(form, "envelope") or None
    layer_values = [v for v in getlist("layers") if v is not None]
    if sum(len(v) for v in layer_values) > MAX_FIELD_CHARS * 4:
        raise FormError("layers is too long")
    offset = _seconds(form, "offset", allow_zero=True) or 0.0
    duration = _seconds(form, "duration", allow_zero=False)
    if duration is not None and max_duration is not None and duration > max_duration:
        raise FormError(f"duration may be at most {max_duration:g} seconds on this server; "
                        f"got {_show(_text(form, 'duration'))}")
    try:
        layers = parse_layers(layer_values) if layer_values else None
        if layers is not None and len(layers) > MAX_LAYERS:
            raise FormError(f"at most {MAX_LAYERS} layers may be chosen")
        recipes = build_recipes(
            model=model, action=action, magnitudes=magnitudes, titrate=titrate, seed=_text(form, "seed") or None,
            layers=layers, conv_layers=conv_layers(model), offset=offset, duration=duration,
            on_input=_flag(form, "adversarial_on_input"),
            # Checked here; its points are fixed once the audio's length is known (see the API).
            envelope=envelope_mod.resolve(envelope_text, duration or 3600.0) if envelope_text else None,
        )
    except RecipeError as exc:
        raise FormError(str(exc)) from None
    magnitudes = tuple(r.magnitude for r in recipes)
    seed, layers = recipes[0].seed, recipes[0].layers
    save_model = _flag(form, "save_model")
    display, stem, ext = split_filename(filename)
    return JobRequest(
        model=model, action=action, magnitudes=magnitudes, seed=seed, layers=layers,
        offset=offset, duration=duration, save_model=save_model,
        filename=display, stem=stem, extension=ext, on_input=recipes[0].on_input, envelope=envelope_text,
    )
