"""What the wheel installs: the library alone, no generic top-level names (``app``, ``benchmarks``)."""

from __future__ import annotations


import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

from helpers import ROOT


def _setuptools_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text()).get("tool", {}).get("setuptools", {})


def test_the_wheel_installs_only_senseflosser():
    from setuptools import find_packages

    config = _setuptools_config()
    # Packages are found (so a new subpackage of senseflosser is never left out), never listed by hand,
    # and no top-level module (wsgi.py, gunicorn.conf.py) is shipped.
    assert isinstance(config.get("packages"), dict) and set(config["packages"]) == {"find"}, config
    assert "py-modules" not in config, config
    find = config["packages"]["find"]
    assert set(find) <= {"include", "exclude"}, find
    packages = find_packages(where=str(ROOT), include=find["include"], exclude=find.get("exclude", ()))
    assert {name.split(".")[0] for name in packages} == {"senseflosser"}, packages
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "senseflosser").rglob("__init__.py")}
    assert on_disk == set(packages), "every package under senseflosser/ goes into the wheel"


def test_console_scripts_run_library_code():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts and all(target.startswith("senseflosser.") for target in scripts.values()), scripts
