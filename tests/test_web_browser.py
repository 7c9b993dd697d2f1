"""The real page in headless Chromium (Debian's package), driven by Playwright.

Skipped when Chromium or Playwright is missing; ``.ci/run`` installs Chromium.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from conftest import web_wav_bytes

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 120_000


def chromium_path() -> str | None:
    for candidate in (os.environ.get("SENSEFLOSSER_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def wait_until(page, expression: str, timeout: float = TIMEOUT_MS / 1000):
    """Poll a JavaScript function until it returns something truthy.

    ``page.wait_for_function`` evaluates its predicate with ``eval`` inside the page,
    which the page's Content-Security-Policy (rightly) forbids; ``page.evaluate`` is
    not subject to it.
    """
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    if executable is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def live_server(web_app):
    """The test app served over HTTP on a free loopback port (threaded, so Range requests overlap)."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, web_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(accept_downloads=True, viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.set_default_timeout(30_000)
    problems: list[str] = []
    foreign: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("request", lambda req: foreign.append(req.url)
            if not req.url.startswith((live_server, "blob:", "data:")) else None)
    page.goto(live_server + "/")
    page.wait_for_selector("#model option[value='tiny']", state="attached")
    yield page
    context.close()
    assert not [p for p in problems if "Content Security Policy" in p or "Refused" in p], problems
    assert foreign == [], f"the page reached beyond its server: {foreign}"


def test_upload_floss_listen_download(page, tmp_path):
    song = tmp_path / "browser song.wav"
    song.write_bytes(web_wav_bytes(2.0))
    page.set_input_files("#audio", str(song))
    # the duration is read in the browser and bounds the segment controls
    wait_until(page, "() => document.getElementById('offset').max !== ''")
    assert "2.0 s" in page.inner_text("#file-info")
    assert float(page.get_attribute("#offset", "max")) == pytest.approx(2.0, abs=0.05)

    page.select_option("#model", "tiny")
    assert "tiny test model" in page.inner_text("#model-summary")
    page.check("#action-fog")
    slider = page.locator("#magnitude")
    slider.focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    assert page.inner_text("#magnitude-value") == "0.053"
    page.check("#save_model")
    page.click("#submit")

    page.wait_for_selector("#results:not([hidden])", timeout=TIMEOUT_MS)
    assert page.inner_text("#status-text") == "Done."
    assert page.locator("#players .player").count() == 3  # original, normal, fog 0.053
    assert "fog 0.053" in page.inner_text("#players .player:nth-child(3) h3").lower()
    wait_until(
        page, "() => { const a = document.querySelectorAll('#players audio'); const x = a[a.length - 1];"
        " return x && x.readyState >= 1 && x.duration > 0; }")
    duration = page.evaluate("() => { const a = document.querySelectorAll('#players audio'); "
                             "return a[a.length - 1].duration; }")
    assert duration == pytest.approx(2.0, abs=0.1)
    assert page.evaluate("() => document.querySelector('#players .player:nth-child(3) img').naturalWidth") > 0
    assert "SNR" in page.inner_text("#players .player:nth-child(3) .metrics")
    assert page.input_value("#cli").startswith("senseflosser floss -i browser_song.wav -m tiny -a fog -g 0.053")

    flossed = page.locator("#players .player:nth-child(3)")
    with page.expect_download() as wav_download:
        flossed.locator(".download-wav").click()
    wav = wav_download.value
    assert wav.suggested_filename == "browser_song_fog_0.053.wav"
    wav_path = Path(wav.path())
    assert wav_path.stat().st_size > 44 and wav_path.read_bytes()[:4] == b"RIFF"

    with page.expect_download() as model_download:
        flossed.locator(".download-model").click()
    model = model_download.value
    assert model.suggested_filename == "browser_song_tiny_fog_0.053.keras"
    assert Path(model.path()).read_bytes()[:2] == b"PK"

    # the form kept its values for the next run
    assert page.input_value("#magnitude") == "0.053"
    assert page.is_checked("#save_model")


def test_an_unreadable_file_shows_a_plain_error_and_keeps_the_form(page, tmp_path):
    fake = tmp_path / "notes.wav"
    fake.write_text("these are my notes, not a recording\n" * 20)
    page.set_input_files("#audio", str(fake))
    wait_until(page, "() => document.getElementById('file-info').textContent.includes('notes.wav:')")
    page.check("#action-lapse")
    page.click("#advanced summary")
    page.fill("#seed", "1234")
    page.click("#submit")
    error = page.locator("#error")
    error.wait_for(state="visible", timeout=TIMEOUT_MS)
    text = error.inner_text()
    assert text.startswith("Notes.wav: not an audio file") or "not an audio file" in text
    assert page.is_hidden("#results")
    assert page.is_checked("#action-lapse")
    assert page.input_value("#seed") == "1234"
    assert page.eval_on_selector("#audio", "el => el.files.length") == 1
    assert page.is_enabled("#submit")


def test_titrate_and_queue_position_survive_a_reload(page, live_server, tmp_path):
    song = tmp_path / "t.wav"
    song.write_bytes(web_wav_bytes(1.0))
    page.set_input_files("#audio", str(song))
    page.check("#titrate")
    assert page.is_disabled("#magnitude")
    page.click("#submit")
    wait_until(page, "() => location.hash.startsWith('#job=')")
    page.reload()
    page.wait_for_selector("#results:not([hidden])", timeout=TIMEOUT_MS)
    assert page.locator("#players .player").count() == 2 + 5


def test_own_model_through_the_page(page, tmp_path):
    import keras

    from conftest import make_tiny_model

    song = tmp_path / "mine.wav"
    song.write_bytes(web_wav_bytes(1.5))
    own = tmp_path / "my autoencoder.keras"
    make_tiny_model(seed=5, name="mine").save(own)
    page.set_input_files("#audio", str(song))
    page.set_input_files("#model-file", str(own))
    assert page.is_disabled("#model")
    assert "my autoencoder.keras" in page.inner_text("#model-summary")
    page.check("#action-ablate")
    page.check("#save_model")
    page.click("#submit")
    page.wait_for_selector("#results:not([hidden])", timeout=TIMEOUT_MS)
    assert page.locator("#players .player").count() == 3
    assert "-m my_autoencoder.keras" in page.input_value("#cli")
    with page.expect_download() as model_download:
        page.locator("#players .player:nth-child(3) .download-model").click()
    saved = tmp_path / model_download.value.suggested_filename
    model_download.value.save_as(saved)
    assert saved.suffix == ".keras"
    flossed = keras.models.load_model(saved)
    assert flossed.count_params() > 0
    # a refused model is explained in the page
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"PK\x03\x04 truncated")
    page.set_input_files("#model-file", str(bad))
    page.click("#submit")
    error = page.locator("#error")
    error.wait_for(state="visible", timeout=TIMEOUT_MS)
    assert "bad.keras" in error.inner_text().lower() and "not a .keras file" in error.inner_text()
