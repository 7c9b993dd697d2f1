"""One flossing job from file to files: the work the CLI and the web app share.

:func:`floss_to_dir` reads an audio segment, runs :func:`~senseflosser.pipeline.floss`
and writes WAVs, recipe JSON, optional spectrogram images and optional flossed
models into one folder, returning a manifest of what it wrote.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from . import activations, device, explanations, framesfile
from . import audio as audio_io
from .jobspec import JobSpec
from .jsonfile import write_json
from .ladder import RULE
from .models import ModelRegistry, conv_channels
from .normal_cache import NormalCache, cache_key, link_or_copy
from .peaks import write_peaks
from .performance import perform_to_dir
from .pipeline import Progress, fit_to_scale, floss, measure_distances
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
) -> tuple[str, keras.Model, str, Path | None, str | None]:
    """A model by registry name, path or as ``(name, model, sha256)``.

    Returns
    -------
    name, model, sha256, source, note
        ``source`` is the model's file (``None`` for one given in memory), where
        an action's per-model data lies; ``note`` says how to reproduce with a
        model that is not in the registry.
    """
    if isinstance(model, tuple):
        name, net, sha = model
        note = f"model {name!r} is not in the registry: supply the same file (SHA-256 {sha}) with --model to reproduce"
        return name, net, sha, None, note
    name, net, sha = registry.resolve(model, allow_paths=allow_paths)
    source = Path(model) if allow_paths and Path(model).is_file() else registry.path(name)
    return name, net, sha, source, None


def floss_to_dir(
    spec: JobSpec,
    input_path: str | os.PathLike,
    *,
    net: keras.Model,
    output_dir: str | os.PathLike,
    source: str | os.PathLike | None = None,
    audio: np.ndarray | None = None,
    max_duration: float | None = None,
    model_note: str | None = None,
    progress: Progress | None = None,
    normal_cache: NormalCache | None = None,
    card: dict[str, Any] | None = None,
    on_playable: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Floss one audio file as ``spec`` says and write the results into a folder.

    Parameters
    ----------
    spec : JobSpec
        The job, checked where it was built (:func:`senseflosser.jobspec.build_job`);
        nothing in it is checked again here.
    input_path : str or os.PathLike
        Audio file (anything :func:`senseflosser.audio.load` reads); its name
        gives the output stem unless ``spec.outputs.stem`` does.
    net : keras.Model, keyword-only
        The pristine model the recipes name (never mutated).
    output_dir : str or os.PathLike, keyword-only
        Created if needed.
    source : path or None, keyword-only
        The model's file, beside which per-model data of an action lies.
    audio : np.ndarray or None, keyword-only, shape (n_samples,)
        The segment already decoded (the CLI decodes it to fix the spec); read from ``input_path`` if ``None``.
    max_duration : float or None, keyword-only
        Refuse longer segments.
    model_note : str or None, keyword-only
        How to reproduce with a model that is not in the registry (recorded in the recipe files).
    progress : callable or None, keyword-only
        ``progress(fraction, message)``.
    normal_cache : NormalCache or None, keyword-only
        Reuse the normal output (and the files of the normal and original)
        of an earlier run on the same segment and model, and store this
        run's for the next (see :mod:`senseflosser.normal_cache`).
    card : dict or None, keyword-only
        The model's card: its sensitivity map names the layer activation
        frames come from when the spec names none.
    on_playable : callable or None, keyword-only
        Called once the audio a listener waits for is written, before the
        rest (distances, peaks, activation frames, recipes, manifest), with
        ``{"original": {"file": name} or None, "normal": {"file": name},
        "flossed": [{"file": name, "magnitude": m}, ...]}`` (names relative to
        ``output_dir``). Without it the distances are measured before any file
        is written. The files are the same either way.

    Returns
    -------
    dict
        The manifest (also written as ``manifest.json``): file names relative
        to ``output_dir``, recipes and metrics.
    """
    y = audio if audio is not None else audio_io.load(input_path, offset=spec.offset, duration=spec.duration,
                                                      max_duration=max_duration)
    spec = spec.fixed(len(y) / audio_io.SAMPLE_RATE)
    recipes = list(spec.recipes)
    base, mags, seed = spec.base, list(spec.magnitudes), spec.base.seed
    sha = base.model_sha256
    opts = spec.outputs
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = safe_stem(opts.stem or Path(input_path).name)
    note = model_note

    def sub(lo: float, hi: float) -> Progress | None:
        if progress is None:
            return None
        return lambda f, msg: progress(lo + (hi - lo) * f, msg)

    explained = (explanations.explanation_recipes(net, base.layers, model_name=base.model, model_sha256=sha,
                                                  seed=seed, offset=base.offset, duration=base.duration)
                 if opts.explain else {})
    extra = explanations.to_render(opts.explain, explained) if opts.explain else []
    layer = None
    if opts.activations or opts.video:
        layer = opts.activation_layer or activations.default_layer(net, card)
    key = cached = None
    if normal_cache is not None:
        chunking = "envelope" if base.envelope is not None else "plain"
        key = cache_key(y, sha, chunking=chunking if layer is None else f"{chunking}|frames:{layer}")
        cached = normal_cache.get(key)
        if cached is not None and layer is not None and framesfile.SUFFIX not in cached.files.get("normal", {}):
            cached = None  # the normal pass must run to record the normal's frames
    # The explanations' renders share the job's pass (and its normal output).
    result = floss(y, net, recipes + [explained[n] for n in extra], progress=sub(0.0, 0.85),
                   keep_models=opts.save_model, normal=(cached.raw, cached.metrics) if cached else None,
                   source=source, activation_layer=layer, measure=on_playable is None)
    rendered = {n: out.raw for n, out in zip(extra, result.flossed[len(recipes):])}
    del result.flossed[len(recipes):]
    if progress:
        progress(0.85, "writing files")
    written: dict[str, dict[str, Path]] = {}

    basis = None
    if layer is not None:  # the principal axes of the normal's frames, shared by every output's file
        basis = (framesfile.read(cached.files["normal"][framesfile.SUFFIX]).basis if cached
                 else framesfile.pca_basis(result.activations[0]))
    draw_now = opts.spectrograms and not opts.spectrograms_later

    early: dict[str, tuple[dict[str, Path], bool]] = {}

    def audio_file(label: str, samples: np.ndarray) -> tuple[dict[str, Path], bool]:
        """The label's WAV, and whether its other files came with it (linked from the normal cache)."""
        kept = (framesfile.SUFFIX,) if label == "normal" and layer is not None else ()
        try:
            files = (_reuse(cached, label, out_dir, stem, draw_now, opts.peaks, kept)
                     if label in ("original", "normal") else None)
        except OSError:  # the cached files were deleted meanwhile: write them afresh
            files = None
        if files is not None:
            return files, True
        return {".wav": audio_io.write_wav(out_dir / f"{stem}_{label}.wav", samples)}, False

    def wav(label: str, samples: np.ndarray, frames: activations.Frames | None = None, *,
            picture: bool = True) -> dict[str, Any]:
        files, reused = early.pop(label, None) or audio_file(label, samples)
        if not reused:
            if draw_now and picture:
                files[".png"] = save_spectrogram(samples, out_dir / f"{stem}_{label}.png")
            if opts.peaks:
                files[".peaks.json"] = write_peaks(samples, out_dir / f"{stem}_{label}.peaks.json")
            if frames is not None:
                files[framesfile.SUFFIX] = framesfile.write(frames, out_dir / f"{stem}_{label}{framesfile.SUFFIX}",
                                                            basis=basis)
        written[label] = files
        entry = _entry(files)
        if opts.spectrograms_later and opts.spectrograms and picture:
            entry["spectrogram"] = f"{stem}_{label}.png"  # drawn from the WAV when first asked for
            entry["spectrogram_later"] = True
        return entry

    manifest: dict[str, Any] = {
        "input": Path(input_path).name,
        "stem": stem,
        "seed": seed,
        "recipe": {**base.to_dict(), "magnitude": None, "magnitudes": mags, **({"model_note": note} if note else {}),
                   **({"ladder": True} if spec.ladder else {}),
                   **({"performance": spec.performance.to_dict(mags)} if spec.performance is not None else {})},
        **(result.provenance[0] if result.provenance else {}),
        "device": device.describe(),
        "seconds": None,
        "duration": len(y) / audio_io.SAMPLE_RATE,
        "sample_rate": audio_io.SAMPLE_RATE,
    }
    original = None
    if opts.original:
        peak = float(np.max(np.abs(y)))
        original = y if peak <= 1.0 else y / peak
    if on_playable is not None:  # the audio first: a listener waits for nothing else
        if original is not None:
            early["original"] = audio_file("original", original)
        early["normal"] = audio_file("normal", result.normal)
        for out in result.flossed[:len(recipes)]:
            early[out.recipe.slug] = audio_file(out.recipe.slug, out.audio)
        on_playable({"original": {"file": early["original"][0][".wav"].name} if original is not None else None,
                     "normal": {"file": early["normal"][0][".wav"].name},
                     "flossed": [{"file": early[out.recipe.slug][0][".wav"].name, "magnitude": out.recipe.magnitude}
                                 for out in result.flossed[:len(recipes)]]})
        measure_distances(result)
    if original is not None:
        manifest["original"] = wav("original", original)
    frames = result.activations or [None] * (1 + len(recipes) + len(extra))
    if layer is not None:
        manifest["activations"] = {"layer": layer, "format": f"SFAF {framesfile.VERSION}",
                                   "frame_rate": audio_io.SAMPLE_RATE / framesfile.HOP}
    manifest["normal"] = {**wav("normal", result.normal, frames[0]), "metrics": result.normal_metrics}
    manifest["flossed"] = []
    for i, out in enumerate(result.flossed):
        # A ladder's rungs lie a few dB apart: they are heard (live), not pictured.
        entry = {"magnitude": out.recipe.magnitude,
                 **wav(out.recipe.slug, out.audio, frames[i + 1], picture=not spec.ladder),
                 "metrics": out.metrics, "recipe": out.recipe.to_dict(), "model": None}
        recipe_file = out_dir / f"{stem}_{out.recipe.slug}.json"
        write_json(recipe_file, {"recipe": out.recipe.to_dict(), "metrics": out.metrics,
                                 "output": entry["file"], "device": manifest["device"],
                                 **result.provenance[i], **({"model_note": note} if note else {})})
        entry["recipe_file"] = recipe_file.name
        if opts.save_model and out.model is not None:
            model_file = out_dir / f"{safe_stem(base.model, default='model')}_{out.recipe.slug}.keras"
            out.model.save(model_file)
            entry["model"] = model_file.name
        manifest["flossed"].append(entry)
        if progress:
            share = 0.05 if opts.video else 0.15  # the video takes the rest
            progress(0.85 + share * (i + 1) / len(result.flossed), f"wrote output {i + 1} of {len(result.flossed)}")
    if opts.explain:
        # mute and solo are renders of the pass, with their frames; difference is normal - mute, with none
        explained_frames = dict(zip(extra, frames[1 + len(recipes):]))
        manifest["explanations"] = []
        for name, made in explanations.assemble(opts.explain, explained, result.normal_raw, rendered).items():
            samples, levels = fit_to_scale(made["audio"])
            recipe = made["recipe"].to_dict() if made["recipe"] is not None else None
            entry = {"explanation": name, **wav(name, samples, explained_frames.get(name)), "metrics": levels,
                     "recipe": recipe, "recipe_file": None}
            if recipe is not None:
                entry["recipe_file"] = write_json(out_dir / f"{stem}_{name}.json", {
                    "explanation": name, "recipe": recipe, "output": entry["file"],
                    "note": explanations.NOTES[name], "device": manifest["device"]}).name
            manifest["explanations"].append(entry)
    if spec.ladder:
        manifest["ladder"] = {"rungs": len(mags), "magnitudes": mags, "rule": RULE}
    if spec.performance is not None:
        manifest["performance"] = perform_to_dir(
            spec.performance, audio=y, net=net, base=base, magnitudes=mags, out_dir=out_dir, stem=stem,
            rung_files=[out_dir / f["file"] for f in manifest["flossed"]], recipe=manifest["recipe"],
            peaks=opts.peaks, source=source)
    if opts.video:
        from .video import render_job_video

        if progress:
            progress(0.9, "rendering the video")
        manifest["video"] = render_job_video(manifest, out_dir).name
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


def floss_file(
    spec: JobSpec,
    input_path: str | os.PathLike,
    *,
    registry: ModelRegistry,
    output_dir: str | os.PathLike,
    model: str | tuple[str, keras.Model, str] | None = None,
    allow_model_paths: bool = False,
    max_duration: float | None = None,
    progress: Progress | None = None,
    normal_cache: NormalCache | None = None,
    audio: np.ndarray | None = None,
    on_playable: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Load the model a spec names, decode its segment once, and :func:`floss_to_dir`.

    Parameters
    ----------
    spec : JobSpec
        Checked; its model id names a registry model (or a file, when
        ``allow_model_paths``) unless ``model`` is given.
    input_path : str or os.PathLike
    registry : ModelRegistry, keyword-only
    output_dir : str or os.PathLike, keyword-only
    model : str or (name, keras.Model, sha256) or None, keyword-only
        The model to use instead of the one the spec names (an uploaded one, which never enters the registry).
    allow_model_paths : bool, keyword-only
        Let the model be a file path (the CLI allows it; the web app does not).
    max_duration, progress, normal_cache, on_playable : keyword-only
        See :func:`floss_to_dir`.
    audio : np.ndarray or None, keyword-only, shape (n_samples,)
        The spec's segment of ``input_path``, already decoded (the web app decodes it when the upload
        is checked); decoded here if ``None``.

    Returns
    -------
    dict
        The manifest.
    """
    name, net, sha, source, note = resolve_model(registry, spec.base.model if model is None else model,
                                                 allow_paths=allow_model_paths)
    spec = spec.for_model(name, sha, conv_channels(net))
    y = audio if audio is not None else audio_io.load(input_path, offset=spec.offset, duration=spec.duration,
                                                      max_duration=max_duration)
    card = None
    if (spec.outputs.activations or spec.outputs.video) and name in registry.names() and source == registry.path(name):
        card = registry.card(name)  # its sensitivity map names the default layer of the frames
    return floss_to_dir(spec, input_path, net=net, output_dir=output_dir, source=source, audio=y,
                        model_note=note, progress=progress, normal_cache=normal_cache, card=card,
                        on_playable=on_playable)


NORMAL_HOME = ".normal"
"""Folder in ``output_dir`` where the normal-output cache keeps this run's raw normal output."""

_ENTRY_KEYS = {".wav": "file", ".png": "spectrogram", ".peaks.json": "peaks", framesfile.SUFFIX: "activations"}


def _entry(files: dict[str, Path]) -> dict[str, Any]:
    return {_ENTRY_KEYS[suffix]: path.name for suffix, path in files.items()}


def _reuse(cached, label: str, out_dir: Path, stem: str, spectrograms: bool, peaks: bool,
           extra: tuple[str, ...] = ()) -> dict[str, Path] | None:
    """The files of ``label`` from a normal-cache entry, linked into ``out_dir`` (``None`` if it lacks some)."""
    wanted = [".wav"] + ([".png"] if spectrograms else []) + ([".peaks.json"] if peaks else []) + list(extra)
    if cached is None or not all(s in cached.files.get(label, {}) for s in wanted):
        return None
    files = {}
    for suffix in wanted:
        files[suffix] = out_dir / f"{stem}_{label}{suffix}"
        link_or_copy(cached.files[label][suffix], files[suffix])
    return files
