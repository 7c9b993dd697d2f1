"""Dataset building and autoencoder training (the original build_autoencoder's job).

Audio files are decoded once into a cache of mono 22050 Hz waveforms (``.npy``
files read through memory maps), so a large folder streams from disk instead of
sitting in memory, and each training step crops random excerpts and computes
their STFT on the fly. Training keeps a backup every epoch and resumes from it
after an interruption, stops early on a plateau, logs the loss curve as CSV and
writes ``<models_dir>/<name>.keras`` with its model card.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import librosa
import numpy as np

from . import audio, device  # noqa: F401  (device: set up TensorFlow before any model work)
from .architectures import ARCHITECTURES, build
from .errors import AudioError, TrainingError
from .layers import SpectralCompress
from .models import write_card
from .spectral import HOP, n_frames, stft

log = logging.getLogger(__name__)


def split_files(
    files: Sequence[Path], *, val_split: float, percentage: float, seed: int
) -> tuple[list[Path], list[Path]]:
    """Choose the share of files to use and hold some out for validation.

    Parameters
    ----------
    files : sequence of pathlib.Path
    val_split : float, keyword-only
        Share of the used files kept for validation, in [0, 1).
    percentage : float, keyword-only
        Share of all files used at all, in (0, 100].
    seed : int, keyword-only
        Seed of the shuffle.

    Returns
    -------
    train, val : list of pathlib.Path
    """
    if not 0 < percentage <= 100:
        raise TrainingError(f"percentage must be in (0, 100], got {percentage}")
    if not 0 <= val_split < 1:
        raise TrainingError(f"val-split must be in [0, 1), got {val_split}")
    order = np.random.default_rng(seed).permutation(len(files))
    used = [files[i] for i in order[: max(1, round(len(files) * percentage / 100))]]
    n_val = int(round(len(used) * val_split))
    if val_split > 0 and len(used) > 1:
        n_val = max(1, n_val)
    n_val = min(n_val, len(used) - 1)
    return sorted(used[n_val:]), sorted(used[:n_val])


class WaveCache:
    """Decoded mono waveforms of a set of files, stored as ``.npy`` and memory-mapped.

    Parameters
    ----------
    files : sequence of pathlib.Path
        Audio files; unreadable ones are skipped with a warning.
    cache_dir : pathlib.Path
        Where the decoded waveforms are kept (reused across runs).
    min_samples : int
        Files shorter than this are skipped.
    """

    def __init__(self, files: Sequence[Path], cache_dir: Path, *, min_samples: int) -> None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.files: list[Path] = []
        self.waves: list[np.ndarray] = []
        for i, f in enumerate(files):
            st = f.stat()
            key = hashlib.sha1(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
            target = cache_dir / f"{key}.npy"
            if not target.exists():
                try:
                    y = audio.load(f)
                except AudioError as exc:
                    log.warning("skipping %s: %s", f, exc)
                    continue
                tmp = target.with_suffix(".tmp.npy")
                np.save(tmp, y)
                tmp.replace(target)
                log.info("decoded %d/%d %s (%.1f s)", i + 1, len(files), f.name, len(y) / audio.SAMPLE_RATE)
            wave = np.load(target, mmap_mode="r")
            if len(wave) < min_samples:
                log.warning("skipping %s: shorter than one training example", f)
                continue
            self.files.append(f)
            self.waves.append(wave)
        if not self.waves:
            raise TrainingError("none of the audio files could be used (all unreadable or too short)")
        self.lengths = np.array([len(w) for w in self.waves], dtype=np.int64)

    @property
    def seconds(self) -> float:
        """Total duration in seconds."""
        return float(self.lengths.sum()) / audio.SAMPLE_RATE

    def crop(self, rng: np.random.Generator, n_samples: int) -> np.ndarray:
        """A random excerpt, files weighted by their length."""
        weights = (self.lengths - n_samples + 1).astype(np.float64)
        i = rng.choice(len(self.waves), p=weights / weights.sum())
        start = int(rng.integers(0, self.lengths[i] - n_samples + 1))
        return np.asarray(self.waves[i][start : start + n_samples], dtype=np.float32)


def _compress(S: np.ndarray, power: float) -> np.ndarray:
    return np.asarray(SpectralCompress(power)(S))


class CropBatches(keras.utils.PyDataset):
    """Batches of ``(stft, compressed stft)`` from random crops of a :class:`WaveCache`.

    Batch ``i`` of epoch ``e`` depends only on ``(seed, e, i)``, so a resumed
    run sees the same data it would have seen.
    """

    def __init__(
        self,
        cache: WaveCache,
        *,
        n_samples: int,
        batch_size: int,
        steps: int,
        seed: int,
        power: float,
        gain_db: tuple[float, float] = (-9.0, 3.0),
        fixed: bool = False,
    ) -> None:
        super().__init__()
        self.cache = cache
        self.n_samples = n_samples
        self.batch_size = batch_size
        self.steps = steps
        self.seed = seed
        self.power = power
        self.gain_db = gain_db
        self.fixed = fixed
        self.epoch = 0
        self._frozen = [self._make(i) for i in range(steps)] if fixed else None

    def __len__(self) -> int:
        return self.steps

    def on_epoch_end(self) -> None:
        self.epoch += 1

    def _make(self, idx: int):
        epoch = 0 if self.fixed else self.epoch
        rng = np.random.default_rng([self.seed, epoch, idx])
        xs = []
        for _ in range(self.batch_size):
            y = self.cache.crop(rng, self.n_samples)
            gain = librosa.db_to_amplitude(rng.uniform(*self.gain_db))
            xs.append(stft(y * gain))
        x = np.stack(xs)
        return x, _compress(x, self.power)

    def __getitem__(self, idx: int):
        if self._frozen is not None:
            return self._frozen[idx]
        return self._make(idx)


class _TimeBudget(keras.callbacks.Callback):
    """Stops training once a wall-clock budget is spent (checked after each batch)."""

    def __init__(self, seconds: float | None) -> None:
        super().__init__()
        self.seconds = seconds
        self.t0 = time.monotonic()
        self.hit = False

    def on_train_batch_end(self, batch, logs=None):
        if self.seconds is not None and time.monotonic() - self.t0 > self.seconds:
            self.hit = True
            self.model.stop_training = True


@dataclass
class TrainConfig:
    """Settings of one training run (all of them go into the model card)."""

    name: str
    arch: str = "bottleneck"
    duration: float = 5.0
    var_input: bool = True
    percentage: float = 100.0
    epochs: int = 20
    steps_per_epoch: int = 40
    batch_size: int = 8
    seed: int = 0
    val_split: float = 0.15
    learning_rate: float = 1e-3
    width: int = 32
    power: float = 0.3
    band: int = 8
    depth: int = 2
    front: int = 0
    patience: int = 4
    max_minutes: float | None = None
    corpus: str | None = None
    licence: str | None = None
    summary: str | None = None

    def validate(self) -> None:
        if not self.name or any(c in self.name for c in "/\\\0") or self.name.startswith("."):
            raise TrainingError(f"model name {self.name!r} must be a plain file name")
        if self.arch not in ARCHITECTURES:
            raise TrainingError(f"unknown architecture {self.arch!r}; choose one of {', '.join(ARCHITECTURES)}")
        for what, v in (("duration", self.duration), ("learning rate", self.learning_rate)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise TrainingError(f"{what} must be a positive number, got {v!r}")
        for what, v in (("epochs", self.epochs), ("steps per epoch", self.steps_per_epoch),
                        ("batch size", self.batch_size), ("width", self.width), ("band", self.band)):
            if int(v) != v or v < 1:
                raise TrainingError(f"{what} must be a positive integer, got {v!r}")
        for what, v in (("depth", self.depth), ("front", self.front)):
            if int(v) != v or v < 0:
                raise TrainingError(f"{what} must be a non-negative integer, got {v!r}")


@dataclass
class TrainResult:
    """What a training run produced."""

    model_path: Path
    card_path: Path
    history_path: Path
    card: dict = field(default_factory=dict)


def train(
    data_dir: str | os.PathLike,
    config: TrainConfig,
    *,
    models_dir: str | os.PathLike = "models",
    work_dir: str | os.PathLike | None = None,
    fresh: bool = False,
    verbose: int | str = "auto",
) -> TrainResult:
    """Train an autoencoder on a folder of audio and write it with its model card.

    Parameters
    ----------
    data_dir : str or os.PathLike
        Folder searched recursively for audio files.
    config : TrainConfig
        The settings.
    models_dir : str or os.PathLike, keyword-only
        Where ``<name>.keras`` and ``<name>.json`` are written.
    work_dir : str or os.PathLike or None, keyword-only
        Checkpoints, the decoded-audio cache and the loss log
        (default ``<models_dir>/../.senseflosser-work/<name>``). Running the same
        command again resumes from the last completed epoch.
    fresh : bool, keyword-only
        Discard an earlier run's checkpoints and loss log instead of resuming.
    verbose : int or "auto", keyword-only
        Keras progress display.

    Returns
    -------
    TrainResult
    """
    config.validate()
    keras.utils.set_random_seed(config.seed)
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    work = Path(work_dir) if work_dir else models_dir.resolve().parent / ".senseflosser-work" / config.name
    work.mkdir(parents=True, exist_ok=True)
    _check_resumable(work, config, fresh=fresh)

    files = audio.find_audio(data_dir)
    train_files, val_files = split_files(
        files, val_split=config.val_split, percentage=config.percentage, seed=config.seed
    )
    n_samples = int(round(config.duration * audio.SAMPLE_RATE))
    frames = n_frames(n_samples)
    log.info("%d files: %d for training, %d for validation", len(files), len(train_files), len(val_files))
    train_cache = WaveCache(train_files, work / "cache", min_samples=n_samples)
    val_cache = WaveCache(val_files, work / "cache", min_samples=n_samples) if val_files else None

    model, train_model = build(
        config.arch,
        frames=None if config.var_input else frames,
        width=config.width,
        power=config.power,
        band=config.band,
        depth=config.depth,
        front=config.front,
        name=config.name,
    )
    total_steps = config.epochs * config.steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=total_steps, alpha=0.05
    )
    # XLA made a step 1.7x slower on CPU here (5.2 s vs 3.1 s), so it stays off.
    train_model.compile(optimizer=keras.optimizers.Adam(schedule), loss="mae", jit_compile=False)

    data = CropBatches(
        train_cache, n_samples=n_samples, batch_size=config.batch_size,
        steps=config.steps_per_epoch, seed=config.seed, power=config.power,
    )
    val = None
    if val_cache is not None:
        val = CropBatches(
            val_cache, n_samples=n_samples, batch_size=config.batch_size, steps=4,
            seed=config.seed + 1, power=config.power, fixed=True,
        )
    history_path = work / "loss.csv"
    budget = _TimeBudget(config.max_minutes * 60 if config.max_minutes else None)
    monitor = "val_loss" if val is not None else "loss"
    callbacks = [
        keras.callbacks.BackupAndRestore(str(work / "backup"), delete_checkpoint=False),
        keras.callbacks.CSVLogger(str(history_path), append=True),
        keras.callbacks.EarlyStopping(monitor=monitor, patience=config.patience, min_delta=1e-4),
        budget,
    ]
    t0 = time.monotonic()
    train_model.fit(
        data, epochs=config.epochs, validation_data=val, callbacks=callbacks, verbose=verbose
    )
    minutes = (time.monotonic() - t0) / 60
    curve = read_history(history_path)
    if not curve:
        raise TrainingError("training stopped before completing an epoch; run the command again to resume")

    model_path = models_dir / f"{config.name}.keras"
    tmp = model_path.with_suffix(".tmp.keras")
    model.save(tmp)
    tmp.replace(model_path)
    last = curve[-1]
    card = {
        "name": config.name,
        "summary": config.summary
        or f"{config.arch} autoencoder trained on {config.corpus or Path(data_dir).name}",
        "architecture": config.arch,
        "parameters": int(model.count_params()),
        "input_frames": None if config.var_input else frames,
        "sample_rate": audio.SAMPLE_RATE,
        "n_fft": 2048,
        "hop": HOP,
        "corpus": {
            "source": config.corpus or str(Path(data_dir)),
            "licence": config.licence or "unknown",
            "files": len(train_cache.files) + (len(val_cache.files) if val_cache else 0),
            "training_files": [f.name for f in train_cache.files],
            "validation_files": [f.name for f in val_cache.files] if val_cache else [],
            "duration_s": round(train_cache.seconds + (val_cache.seconds if val_cache else 0.0), 1),
        },
        "training": {
            **{k: v for k, v in asdict(config).items() if k not in ("corpus", "licence", "summary")},
            "epochs_run": len(curve),
            "steps": len(curve) * config.steps_per_epoch,
            "final_loss": round(float(last["loss"]), 5),
            "final_val_loss": round(float(last["val_loss"]), 5) if "val_loss" in last else None,
            "stopped_by": "time budget" if budget.hit else ("early stopping" if len(curve) < config.epochs else "epochs"),
            "minutes_last_session": round(minutes, 1),
            "loss": "mean absolute error between compressed STFTs (|X|^power, phase kept)",
            "history": curve,
        },
        "evaluation": None,
    }
    card_path = write_card(model_path, card)
    log.info("wrote %s (%d parameters) and its card", model_path, card["parameters"])
    return TrainResult(model_path, card_path, history_path, card)


# Settings that may change between a run and its resumption (a longer run, a new budget).
_RESUME_MAY_CHANGE = {"epochs", "max_minutes", "patience", "corpus", "licence", "summary"}


def _check_resumable(work: Path, config: TrainConfig, *, fresh: bool) -> None:
    """Refuse to resume a run made with other settings (it would silently mix two runs)."""
    stamp = work / "config.json"
    settings = {k: v for k, v in asdict(config).items() if k not in _RESUME_MAY_CHANGE}
    if fresh:
        shutil.rmtree(work / "backup", ignore_errors=True)
        (work / "loss.csv").unlink(missing_ok=True)
    elif stamp.exists() and (work / "backup").exists():
        before = json.loads(stamp.read_text())
        changed = sorted(k for k in settings if before.get(k) != settings[k])
        if changed:
            raise TrainingError(
                f"{work} holds a run with other settings ({', '.join(changed)}); "
                "use --fresh to start over or another --work-dir"
            )
    stamp.write_text(json.dumps(settings, indent=2))


def read_history(path: Path) -> list[dict]:
    """The loss log of a run: one dict per completed epoch (``epoch``, ``loss``, ...)."""
    if not path.exists():
        return []
    with path.open() as f:
        rows = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
    # A resumed run appends; keep the latest record of each epoch.
    by_epoch: dict[int, dict] = {}
    for row in rows:
        by_epoch[int(row["epoch"])] = row
    return [by_epoch[e] for e in sorted(by_epoch)]
