"""The web app's door to the core library: models, audio checks and rendering a job.

The web layer does no audio or model work itself; everything here calls
:mod:`senseflosser`. A model registry is shared per process and models
folder, so each worker process loads every model once.
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np

from senseflosser import audio, device, spectrogram, untrusted
from senseflosser.clusters import card_clusters
from senseflosser.concept_selection import card_concepts
from senseflosser.errors import AudioError, SenseflosserError
from senseflosser.jobspec import JobSpec, Outputs
from senseflosser.jsonfile import write_json
from senseflosser.models import ModelRegistry, conv_channels, file_sha256
from senseflosser.normal_cache import NormalCache
from senseflosser.activations import default_layer
from senseflosser.runners import warm_up
from senseflosser.render import floss_file, safe_stem
from senseflosser.sensitivity import DEFAULT_SEEDS, map_to_dir

from .jobs import JobFailed, Milestone, Progress

log = logging.getLogger(__name__)

_registries: dict[Path, ModelRegistry] = {}
_registries_lock = threading.Lock()

OUTPUT_STEM = "audio"
"""Stem of every output file on disk; the user's file name is used only for downloads."""

MODEL_FILE = "model.keras"
"""Name of an uploaded model in its job's input folder."""

NORMALS_DIR = ".normals"
"""Folder of the normal-output cache in the data dir (a dot name is never a job id)."""

PLAYABLE_FILE = "playable.json"
"""Written into a running job's output folder once its audio is (original, normal, damaged): the files a
listener waits for, served before the job is done (a dot-less name no output file has)."""

SEGMENT_FILE = "segment.npy"
"""The decoded segment of a job's upload, kept in its input folder when the upload is checked."""

MIN_SEGMENT_S = 0.1
"""Shortest segment a job may process: about one STFT window (2048 samples at 22050 Hz)."""


def shared_registry(models_dir: Path) -> ModelRegistry:
    """The model registry of a folder, one per process."""
    key = Path(models_dir).resolve()
    with _registries_lock:
        if key not in _registries:
            _registries[key] = ModelRegistry(key)
        return _registries[key]


def json_safe(value: Any) -> Any:
    """Replace non-finite floats by ``None`` throughout (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def user_message(exc: BaseException, internal_name: str, display_name: str) -> str:
    """The core's message with the stored file's name replaced by the name the user knows."""
    text = str(exc).strip() or type(exc).__name__
    prefix = f"{internal_name}: "
    if text.startswith(prefix):
        text = f"{display_name}: {text[len(prefix):]}"
    return text.replace(internal_name, display_name)


class Engine:
    """Models and rendering for one app.

    Parameters
    ----------
    models_dir : pathlib.Path
        The model registry folder.
    max_duration : float
        Longest segment (seconds) a job may process.
    spectrograms : bool
        List a spectrogram image beside every output WAV, drawn when first asked for
        (:meth:`spectrogram`): a job is done, and its audio playable, without waiting for images.
    normal_cache_ttl : float or None
        The index of normal outputs kept for re-runs (``<data dir>/.normals``; each output lives in its
        job's folder and goes with it) forgets entries unused this long.
    """

    def __init__(self, models_dir: Path, *, max_duration: float, spectrograms: bool = True,
                 normal_cache_ttl: float | None = None) -> None:
        self.registry = shared_registry(models_dir)
        self.normal_cache_ttl = normal_cache_ttl
        self.max_duration = float(max_duration)
        self.spectrograms = bool(spectrograms)
        self.broken: dict[str, str] = {}
        self.warm = False
        self._device: str | None = None

    def warm_up(self) -> None:
        """Load every model and run it once; a model that fails is left out and logged."""
        for name in self.registry.names():
            try:
                net = self.registry.load(name)
                # web jobs record activation frames (of the card's most sensitive layer unless told)
                warm_up(net, tap=default_layer(net, self.registry.card(name)))
            except SenseflosserError as exc:
                self.broken[name] = str(exc)
                log.error("model %s cannot be used: %s", name, exc)
            except Exception as exc:  # a broken model file must not take the server down
                self.broken[name] = f"{type(exc).__name__}: {exc}"
                log.exception("model %s failed to warm up", name)
        if self.spectrograms:
            spectrogram.warm_up()
        self.warm = True
        log.info("models ready: %s", ", ".join(self.registry.loaded()) or "none")

    def model_names(self) -> list[str]:
        """The usable models, best first (the first is the default where none is named)."""
        return [n for n in self.registry.ranked() if n not in self.broken]

    def loaded(self) -> list[str]:
        return self.registry.loaded()

    def cards(self) -> list[dict]:
        cards = []
        for name in self.model_names():
            try:
                cards.append(json_safe(self.registry.card(name)))
            except SenseflosserError:  # removed from the folder meanwhile
                continue
        return cards

    def conv_layers(self, name: str) -> dict[str, int | None] | None:
        """Conv layer names of a model -> their channel counts, from its card (``None`` if it does not say).

        A card that lists the layers but not their channels gives ``None``
        counts: channel numbers are then checked when the job runs.
        """
        card = self.registry.card(name)
        channels = card.get("conv_channels")
        if isinstance(channels, dict):
            return {str(k): int(v) for k, v in channels.items()}
        layers = card.get("conv_layers")
        if isinstance(layers, list):
            return {str(k): None for k in layers}
        return None

    def clusters(self, name: str) -> dict[str, list[list[int]]] | None:
        """A model's channel clusters from its card (layer -> channel lists), or ``None`` if it has none.

        Raises
        ------
        ModelError
            If the card's clusters section is malformed.
        """
        return card_clusters(self.registry.card(name))

    def concepts(self, name: str) -> dict[str, Any] | None:
        """A model's card ``concepts`` section (for ``concept:NAME`` selections), or ``None`` if it has none.

        Raises
        ------
        ModelError
            If the card's concepts section is malformed.
        """
        return card_concepts(self.registry.card(name))

    def calibration(self, name: str) -> dict[str, Any] | None:
        """A model card's calibration (``evaluation.calibration``: SNR levels and magnitudes), or ``None``."""
        evaluation = self.registry.card(name).get("evaluation")
        calib = evaluation.get("calibration") if isinstance(evaluation, dict) else None
        return calib if isinstance(calib, dict) else None

    def outputs(self) -> Outputs:
        """What every web job writes besides its WAVs (the page plays, draws and downloads them)."""
        return Outputs(original=True, spectrograms=self.spectrograms, spectrograms_later=self.spectrograms,
                       peaks=True, stem=OUTPUT_STEM, activations=True)

    def spectrogram(self, wav: Path, image: Path) -> Path:
        """Draw the spectrogram of an output WAV that a job listed but did not draw (see :meth:`outputs`).

        Raises
        ------
        AudioError
            If the WAV cannot be read.
        """
        return spectrogram.spectrogram_of_wav(wav, image)

    def device(self) -> str:
        """The compute device the models run on (asked once)."""
        if self._device is None:
            self._device = device.describe()
        return self._device

    def check_uploaded_model(self, path: Path, *, display_name: str, max_parameters: int) -> dict:
        """Check an uploaded model file (archive, config, then a safe load) before its job is accepted.

        Returns
        -------
        dict
            ``model_name`` (from the file name), ``model_sha256``, ``conv_channels``, ``parameters``.

        Raises
        ------
        ModelError
            Saying why the model is refused.
        """
        limits = untrusted.Limits(max_parameters=int(max_parameters))
        model = untrusted.load_untrusted(path, limits=limits, label=display_name)
        return {
            "model_name": safe_stem(display_name, default="uploaded"),
            "model_sha256": file_sha256(path),
            "conv_channels": conv_channels(model),
            "parameters": int(model.count_params()),
        }

    def check_audio(self, path: Path, *, offset: float, duration: float | None, display_name: str) -> dict:
        """Decode the requested segment once, so every problem with the file is reported now, and keep it
        beside the file (:data:`SEGMENT_FILE`): the job reads it instead of decoding the file again.

        Returns
        -------
        dict
            ``file_duration`` and ``segment_duration`` in seconds.

        Raises
        ------
        AudioError
            With the core's message, naming the user's file.
        """
        try:
            info = audio.probe(path)
            if offset >= info.duration:  # also keeps absurd offsets (1e308) away from the decoder
                raise AudioError(f"{display_name}: offset {offset:g} s is past the end of the "
                                 f"{info.duration:.1f} s file")
            y = audio.load(path, offset=offset, duration=duration, max_duration=self.max_duration)
        except SenseflosserError as exc:
            exc.args = (user_message(exc, path.name, display_name),)
            raise
        seconds = len(y) / audio.SAMPLE_RATE
        if seconds < MIN_SEGMENT_S:
            raise AudioError(f"{display_name}: the audio to process is only {seconds:.3g} s long; "
                             f"at least {MIN_SEGMENT_S:g} s is needed")
        np.save(path.parent / SEGMENT_FILE, y, allow_pickle=False)
        return {"file_duration": info.duration, "segment_duration": seconds}

    @staticmethod
    def decoded_segment(job_dir: Path) -> np.ndarray | None:
        """The segment :meth:`check_audio` decoded for a job, or ``None`` (a job stored before it kept one)."""
        try:
            y = np.load(job_dir / "input" / SEGMENT_FILE, allow_pickle=False)
        except (OSError, ValueError):
            return None
        return y if y.dtype == np.float32 and y.ndim == 1 else None

    def _model(self, job_dir: Path, request: dict) -> Any:
        """A job's model: its registry name, or its uploaded file checked again and loaded."""
        if not request.get("model_file"):
            return request["model"]
        # An uploaded model lives with its job; it is checked again before Keras opens it here.
        path = job_dir / "input" / request["model_file"]
        if not path.is_file():
            raise JobFailed("the uploaded model file is missing from the job's folder; if the workers run "
                            "on other machines, they must mount the same data directory")
        net = untrusted.load_untrusted(path, label=request.get("model_filename") or path.name)
        return (request["model"], net, file_sha256(path))

    def render(self, job_dir: Path, request: dict, progress: Progress) -> dict:
        """Run one job: floss (or map, for ``kind="map"``) the stored input into ``job_dir/out``.

        ``request["spec"]`` is the job spec the web edge built (trusted: nothing
        is checked again). Returns the manifest: the outputs of a flossing job,
        ``{"kind": "map", "map": ...}`` of a map.

        Raises
        ------
        SenseflosserError
            A user's error, its message naming the user's file.
        """
        out = job_dir / "out"
        if out.exists():  # a run interrupted by a crash left partial files
            shutil.rmtree(out)
        input_path = job_dir / "input" / request["input"]
        spec = JobSpec.from_checked(request["spec"])
        try:
            model = self._model(job_dir, request)
            if request.get("kind") == "map":
                report = map_to_dir(
                    input_path, registry=self.registry, model=model, output_dir=out, action=spec.base.action,
                    magnitudes=spec.magnitudes, seeds=request.get("seeds", DEFAULT_SEEDS),
                    seed=spec.base.seed, offset=spec.offset, duration=spec.duration,
                    max_duration=self.max_duration, progress=progress,
                )
                return json_safe({"kind": "map", "map": report})
            def playable(files: dict) -> None:
                # The web side serves these files and says the audio is playable before the job is done.
                write_json(out / PLAYABLE_FILE, files)
                progress(0.87, Milestone("the audio is ready; measuring it"))

            manifest = floss_file(
                spec, input_path, registry=self.registry, output_dir=out, model=model,
                max_duration=self.max_duration, progress=progress, audio=self.decoded_segment(job_dir),
                normal_cache=NormalCache(job_dir.parent / NORMALS_DIR, max_age_s=self.normal_cache_ttl),
                on_playable=playable,
            )
        except SenseflosserError as exc:
            exc.args = (user_message(exc, input_path.name, request["filename"]),)
            raise
        return json_safe(manifest)
