"""The job spec: one typed, frozen description of a flossing job, built once at the edge.

Every entry point (CLI flags, ``--recipe`` files, the web form, the original
tool's command lines, the map and re-run forms) turns what it was given into a
:class:`JobSpec` with :func:`build_job`; that is where every value is checked.
The queue carries :meth:`JobSpec.to_dict`; the worker and
:func:`senseflosser.render.floss_to_dir` take the spec and trust its types.

A spec holds one fully resolved :class:`~senseflosser.recipe.Recipe` per output
(canonical layer and channel entries, envelope points in seconds of the real
segment) and what to write besides the WAVs (:class:`Outputs`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from . import activations
from . import envelope as envelope_mod
from . import ladder as ladder_mod
from .actions import check, draw_seed, expand_clusters, get, parse_layers, split_entry
from .concept_selection import expand_concepts
from .errors import RecipeError
from .explanations import parse_explain
from .recipe import Recipe, recipe_document, recipes_from_dict

MAX_MAGNITUDES = 20
"""Most magnitudes one job may render."""

MAX_LAYERS = 64
"""Most layer entries one selection may name."""

__all__ = ["MAX_LAYERS", "MAX_MAGNITUDES", "JobSpec", "Outputs", "build_job", "job_from_recipe", "split_magnitudes"]


@dataclass(frozen=True)
class Outputs:
    """What a job writes besides one WAV and one recipe file per output.

    Attributes
    ----------
    original : bool
        The decoded input segment as ``<stem>_original.wav``.
    spectrograms : bool
        A PNG spectrogram beside each WAV.
    spectrograms_later : bool
        With ``spectrograms``: list each image in the manifest but do not draw
        it; whoever serves the files draws it from its WAV when first asked
        for (:func:`senseflosser.spectrogram.spectrogram_of_wav`), so a
        listener waits for the audio only.
    peaks : bool
        A ``.peaks.json`` waveform overview beside each WAV.
    save_model : bool
        Each flossed model as ``.keras``.
    stem : str or None
        Stem of the output names (``None``: the input file's).
    explain : tuple of str
        Listenable explanations of the recipes' channel set, in
        :data:`senseflosser.explanations.EXPLANATIONS` order (``solo``, ``mute``,
        ``difference``), written beside the flossed outputs (see
        :mod:`senseflosser.explanations`); empty for none.
    activations : bool
        Each output's activation frames as ``.frames`` (see :mod:`senseflosser.framesfile`).
    activation_layer : str or None
        The conv layer they come from (``None``: the most sensitive one, see
        :func:`senseflosser.activations.default_layer`).
    video : bool
        An MP4 of the visualiser, normal beside the last flossed output (implies ``activations``).
    """

    original: bool = False
    spectrograms: bool = False
    spectrograms_later: bool = False
    peaks: bool = False
    save_model: bool = False
    stem: str | None = None
    activations: bool = False
    activation_layer: str | None = None
    video: bool = False
    explain: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "explain", tuple(self.explain))  # a JSON list off the queue


@dataclass(frozen=True)
class JobSpec:
    """One flossing job: its recipes (one per output) and what to write.

    Attributes
    ----------
    recipes : tuple of Recipe
        Checked, one per flossed output, sharing model, action, seed, layers,
        parameters and segment.
    outputs : Outputs
    envelope : envelope.Shape or None
        An envelope shortcut (``ramp:``/``lfo:``) whose points wait for the
        audio's length (see :meth:`fixed`); ``None`` once the recipes hold
        the points, or for a job without an envelope.
    ladder : bool
        The recipes are the rungs of a ladder (:mod:`senseflosser.ladder`),
        lowest magnitude first.
    performance : ladder.Performance or None
        A knob path across the rungs, rendered as their crossfade (only with ``ladder``).
    """

    recipes: tuple[Recipe, ...]
    outputs: Outputs = field(default_factory=Outputs)
    envelope: envelope_mod.Shape | None = None
    ladder: bool = False
    performance: ladder_mod.Performance | None = None

    @property
    def base(self) -> Recipe:
        """The first recipe (what all share)."""
        return self.recipes[0]

    @property
    def magnitudes(self) -> tuple[float, ...]:
        return tuple(r.magnitude for r in self.recipes)

    @property
    def offset(self) -> float:
        return self.base.offset

    @property
    def duration(self) -> float | None:
        return self.base.duration

    @property
    def enveloped(self) -> bool:
        """Whether the magnitude follows an envelope (fixed or waiting for the audio's length)."""
        return self.envelope is not None or self.base.envelope is not None

    def fixed(self, seconds: float) -> JobSpec:
        """The spec for ``seconds`` of audio: an envelope shortcut becomes points, checked to lie within it.

        Raises
        ------
        RecipeError
            If an envelope point lies beyond the end of the audio.
        """
        if self.envelope is not None:
            points = self.envelope.fix(seconds)
            spec = replace(self, recipes=tuple(r.derive(envelope=points) for r in self.recipes), envelope=None)
        else:
            spec = self
        if spec.base.envelope is not None:
            envelope_mod.check_within(spec.base.envelope, seconds)
        if spec.performance is not None:
            spec.performance.check_within(seconds)
        return spec

    def for_model(self, name: str, sha256: str, conv_layers: Mapping[str, int | None]) -> JobSpec:
        """The spec for the model it names, once loaded: its id and file hash recorded, the layers checked against it.

        For an edge that checks the other values before loading the model (the CLI).

        Raises
        ------
        RecipeError
            If the selection names a layer or channel the model lacks.
        """
        if self.base.layers is not None:
            check(self.base.layers, conv_layers, default=(), model_name=name)
        if self.outputs.activation_layer is not None:
            activations.check_layer(self.outputs.activation_layer, conv_layers, model_name=name)
        return replace(self, recipes=tuple(r.derive(model=name, model_sha256=sha256) for r in self.recipes))

    def with_outputs(self, **changes: Any) -> JobSpec:
        """The same recipes, writing other files."""
        return replace(self, outputs=replace(self.outputs, **changes))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form the queue carries."""
        return {
            "recipes": [r.to_dict() for r in self.recipes],
            "outputs": asdict(self.outputs),
            "envelope": None if self.envelope is None else self.envelope.to_text(),
            **({"ladder": True} if self.ladder else {}),
            **({"performance": self.performance.to_dict(self.magnitudes)} if self.performance is not None else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_checked(cls, data: Mapping[str, Any]) -> JobSpec:
        """The spec :meth:`to_dict` wrote (off the queue, or a job's stored request): trusted, not checked again."""
        shape = data.get("envelope")
        perf = data.get("performance")
        return cls(
            recipes=tuple(Recipe.from_checked(r) for r in data["recipes"]),
            outputs=Outputs(**data.get("outputs") or {}),
            envelope=envelope_mod.parse(shape) if shape else None,
            ladder=bool(data.get("ladder")),
            performance=None if perf is None else ladder_mod.Performance(
                points=tuple((float(t), float(p)) for t, p in perf["points"]), continuous=bool(perf["continuous"])),
        )


def job_from_recipe(text: str, *, outputs: Outputs | None = None, model: str | None = None) -> JobSpec:
    """The spec of a recipe file (``--recipe``): its recipes, and its ladder and performance when it has them.

    Parameters
    ----------
    text : str
        A job-wide ``<stem>_recipe.json``, a per-output recipe file, or a
        performance's ``<stem>_performance.json``.
    outputs : Outputs or None, keyword-only
    model : str or None, keyword-only
        Another model id (a file) to run the recipes on.

    Raises
    ------
    RecipeError
    """
    data = recipe_document(text)
    recipes = recipes_from_dict(data)
    if model:
        recipes = [r.derive(model=model) for r in recipes]
    mags = [r.magnitude for r in recipes]
    perf = data.get("performance") if isinstance(data, Mapping) else None
    ladder = bool(isinstance(data, Mapping) and (data.get("ladder") or perf is not None))
    if ladder:
        ladder_mod.parse_rungs(len(mags))
        ladder_mod.check_nests(recipes[0].action)
    return JobSpec(recipes=tuple(recipes), outputs=outputs or Outputs(), ladder=ladder,
                   performance=None if perf is None else ladder_mod.performance_from_dict(perf, magnitudes=mags))


def split_magnitudes(text: Any) -> list[Any]:
    """The magnitudes of a comma list (``"0.01, 0.1"``) or a sequence, unchecked (a recipe checks each)."""
    if isinstance(text, str):
        return [p.strip() for p in text.split(",") if p.strip()]
    if isinstance(text, Sequence):
        return list(text)
    return [text]


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def build_job(
    *,
    model: str,
    model_sha256: str = "",
    action: Any,
    magnitudes: Any = None,
    titrate: bool = False,
    seed: Any = None,
    layers: Any = None,
    conv_layers: Mapping[str, int | None] | None = None,
    clusters: Mapping[str, Sequence[Sequence[int]]] | None = None,
    concepts: Mapping[str, Any] | None = None,
    concept_share: Any = None,
    concept_count: Any = None,
    offset: Any = 0.0,
    duration: Any = None,
    max_duration: float | None = None,
    envelope: Any = None,
    params: Mapping[str, Any] | None = None,
    seconds: float | None = None,
    outputs: Outputs | None = None,
    explain: Any = None,
    ladder: Any = None,
    performance: Any = None,
    continuous: bool = False,
    calibration: Mapping[str, Any] | None = None,
) -> JobSpec:
    """Check everything a job was given, once, and return its spec.

    Parameters
    ----------
    model, model_sha256 : str, keyword-only
        The model's id and file hash, recorded in each recipe.
    action : str, keyword-only
        A registered action.
    magnitudes : str or number or sequence or None, keyword-only
        One or more magnitudes (a comma list is split); ignored when ``titrate``.
    titrate : bool, keyword-only
        Use the action's default titration.
    seed : int or str or None, keyword-only
        ``None`` draws one (recorded in every recipe).
    layers : selection or None, keyword-only
        ``down:0,5,9,mid`` text or a sequence of entries; ``None``: the action's default.
    conv_layers : mapping or None, keyword-only
        The model's conv layer names -> channel counts; when given, the
        selection is checked against it (unknown layers and channels refused).
    clusters : mapping or None, keyword-only
        The model's channel clusters, layer name -> list of channel lists (its
        card's ``clusters.layers``): a ``down:cluster2`` entry becomes the
        channels of that cluster here, before anything else reads the
        selection, so the recipes record channel numbers. ``None``: the model
        has none (a cluster in the selection is refused).
    concepts : mapping or None, keyword-only
        The model card's ``concepts`` section: a ``concept:brightness`` entry
        becomes that concept's channels here (the card's checked selection, or
        its ranking at ``concept_share`` / ``concept_count``), so the recipes
        record channel numbers. ``None``: the model has none.
    concept_share, concept_count : keyword-only
        Share (0 to 1] of each layer's channels, or channels per layer, that
        a ``concept:NAME`` entry takes from its ranking (blank: the card's selection).
    offset, duration : keyword-only
        The audio segment in seconds (``duration=None``: to the end).
    max_duration : float or None, keyword-only
        Refuse a longer ``duration``.
    envelope : str or sequence or envelope.Shape or None, keyword-only
        The magnitude over time instead of ``magnitudes``: points
        (``"0:0,30:0.1"``) or ``ramp:A,B`` / ``lfo:LOW,HIGH,PERIOD``.
    params : mapping or None, keyword-only
        The action's declared parameters by name (text or typed values).
    seconds : float or None, keyword-only
        The segment's real length, when known: an envelope shortcut is then
        fixed to points now (else :meth:`JobSpec.fixed` does it later).
    outputs : Outputs or None, keyword-only
    explain : str or sequence or None, keyword-only
        ``"solo,mute,difference"`` (any of them): listenable explanations of
        the selection's channels, written beside the flossed outputs. The
        selection must name channels (``down:3,7``, a cluster or a concept).
    ladder : int or str or None, keyword-only
        Render a ladder of this many rungs (:mod:`senseflosser.ladder`)
        instead of ``magnitudes``: an action that nests, at one seed, the
        magnitudes spaced on ``calibration``'s scale.
    performance : str or sequence or None, keyword-only
        With ``ladder``: a knob path ``"t:p,..."`` (seconds : fractional rung
        position), rendered as the rungs' crossfade.
    continuous : bool, keyword-only
        With ``performance``: also render it as a continuous envelope.
    calibration : mapping or None, keyword-only
        The model card's ``evaluation.calibration`` section (``None``: none).

    Returns
    -------
    JobSpec

    Raises
    ------
    RecipeError
        Saying what is wrong and how to fix it.
    """
    spec = get(action)
    shape = None
    rungs = None
    if not _blank(performance) and _blank(ladder):
        raise RecipeError("a performance moves across a ladder's rungs: give ladder=K (the number of rungs) with it")
    if continuous and _blank(performance):
        raise RecipeError("the continuous render is of a performance: give a performance with it")
    if not _blank(ladder):
        if titrate or not _blank(magnitudes) or not _blank(envelope):
            raise RecipeError("a ladder chooses its own magnitudes: give either ladder=K or magnitudes, titrate "
                              "or an envelope, not both")
        rungs = ladder_mod.parse_rungs(ladder)
        magnitudes = list(ladder_mod.ladder_magnitudes(spec.name, rungs, calibration=calibration))
    if not _blank(envelope):
        if titrate or not _blank(magnitudes):
            raise RecipeError("an envelope sets the magnitude over time: give either an envelope or magnitudes "
                              "(or titrate), not both")
        shape = envelope_mod.parse(envelope)
        raw = [shape.peak]
    elif titrate:
        raw = list(spec.magnitude.titration)
    elif _blank(magnitudes):
        m = spec.magnitude
        raise RecipeError(f"give a magnitude from {m.min:g} to {m.max:g} ({m.meaning}), or titrate")
    else:
        raw = split_magnitudes(magnitudes)
        if not raw:
            raise RecipeError("give at least one magnitude")
        if len(raw) > MAX_MAGNITUDES:
            raise RecipeError(f"at most {MAX_MAGNITUDES} magnitudes at once, got {len(raw)}")
    layers = expand_concepts(layers, concepts, model_name=model, share=None if _blank(concept_share) else concept_share,
                             count=None if _blank(concept_count) else concept_count)
    entries = parse_layers(expand_clusters(layers, clusters, model_name=model))
    if entries is not None and len(entries) > MAX_LAYERS:
        raise RecipeError(f"at most {MAX_LAYERS} layers may be chosen, got {len(entries)}")
    if entries is not None and conv_layers is not None:
        check(entries, conv_layers, default=(), model_name=model)
    if outputs is not None and outputs.activation_layer is not None and conv_layers is not None:
        activations.check_layer(outputs.activation_layer, conv_layers, model_name=model)
    seed = draw_seed() if _blank(seed) else seed
    points = None
    if shape is not None:
        # The shape's magnitudes are checked once, as points of a recipe; fixing it later only interpolates them.
        probe = tuple((float(i), m) for i, m in enumerate(shape.magnitudes))
        points = probe if shape.kind != "points" else shape.points
    first = Recipe(model=model, model_sha256=model_sha256, action=spec.name, magnitude=raw[0], seed=seed,
                   layers=entries, offset=0.0 if _blank(offset) else offset, duration=None if _blank(duration)
                   else duration, envelope=points, params=params or ())
    if max_duration is not None and first.duration is not None and first.duration > max_duration:
        raise RecipeError(f"duration may be at most {max_duration:g} seconds here; got {first.duration:g}")
    recipes = [first] + [first.with_magnitude(m) for m in raw[1:]]
    mags = [r.magnitude for r in recipes]
    if len(set(mags)) != len(mags):
        raise RecipeError("each magnitude may appear only once")
    outputs = outputs or Outputs()
    if not _blank(explain):
        outputs = replace(outputs, explain=parse_explain(explain))
        if not entries or any(split_entry(e)[1] is None for e in entries):
            raise RecipeError("an explanation (solo, mute, difference) needs channels in the layer selection: "
                              f"e.g. 'down:3,7', 'down:cluster2' or 'concept:bass', got {', '.join(entries or ()) or 'none'}")
    perf = (None if _blank(performance)
            else ladder_mod.parse_performance(performance, rungs=rungs, continuous=continuous))
    job = JobSpec(recipes=tuple(recipes), outputs=outputs, envelope=None, ladder=rungs is not None,
                  performance=perf)
    if shape is not None and shape.kind != "points":
        job = replace(job, recipes=tuple(r.derive(envelope=None) for r in job.recipes), envelope=shape)
    if seconds is not None:
        if not math.isfinite(seconds) or seconds <= 0:
            raise RecipeError(f"the audio's length must be a positive number of seconds, got {seconds!r}")
        job = job.fixed(seconds)
    return job
