"""The public JSON form of jobs: what ``GET /api/jobs/<id>`` and ``GET /api/maps/<id>`` answer.

Built from a job's stored state (its request spec and, once done, its manifest);
nothing here reads the request or touches files.
"""

from __future__ import annotations

import hashlib
import shlex
from pathlib import PurePosixPath
from typing import Any

from flask import current_app, url_for

from senseflosser import envelope
from senseflosser.actions import get
from senseflosser.jobspec import JobSpec


def state_version(state: dict) -> str:
    """A short tag that changes whenever anything a status answer shows of a job changes."""
    seen = (state["state"], state.get("position"), round(float(state.get("progress") or 0.0), 3),
            state.get("message"), state.get("error"), state.get("finished"))
    return hashlib.sha1(repr(seen).encode()).hexdigest()[:12]


def map_view(state: dict) -> dict[str, Any]:
    """The public form of a map job (``GET /api/maps/<id>``): its state and, once done, the map."""
    job_id = state["id"]
    spec = state["request"]
    manifest = state.get("manifest") if state["state"] == "done" else None
    view: dict[str, Any] = {
        "id": job_id, "state": state["state"],
        "position": state.get("position") if state["state"] == "queued" else None,
        "progress": state.get("progress", 0.0), "message": state.get("message"), "error": state.get("error"),
        "filename": spec.get("filename"), "model": spec.get("model"),
        "action": JobSpec.from_checked(spec["spec"]).base.action, "seeds": spec.get("seeds"), "map": None,
        "files": None,
    }
    if manifest and isinstance(manifest.get("map"), dict):
        report = dict(manifest["map"])
        files = report.pop("files", {}) or {}
        view["map"] = report
        view["files"] = {kind: (file_urls(job_id, name) or {}).get("url") for kind, name in files.items()}
    return view


def manifest_entries(manifest: dict) -> list[Any]:
    """Every output entry of a job's manifest (each may name a WAV, its spectrogram, peaks, recipe, model)."""
    perf = manifest.get("performance")
    return [manifest.get("original"), manifest.get("normal"), *(manifest.get("flossed") or []),
            *(manifest.get("explanations") or []), perf, perf.get("continuous") if isinstance(perf, dict) else None]


def manifest_files(manifest: dict | None) -> set[str]:
    """Every file name a finished job's manifest lists (the only names the file route serves)."""
    names: set[str] = set()
    if not manifest:
        return names
    for entry in manifest_entries(manifest):
        if isinstance(entry, dict):
            for key in ("file", "spectrogram", "peaks", "activations", "recipe_file", "model"):
                if isinstance(entry.get(key), str):
                    names.add(entry[key])
    for key in ("recipe_file", "video"):
        if isinstance(manifest.get(key), str):
            names.add(manifest[key])
    report = manifest.get("map")
    if isinstance(report, dict) and isinstance(report.get("files"), dict):
        names.update(n for n in report["files"].values() if isinstance(n, str))
    return {n for n in names if n == PurePosixPath(n).name and not n.startswith(".") and "\\" not in n}


def playable_files(playable: dict) -> set[str]:
    """The WAV names a running job's ``playable.json`` lists (served before it is done)."""
    entries = [playable.get("original"), playable.get("normal"), *(playable.get("flossed") or [])]
    names = {e["file"] for e in entries if isinstance(e, dict) and isinstance(e.get("file"), str)}
    return {n for n in names if n == PurePosixPath(n).name and not n.startswith(".") and n.endswith(".wav")}


def drawn_later(manifest: dict | None, name: str) -> str | None:
    """The WAV whose spectrogram ``name`` is, if the job listed it to be drawn when first asked for."""
    for entry in manifest_entries(manifest):
        if isinstance(entry, dict) and entry.get("spectrogram") == name and entry.get("spectrogram_later"):
            return entry.get("file")
    return None


def file_urls(job_id: str, name: str | None) -> dict[str, str] | None:
    if not name:
        return None
    return {
        "url": url_for("api.job_file", job_id=job_id, name=name),
        "download_url": url_for("api.job_file", job_id=job_id, name=name, download=1),
    }


def output_entry(job_id: str, entry: dict) -> dict[str, Any]:
    urls = file_urls(job_id, entry.get("file")) or {}
    spectrogram = entry.get("spectrogram")
    return {
        **urls,
        "spectrogram": url_for("api.job_file", job_id=job_id, name=spectrogram) if spectrogram else None,
        "peaks": url_for("api.job_file", job_id=job_id, name=entry["peaks"]) if entry.get("peaks") else None,
        "activations": (url_for("api.job_file", job_id=job_id, name=entry["activations"])
                        if entry.get("activations") else None),
        "metrics": entry.get("metrics"),
    }


def cli_command(request_spec: dict, manifest: dict | None) -> str:
    """The command line that reproduces a job with the CLI (flags from the action's declared parameters)."""
    job = JobSpec.from_checked(request_spec["spec"])
    base = job.base
    model = request_spec.get("model_filename") if request_spec.get("model_file") else base.model
    parts = ["senseflosser", "floss", "-i", request_spec["filename"], "-m", model, "-a", base.action]
    if base.envelope is not None:
        parts += ["--envelope", envelope.to_text(base.envelope)]
    elif job.ladder:
        parts += ["--ladder", str(len(job.recipes))]
        if job.performance is not None:
            parts += ["--performance", job.performance.to_text()]
            parts += ["--performance-envelope"] if job.performance.continuous else []
    elif len(job.recipes) == 1:
        parts += ["-g", repr(base.magnitude)]
    else:
        parts += ["--magnitudes", ",".join(repr(m) for m in job.magnitudes)]
    parts += ["--seed", str(base.seed)]
    if base.layers:
        parts += ["--layers", ",".join(base.layers)]
    if base.offset:
        parts += ["--offset", repr(base.offset)]
    if base.duration is not None:
        parts += ["--duration", repr(base.duration)]
    spec = get(base.action)
    for name, value in base.params:
        param = spec.param(name)
        if value != param.default:
            parts += [param.flags[0]] if param.type == "bool" else [param.flags[0], str(value) if isinstance(value, str)
                                                                    else repr(value)]
    if job.outputs.save_model:
        parts.append("--save-model")
    if job.outputs.explain:
        parts += ["--explain", ",".join(job.outputs.explain)]
    parts.append("--spectrograms")
    if job.outputs.activation_layer:
        parts += ["--activation-layer", job.outputs.activation_layer]
    if job.outputs.video:
        parts.append("--video")
    return shlex.join(parts)


def request_summary(request_spec: dict) -> dict[str, Any]:
    """What a job was asked for, read off its spec (``request`` in the job's view)."""
    job = JobSpec.from_checked(request_spec["spec"])
    base = job.base
    return {"model": base.model, "action": base.action, "magnitudes": list(job.magnitudes), "seed": base.seed,
            "layers": list(base.layers) if base.layers is not None else None, "offset": base.offset,
            "duration": base.duration, "params": dict(base.params),
            "envelope": [list(p) for p in base.envelope] if base.envelope is not None else None,
            "save_model": job.outputs.save_model, "explain": list(job.outputs.explain),
            "ladder": len(job.recipes) if job.ladder else None,
            "performance": [list(p) for p in job.performance.points] if job.performance is not None else None,
            "performance_envelope": bool(job.performance is not None and job.performance.continuous)}


def performance_view(job_id: str, entry: dict) -> dict[str, Any]:
    """A ladder job's performance output: the crossfade's files, its path, and its continuous render's SNR."""
    view = {**output_entry(job_id, entry), "points": entry.get("points"), "rule": entry.get("rule"),
            "recipe_url": (file_urls(job_id, entry.get("recipe_file")) or {}).get("download_url")}
    cont = entry.get("continuous")
    if cont:
        view["continuous"] = {**output_entry(job_id, cont), "envelope": cont.get("envelope")}
    return view


def job_view(state: dict, *, playable: dict | None = None) -> dict[str, Any]:
    """The public form of a job's state (``GET /api/jobs/<id>``).

    ``playable``: a running job's ``playable.json``; its audio is then listed
    under ``outputs`` (no metrics, peaks or images yet) with ``playable`` true.
    """
    job_id = state["id"]
    spec = state["request"]
    manifest = state.get("manifest") if state["state"] == "done" else None
    ttl = current_app.config["RESULT_TTL_S"]
    asked = request_summary(spec)
    recipe = {k: asked[k] for k in ("model", "action", "magnitudes", "seed", "layers", "offset", "duration", "params")}
    if manifest and isinstance(manifest.get("recipe"), dict):
        recipe = {k: v for k, v in manifest["recipe"].items() if k != "magnitude"}
    view: dict[str, Any] = {
        "id": job_id,
        "state": state["state"],
        "page_url": url_for("pages.job_page", job_id=job_id),
        "position": state.get("position") if state["state"] == "queued" else None,
        "progress": state.get("progress", 0.0),
        "message": state.get("message"),
        "error": state.get("error"),
        "filename": spec.get("filename"),
        "request": asked,
        "created": state.get("created"),
        "started": state.get("started"),
        "finished": state.get("finished"),
        "expires": state["finished"] + ttl if state.get("finished") else None,
        "recipe": recipe,
        "cli": cli_command(spec, manifest),
        # The audio is written first: a running job is playable once it lists it, a done one always is.
        "playable": manifest is not None or playable is not None,
        "outputs": None,
    }
    if manifest is None and playable is not None:
        view["outputs"] = {
            "original": output_entry(job_id, playable["original"]) if playable.get("original") else None,
            "normal": output_entry(job_id, playable.get("normal") or {}),
            "flossed": [{"magnitude": f.get("magnitude"), **output_entry(job_id, f)}
                        for f in playable.get("flossed") or []],
            "explanations": [],
            "complete": False,
        }
    if spec.get("model_file"):
        view["model_upload"] = {
            "filename": spec.get("model_filename"), "sha256": spec.get("model_sha256"),
            "parameters": spec.get("model_parameters"),
            "note": "your own model: supply the same .keras file again to reproduce these outputs",
        }
    if manifest:
        flossed = []
        for entry in manifest.get("flossed") or []:
            item = {"magnitude": entry.get("magnitude"), **output_entry(job_id, entry)}
            recipe_urls = file_urls(job_id, entry.get("recipe_file"))
            item["recipe_url"] = recipe_urls["download_url"] if recipe_urls else None
            if entry.get("model"):
                item["model"] = file_urls(job_id, entry["model"])["download_url"]
            flossed.append(item)
        outputs: dict[str, Any] = {
            "original": output_entry(job_id, manifest["original"]) if manifest.get("original") else None,
            "normal": output_entry(job_id, manifest["normal"]),
            "flossed": flossed,
            "recipe": (file_urls(job_id, manifest.get("recipe_file")) or {}).get("download_url"),
            "seed": manifest.get("seed"),
            "device": manifest.get("device"),
            "seconds": manifest.get("seconds"),
            "duration": manifest.get("duration"),
            "normal_cached": bool(manifest.get("normal_cached")),
            "explanations": [{"explanation": e["explanation"], **output_entry(job_id, e),
                              "recipe_url": (file_urls(job_id, e.get("recipe_file")) or {}).get("download_url")}
                             for e in manifest.get("explanations") or []],
            "activations": manifest.get("activations"),
            "video": (file_urls(job_id, manifest.get("video")) or {}).get("url"),
            "complete": True,
        }
        if manifest.get("ladder"):
            outputs["ladder"] = {**manifest["ladder"], "crossfade": "linear, equal gain"}
        if manifest.get("performance"):
            outputs["performance"] = performance_view(job_id, manifest["performance"])
        models = [item["model"] for item in flossed if item.get("model")]
        if models:
            outputs["model"] = models[0]
        view["outputs"] = outputs
    return view
