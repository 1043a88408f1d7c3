"""Secrets that some APIs force into URLs never reach a log line."""
from __future__ import annotations

import logging

import pytest

import logs


@pytest.mark.parametrize("text, clean", [
    ("POST /v3/px-1/events?access_token=abc.DEF-123 HTTP/1.1", "POST /v3/px-1/events?access_token=*** HTTP/1.1"),
    ("/mp/collect?measurement_id=G-X&api_secret=s3cr3t", "/mp/collect?measurement_id=G-X&api_secret=***"),
    ("POST /bot7000:AAFake_token/createChatInviteLink", "POST /bot<token>/createChatInviteLink"),
    ("POST /v25.0/123/events HTTP/1.1", "POST /v25.0/123/events HTTP/1.1"),
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
