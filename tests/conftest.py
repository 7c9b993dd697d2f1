"""Shared fixtures.

Core section: tiny models and synthesized audio, so tests are fast and need no
download. Web fixtures follow in their own section.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402

import senseflosser  # noqa: E402,F401  (registers custom layers)
from senseflosser.layers import SpectralCompress, SpectralExpand  # noqa: E402
from senseflosser.spectral import N_BINS  # noqa: E402

SR = 22050

# ---------------------------------------------------------------- core section


def make_tiny_model(*, frames: int | None = None, seed: int = 0, name: str = "tiny") -> keras.Model:
    """A small conv autoencoder of the shipped models' shape: compress, 3 convs, expand."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape=(frames, N_BINS, 2), name="stft")
    x = SpectralCompress(0.3, name="compress")(inp)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="gelu", name="conv_a")(x)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="gelu", name="conv_b")(x)
    x = keras.layers.Conv2D(2, 3, padding="same", name="conv_out")(x)
    out = SpectralExpand(0.3, name="expand")(x)
    return keras.Model(inp, out, name=name)


def tone(seconds: float = 2.0, sr: int = SR, *, freqs=(220.0, 440.0, 1330.0), amp: float = 0.25,
         channels: int = 1, seed: int = 0) -> np.ndarray:
    """A mix of sines plus a little noise, shape (n,) or (n, channels)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = sum(np.sin(2 * np.pi * f * t + i) for i, f in enumerate(freqs)) / len(freqs)
    y = amp * y + 0.01 * rng.standard_normal(t.size)
    y = y.astype(np.float32)
    if channels > 1:
        y = np.stack([y * (1 - 0.1 * c) for c in range(channels)], axis=1)
    return y


def hostile_model_files(folder: Path, marker: Path) -> dict[str, tuple[Path, str]]:
    """Model files an attacker or a careless user might upload: name -> (file, what the refusal says).

    The Lambda model's function would write ``marker`` if it ever ran.
    """
    import io
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[Path, str]] = {}
    good = folder / "good.keras"
    make_tiny_model(name="good").save(good)

    inp = keras.Input(shape=(None, N_BINS, 2))
    path_text = str(marker)
    x = keras.layers.Lambda(lambda t: t + 0.0 * len(open(path_text, "w").write("pwned") and "x"))(inp)
    x = keras.layers.Conv2D(2, 3, padding="same")(x)
    keras.Model(inp, x).save(folder / "lambda.keras")
    marker.unlink(missing_ok=True)  # building the model traced the function once; the file must not come back
    files["lambda"] = (folder / "lambda.keras", "Lambda")

    @keras.saving.register_keras_serializable(package="evil")
    class Custom(keras.layers.Layer):
        def call(self, t):
            return t

    inp = keras.Input(shape=(None, N_BINS, 2))
    keras.Model(inp, keras.layers.Conv2D(2, 3, padding="same")(Custom()(inp))).save(folder / "custom.keras")
    files["custom"] = (folder / "custom.keras", "custom object 'evil>Custom'")

    with zipfile.ZipFile(good) as z:
        members = {n: z.read(n) for n in z.namelist()}
    bomb = folder / "bomb.keras"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        for n, data in members.items():
            z.writestr(n, data if n != "model.weights.h5" else data + b"\0" * (300 * 2**20))
    files["bomb"] = (bomb, "unpacks to")
    traversal = folder / "traversal.keras"
    with zipfile.ZipFile(traversal, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
        z.writestr("../../evil.json", b"{}")
    files["traversal"] = (traversal, "unsafe path")
    truncated = folder / "truncated.keras"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    files["truncated"] = (truncated, "not a .keras file")
    h5 = folder / "h5.keras"
    make_tiny_model(name="h5").save(folder / "real.h5")
    (folder / "real.h5").rename(h5)
    files["h5"] = (h5, "HDF5")
    inp = keras.Input(shape=(None, 513, 2))
    keras.Model(inp, keras.layers.Conv2D(2, 3, padding="same")(inp)).save(folder / "shape.keras")
    files["shape"] = (folder / "shape.keras", "input shape (None, None, 513, 2)")
    inp = keras.Input(shape=(None, N_BINS, 2))
    keras.Model(inp, SpectralExpand(0.3)(SpectralCompress(0.3)(inp))).save(folder / "noconv.keras")
    files["noconv"] = (folder / "noconv.keras", "no Conv1D, Conv2D")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("config.json", b"{not json")
        z.writestr("model.weights.h5", b"")
    (folder / "badjson.keras").write_bytes(buf.getvalue())
    files["badjson"] = (folder / "badjson.keras", "not valid JSON")
    return files


def give_direction(model: keras.Model, path: Path | None = None) -> None:
    """Find a (quick) universal adversarial direction for a test model, attach it and optionally save it."""
    from senseflosser import actions
    from senseflosser.actions import worst_case

    direction = worst_case.find_direction(model, [tone(0.5)], actions.targets(model, "adversarial", None),
                                          seed=0, steps=2)
    sha = worst_case.save_direction(path, direction, {"test": True}) if path is not None else "test"
    worst_case.attach(model, direction, sha)


@pytest.fixture(scope="session")
def tiny_model() -> keras.Model:
    model = make_tiny_model()
    give_direction(model)
    return model


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """A model registry folder with a variable-length and a fixed-length tiny model."""
    d = tmp_path_factory.mktemp("models")
    make_tiny_model().save(d / "tiny.keras")
    give_direction(make_tiny_model(), d / "tiny.adversarial.npz")
    (d / "tiny.json").write_text(json.dumps({"name": "tiny", "summary": "tiny test model"}))
    make_tiny_model(frames=24, seed=1, name="tinyfixed").save(d / "tinyfixed.keras")
    (d / "tinyfixed.json").write_text(json.dumps({"name": "tinyfixed", "summary": "fixed 24 frames"}))
    return d


@pytest.fixture
def registry(models_dir):
    from senseflosser.models import ModelRegistry

    return ModelRegistry(models_dir)


@pytest.fixture
def wav_file(tmp_path) -> Path:
    """A 2-second stereo 44.1 kHz 16-bit WAV."""
    p = tmp_path / "song.wav"
    sf.write(p, tone(2.0, 44100, channels=2), 44100, subtype="PCM_16")
    return p


# ----------------------------------------------------------------- web section
# Fixtures of the web app's tests (tests/test_web_*.py). They use the core section's
# tiny models (models_dir) and synthesize audio; every app gets its own data dir.

WEB_WAIT_S = 120.0


def web_wav_bytes(seconds: float = 1.5, sr: int = SR, *, channels: int = 1, subtype: str = "PCM_16",
                  fmt: str = "WAV") -> bytes:
    """A synthesized sine mix encoded in memory (WAV unless ``fmt`` says otherwise)."""
    import io

    buf = io.BytesIO()
    sf.write(buf, tone(seconds, sr, channels=channels), sr, subtype=subtype, format=fmt)
    return buf.getvalue()


@pytest.fixture
def make_web_app(models_dir, tmp_path):
    """Factory of web apps on the tiny models; their job runners are stopped afterwards."""
    from app import create_app

    apps = []

    def make(**overrides):
        config = {
            "MODELS_DIR": str(models_dir),
            "DATA_DIR": str(tmp_path / "jobs"),
            "RATE_LIMIT": "10000/minute",
            "CLEANUP_INTERVAL_S": 3600.0,
            "POLL_INTERVAL_MS": 200,
        }
        config.update(overrides)
        app = create_app(config)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["senseflosser"].runner.stop()


@pytest.fixture
def web_app(make_web_app):
    return make_web_app()


@pytest.fixture
def web_client(web_app):
    return web_app.test_client()


_DEFAULT_AUDIO = object()


@pytest.fixture
def web_submit():
    """``web_submit(client, audio=..., filename=..., **fields)`` -> response of POST /api/jobs.

    ``audio`` defaults to a 1.5 s synthesized WAV; ``None`` leaves the file out. Fields
    default to model tiny, fog, magnitude 0.1; a field given as ``None`` is left out.
    """
    import io

    def submit(client, audio=_DEFAULT_AUDIO, filename: str = "song.wav", headers=None, **fields):
        data = {"model": "tiny", "action": "fog", "magnitude": "0.1"}
        data.update(fields)
        data = {k: v for k, v in data.items() if v is not None}
        if audio is _DEFAULT_AUDIO:
            audio = web_wav_bytes()
        if audio is not None:
            data["audio"] = (io.BytesIO(audio), filename)
        return client.post("/api/jobs", data=data, content_type="multipart/form-data", headers=headers or {})

    return submit


@pytest.fixture
def web_wait():
    """``web_wait(client, job_id)`` -> the job's view once it is done or failed."""
    import time

    def wait(client, job_id: str, timeout: float = WEB_WAIT_S) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            r = client.get(f"/api/jobs/{job_id}")
            assert r.status_code == 200, r.get_json()
            view = r.get_json()
            if view["state"] in ("done", "failed"):
                return view
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {view['state']} after {timeout} s")
            time.sleep(0.05)

    return wait
