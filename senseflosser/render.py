"""One flossing job from file to files: the work the CLI and the web app share.

:func:`floss_to_dir` reads an audio segment, runs :func:`~senseflosser.pipeline.floss`
and writes WAVs, recipe JSON, optional spectrogram images and optional flossed
models into one folder, returning a manifest of what it wrote.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from . import audio as audio_io
from . import device
from . import envelope as envelope_mod
from .actions import conv_channels, worst_case
from .models import ModelRegistry
from .jsonfile import write_json
from .normal_cache import NormalCache, cache_key, link_or_copy
from .peaks import write_peaks
from .pipeline import Progress, floss
from .recipe import build_recipes
from .spectrogram import save_spectrogram

log = logging.getLogger(__name__)

_STEM_RE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_stem(name: str, *, default: str = "audio") -> str:
    """A file-name stem made only of safe characters (for names derived from user input)."""
    stem = _STEM_RE.sub("_", Path(str(name)).stem).strip("._-")[:80]
    return stem or default


def resolve_model(
    registry: ModelRegistry,
    model: str | tuple[str, keras.Model, str],
    *,
    allow_paths: bool = False,
    action: str | None = None,
) -> tuple[str, keras.Model, str, str | None]:
    """A model by registry name, path or as ``(name, model, sha256)``, ready for ``action``.

    For ``adversarial``, the universal direction stored beside the model's file
    is attached (see :mod:`senseflosser.actions.worst_case`).

    Returns
    -------
    name, model, sha256, note
        ``note`` says how to reproduce with a model that is not in the registry.
    """
    note = None
    if isinstance(model, tuple):
        name, net, sha = model
        note = f"model {name!r} is not in the registry: supply the same file (SHA-256 {sha}) with --model to reproduce"
        return name, net, sha, note
    name, net, sha = registry.resolve(model, allow_paths=allow_paths)
    if action == "adversarial" and worst_case.attached(net) is None:
        source = Path(model) if allow_paths and Path(model).is_file() else registry.path(name)
        worst_case.attach_from_file(net, source)
    return name, net, sha, note


def floss_to_dir(
    input_path: str | os.PathLike,
    *,
    registry: ModelRegistry,
    model: str | tuple[str, keras.Model, str],
    action: str,
    magnitudes: Sequence[float] | str | None = None,
    output_dir: str | os.PathLike,
    titrate: bool = False,
    seed: int | None = None,
    layers: Sequence[str] | str | None = None,
    offset: float = 0.0,
    duration: float | None = None,
    stem: str | None = None,
    save_model: bool = False,
    spectrograms: bool = False,
    write_original: bool = False,
    max_duration: float | None = None,
    allow_model_paths: bool = False,
    on_input: bool = False,
    envelope: str | Sequence | None = None,
    progress: Progress | None = None,
    peaks: bool = False,
    normal_cache: NormalCache | None = None,
) -> dict[str, Any]:
    """Floss one audio file and write the results into a folder.

    Parameters
    ----------
    input_path : str or os.PathLike
        Audio file (anything :func:`senseflosser.audio.load` reads).
    registry : ModelRegistry, keyword-only
        Where ``model`` is looked up.
    model : str or tuple, keyword-only
        Registry name (or a file path when ``allow_model_paths``), or an
        already loaded model as ``(name, model, sha256)`` (an uploaded one,
        which never enters the registry).
    action : str, keyword-only
        A name from the action registry.
    magnitudes : sequence of float or str, keyword-only
        One flossed output per magnitude, each from the pristine model.
    titrate : bool, keyword-only
        Use the action's default titration instead of ``magnitudes``.
    output_dir : str or os.PathLike, keyword-only
        Created if needed.
    seed : int or None, keyword-only
        ``None`` draws one; it is recorded in every recipe.
    layers, offset, duration : keyword-only
        See :class:`~senseflosser.recipe.Recipe`.
    stem : str or None, keyword-only
        Stem of the output names (default: the input's).
    save_model : bool, keyword-only
        Also write ``<model>_<action>_<magnitude>.keras`` for each magnitude.
    spectrograms : bool, keyword-only
        Also write a PNG spectrogram beside each WAV.
    write_original : bool, keyword-only
        Also write the decoded input segment (mono, 22050 Hz) as ``<stem>_original.wav``.
    max_duration : float or None, keyword-only
        Refuse longer segments.
    allow_model_paths : bool, keyword-only
        Let ``model`` be a file path (the CLI allows it; the web app does not).
    on_input : bool, keyword-only
        ``adversarial`` only: find the direction on this audio instead of
        using the model's stored universal one.
    envelope : str or sequence or None, keyword-only
        The magnitude over the output's time instead of ``magnitudes``: points
        (``"0:0,30:0.1,60:0"``) or ``"ramp:A,B"`` / ``"lfo:LOW,HIGH,PERIOD"``
        (see :mod:`senseflosser.envelope`); the recipe records the points.
    progress : callable or None, keyword-only
        ``progress(fraction, message)``.
    peaks : bool, keyword-only
        Also write ``<stem>_<label>.peaks.json`` (see :mod:`senseflosser.peaks`) beside each WAV.
    normal_cache : NormalCache or None, keyword-only
        Reuse the normal output (and the files of the normal and original)
        of an earlier run on the same segment and model, and store this
        run's for the next (see :mod:`senseflosser.normal_cache`).

    Returns
    -------
    dict
        The manifest (also written as ``manifest.json``): file names relative
        to ``output_dir``, recipes and metrics.
    """
    name, net, sha, note = resolve_model(registry, model, allow_paths=allow_model_paths, action=action)
    settings = dict(
        model=name, model_sha256=sha, action=action, magnitudes=magnitudes, titrate=titrate, seed=seed,
        layers=layers, conv_layers=conv_channels(net), offset=offset, duration=duration,
        max_duration=max_duration, on_input=on_input,
    )
    if envelope is not None:  # checked now; its points are fixed once the audio's length is known
        build_recipes(**settings, envelope=envelope_mod.resolve(envelope, duration or 3600.0))
    else:
        recipes = build_recipes(**settings)
    y = audio_io.load(input_path, offset=offset, duration=duration, max_duration=max_duration)
    if envelope is not None:
        points = envelope_mod.resolve(envelope, len(y) / audio_io.SAMPLE_RATE)
        envelope_mod.check_within(points, len(y) / audio_io.SAMPLE_RATE)
        recipes = build_recipes(**settings, envelope=points)
    base, mags, seed = recipes[0], [r.magnitude for r in recipes], recipes[0].seed
    found = worst_case.attached(net) if base.action == "adversarial" and not base.on_input else None
    direction_sha = found[1] if found else None
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = safe_stem(stem or Path(input_path).name)

    def sub(lo: float, hi: float) -> Progress | None:
        if progress is None:
            return None
        return lambda f, msg: progress(lo + (hi - lo) * f, msg)

    key = cached = None
    if normal_cache is not None:
        key = cache_key(y, sha, chunking="envelope" if envelope is not None else "plain")
        cached = normal_cache.get(key)
    result = floss(y, net, recipes, progress=sub(0.0, 0.85), keep_models=save_model,
                   normal=(cached.raw, cached.metrics) if cached else None)
    if progress:
        progress(0.85, "writing files")
    written: dict[str, dict[str, Path]] = {}

    def wav(label: str, samples: np.ndarray) -> dict[str, Any]:
        try:
            files = _reuse(cached, label, out_dir, stem, spectrograms, peaks) if label in ("original", "normal") else None
        except OSError:  # the cached files were deleted meanwhile: write them afresh
            files = None
        if files is not None:
            written[label] = files
            return _entry(files)
        files = {".wav": audio_io.write_wav(out_dir / f"{stem}_{label}.wav", samples)}
        if spectrograms:
            files[".png"] = save_spectrogram(samples, out_dir / f"{stem}_{label}.png")
        if peaks:
            files[".peaks.json"] = write_peaks(samples, out_dir / f"{stem}_{label}.peaks.json")
        written[label] = files
        return _entry(files)

    manifest: dict[str, Any] = {
        "input": Path(input_path).name,
        "stem": stem,
        "seed": seed,
        "recipe": {**base.to_dict(), "magnitude": None, "magnitudes": mags, **({"model_note": note} if note else {})},
        "adversarial_direction_sha256": direction_sha,
        "device": device.describe(),
        "seconds": None,
        "duration": len(y) / audio_io.SAMPLE_RATE,
        "sample_rate": audio_io.SAMPLE_RATE,
    }
    if write_original:
        peak = float(np.max(np.abs(y)))
        manifest["original"] = wav("original", y if peak <= 1.0 else y / peak)
    manifest["normal"] = {**wav("normal", result.normal), "metrics": result.normal_metrics}
    manifest["flossed"] = []
    for i, out in enumerate(result.flossed):
        entry = {"magnitude": out.recipe.magnitude, **wav(out.recipe.slug, out.audio), "metrics": out.metrics,
                 "recipe": out.recipe.to_dict(), "model": None}
        recipe_file = out_dir / f"{stem}_{out.recipe.slug}.json"
        write_json(recipe_file, {"recipe": out.recipe.to_dict(), "metrics": out.metrics,
                                 "output": entry["file"], "device": manifest["device"],
                                 **({"model_note": note} if note else {})})
        entry["recipe_file"] = recipe_file.name
        if save_model and out.model is not None:
            model_file = out_dir / f"{safe_stem(name, default='model')}_{out.recipe.slug}.keras"
            out.model.save(model_file)
            entry["model"] = model_file.name
        manifest["flossed"].append(entry)
        if progress:
            progress(0.85 + 0.15 * (i + 1) / len(result.flossed), f"wrote output {i + 1} of {len(result.flossed)}")
    manifest["recipe_file"] = write_json(out_dir / f"{stem}_recipe.json", manifest["recipe"]).name
    manifest["seconds"] = result.seconds
    manifest["normal_cached"] = cached is not None
    if normal_cache is not None and result.normal_raw is not None:
        # Kept with these outputs (and deleted with them); a hit is stored again, so the newest run serves.
        normal_cache.put(key, result.normal_raw, result.normal_metrics,
                         {label: files for label, files in written.items() if label in ("original", "normal")},
                         home=out_dir / NORMAL_HOME)
    write_json(out_dir / "manifest.json", manifest)
    return manifest


NORMAL_HOME = ".normal"
"""Folder in ``output_dir`` where the normal-output cache keeps this run's raw normal output."""

_ENTRY_KEYS = {".wav": "file", ".png": "spectrogram", ".peaks.json": "peaks"}


def _entry(files: dict[str, Path]) -> dict[str, Any]:
    return {_ENTRY_KEYS[suffix]: path.name for suffix, path in files.items()}


def _reuse(cached, label: str, out_dir: Path, stem: str, spectrograms: bool, peaks: bool) -> dict[str, Path] | None:
    """The files of ``label`` from a normal-cache entry, linked into ``out_dir`` (``None`` if it lacks some)."""
    wanted = [".wav"] + ([".png"] if spectrograms else []) + ([".peaks.json"] if peaks else [])
    if cached is None or not all(s in cached.files.get(label, {}) for s in wanted):
        return None
    files = {}
    for suffix in wanted:
        files[suffix] = out_dir / f"{stem}_{label}{suffix}"
        link_or_copy(cached.files[label][suffix], files[suffix])
    return files
