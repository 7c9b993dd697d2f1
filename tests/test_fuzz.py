"""Fuzzing (issue 22): every form field of POST /api/jobs and /api/maps, and generated model configs.

No request may answer 5xx, a config is either accepted within the limits or refused with a
:class:`~senseflosser.errors.ModelError`, and the server still serves (a real job runs) afterwards.

The form fuzz runs on a live app whose job function is replaced by one that fails at once, so
thousands of submissions cost only the request handling (form, audio check, queueing); the real
job function is put back for the last job. Cases are derandomized: CI runs the same ones every time.
"""

from __future__ import annotations

import io
import json
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.jobs import JobFailed
from helpers import job_executor, make_tiny_model, web_wav_bytes
from helpers import good_config, rezip
from senseflosser import untrusted
from senseflosser.errors import ModelError

FORM_CASES = 2000
CONFIG_CASES = 1500
UPLOAD_CASES = 40

AUDIO = {"short": web_wav_bytes(0.3), "8k": web_wav_bytes(0.25, 8000), "empty": b"", "text": b"not audio " * 8}

HUGE = ["1e308", "-1e308", "1e999", "9" * 40, "9" * 5000, "1e-320", "-0", "0x10", "1_0", "nan", "inf", "-inf"]
UNICODE = ["²", "١", "١٢", "٠.١", "１２", "Ⅻ", "𝟙", "\u00a0", "\u202e", "\x00", "\ud7ff", "😀", "\n", "0\n", "1 2"]
NUMBER = st.one_of(
    st.sampled_from(["", "0", "1", "2", "0.1", "0.5", "-1", "3", "5", "6", *HUGE, *UNICODE]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(max_size=8),
)
NUMBER_LIST = st.lists(NUMBER, max_size=6).map(",".join)
FLAG = st.one_of(st.sampled_from(["0", "1", "yes", "no", "true", "", "2", "１", "on"]), st.text(max_size=4))
ENVELOPE = st.one_of(
    st.sampled_from(["0:0,0.5:0.1", "ramp:0,0.2", "lfo:0,0.1,0.2", "lfo:0,0.05,1e-320", "lfo:0,0.1,0",
                     "lfo:0,0.1,1e308", "ramp:1e308,-1e308", "0:0,1e999:1", "0:x", ":", "ramp:", "lfo:1,2",
                     "0:0," * 600]),
    st.lists(st.tuples(NUMBER, NUMBER), max_size=5).map(lambda ps: ",".join(f"{t}:{m}" for t, m in ps)),
    st.text(max_size=20),
)
LAYERS = st.one_of(
    st.sampled_from(["conv_a", "conv_a:0,1", "conv_b:3,conv_out", "conv_a:9", "conv_a:-1", "conv_a:²", "conv_a:",
                     ":0", "down:cluster2", "concept:brightness", "conv_a,conv_a", ",".join(["conv_a"] * 70),
                     "conv_a:" + ",".join(str(i) for i in range(2000))]),
    st.text(max_size=12),
)
TEXT = st.one_of(st.sampled_from(["tiny", "tinyfixed", "fog", "lapse", "ablate", "bitflip", "adversarial",
                                  "dream", "../tiny", "TINY", "tiny\n", *UNICODE]),
                 st.text(max_size=16), st.text(min_size=990, max_size=1100))
FIELDS = {
    "model": st.one_of(st.just("tiny"), TEXT),
    "action": st.one_of(st.sampled_from(["fog", "lapse", "ablate", "bitflip", "adversarial"]), TEXT),
    "magnitude": NUMBER, "magnitudes": NUMBER_LIST, "titrate": FLAG, "seed": NUMBER, "layers": LAYERS,
    "offset": NUMBER, "duration": NUMBER, "envelope": ENVELOPE, "adversarial_on_input": FLAG,
    "save_model": FLAG, "seeds": NUMBER, "source": st.one_of(st.sampled_from(["SOURCE", "SOURCE\n", "x" * 22, ""]),
                                                               st.text(max_size=24)),
    # this wave's fields (declared action parameters, ladders, performances, explanations, video)
    "ladder": NUMBER, "performance": ENVELOPE, "explain": st.sampled_from(["solo,mute,difference", "x", ""]),
    "video": FLAG, "steps": NUMBER, "target": LAYERS,
}
EXTRA = st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=30), max_size=3)


@pytest.fixture(scope="module")
def fuzz_app(models_dir, tmp_path_factory):
    """A live app whose jobs fail at once (its worker stays up); the real job function is kept aside."""
    from app import create_app

    app = create_app({"MODELS_DIR": str(models_dir), "DATA_DIR": str(tmp_path_factory.mktemp("fuzz") / "jobs"),
                      "RATE_LIMIT": "1000000/minute", "QUEUE_SIZE": 100_000, "MAX_DURATION_S": 30.0,
                      "CLEANUP_INTERVAL_S": 3600.0})
    executor = job_executor(app)
    real = executor.execute

    def refuse(job_id, state, progress):
        raise JobFailed("the fuzz test runs no jobs")

    executor.execute = refuse
    client = app.test_client()
    r = client.post("/api/jobs", data={"model": "tiny", "action": "fog", "magnitude": "0.1",
                                       "audio": (io.BytesIO(AUDIO["short"]), "s.wav")},
                    content_type="multipart/form-data")
    assert r.status_code == 202
    app.config["FUZZ_SOURCE"] = r.get_json()["id"]
    yield app, real
    app.extensions["senseflosser"].runner.stop()


def _check_answer(r) -> None:
    assert r.status_code < 500, (r.status_code, r.get_data(as_text=True)[:300])
    if r.status_code >= 400:
        body = r.get_json()
        assert isinstance(body, dict) and set(body) == {"error"}, r.get_data(as_text=True)[:300]
        assert 10 <= len(body["error"]) <= 1200 and "Traceback" not in body["error"], body


def test_form_fuzz_never_answers_5xx_and_the_server_serves_after(fuzz_app, web_wait):
    app, real = fuzz_app
    client = app.test_client()
    store = app.extensions["senseflosser"].store
    source = app.config["FUZZ_SOURCE"]
    count = [0]
    t0 = time.monotonic()

    @settings(max_examples=FORM_CASES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(path=st.sampled_from(["/api/jobs", "/api/maps"]), audio=st.sampled_from([*AUDIO, None]),
           fields=st.lists(st.sampled_from(sorted(FIELDS)), max_size=5, unique=True).flatmap(
               lambda keys: st.fixed_dictionaries({k: FIELDS[k] for k in keys})),
           base=st.booleans(), extra=EXTRA)
    def one(path, audio, fields, base, extra):
        data = {"model": "tiny", "action": "fog", "magnitude": "0.1"} if base else {}
        data.update(extra)
        data.update(fields)
        if data.get("source") in ("SOURCE", "SOURCE\n"):
            data["source"] = data["source"].replace("SOURCE", source)
        if audio is not None:
            data["audio"] = (io.BytesIO(AUDIO[audio]), "fuzz.wav")
        r = client.post(path, data=data, content_type="multipart/form-data")
        count[0] += 1
        _check_answer(r)
        if r.status_code == 202:
            spec = store.read(r.get_json()["id"])["request"]
            assert math.isfinite(spec["time_limit_s"]) and spec["time_limit_s"] > 0
            assert all(math.isfinite(r["magnitude"]) for r in spec["spec"]["recipes"])
            store.delete(r.get_json()["id"])  # keeps the data dir small (its size is measured per submission)

    one()
    seconds = time.monotonic() - t0
    print(f"form fuzz: {count[0]} requests in {seconds:.1f} s")
    assert count[0] >= FORM_CASES * 0.9
    # Still serving: health, the registry, and one real job.
    assert client.get("/healthz").status_code == 200
    assert client.get("/api/models").status_code == 200
    job_executor(app).execute = real
    r = client.post("/api/jobs", data={"model": "tiny", "action": "lapse", "magnitude": "0.2",
                                       "audio": (io.BytesIO(web_wav_bytes(1.0)), "after.wav")},
                    content_type="multipart/form-data")
    assert r.status_code == 202, r.get_json()
    assert web_wait(client, r.get_json()["id"])["state"] == "done"
    assert store.ids()


# ------------------------------------------------------------------ generated model configs

NAMES = ["Conv2D", "Dense", "Lambda", "layers.Lambda", "layers.TFSMLayer", "TFSMLayer", "ops.negative", "function",
         "Functional", "Sequential", "Model", "InputLayer", "UpSampling2D", "Reshape", "__lambda__", "__tensor__",
         "__numpy__", "__keras_tensor__", "__tuple__", "DTypePolicy", "GlorotUniform", "STFT", "system", "eval",
         "SpectralCompress", "ChannelGate", "Lapse", "Custom", "TorchModuleWrapper", "Orthogonal", "L2", "relu"]
MODULES = ["keras", "keras.layers", "keras.src.layers.core.lambda_layer", "keras.src.models.functional",
           "keras.initializers", "keras.activations", "keras.ops", "builtins", "os", "subprocess",
           "senseflosser.layers", "keras.src.utils.torch_utils", "keras_hub", None, ""]
REGISTERED = [None, "senseflosser>ChannelGate", "senseflosser>Lapse", "evil>Custom", "Functional", "Conv2D", ">x"]
LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**66), max_value=2**66),
    st.sampled_from([0, 1, -1, 2, 3, 5_000_000, 10**9, 10**18]), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(NAMES + [m for m in MODULES if m] + ["same", "valid", "float32", "int8_from_float32", "gelu",
                                                        "conv one", "<b>", "mixed_float16", "channels_first"]),
    st.text(max_size=10),
)
VALUE = st.recursive(LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(
        ["class_name", "module", "config", "registered_name", "name", "filters", "kernel_size", "activation",
         "dtype", "units", "size", "padding", "channels", "shape", "keras_history", "inbound_nodes", "layers"]),
        inner, max_size=4)), max_leaves=12)


def _paths(node, prefix=()):
    """Every (container, key) in a config tree, to pick mutation sites from."""
    out = []
    stack = [(node, prefix)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                out.append(path + (key,))
                stack.append((value, path + (key,)))
        elif isinstance(item, list):
            for i, value in enumerate(item):
                out.append(path + (i,))
                stack.append((value, path + (i,)))
    return out


@st.composite
def mutated_configs(draw, base: dict):
    config = json.loads(json.dumps(base))
    sites = _paths(config)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        path = draw(st.sampled_from(sites))
        parent = config
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        kind = draw(st.sampled_from(["value", "class_name", "module", "registered_name", "drop", "number"]))
        if kind == "drop" and isinstance(parent, dict):
            parent.pop(key, None)
        elif kind == "class_name" and isinstance(parent, dict):
            parent["class_name"] = draw(st.sampled_from(NAMES))
        elif kind == "module" and isinstance(parent, dict):
            parent["module"] = draw(st.sampled_from(MODULES))
        elif kind == "registered_name" and isinstance(parent, dict):
            parent["registered_name"] = draw(st.sampled_from(REGISTERED))
        elif kind == "number":
            parent[key] = draw(st.sampled_from([0, -1, 2, 7, 10**6, 5_000_000, 2**40, 1e308, 0.5]))
        else:
            parent[key] = draw(VALUE)
        sites = _paths(config)
        if not sites:
            break
    return config


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzzmodel") / "good.keras"
    make_tiny_model(name="good").save(path)
    return path


def test_generated_configs_are_accepted_within_limits_or_refused_in_words(good):
    base = good_config(good)
    limits = untrusted.Limits()
    outcomes = {"accepted": 0, "refused": 0}
    t0 = time.monotonic()

    @settings(max_examples=CONFIG_CASES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(config=mutated_configs(base))
    def one(config):
        try:
            report = untrusted.check_config(config)
        except ModelError as exc:
            assert str(exc).startswith("model: ") and len(str(exc)) < 800, str(exc)
            outcomes["refused"] += 1
            return
        outcomes["accepted"] += 1
        assert report.parameters <= limits.max_parameters
        assert report.flops_per_second <= limits.max_flops_per_second
        assert report.activations_per_second <= limits.max_activations_per_second

    one()
    print(f"config fuzz: {outcomes} in {time.monotonic() - t0:.1f} s")
    assert outcomes["refused"] > CONFIG_CASES / 4 and outcomes["accepted"] > 0


def test_uploaded_generated_models_never_answer_5xx(good, fuzz_app, tmp_path):
    app, _real = fuzz_app
    client = app.test_client()
    base = good_config(good)
    store = app.extensions["senseflosser"].store
    codes: dict[int, int] = {}

    @settings(max_examples=UPLOAD_CASES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(config=mutated_configs(base))
    def one(config):
        try:
            raw = json.dumps(config).encode()
        except ValueError:
            return
        path = rezip(good, tmp_path / "fuzz.keras", raw)
        r = client.post("/api/jobs", data={"action": "fog", "magnitude": "0.1",
                                           "audio": (io.BytesIO(AUDIO["short"]), "a.wav"),
                                           "model_file": (io.BytesIO(path.read_bytes()), "fuzz.keras")},
                        content_type="multipart/form-data")
        codes[r.status_code] = codes.get(r.status_code, 0) + 1
        _check_answer(r)
        if r.status_code == 202:
            store.delete(r.get_json()["id"])

    one()
    assert set(codes) <= {202, 400, 413}, codes
    assert client.get("/healthz").status_code == 200
