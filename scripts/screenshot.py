"""Screenshot of the web page after one job, for the README.

Serves the app in-process on a free loopback port, drives Debian's Chromium with
Playwright, uploads a file (or a synthesized sine mix), waits for the players and
saves a full-page screenshot.

    python -m scripts.screenshot --out static/img/screenshot.png [--models-dir models] [--audio song.flac]

(from the project root: the web app, ``app/``, is not part of the installed package).
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def synthesized_wav(seconds: float = 4.0, sr: int = 22050) -> bytes:
    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * sr)) / sr
    y = sum(np.sin(2 * np.pi * f * t + i) * np.exp(-((t % 1.0) * (2 + i))) for i, f in enumerate((220, 330, 440, 660)))
    y = (0.2 * y / 4).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, y, sr, format="WAV")
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--models-dir", default=str(ROOT / "models"))
    p.add_argument("--model", help="model to choose (default: the first)")
    p.add_argument("--audio", help="audio file to upload (default: a synthesized 4 s clip)")
    p.add_argument("--titrate", action=argparse.BooleanOptionalAction, default=True,
                   help="titrate (the dose-response plot shows); --no-titrate for one magnitude")
    p.add_argument("--magnitude-steps", type=int, default=4, help="arrow-key steps on the damage slider")
    p.add_argument("--width", type=int, default=1000)
    p.add_argument("--chromium", default="/usr/bin/chromium")
    args = p.parse_args(argv)

    from playwright.sync_api import sync_playwright
    from werkzeug.serving import make_server

    from app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app({"MODELS_DIR": args.models_dir, "DATA_DIR": str(Path(tmp) / "jobs")})
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        audio = Path(args.audio) if args.audio else Path(tmp) / "example.wav"
        if not args.audio:
            audio.write_bytes(synthesized_wav())
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=args.chromium,
                                             args=["--headless", "--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": args.width, "height": 900})
                page.goto(f"http://127.0.0.1:{server.server_port}/")
                page.wait_for_selector("#model option:not([value=''])", state="attached")
                if args.model:
                    page.select_option("#model", args.model)
                page.set_input_files("#audio", str(audio))
                page.locator("#damage").focus()
                for _ in range(args.magnitude_steps):
                    page.keyboard.press("ArrowRight")
                if args.titrate:
                    page.check("#titrate")
                page.click("#submit")
                page.wait_for_selector("#results:not([hidden])", timeout=600_000)
                # the transport: play, switch to the first damaged version at the same instant, pause
                page.wait_for_selector("#transport[data-ready='1']", state="attached", timeout=120_000)
                page.keyboard.press("Space")
                page.wait_for_timeout(1500)
                page.keyboard.press("3")
                page.wait_for_timeout(300)
                page.keyboard.press("Space")
                page.click("#players-box summary")  # the separate players folded away, for a shorter picture
                page.wait_for_timeout(500)
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=args.out, full_page=True)
                browser.close()
        finally:
            server.shutdown()
            app.extensions["senseflosser"].runner.stop()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
