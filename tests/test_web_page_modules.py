"""The page's scripts: native ES modules of one concern each, fed the server's rules by the server.

Plain tests (no browser): the module graph, the size of each module, no copied server constant,
and the data attributes the template renders from the Python values (also with a changed config).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from helpers import ROOT
JS = ROOT / "static" / "js"
MAX_LINES = 400
ENTRY = "app.js"

IMPORT_RE = re.compile(r'^import\s*\{([^}]*)\}\s*from\s*"\./([\w-]+\.js)";', re.M)
EXPORT_RE = re.compile(r"^export\s+(?:async\s+)?(?:function|const|let|class)\s+([\w$]+)", re.M)


def modules() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(JS.glob("*.js"))}


def imports(source: str) -> list[tuple[str, list[str]]]:
    return [(target, [n.strip() for n in names.split(",") if n.strip()]) for names, target in IMPORT_RE.findall(source)]


def test_no_module_is_over_400_lines_and_app_js_is_no_monolith():
    found = modules()
    assert len(found) >= 7, sorted(found)  # api, transport, charts, envelope, form, results, wiring at least
    for name, source in found.items():
        lines = source.count("\n")
        assert lines <= MAX_LINES, f"static/js/{name} has {lines} lines; split it (at most about {MAX_LINES})"
    entry = found[ENTRY]
    assert entry.count("\n") < 200, "app.js is the wiring only"
    assert "(function" not in entry and len(imports(entry)) >= 6


def test_the_module_graph_resolves_and_reaches_every_module():
    found = modules()
    exported = {name: set(EXPORT_RE.findall(source)) for name, source in found.items()}
    reached, todo = set(), [ENTRY]
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        assert "require(" not in found[name]
        urls = set(re.findall(r"https?://[^\"'`\s]*", found[name])) - {"http://www.w3.org/2000/svg"}
        assert not urls, f"{name} reaches beyond its server: {sorted(urls)}"
        for target, names in imports(found[name]):
            assert target in found, f"{name} imports ./{target}, which does not exist"
            missing = set(names) - exported[target]
            assert not missing, f"{name} imports {sorted(missing)} that ./{target} does not export"
            todo.append(target)
        # every import line is of the checked form (a named import of a sibling module)
        for line in re.findall(r"^import\b[^;]*;", found[name], re.M | re.S):
            assert IMPORT_RE.match(line.replace("\n", " ")), f"{name}: unexpected import {line!r}"
    assert reached == set(found), f"modules app.js never loads: {sorted(set(found) - reached)}"


def test_no_server_constant_is_written_into_the_scripts():
    from app.config import DEFAULTS
    from senseflosser import audio, envelope
    from senseflosser.actions import MAX_SEED

    # The distinctive values; small ones (30 s, 0.1 s, 50 MB) coincide with drawing geometry, so the
    # data attributes test below covers them.
    constants = {audio.SAMPLE_RATE, MAX_SEED, envelope.MAX_POINTS, DEFAULTS["POLL_INTERVAL_MS"][0],
                 DEFAULTS["MAX_DURATION_S"][0], DEFAULTS["RESULT_TTL_S"][0]}
    for name, source in modules().items():
        numbers = {float(n.replace("_", "")) for n in re.findall(r"(?<![\w.])\d[\d_]*(?:\.\d+)?", source)}
        copied = {c for c in constants if float(c) in numbers}
        assert not copied, f"static/js/{name} repeats server constants {sorted(copied)}; read them from config.js"
        assert not re.search(r"\{\d+\}", source), f"static/js/{name} has a fixed-length pattern (the job id's?)"


class _Main(HTMLParser):
    def __init__(self):
        super().__init__()
        self.main: dict[str, str] = {}
        self.scripts: list[dict[str, str]] = []
        self.inputs: dict[str, dict[str, str]] = {}

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "main":
            self.main = a
        elif tag == "script":
            self.scripts.append(a)
        elif tag == "input" and "id" in a:
            self.inputs[a["id"]] = a


def _parse(html: str) -> _Main:
    parser = _Main()
    parser.feed(html)
    return parser


def _config_names() -> set[str]:
    """The data attributes config.js reads, as HTML attribute names."""
    source = (JS / "config.js").read_text()
    names = re.findall(r'(?:text|number)\(el, "(\w+)"\)', source)
    assert names
    return {"data-" + re.sub(r"[A-Z]", lambda m: "-" + m.group().lower(), n) for n in names}


def test_the_page_loads_one_module_and_renders_every_setting_config_js_reads(web_client):
    page = _parse(web_client.get("/").get_data(as_text=True))
    assert page.scripts == [{"type": "module", "src": "/static/js/app.js"}]
    missing = _config_names() - set(page.main)
    assert not missing, f"index.html does not render {sorted(missing)}"


def test_the_page_settings_are_the_python_values_and_follow_the_config(make_web_app):
    from app import api, engine, jobs
    from senseflosser import audio, envelope
    from senseflosser.actions import MAX_SEED

    app = make_web_app(MAX_DURATION_S=42.5, MAX_UPLOAD_MB=3.0, MAX_MODEL_MB=7.0, POLL_INTERVAL_MS=321)
    page = _parse(app.test_client().get("/").get_data(as_text=True))
    main = page.main
    assert float(main["data-max-duration"]) == 42.5
    assert int(main["data-max-upload-bytes"]) == 3 * 1024 * 1024
    assert int(main["data-max-model-bytes"]) == 7 * 1024 * 1024
    assert int(main["data-poll-ms"]) == 321
    assert int(main["data-sample-rate"]) == audio.SAMPLE_RATE
    assert main["data-id-pattern"] == jobs.JOB_ID_RE.pattern
    assert re.fullmatch(main["data-id-pattern"], jobs.new_job_id())
    assert float(main["data-map-max-seconds"]) == api.MAP_MAX_SECONDS
    assert float(main["data-min-duration"]) == engine.MIN_SEGMENT_S
    assert int(main["data-max-seed"]) == MAX_SEED
    assert int(main["data-envelope-max-points"]) == envelope.MAX_POINTS
    # the form's own bounds come from the same values
    assert float(page.inputs["duration"]["min"]) == engine.MIN_SEGMENT_S
    assert int(page.inputs["seed"]["max"]) == MAX_SEED


@pytest.mark.parametrize("name", ["app.js", "config.js", "transport.js"])
def test_modules_are_served_as_javascript(web_client, name):
    r = web_client.get(f"/static/js/{name}")
    assert r.status_code == 200 and "javascript" in r.mimetype
    r.close()
