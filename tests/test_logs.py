"""Secrets that some APIs force into URLs, and personal data in a request's path, never reach a log line."""
from __future__ import annotations

import logging
import runpy
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from gunicorn.config import Config as GunicornConfig
from werkzeug.test import EnvironBuilder

import logs


@pytest.mark.parametrize("text, clean", [
    ("POST /v3/px-1/events?access_token=abc.DEF-123 HTTP/1.1", "POST /v3/px-1/events?access_token=*** HTTP/1.1"),
    ("/mp/collect?measurement_id=G-X&api_secret=s3cr3t", "/mp/collect?measurement_id=G-X&api_secret=***"),
    ("POST /bot7000:AAFake_token/createChatInviteLink", "POST /bot<token>/createChatInviteLink"),
    ("POST /v25.0/123/events HTTP/1.1", "POST /v25.0/123/events HTTP/1.1"),
    ("postgresql://pb:hunter2@db:5432/postback?sslmode=require", "postgresql://pb:***@db:5432/postback?sslmode=require"),
    ("postgresql://pb@db:5432/postback", "postgresql://pb@db:5432/postback"),
    ("https://graph.facebook.com:443/v25.0/me?x=a@b", "https://graph.facebook.com:443/v25.0/me?x=a@b"),
])
def test_redact_masks_every_secret_a_url_may_carry(text, clean):
    assert logs.redact(text) == clean


def test_the_http_clients_log_lines_are_masked_by_one_filter(caplog):
    logs.mask_url_secrets()
    logs.mask_url_secrets()
    logger = logging.getLogger("urllib3.connectionpool")
    assert sum(isinstance(f, logs._RedactURLSecrets) for f in logger.filters) == 1
    with caplog.at_level(logging.DEBUG, logger="urllib3.connectionpool"):
        logger.debug('%s "%s %s"', "http://127.0.0.1:1", "POST", "/x?access_token=tok123")
    assert caplog.messages == ['http://127.0.0.1:1 "POST /x?access_token=***"']


def test_configure_installs_the_mask_on_the_http_clients_log_lines(monkeypatch):
    logger = logging.getLogger("urllib3.connectionpool")
    monkeypatch.setattr(logger, "filters", [])
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    levels = {name: logging.getLogger(name).level for name in ("", "urllib3", "apscheduler")}
    try:
        logs.configure()
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    assert [type(f) for f in logger.filters] == [logs._RedactURLSecrets]


# --- the access log ---------------------------------------------------------------------------------------------

def access_line(path: str) -> str:
    """The line gunicorn writes for a request to `path`, with the logger and format gunicorn.conf.py sets."""
    settings = runpy.run_path(str(Path(__file__).resolve().parent.parent / "gunicorn.conf.py"))
    config = GunicornConfig()
    config.set("logger_class", settings["logger_class"])
    logger = config.logger_class(config)
    environ = EnvironBuilder(method="DELETE", path="/").get_environ()
    environ["PATH_INFO"] = environ["RAW_URI"] = path
    response = SimpleNamespace(status="200 OK", headers=[("Content-Type", "application/json")], sent=15)
    atoms = logger.atoms(response, SimpleNamespace(headers=[]), environ, timedelta(milliseconds=3))
    return settings["access_log_format"] % logger.atoms_wrapper_class(atoms)


def test_the_access_log_redacts_a_path_segment_that_is_an_email_or_phone():
    assert [access_line("/users/jane@example.com"), access_line("/users/jane%40example.com"),
            access_line("/users/+14155552671/x"), access_line("/users/u-123")] == [
        '"DELETE /users/redacted" 200 15 3ms', '"DELETE /users/redacted" 200 15 3ms',
        '"DELETE /users/redacted/x" 200 15 3ms', '"DELETE /users/u-123" 200 15 3ms']


def test_the_access_log_escapes_control_characters_so_no_line_can_be_forged():
    line = access_line('/users/x\r\n"GET /admin" 200 0 1ms\x1b[2J')
    assert (line, line.count("\n")) == ('"DELETE /users/x\\r\\n\\"GET /admin\\" 200 0 1ms\\x1b[2J" 200 15 3ms', 0)
