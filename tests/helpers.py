"""Plain helpers of the tests: tiny models, synthesized audio, and what the web tests share.

Fixtures live in conftest.py (which imports what it needs from here); test files import
these with ``from helpers import ...`` (tests/ is on ``sys.path``, see pyproject's
``[tool.pytest.ini_options] pythonpath``). Nothing here is a fixture.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import zipfile
from pathlib import Path
from types import MappingProxyType

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

import senseflosser  # noqa: E402,F401  (registers custom layers)
from senseflosser.layers import SpectralCompress, SpectralExpand  # noqa: E402
from senseflosser.spectral import N_BINS  # noqa: E402

SR = 22050
ROOT = Path(__file__).resolve().parent.parent  # the project's root folder

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


def state_on_disk(data_dir: Path, job_id: str) -> dict:
    """A job's state as its runner wrote it (``<data_dir>/<id>/state.json``)."""
    return json.loads((data_dir / job_id / "state.json").read_text())


def wait_on_disk(data_dir: Path, job_id: str, predicate, what: str, timeout: float = 240.0) -> dict:
    """Poll a job's state file until ``predicate(state)``; fail naming ``what`` never happened."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            state = state_on_disk(data_dir, job_id)
        except (OSError, ValueError):  # not written yet, or caught mid-replace
            state = None
        if state is not None and predicate(state):
            return state
        assert time.monotonic() < deadline, f"job {job_id} never {what}: {state}"
        time.sleep(0.02)


def make_conv1d_model(*, seed: int = 0) -> keras.Model:
    """Frequency bins as channels: 1-D convs over time (the shape of cheap architectures to come)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape=(None, N_BINS, 2), name="stft")
    x = SpectralCompress(0.3, name="compress")(inp)
    x = keras.layers.Reshape((-1, 2 * N_BINS), name="bins_as_channels")(x)
    x = keras.layers.Conv1D(8, 3, padding="same", activation="gelu", name="c1d_a")(x)
    x = keras.layers.Conv1D(8, 3, padding="same", activation="gelu", name="c1d_b")(x)
    x = keras.layers.Conv1D(2 * N_BINS, 3, padding="same", name="c1d_out")(x)
    x = keras.layers.Reshape((-1, N_BINS, 2), name="channels_as_bins")(x)
    out = SpectralExpand(0.3, name="expand")(x)
    return keras.Model(inp, out, name="tiny1d")


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


def tiny_recipe(action: str = "fog", magnitude: float = 0.1, seed: int = 7, **kw):
    """A recipe on the tiny model (what the tests call ``_r``): fog, magnitude 0.1, seed 7 unless told."""
    from senseflosser.recipe import Recipe

    return Recipe("tiny", "", action, magnitude, seed, **kw)


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


# ----------------------------------------------------------------- web section
# Helpers of the web app's tests (tests/test_web_*.py).

WEB_WAIT_S = 120.0
# The form fields of a plain job (tiny model, fog, magnitude 0.1); read-only, tests copy it.
JOB_FIELDS = MappingProxyType({"model": "tiny", "action": "fog", "magnitude": "0.1"})


def encode_audio(y: np.ndarray, sr: int = SR, *, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    """``y`` encoded in memory: 16-bit WAV unless ``subtype`` or ``fmt`` say otherwise."""
    import io

    buf = io.BytesIO()
    sf.write(buf, y, sr, subtype=subtype, format=fmt)
    return buf.getvalue()


def web_wav_bytes(seconds: float = 1.5, sr: int = SR, *, channels: int = 1, subtype: str = "PCM_16",
                  fmt: str = "WAV") -> bytes:
    """A synthesized sine mix encoded in memory (WAV unless ``fmt`` says otherwise)."""
    return encode_audio(tone(seconds, sr, channels=channels), sr, subtype=subtype, fmt=fmt)


def post_job(client, audio: bytes, filename: str = "song.wav", **fields):
    """POST /api/jobs from a Flask test client: ``audio`` as the upload, ``JOB_FIELDS`` updated by ``fields``."""
    import io

    data = {**JOB_FIELDS, **fields, "audio": (io.BytesIO(audio), filename)}
    return client.post("/api/jobs", data=data, content_type="multipart/form-data")


def block(runner) -> tuple[threading.Event, threading.Event]:
    """Make a runner's work (see :func:`job_executor`) wait on an event: returns (started, release)."""
    release, started = threading.Event(), threading.Event()
    real = runner.execute

    def execute(job_id, state, progress):
        started.set()
        release.wait(60)
        return real(job_id, state, progress)

    runner.execute = execute
    return started, release


def fail_first(runner, fault: BaseException, *, report: tuple[float, str] | None = None) -> list[str]:
    """Make the first job a runner's work (see :func:`job_executor`) is given raise ``fault``, after
    reporting progress ``report`` (fraction, message) when given; later jobs run as before.

    Returns the list of job ids the work is called with, in order.
    """
    real = runner.execute
    calls: list[str] = []

    def execute(job_id, state, progress):
        calls.append(job_id)
        if len(calls) == 1:
            if report is not None:
                progress(*report)
            raise fault
        return real(job_id, state, progress)

    runner.execute = execute
    return calls


# ------------------------------------------------------------------ Redis and RQ

REDIS_TEST_QUEUE = "senseflosser-test"


class ThreadWorker:
    """The model-warm RQ worker of :mod:`app.worker`, run on a thread of the test process.

    Jobs run in this process, so a test can replace what they do (see :func:`job_executor`);
    the real worker processes are tested in test_web_rq.py.
    """

    def __init__(self, redis_url: str, queue_name: str) -> None:
        from rq import Queue
        from rq.timeouts import TimerDeathPenalty

        from app.jobs.rq_runner import connect
        from app.worker import _simple_worker_class

        base = _simple_worker_class()

        class Worker(base):
            death_penalty_class = TimerDeathPenalty  # SIGALRM works on the main thread only
            heartbeat_s = 1.0
            dead_after_s = 5.0

            def _install_signal_handlers(self):
                pass

        self.connection = connect(redis_url)
        self.queue = Queue(queue_name, connection=self.connection)
        self.worker = Worker([self.queue], connection=self.connection, name=f"test-thread-{os.getpid()}",
                             worker_ttl=16, job_monitoring_interval=1)
        self.thread = threading.Thread(target=self._work, name="test-rq-worker", daemon=True)
        self.thread.start()
        from app.jobs.rq_runner import publish_device
        from senseflosser import device

        publish_device(self.queue, self.worker.name, device.describe())

    def _work(self) -> None:
        self.worker.work(burst=False, logging_level="WARNING", with_scheduler=False)

    def reset(self) -> None:
        """Empty the queue and the counts left by an earlier test."""
        from app.jobs.task import counter_key

        self.queue.empty()
        for what in ("completed", "failed"):
            self.connection.delete(counter_key(self.queue.name, what))

    def stop(self) -> None:
        self.worker._stop_requested = True  # read after its next job: give it one that does nothing
        self.queue.enqueue_call("builtins.len", args=("",))
        self.thread.join(30)


def job_executor(app):
    """What runs an app's jobs, with an ``execute(job_id, state, progress)`` attribute a test may replace:
    the in-process runner, or the RQ worker context of this test process."""
    runner = app.extensions["senseflosser"].runner
    if hasattr(runner, "execute"):
        return runner
    from app.jobs import task

    return task.current()


def floss_into(input_path, *, registry, output_dir, model: str = "tiny", action: str = "fog",
               magnitudes=None, spectrograms: bool = False, write_original: bool = False, peaks: bool = False,
               save_model: bool = False, stem: str | None = None, max_duration: float | None = None,
               normal_cache=None, **job) -> dict:
    """One job through the library's front door: :func:`build_job` then :func:`floss_file` (the manifest)."""
    from senseflosser.jobspec import Outputs, build_job
    from senseflosser.render import floss_file

    spec = build_job(model=model, action=action, magnitudes=magnitudes,
                     outputs=Outputs(original=write_original, spectrograms=spectrograms, peaks=peaks,
                                     save_model=save_model, stem=stem), **job)
    return floss_file(spec, input_path, registry=registry, output_dir=output_dir, max_duration=max_duration,
                      normal_cache=normal_cache)


# ---------------------------------------------------------------- model configs an attacker might write
# A good tiny model's config.json, edited (the checker's tests, the web tests of issue 22, the fuzz test).


def good_config(good: Path) -> dict:
    """The parsed ``config.json`` of a saved model."""
    with zipfile.ZipFile(good) as z:
        return json.loads(z.read("config.json"))


def rezip(good: Path, dest: Path, config: dict | bytes) -> Path:
    """``good``'s archive with another config.json (its weights kept)."""
    raw = config if isinstance(config, bytes) else json.dumps(config).encode()
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as out:
        for name in src.namelist():
            out.writestr(name, raw if name == "config.json" else src.read(name))
    return dest


def with_layer(config: dict, entry: dict, *, after: str = "conv_a", before: str = "conv_b") -> dict:
    """The tiny model's config with ``entry`` spliced in between two layers (``entry`` takes ``after``'s output)."""
    config = copy.deepcopy(config)
    layers = config["config"]["layers"]
    source = next(layer for layer in layers if layer["name"] == after)
    tensor = {"class_name": "__keras_tensor__", "config": {"shape": [None, None, N_BINS, 4], "dtype": "float32",
                                                            "keras_history": [after, 0, 0]}}
    entry = {"registered_name": None, "build_config": {"input_shape": [None, None, N_BINS, 4]}, **entry,
             "inbound_nodes": [{"args": [tensor], "kwargs": {}}]}
    entry.setdefault("name", entry["config"]["name"])
    layers.insert(layers.index(source) + 1, entry)
    target = next(layer for layer in layers if layer["name"] == before)
    target["inbound_nodes"][0]["args"][0]["config"]["keras_history"] = [entry["name"], 0, 0]
    return config


def conv_entry(name: str, filters: int = 4, **settings) -> dict:
    """A Conv2D layer's config entry (3x3, same padding) for :func:`with_layer`."""
    return {"module": "keras.layers", "class_name": "Conv2D", "name": name,
            "config": {"name": name, "filters": filters, "kernel_size": [3, 3], "padding": "same", **settings}}


LAMBDA_VIA_API_NAME = {"module": "keras", "class_name": "layers.Lambda", "name": "neg",
                       "config": {"name": "neg", "function": {"module": "keras", "class_name": "ops.negative",
                                                              "config": None, "registered_name": None}}}
"""A Lambda named the way Keras' public API names it (``keras`` + ``layers.Lambda``): issue 22, finding 1."""


def lambda_via_api_name(good: Path) -> dict:
    """The good model with a Lambda layer named through Keras' API path."""
    return with_layer(good_config(good), LAMBDA_VIA_API_NAME)


def deep_config(good: Path, depth: int = 100_000) -> bytes:
    """The good model's config.json with a list nested ``depth`` deep in it (finding 2)."""
    config = good_config(good)
    config["config"]["junk"] = "PLACEHOLDER"
    return json.dumps(config).encode().replace(b'"PLACEHOLDER"', b"[" * depth + b"]" * depth)


def wide_conv_config(good: Path, filters: int = 5_000_000) -> dict:
    """The good model with a Conv2D of ``filters`` filters feeding the next conv (finding 3): a 2 kB file."""
    config = with_layer(good_config(good), conv_entry("huge", filters))
    config["config"]["layers"][-2]["build_config"]["input_shape"][-1] = filters
    return config


def renamed_config(good: Path, name: str) -> bytes:
    """The good model with its layer ``conv_b`` renamed to ``name`` (finding 6: 'conv one' fails in TensorFlow)."""
    return json.dumps(good_config(good)).replace('"conv_b"', json.dumps(name)).encode()


# ---------------------------------------------------------------- a card's concepts section


def _concept(located: bool, selection, ranking_rows):
    return {"located": located, "confirmed": located, "selection": selection, "ranking": ranking_rows}


CONCEPTS_SECTION = {
    "channels": {"conv_a": 4, "conv_b": 4},
    "concepts": {
        "bass": {**_concept(True, ["conv_a:2", "conv_b:1"],
                            {"conv_a": [[2, -0.6, 0.5, 0.002], [0, -0.4, 0.3, 0.004], [3, -0.2, 0.1, 0.008]],
                             "conv_b": [[1, -0.5, -0.2, 0.002]]}),
                 "band": {"layer": "conv_a", "width": 0.0227, "place": 0.0, "confirmed": True,
                          "note": "a band mask over bass's band on conv_a moves bass 9.00x the median"}},
        "air": _concept(False, [], {"conv_a": [], "conv_b": []}),
    },
}
"""A card's concepts section, by hand, for the tiny model."""
