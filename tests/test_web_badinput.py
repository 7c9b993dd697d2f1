"""Hostile and broken input to the web API.

Every case here is one the API tests (test_web_api.py) do not already cover. Each
bad request gets a 4xx JSON body ``{"error": ...}`` with a plain message (never a
traceback, a stored file name or a server path); valid-but-odd input (8 channels,
8 kHz, 192 kHz, a FLAC named .wav, hostile file names) is processed normally. After
every case the server still answers and its job worker is alive, and nothing is
written outside the data dir: not next to it, not in the models folder, not in the
system's temp dir.
"""

from __future__ import annotations

import io
import json
import os
import struct
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from senseflosser.jobspec import JobSpec
from helpers import ROOT, SR, web_wav_bytes
from helpers import JOB_FIELDS as GOOD_FIELDS
from helpers import encode_audio as encode

MESSAGE_LIMIT = 600
TOKEN = uuid.uuid4().hex[:12]  # marks hostile names, to look for stray files afterwards


# ------------------------------------------------------------------ audio makers


def chunk_offset(data: bytes, cid: bytes) -> int:
    """Byte offset of a RIFF chunk's id."""
    pos = 12
    while pos + 8 <= len(data):
        if data[pos:pos + 4] == cid:
            return pos
        pos += 8 + struct.unpack("<I", data[pos + 4:pos + 8])[0]
    raise AssertionError(f"no {cid!r} chunk")


def wav_claiming_gigabytes() -> bytes:
    data = bytearray(web_wav_bytes(1.0))
    pos = chunk_offset(bytes(data), b"data")
    data[pos + 4:pos + 8] = struct.pack("<I", 0xF0000000)  # 3.75 GiB of samples promised
    data[4:8] = struct.pack("<I", 0xF0000000 + 36)
    return bytes(data)


def wav_with_zero_sample_rate() -> bytes:
    data = bytearray(web_wav_bytes(1.0))
    pos = chunk_offset(bytes(data), b"fmt ")
    data[pos + 12:pos + 16] = struct.pack("<I", 0)
    return bytes(data)


def float_wav_with(value: float, *, where: slice = slice(None)) -> bytes:
    y = 0.1 * np.ones(SR, np.float32)
    y[where] = value
    return encode(y, subtype="FLOAT")


def png_bytes() -> bytes:
    return (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4"
            b"\x89\x00\x00\x00\rIDATx\x9cc\xf8\x0f\x00\x00\x01\x01\x00\x05\x18\xd8N\x00\x00\x00\x00IEND\xaeB`\x82")


# ------------------------------------------------------------------ the table


@dataclass(frozen=True)
class Case:
    """One submission: what is sent and what must come back.

    ``status`` 202 means the input is valid and the job must finish (``done``);
    ``expect`` are substrings of the error message (4xx) or of the job's file name (202).
    """

    id: str
    status: int
    expect: tuple[str, ...] = ()
    audio: Callable[[], bytes] | None = lambda: web_wav_bytes(1.0)
    filename: str = "song.wav"
    fields: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


CASES = [
    # ---- the file itself
    Case("wav-header-claims-gigabytes", 400, ("song.wav", "header is wrong"), audio=wav_claiming_gigabytes),
    Case("wav-sample-rate-zero", 400, ("song.wav",), audio=wav_with_zero_sample_rate),
    Case("wav-riff-header-only", 400, ("song.wav", "not an audio file"), audio=lambda: b"RIFF\x04\x00\x00\x00WAVE"),
    Case("wav-data-cut-in-half", 400, ("song.wav", "truncated"), audio=lambda: web_wav_bytes(1.0)[:22050]),
    Case("zero-samples", 400, ("song.wav", "no audio samples"), audio=lambda: encode(np.zeros(0, np.float32))),
    Case("one-sample", 400, ("song.wav", "at least 0.1 s"), audio=lambda: encode(np.full(1, 0.1, np.float32))),
    Case("float-all-nan", 400, ("song.wav", "NaN or infinite"), audio=lambda: float_wav_with(np.nan)),
    Case("float-all-inf", 400, ("song.wav", "NaN or infinite"), audio=lambda: float_wav_with(np.inf)),
    Case("float-one-minus-inf-sample", 400, ("NaN or infinite",),
         audio=lambda: float_wav_with(-np.inf, where=slice(15000, 15001))),
    Case("png-renamed-wav", 400, ("song.wav", "not an audio file"), audio=png_bytes),
    Case("silent-flac-over-the-duration-limit", 400, ("clip.flac", "at most 2 s"), filename="clip.flac",
         audio=lambda: encode(np.zeros(3 * SR, np.float32), fmt="FLAC"), config={"MAX_DURATION_S": 2.0}),
    # ---- valid files that look odd: processed normally
    Case("8-channels", 202, audio=lambda: web_wav_bytes(1.0, SR, channels=8)),
    Case("8-khz", 202, audio=lambda: web_wav_bytes(1.0, 8000)),
    Case("192-khz-24-bit", 202, audio=lambda: web_wav_bytes(1.0, 192000, subtype="PCM_24")),
    Case("flac-named-wav", 202, audio=lambda: web_wav_bytes(1.0, 44100, fmt="FLAC")),
    # ---- hostile file names: accepted, stored as input/audio.<ext>, used only as download names
    Case("name-4kB", 202, ("x" * 80,), filename="x" * 4096 + ".wav"),
    Case("name-absolute-path", 202, (f"evil{TOKEN}.wav",), filename=f"/tmp/evil{TOKEN}.wav"),
    Case("name-windows-dotdot", 202, (f"evil{TOKEN}.wav",), filename=f"..\\..\\..\\evil{TOKEN}.wav"),
    Case("name-only-dots", 202, ("upload",), filename=".."),
    Case("name-nul-only", 202, ("upload",), filename="\x00"),
    # (browsers send a quote and CR LF in a file name as %22, %0D, %0A; raw ones are in RAW_CASES)
    Case("name-header-injection", 202, ("X-Evil_1.wav",), filename="a%22%0D%0AX-Evil: 1.wav"),
    Case("name-non-ascii", 202, ("upload.wav",), filename="\u00ff\u00fe\u202e\ufffd.wav"),
    Case("name-extension-of-a-dotfile", 202, ("htaccess",), filename="../.htaccess"),
    # ---- fields (the plain cases are in test_web_api.BAD_FIELDS)
    Case("duration-huge", 400, ("duration", "at most 600"), fields={"duration": "1e308"}),
    Case("duration-over-the-limit", 400, ("duration", "at most 600"), fields={"duration": "601"}),
    Case("duration-nan", 400, ("duration",), fields={"duration": "nan"}),
    Case("offset-huge", 400, ("song.wav", "past the end"), fields={"offset": "1e308"}),
    Case("offset-nan", 400, ("offset",), fields={"offset": "NaN"}),
    Case("offset-leaves-too-little", 400, ("song.wav", "at least 0.1 s"), fields={"offset": "0.95"}),
    Case("magnitude-inf", 400, ("magnitude",), fields={"magnitude": "inf"}),
    Case("magnitude-hex", 400, ("magnitude",), fields={"magnitude": "0x1"}),
    Case("magnitudes-too-many", 400, ("at most 20",),
         fields={"magnitude": None, "magnitudes": ",".join(f"0.{i:02d}" for i in range(1, 30))}),
    Case("magnitudes-empty-list", 400, ("magnitude",), fields={"magnitude": None, "magnitudes": " , ,"}),
    Case("seed-fraction", 400, ("seed",), fields={"seed": "1.5"}),
    Case("seed-huge", 400, ("seed",), fields={"seed": "9" * 40}),
    Case("action-list", 400, ("unknown action",), fields={"action": "fog,lapse"}),
    Case("action-traversal", 400, ("unknown action",), fields={"action": "../fog"}),
    Case("model-file-name", 400, ("unknown model",), fields={"model": "tiny.keras"}),
    Case("model-unc-path", 400, ("unknown model",), fields={"model": "\\\\host\\share\\tiny"}),
    Case("model-nul", 400, ("unknown model",), fields={"model": "tiny\x00"}),
    Case("model-url", 400, ("unknown model",), fields={"model": "http://127.0.0.1/tiny.keras"}),
    Case("layers-traversal", 400, ("not a conv layer",), fields={"layers": "../../etc/passwd"}),
    Case("layers-too-many", 400, ("layers",), fields={"layers": ",".join(f"conv_{i}" for i in range(65))}),
    Case("save-model-2", 400, ("save_model",), fields={"save_model": "2"}),
    # ---- the request itself
    Case("audio-as-text-field", 400, ("attach an audio file",), audio=None, fields={"audio": "RIFF...."}),
]


@pytest.fixture
def sandbox(tmp_path, models_dir, monkeypatch):
    """A data dir deep inside tmp_path, and a snapshot of everything around it.

    The system temp dir is redirected to an empty folder of its own, so anything
    the server spooled or left there would show.
    """
    import tempfile

    data_dir = tmp_path / "srv" / "data"
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))

    def snapshot() -> dict[str, tuple[int, int]]:
        files = {}
        for root in (tmp_path, models_dir):
            for dirpath, dirnames, filenames in os.walk(root):
                if Path(dirpath) == data_dir.parent:
                    dirnames[:] = [d for d in dirnames if d != data_dir.name]
                for name in filenames:
                    path = Path(dirpath) / name
                    st_ = path.lstat()
                    files[str(path)] = (st_.st_size, st_.st_mtime_ns)
                for name in dirnames:
                    files[str(Path(dirpath) / name) + "/"] = (0, 0)
        return files

    data_dir.mkdir(parents=True)
    before = snapshot()
    yield data_dir
    after = snapshot()
    assert after == before, {"new or changed": sorted(set(after.items()) - set(before.items()))}
    assert os.listdir(systmp) == []
    strays = [p for p in Path("/tmp").glob(f"*{TOKEN}*")] + [p for p in tmp_path.rglob(f"*{TOKEN}*")]
    assert strays == []


def error_message(response, data_dir: Path) -> str:
    assert response.is_json, response.get_data(as_text=True)[:300]
    body = response.get_json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    message = body["error"]
    assert isinstance(message, str) and 10 <= len(message) <= MESSAGE_LIMIT, message
    assert "Traceback" not in message and str(data_dir) not in message and "/srv/" not in message
    assert "audio.wav" not in message  # the stored name never shows; the user's does
    return message


def submit(client, case: Case):
    data = {**GOOD_FIELDS, **case.fields}
    data = {k: v for k, v in data.items() if v is not None}
    if case.audio is not None:
        data["audio"] = (io.BytesIO(case.audio()), case.filename)
    return client.post("/api/jobs", data=data, content_type="multipart/form-data")


def assert_still_working(app, client) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200, health.get_json()
    assert health.get_json()["queue"]["worker_alive"] is True
    assert app.extensions["senseflosser"].runner.alive


def stored_inputs(data_dir: Path) -> list[Path]:
    """The uploads stored (not the segment each one's check decoded and kept beside it)."""
    from app.engine import SEGMENT_FILE

    return sorted(p for p in data_dir.glob("*/input/*") if p.name != SEGMENT_FILE)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_table(make_web_app, sandbox, web_wait, case):
    data_dir = sandbox
    app = make_web_app(DATA_DIR=str(data_dir), **case.config)
    client = app.test_client()
    r = submit(client, case)
    assert r.status_code == case.status, r.get_json()
    if case.status >= 400:
        message = error_message(r, data_dir)
        for needle in case.expect:
            assert needle in message, message
        assert app.extensions["senseflosser"].store.ids() == []  # a refused upload leaves nothing
    else:
        view = web_wait(client, r.get_json()["id"])
        assert view["state"] == "done", view
        for needle in case.expect:
            assert needle in view["filename"], view["filename"]
        # Stored under the job's random id with a fixed name; the user's name is a download name only.
        (stored,) = stored_inputs(data_dir)
        assert stored.parent.parent.name == view["id"] and stored.stem == "audio"
        original = client.get(view["outputs"]["original"]["url"])
        y, sr = sf.read(io.BytesIO(original.data))
        assert sr == SR and y.ndim == 1 and len(y) == pytest.approx(SR, abs=2)
        download = client.get(view["outputs"]["flossed"][0]["download_url"])
        disposition = download.headers["Content-Disposition"]
        assert disposition.startswith("attachment; filename=")
        assert disposition.isascii() and "\r" not in disposition and "\n" not in disposition
        assert "/" not in disposition and "\\" not in disposition and ".." not in disposition
    assert_still_working(app, client)


# ------------------------------------------------------------------ requests that are not well-formed forms


def multipart(parts: list[tuple[bytes, bytes]], boundary: bytes = b"sfBoundary42") -> bytes:
    """A hand-made multipart body: (Content-Disposition parameters, content) per part."""
    out = b""
    for disposition, content in parts:
        out += (b"--" + boundary + b"\r\nContent-Disposition: form-data; " + disposition + b"\r\n\r\n"
                + content + b"\r\n")
    return out + b"--" + boundary + b"--\r\n"


def good_parts() -> list[tuple[bytes, bytes]]:
    return [(f'name="{k}"'.encode(), v.encode()) for k, v in GOOD_FIELDS.items()]


RAW_CASES = {
    "name-raw-latin-1-bytes": (
        multipart([*good_parts(), (b'name="audio"; filename="caf\xe9.wav"', web_wav_bytes(1.0))]),
        "multipart/form-data; boundary=sfBoundary42", 400, "UTF-8"),
    "name-raw-invalid-utf-8": (
        multipart([*good_parts(), (b'name="audio"; filename="\xff\xfe\x80.wav"', web_wav_bytes(1.0))]),
        "multipart/form-data; boundary=sfBoundary42", 400, "UTF-8"),
    "name-raw-crlf": (
        multipart([*good_parts(), (b'name="audio"; filename="a\r\nX-Evil: 1.wav"', web_wav_bytes(1.0))]),
        "multipart/form-data; boundary=sfBoundary42", 400, "audio"),
    "multipart-without-boundary": (
        multipart([*good_parts(), (b'name="audio"; filename="a.wav"', web_wav_bytes(1.0))]),
        "multipart/form-data", 400, "Missing boundary"),
    "multipart-cut-short": (
        multipart([*good_parts(), (b'name="audio"; filename="a.wav"', web_wav_bytes(1.0))])[:300],
        "multipart/form-data; boundary=sfBoundary42", 400, "could not be read"),
    "urlencoded-fields-only": (
        b"model=tiny&action=fog&magnitude=0.1", "application/x-www-form-urlencoded", 400, "attach an audio file"),
    "raw-wav-body": (web_wav_bytes(1.0), "audio/wav", 400, "attach an audio file"),
}


@pytest.mark.parametrize("case", list(RAW_CASES), ids=list(RAW_CASES))
def test_malformed_requests(make_web_app, sandbox, case):
    body, content_type, status, expected = RAW_CASES[case]
    app = make_web_app(DATA_DIR=str(sandbox))
    client = app.test_client()
    r = client.post("/api/jobs", data=body, content_type=content_type)
    assert r.status_code == status
    assert expected in error_message(r, sandbox)
    assert app.extensions["senseflosser"].store.ids() == []
    assert_still_working(app, client)


def test_name_given_as_rfc5987_with_invalid_utf8_is_stored_safely(make_web_app, sandbox, web_wait):
    app = make_web_app(DATA_DIR=str(sandbox))
    client = app.test_client()
    body = multipart([*good_parts(), (b"name=\"audio\"; filename=\"x.wav\"; filename*=UTF-8''%FF%FE%2F..%2F"
                                      + TOKEN.encode() + b".wav", web_wav_bytes(1.0))])
    r = client.post("/api/jobs", data=body, content_type="multipart/form-data; boundary=sfBoundary42")
    assert r.status_code == 202, r.get_json()
    view = web_wait(client, r.get_json()["id"])
    assert view["state"] == "done" and "/" not in view["filename"] and ".." not in view["filename"]
    assert [p.name for p in stored_inputs(sandbox)] == ["audio.wav"]


def test_a_chunked_upload_over_the_limit_is_413(make_web_app, sandbox):
    """Without Content-Length the size is only known while reading: the limit still holds."""
    app = make_web_app(DATA_DIR=str(sandbox), MAX_UPLOAD_MB=0.05)
    client = app.test_client()
    body = multipart([*good_parts(), (b'name="audio"; filename="big.wav"', web_wav_bytes(5.0))])
    r = client.post("/api/jobs", input_stream=io.BytesIO(body),
                    content_type="multipart/form-data; boundary=sfBoundary42",
                    environ_overrides={"wsgi.input_terminated": True})
    assert r.status_code == 413
    assert "0.05 MB" in error_message(r, sandbox)
    assert app.extensions["senseflosser"].store.ids() == []
    assert_still_working(app, client)


# ------------------------------------------------------------------ the file routes


@pytest.fixture
def finished(make_web_app, sandbox, web_wait):
    app = make_web_app(DATA_DIR=str(sandbox))
    client = app.test_client()
    view = web_wait(client, submit(client, Case("ok", 202)).get_json()["id"])
    assert view["state"] == "done"
    return app, client, view


FILE_NAMES = ["..%5Cstate.json", "%5C..%5C..%5Cetc%5Cpasswd", "audio_normal.wav%00.png", "audio_normal.wav%00",
              "input%2Faudio.wav", "out", "%2Fetc%2Fpasswd", "AUDIO_NORMAL.WAV", "audio_normal.wav%20",
              "%2e%2e%2f%2e%2e%2finput%2faudio.wav"]


@pytest.mark.parametrize("name", FILE_NAMES)
def test_file_route_serves_only_listed_outputs(finished, sandbox, name):
    app, client, view = finished
    r = client.get(f"/api/jobs/{view['id']}/files/{name}")
    assert r.status_code == 404
    error_message(r, sandbox)


def test_file_route_paths_with_dotdot_segments(finished, sandbox):
    app, client, view = finished
    job = view["id"]
    for url in (f"/api/jobs/{job}/files/../state.json", f"/api/jobs/{job}/files/../../{job}/state.json",
                f"/api/jobs/{job}/files/../input/audio.wav", f"/api/jobs/..%2F{job}/files/audio_normal.wav",
                f"/api/jobs/{job}%2F..%2F{job}/files/audio_normal.wav"):
        r = client.get(url)
        assert r.status_code == 404, url
        assert r.is_json and "error" in r.get_json()
        assert b"RIFF" not in r.data and b'"request"' not in r.data
    r = client.post(view["outputs"]["normal"]["url"])
    assert r.status_code == 405 and r.is_json
    assert client.get(view["outputs"]["normal"]["url"]).status_code == 200  # the real file still is


def test_files_of_a_failed_job_are_404(make_web_app, sandbox, web_wait):
    app = make_web_app(DATA_DIR=str(sandbox))
    client = app.test_client()
    runner = app.extensions["senseflosser"].runner

    def execute(job_id, state, progress):
        raise RuntimeError("fault injected by the test")

    runner.execute = execute
    view = web_wait(client, submit(client, Case("ok", 202)).get_json()["id"])
    assert view["state"] == "failed"
    r = client.get(f"/api/jobs/{view['id']}/files/audio_normal.wav")
    assert r.status_code == 404 and "failed" in error_message(r, sandbox)


# ------------------------------------------------------------------ one server through all of it


def test_one_server_survives_every_case_in_a_row_then_runs_a_job(make_web_app, sandbox, web_wait):
    """State left by any bad request (spooled uploads, half-made folders) must not hurt the next job."""
    app = make_web_app(DATA_DIR=str(sandbox), MAX_DURATION_S=600.0)
    client = app.test_client()
    accepted = []
    for case in CASES:
        if case.config:
            continue
        r = submit(client, case)
        assert r.status_code == case.status, (case.id, r.get_json())
        if r.status_code == 202:
            accepted.append(r.get_json()["id"])
    for body, content_type, status, _expected in RAW_CASES.values():
        assert client.post("/api/jobs", data=body, content_type=content_type).status_code == status
    for job_id in accepted:
        assert web_wait(client, job_id)["state"] == "done"
    last = submit(client, Case("ok", 202, audio=lambda: web_wav_bytes(1.5)))
    view = web_wait(client, last.get_json()["id"])
    assert view["state"] == "done" and view["outputs"]["duration"] == pytest.approx(1.5, abs=0.01)
    store = app.extensions["senseflosser"].store
    assert sorted(store.ids()) == sorted([*accepted, view["id"]])  # every refused upload left nothing
    spool = sandbox / ".uploads"
    assert not spool.exists() or os.listdir(spool) == []  # spooled uploads were closed and removed
    assert_still_working(app, client)


# ------------------------------------------------------------------ property test through HTTP


NUMBERS = st.one_of(
    st.sampled_from(["", "0", "-0", "0.5", "1", "2", "-1", "nan", "-inf", "inf", "1e308", "-1e308", "1e-320",
                     "1e999", "0x10", "1_0", " 1 ", "\x00", "1,5", "١", "0.1,0.2"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(max_size=12),
)
SEGMENT = st.one_of(st.just(""), st.sampled_from(["0", "0.2", "0.95", "1", "1e308", "1e-320", "-0", "600", "601"]),
                    NUMBERS)
AUDIO = {
    "wav-1s": lambda: web_wav_bytes(1.0),
    "wav-8k": lambda: web_wav_bytes(0.5, 8000),
    "empty": lambda: b"",
    "text": lambda: b"not audio\n" * 20,
    "nan": lambda: float_wav_with(np.nan, where=slice(100, 101)),
}


@pytest.fixture
def parked_app(make_web_app, tmp_path):
    """An app whose job worker is stopped: accepted jobs wait; only the HTTP checks run."""
    app = make_web_app(DATA_DIR=str(tmp_path / "parked"), QUEUE_SIZE=100_000, MAX_DURATION_S=30.0)
    app.extensions["senseflosser"].runner.stop()
    return app


VALID = {"model": "tiny", "action": "fog", "magnitude": "0.1", "seed": "1"}
FIELD_VALUES = {
    **{key: NUMBERS for key in ("magnitude", "seed", "magnitudes", "titrate", "save_model")},
    "model": st.one_of(st.sampled_from(["tiny", "tinyfixed", "../tiny", "/tiny", "TINY"]), st.text(max_size=10)),
    "action": st.one_of(st.sampled_from(["fog", "lapse", "FOG"]), st.text(max_size=6)),
    "layers": st.one_of(st.sampled_from(["conv_a", "conv_b,conv_a", "conv_a,conv_a", "x", ""]), st.text(max_size=8)),
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(audio=st.sampled_from(sorted(AUDIO)), offset=SEGMENT, duration=SEGMENT,
       changed=st.lists(st.sampled_from(sorted(FIELD_VALUES)), max_size=2, unique=True).flatmap(
           lambda keys: st.fixed_dictionaries({k: FIELD_VALUES[k] for k in keys})))
def test_any_submission_is_accepted_or_refused_in_words(parked_app, audio, offset, duration, changed):
    """The segment is always arbitrary, at most two other fields are, the rest are valid:
    so the checks behind the form (the decoder's) are reached as well."""
    client = parked_app.test_client()
    data = {**VALID, **changed, "offset": offset, "duration": duration, "audio": (io.BytesIO(AUDIO[audio]()), "x.wav")}
    r = client.post("/api/jobs", data=data, content_type="multipart/form-data")
    assert r.status_code in (202, 400), (r.status_code, r.get_data(as_text=True)[:300])
    body = r.get_json()
    if r.status_code == 400:
        assert set(body) == {"error"} and body["error"] and "Traceback" not in body["error"]
        return
    stored = json.loads((parked_app.extensions["senseflosser"].store.root / body["id"] / "state.json")
                        .read_text())["request"]
    job = JobSpec.from_checked(stored["spec"])
    assert job.base.model in ("tiny", "tinyfixed") and job.base.action in ("fog", "lapse")
    assert 0.1 <= stored["segment_duration"] <= 30.0
    assert job.offset < stored["file_duration"]


# ------------------------------------------------------------------ security: debugger, headers, CSRF, limits, models
# (test_web_security.py covers the headers of the page, API, static and 404 responses, the Origin
# check for multipart posts, the rate limit through the test config, the secret key and DEBUG=True.)


def recipe(makefile: str, target: str) -> list[str]:
    """The command lines of a Makefile target."""
    lines = makefile.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    out = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        out.append(line.strip())
    return out


def test_make_run_starts_gunicorn_without_debug_or_reload():
    (command,) = recipe((ROOT / "Makefile").read_text(), "run")
    assert "gunicorn -c gunicorn.conf.py wsgi:app" in command
    for flag in ("flask run", "--debug", "--reload", "FLASK_DEBUG", "app.run"):
        assert flag not in command


def test_no_debugger_even_when_the_environment_asks_for_one(monkeypatch, models_dir, tmp_path):
    """Build the app exactly as gunicorn does (wsgi.py) with every debug switch Flask knows set."""
    import runpy

    from werkzeug.debug import DebuggedApplication

    for name, value in {"FLASK_DEBUG": "1", "FLASK_ENV": "development", "WERKZEUG_DEBUG_PIN": "off",
                        "SENSEFLOSSER_DEBUG": "1", "SENSEFLOSSER_MODELS_DIR": str(models_dir),
                        "SENSEFLOSSER_DATA_DIR": str(tmp_path / "jobs"), "SENSEFLOSSER_WARM_UP": "0"}.items():
        monkeypatch.setenv(name, value)
    app = runpy.run_path(str(ROOT / "wsgi.py"))["app"]
    try:
        assert app.debug is False and app.config["DEBUG"] is False
        assert app.config["PROPAGATE_EXCEPTIONS"] in (None, False)
        layer = app.wsgi_app
        while layer is not None:  # no debugger middleware anywhere in the WSGI stack
            assert not isinstance(layer, DebuggedApplication)
            layer = getattr(layer, "app", None)
        client = app.test_client()
        assert client.get("/console").status_code == 404
        r = client.get("/?__debugger__=yes&cmd=resource&f=debugger.js")
        assert r.mimetype == "text/html" and b"__debugger__" not in r.data

        def broken():
            raise RuntimeError("internal detail")

        app.extensions["senseflosser"].engine.cards = broken
        r = client.get("/api/models")
        assert r.status_code == 500 and r.is_json
        for leak in (b"Traceback", b"internal detail", b"Werkzeug", b"__debugger__", b"SECRET"):
            assert leak not in r.data
    finally:
        app.extensions["senseflosser"].runner.stop()


def assert_security_headers(label: str, r) -> None:
    csp = r.headers.get("Content-Security-Policy", "")
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, (label, csp)
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, (label, csp)
    assert r.headers.get("X-Content-Type-Options") == "nosniff", label
    assert r.headers.get("X-Frame-Options") == "DENY", label
    assert r.headers.get("Referrer-Policy") == "no-referrer", label


def test_security_headers_on_every_kind_of_response(make_web_app, tmp_path, web_wait):
    responses = {}
    app = make_web_app(DATA_DIR=str(tmp_path / "a"))
    client = app.test_client()
    view = web_wait(client, submit(client, Case("ok", 202)).get_json()["id"])
    url = view["outputs"]["flossed"][0]["url"]
    responses["file 200"] = client.get(url)
    responses["file 206"] = client.get(url, headers={"Range": "bytes=0-99"})
    responses["file 304"] = client.get(url, headers={"If-None-Match": responses["file 200"].headers["ETag"]})
    responses["file 416"] = client.get(url, headers={"Range": "bytes=999999999-"})
    responses["download"] = client.get(view["outputs"]["flossed"][0]["download_url"])
    responses["spectrogram"] = client.get(view["outputs"]["normal"]["spectrogram"])
    responses["HEAD file"] = client.head(url)
    responses["file 404"] = client.get(f"/api/jobs/{view['id']}/files/nope.wav")
    responses["status 200"] = client.get(f"/api/jobs/{view['id']}")
    responses["static css"] = client.get("/static/css/style.css")
    responses["405"] = client.put("/api/jobs")
    responses["400 form"] = client.post("/api/jobs", data=b"x", content_type="multipart/form-data")
    responses["403 cross-site"] = client.post("/api/jobs", headers={"Origin": "https://evil.example"})
    responses["OPTIONS"] = client.options("/api/jobs")

    small = make_web_app(DATA_DIR=str(tmp_path / "b"), MAX_UPLOAD_MB=0.01).test_client()
    responses["413"] = small.post("/api/jobs", data={**GOOD_FIELDS, "audio": (io.BytesIO(web_wav_bytes(2.0)), "a.wav")})
    limited = make_web_app(DATA_DIR=str(tmp_path / "e"), RATE_LIMIT="1/minute").test_client()
    assert submit(limited, Case("bad", 400, fields={"model": "nope"})).status_code == 400
    responses["429"] = submit(limited, Case("bad", 400, fields={"model": "nope"}))

    busy = make_web_app(DATA_DIR=str(tmp_path / "c"), QUEUE_SIZE=1).test_client()
    busy.application.extensions["senseflosser"].runner.stop()
    assert submit(busy, Case("ok", 202)).status_code == 202
    responses["503 queue full"] = submit(busy, Case("ok", 202))

    empty = tmp_path / "no-models"
    empty.mkdir()
    responses["503 healthz"] = make_web_app(DATA_DIR=str(tmp_path / "d"), MODELS_DIR=str(empty)).test_client().get(
        "/healthz")

    def broken():
        raise RuntimeError("boom")

    app.extensions["senseflosser"].engine.cards = broken
    responses["500"] = client.get("/api/models")

    expected = {"file 200": 200, "file 206": 206, "file 304": 304, "file 416": 416, "download": 200,
                "spectrogram": 200, "HEAD file": 200, "file 404": 404, "status 200": 200, "static css": 200,
                "405": 405, "400 form": 400, "403 cross-site": 403, "OPTIONS": 200, "413": 413, "429": 429,
                "503 queue full": 503, "503 healthz": 503, "500": 500}
    assert {k: r.status_code for k, r in responses.items()} == expected
    for label, r in responses.items():
        assert_security_headers(label, r)
        r.close()


@pytest.mark.parametrize(("content_type", "body"), [
    ("application/x-www-form-urlencoded", b"model=tiny&action=fog&magnitude=0.1"),
    ("text/plain", b"model=tiny\r\naction=fog\r\nmagnitude=0.1"),
], ids=["urlencoded", "text-plain"])
def test_cross_site_html_form_posts_are_refused(web_app, content_type, body):
    """An attacker's page can post a plain HTML form (these two enctypes need no CORS preflight)."""
    client = web_app.test_client()
    for headers in ({"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
                    {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}):
        for path in ("/api/jobs", "/"):
            r = client.post(path, data=body, content_type=content_type, headers=headers)
            assert r.status_code == 403, (path, headers)
    assert web_app.extensions["senseflosser"].store.ids() == []


def test_the_rate_limit_comes_from_the_environment(monkeypatch, models_dir, tmp_path):
    from app import create_app

    monkeypatch.setenv("SENSEFLOSSER_RATE_LIMIT", "2/hour")
    app = create_app({"MODELS_DIR": str(models_dir), "DATA_DIR": str(tmp_path / "jobs"), "WARM_UP": False})
    try:
        client = app.test_client()
        codes = [submit(client, Case("bad", 400, fields={"model": "nope"})).status_code for _ in range(3)]
        assert codes == [400, 400, 429]
        assert "2 per 1 hour" in client.post("/api/jobs").get_json()["error"]
        other = app.test_client()
        r = other.post("/api/jobs", environ_base={"REMOTE_ADDR": "192.0.2.9"})
        assert r.status_code == 400  # another client has its own count
    finally:
        app.extensions["senseflosser"].runner.stop()


def test_the_server_never_loads_a_model_file_a_user_names_or_uploads(make_web_app, tmp_path, models_dir, monkeypatch,
                                                                     web_wait):
    """Only the registry's files are ever deserialized, and only in Keras' safe mode."""
    import shutil

    import keras

    from senseflosser import models as registry_module

    loads = []
    real_load = keras.models.load_model

    def recording_load(path, *args, **kwargs):
        loads.append((Path(path).resolve(), kwargs.get("safe_mode")))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(registry_module.keras.models, "load_model", recording_load)
    evil = tmp_path / "evil" / "evil.keras"
    evil.parent.mkdir()
    shutil.copy(models_dir / "tiny.keras", evil)
    fresh = tmp_path / "models"
    shutil.copytree(models_dir, fresh)
    app = make_web_app(DATA_DIR=str(tmp_path / "jobs"), MODELS_DIR=str(fresh))
    client = app.test_client()
    for model in (str(evil), "evil", "evil.keras", "../evil/evil", f"file://{evil}", str(fresh / "tiny.keras")):
        r = submit(client, Case("model", 400, fields={"model": model}))
        assert r.status_code == 400 and "unknown model" in r.get_json()["error"], model
    # A model file uploaded as audio is audio to us: refused by the decoder, never loaded.
    r = submit(client, Case("upload", 400, audio=lambda: evil.read_bytes(), filename="evil.keras",
                            fields={"save_model": "1"}))
    assert r.status_code == 400 and "not an audio file" in r.get_json()["error"]
    # Even a job whose stored request names a path (as if its state were tampered with) cannot load it.
    from senseflosser.errors import ModelError
    from senseflosser.jobspec import build_job

    job_dir = tmp_path / "tampered"
    (job_dir / "input").mkdir(parents=True)
    (job_dir / "input" / "audio.wav").write_bytes(web_wav_bytes(0.5))
    spec = build_job(model=str(evil), action="fog", magnitudes=[0.1], seed=1)
    request = {"input": "audio.wav", "spec": spec.to_dict(), "model": str(evil), "filename": "a.wav"}
    with pytest.raises(ModelError, match="unknown model"):
        app.extensions["senseflosser"].engine.render(job_dir, request, lambda fraction, message: None)
    # A normal job still works, and everything ever loaded came from the models folder, safely.
    view = web_wait(client, submit(client, Case("ok", 202, fields={"save_model": "1"})).get_json()["id"])
    assert view["state"] == "done"
    assert loads  # the fresh folder's models were loaded through the recorder
    assert all(path.parent in (fresh.resolve(), models_dir.resolve()) and safe is True for path, safe in loads), loads
    assert evil.resolve() not in {path for path, _ in loads}
