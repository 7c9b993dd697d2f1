"""Security headers, the cross-site check, rate limiting and configuration of the web app."""

from __future__ import annotations

import pytest

from app.config import ConfigError
from helpers import web_wav_bytes

ADDRESSES = ["/", "/api/models", "/healthz", "/static/js/app.js", "/api/nothing", "/nothing"]


@pytest.mark.parametrize("path", ADDRESSES)
def test_security_headers_on_every_response(web_client, path):
    r = web_client.get(path)
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    r.close()


def test_security_headers_on_errors_and_uploads(web_client, web_submit):
    r = web_submit(web_client, model="nope")
    assert r.status_code == 400 and "default-src 'self'" in r.headers["Content-Security-Policy"]
    r = web_submit(web_client)
    assert r.status_code == 202 and r.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"},
    {"Origin": "http://localhost.evil.example"},
    {"Origin": "http://localhost:8081"},
    {"Origin": "null"},
    {"Origin": "file://"},
    {"Origin": "not a url"},
    {"Sec-Fetch-Site": "cross-site"},
], ids=["other-site", "suffix", "other-port", "null", "file", "garbage", "sec-fetch-site"])
def test_cross_site_posts_are_refused(web_app, web_submit, headers):
    client = web_app.test_client()
    r = web_submit(client, headers=headers)
    assert r.status_code == 403
    assert "another web site" in r.get_json()["error"]
    assert web_app.extensions["senseflosser"].store.ids() == []


@pytest.mark.parametrize("headers", [
    {},  # curl and scripts
    {"Origin": "http://localhost"},
    {"Origin": "https://localhost"},  # TLS ended by a proxy in front
    {"Origin": "http://LOCALHOST/"},
    {"Sec-Fetch-Site": "same-origin"},
    {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"},
], ids=["no-origin", "same", "https-proxy", "case", "sec-fetch-same", "both"])
def test_same_site_and_scripted_posts_are_accepted(web_client, web_submit, headers):
    assert web_submit(web_client, headers=headers).status_code == 202


def test_trusted_origins_may_post(make_web_app, web_submit):
    client = make_web_app(TRUSTED_ORIGINS="https://demo.example.org, https://other.example").test_client()
    assert web_submit(client, headers={"Origin": "https://demo.example.org"}).status_code == 202
    assert web_submit(client, headers={"Origin": "https://third.example"}).status_code == 403


def test_cross_site_post_is_refused_before_the_upload_is_read(make_web_app, web_submit):
    client = make_web_app(MAX_UPLOAD_MB=0.01).test_client()
    r = web_submit(client, audio=web_wav_bytes(5.0), headers={"Origin": "https://evil.example"})
    assert r.status_code == 403


def test_job_submissions_are_rate_limited_per_client(make_web_app, web_submit):
    app = make_web_app(RATE_LIMIT="2/minute")
    client = app.test_client()
    assert web_submit(client).status_code == 202
    assert web_submit(client, model="nope").status_code == 400  # bad submissions count too
    r = web_submit(client)
    assert r.status_code == 429
    assert "too many jobs" in r.get_json()["error"] and "2 per 1 minute" in r.get_json()["error"]
    assert 1 <= int(r.headers["Retry-After"]) <= 61
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    # reading is not limited, and another client is not affected
    assert client.get("/api/models").status_code == 200
    other = app.test_client()
    r = other.post("/api/jobs", data={"model": "nope"}, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert r.status_code == 400


def test_trusted_proxy_address_is_the_rate_limit_key(make_web_app, web_submit):
    client = make_web_app(RATE_LIMIT="1/minute", TRUSTED_PROXIES=1).test_client()
    assert web_submit(client, model="nope", headers={"X-Forwarded-For": "192.0.2.1"}).status_code == 400
    assert web_submit(client, model="nope", headers={"X-Forwarded-For": "192.0.2.2"}).status_code == 400
    assert web_submit(client, model="nope", headers={"X-Forwarded-For": "192.0.2.1"}).status_code == 429


def test_untrusted_forwarded_for_is_ignored(make_web_app, web_submit):
    client = make_web_app(RATE_LIMIT="1/minute").test_client()
    assert web_submit(client, model="nope", headers={"X-Forwarded-For": "192.0.2.1"}).status_code == 400
    assert web_submit(client, model="nope", headers={"X-Forwarded-For": "192.0.2.2"}).status_code == 429


def test_internal_errors_are_plain_json_without_traceback(web_app):
    def broken():
        raise RuntimeError("secret internals /etc/something")

    web_app.extensions["senseflosser"].engine.cards = broken
    r = web_app.test_client().get("/api/models")
    assert r.status_code == 500
    text = r.get_data(as_text=True)
    assert "secret internals" not in text and "Traceback" not in text
    assert "has been logged" in r.get_json()["error"]


# ------------------------------------------------------------------ secret key, debug, configuration


def test_a_random_secret_key_is_generated_when_unset(make_web_app, monkeypatch):
    monkeypatch.delenv("SENSEFLOSSER_SECRET_KEY", raising=False)
    a, b = make_web_app(), make_web_app()
    assert len(a.secret_key) == 64 and a.secret_key != b.secret_key


def test_a_configured_secret_key_is_used_and_a_short_one_warned_about(make_web_app, monkeypatch, caplog):
    monkeypatch.setenv("SENSEFLOSSER_SECRET_KEY", "k" * 40)
    assert make_web_app().secret_key == "k" * 40
    assert "secret" not in caplog.text.lower()
    monkeypatch.setenv("SENSEFLOSSER_SECRET_KEY", "dev")
    assert make_web_app().secret_key == "dev"
    assert "SENSEFLOSSER_SECRET_KEY is short" in caplog.text


def test_debug_is_never_on(make_web_app, monkeypatch):
    monkeypatch.setenv("FLASK_DEBUG", "1")
    app = make_web_app()
    assert app.debug is False
    app = make_web_app(DEBUG=True)
    assert app.debug is False


def test_environment_then_test_config(make_web_app, monkeypatch):
    monkeypatch.setenv("SENSEFLOSSER_QUEUE_SIZE", "3")
    monkeypatch.setenv("SENSEFLOSSER_MAX_UPLOAD_MB", "1.5")
    monkeypatch.setenv("SENSEFLOSSER_RATE_LIMIT", "5/hour")
    monkeypatch.setenv("SENSEFLOSSER_RESULT_TTL_S", "60")
    app = make_web_app(RESULT_TTL_S=120.0)
    assert app.config["QUEUE_SIZE"] == 3
    assert app.extensions["senseflosser"].runner.queue_size == 3
    assert app.config["MAX_UPLOAD_MB"] == 1.5
    assert app.config["MAX_CONTENT_LENGTH"] > 1.5 * 1024 * 1024
    assert app.config["RESULT_TTL_S"] == 120.0
    # make_web_app passes its own RATE_LIMIT; the environment's would apply otherwise
    from app.config import from_environment

    assert from_environment()["RATE_LIMIT"] == "5/hour"


@pytest.mark.parametrize(("env", "value", "message"), [
    ("SENSEFLOSSER_QUEUE_SIZE", "many", "whole number"),
    ("SENSEFLOSSER_QUEUE_SIZE", "0", "positive"),
    ("SENSEFLOSSER_MAX_UPLOAD_MB", "nan", "a number"),
    ("SENSEFLOSSER_WARM_UP", "perhaps", "1 or 0"),
    ("SENSEFLOSSER_TRUSTED_PROXIES", "-1", "TRUSTED_PROXIES"),
])
def test_bad_environment_stops_the_start_with_a_message(make_web_app, monkeypatch, env, value, message):
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=message):
        make_web_app()


def test_bad_rate_limit_is_refused(make_web_app):
    with pytest.raises(ConfigError, match="RATE_LIMIT"):
        make_web_app(RATE_LIMIT="lots")


def test_gunicorn_config_never_preloads_and_binds_from_env(monkeypatch):
    import runpy
    from pathlib import Path

    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("SENSEFLOSSER_WORKERS", "3")
    conf = runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py"))
    assert conf["bind"] == ["0.0.0.0:9123"]
    assert conf["preload_app"] is False
    assert conf["workers"] == 3 and conf["worker_class"] == "gthread"
    assert conf["timeout"] >= 60
    assert "reload" not in conf
    assert conf["control_socket_disable"] is True
    monkeypatch.setenv("PORT", "eighty")
    with pytest.raises(SystemExit, match="PORT"):
        runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py"))
