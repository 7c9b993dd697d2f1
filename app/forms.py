"""The job submission form (``POST /api/jobs``) turned into a job spec: the web edge.

Every problem raises a :class:`~senseflosser.errors.SenseflosserError` whose
message says what is wrong and how to fix it (the app answers it as a 400);
the core's :func:`senseflosser.jobspec.build_job` holds the rules of a job.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from senseflosser.actions import get, names, params_from_fields
from senseflosser.errors import InputError
from senseflosser.jobspec import MAX_LAYERS, JobSpec, Outputs, build_job  # noqa: F401  (MAX_LAYERS: the form's limit)
from senseflosser.ladder import MAX_POINTS
from senseflosser.parsing import parse_float
from senseflosser.render import safe_stem

from .config import parse_bool

MAX_FIELD_CHARS = 1000
PERFORMANCE_MAX_CHARS = MAX_POINTS * 24
"""A recorded knob path may be long: this many characters (its most points, each ``seconds:position``)."""
_EXT_RE = re.compile(r"\.[a-z0-9]{1,8}", re.ASCII)

FormError = InputError
"""A form field is missing or wrong (the core's :class:`~senseflosser.errors.InputError`)."""


@dataclass(frozen=True)
class JobRequest:
    """A checked job submission (without the audio file itself): its spec and the upload's names."""

    spec: JobSpec
    filename: str
    stem: str
    extension: str
    envelope_text: str | None = None

    @property
    def model(self) -> str:
        return self.spec.base.model

    @property
    def action(self) -> str:
        return self.spec.base.action

    @property
    def magnitudes(self) -> tuple[float, ...]:
        return self.spec.magnitudes

    @property
    def seed(self) -> int:
        return self.spec.base.seed

    @property
    def layers(self) -> tuple[str, ...] | None:
        return self.spec.base.layers

    @property
    def offset(self) -> float:
        return self.spec.offset

    @property
    def duration(self) -> float | None:
        return self.spec.duration

    @property
    def save_model(self) -> bool:
        return self.spec.outputs.save_model

    def to_dict(self) -> dict[str, Any]:
        """What the job's stored request keeps: the spec (as the queue carries it) and the upload's names."""
        return {"spec": self.spec.to_dict(), "model": self.model, "filename": self.filename, "stem": self.stem,
                "extension": self.extension, "envelope_text": self.envelope_text}


def _show(value: str, limit: int = 40) -> str:
    """A user's value quoted for a message, shortened."""
    text = value if len(value) <= limit else value[:limit] + "…"
    return repr(text)


def _text(form: Mapping[str, str], key: str, *, limit: int = MAX_FIELD_CHARS) -> str:
    value = form.get(key, "")
    if value is None:
        return ""
    if len(value) > limit:
        raise FormError(f"{key} is too long (at most {limit} characters)")
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
    clusters: Callable[[str], Mapping[str, Sequence[Sequence[int]]] | None] | None = None,
    concepts: Callable[[str], Mapping[str, Any] | None] | None = None,
    calibration: Callable[[str], Mapping[str, Any] | None] | None = None,
    max_duration: float | None = None,
    uploaded_model: str | None = None,
    model_sha256: str = "",
    outputs: Outputs | None = None,
) -> JobRequest:
    """Check the fields of a job submission and build its spec.

    Parameters
    ----------
    form : mapping
        The form fields (first value of each).
    getlist : callable
        All values of a field (``layers`` may repeat).
    filename : str or None
        The uploaded file's name as the client sent it.
    model_names : list of str
        Models the server offers, best first: the first is used when the form names none.
    conv_layers : callable
        ``conv_layers(model)``: the model's conv layer names -> channel counts, or ``None`` if unknown.
    clusters : callable or None
        ``clusters(model)``: the model's channel clusters (layer -> channel
        lists, from its card) or ``None``; a ``LAYER:clusterN`` entry needs them.
        ``None`` (an uploaded model): no model has clusters.
    concepts : callable or None
        ``concepts(model)``: the card's ``concepts`` section or ``None``; a
        ``concept:NAME`` entry needs it (``concept_share`` / ``concept_count``
        fields choose how many of its channels).
    calibration : callable or None
        ``calibration(model)``: the card's ``evaluation.calibration`` section
        or ``None``; a ``ladder`` spaces its rungs on it.
    max_duration : float or None
        Longest segment (seconds) the server processes; a longer ``duration`` is refused.
    uploaded_model : str or None
        The name of a model uploaded with the job (``model_file``), checked
        already; the form must then not also name a registry model.
    model_sha256 : str
        The uploaded model's file hash (recorded in the recipes).
    outputs : Outputs or None
        What the server writes besides the WAVs (``save_model`` comes from the form).

    Raises
    ------
    SenseflosserError
        :class:`~senseflosser.errors.InputError` or :class:`~senseflosser.errors.RecipeError`.
    """
    model = _text(form, "model")
    if uploaded_model is not None:
        if model:
            raise FormError("send either model (a name from /api/models) or model_file (your own .keras), not both")
        model, model_names = uploaded_model, [uploaded_model]
    if not model:
        if not model_names:
            raise FormError("this server has no model installed; its operator must add one to its models folder")
        model = model_names[0]
    if model not in model_names:
        raise FormError(f"unknown model {_show(model)}; choose one of: {', '.join(model_names) or 'none'}")

    action = _text(form, "action")
    if not action:
        raise FormError(f"choose an action: {', '.join(names())}")
    get(action)  # an unknown action is refused before its parameters are read
    envelope_text = _text(form, "envelope") or None
    layer_values = [v for v in getlist("layers") if v is not None]
    if sum(len(v) for v in layer_values) > MAX_FIELD_CHARS * 4:
        raise FormError("layers is too long")
    offset = _seconds(form, "offset", allow_zero=True) or 0.0
    duration = _seconds(form, "duration", allow_zero=False)
    if duration is not None and max_duration is not None and duration > max_duration:
        raise FormError(f"duration may be at most {max_duration:g} seconds on this server; "
                        f"got {_show(_text(form, 'duration'))}")
    spec = build_job(
        model=model, model_sha256=model_sha256, action=action,
        magnitudes=_text(form, "magnitudes") or _text(form, "magnitude") or None,
        titrate=_flag(form, "titrate"), seed=_text(form, "seed") or None,
        layers=layer_values or None, conv_layers=conv_layers(model),
        clusters=None if clusters is None else clusters(model),
        concepts=None if concepts is None or not any("concept:" in v for v in layer_values) else concepts(model),
        concept_share=_text(form, "concept_share") or None, concept_count=_text(form, "concept_count") or None,
        offset=offset, duration=duration,
        envelope=envelope_text, params=params_from_fields(action, lambda key: _text(form, key) or None),
        outputs=replace(outputs or Outputs(), save_model=_flag(form, "save_model"), video=_flag(form, "video"),
                        activation_layer=_text(form, "activation_layer") or None),
        explain=",".join(v for v in getlist("explain") if v is not None)[:MAX_FIELD_CHARS] or None,
        ladder=_text(form, "ladder") or None,
        performance=_text(form, "performance", limit=PERFORMANCE_MAX_CHARS) or None,
        continuous=_flag(form, "performance_envelope"),
        calibration=None if calibration is None or not _text(form, "ladder") else calibration(model),
    )
    display, stem, ext = split_filename(filename)
    return JobRequest(spec=spec, filename=display, stem=stem, extension=ext, envelope_text=envelope_text)
