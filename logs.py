"""Structured (JSON-line) logging. Nothing logged carries raw PII, secrets or query strings."""
from __future__ import annotations

import json
import logging
import os
import re
import sys
from urllib.parse import unquote

from gunicorn.glogging import Logger as GunicornLogger

from ingest import personal

# Secrets some APIs force into URLs: Snapchat's access_token, GA4's api_secret, Telegram's /bot<token>/.
_URL_SECRETS = (
    (re.compile(r"((?:access_token|api_secret)=)[^&\s\"'<>]+"), r"\1***"),
    (re.compile(r"/bot[^/\s]+/"), "/bot<token>/"),
    (re.compile(r"(://[^/:@\s]+:)[^/@\s]+@"), r"\1***@"),  # a database URL's password
)
_HTTP_CLIENT_LOGGER = "urllib3.connectionpool"  # logs each request line (DEBUG) and retries (WARNING)

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time, so a swapped stream (a CLI test runner) is followed."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure() -> None:
    """JSON lines on stderr at LOG_LEVEL, URL secrets masked in the HTTP client's own lines."""
    handler = _StderrHandler()
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("LOG_LEVEL", "INFO"))
    # urllib3 logs full URLs at DEBUG; some platforms' URLs carry a token.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    mask_url_secrets()


def redact(text: str) -> str:
    """Text with every secret a URL may carry replaced."""
    for pattern, replacement in _URL_SECRETS:
        text = pattern.sub(replacement, text)
    return text


class _RedactURLSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


def access_path(path: str) -> str:
    """A request path as the access log writes it: a segment that is an email address or phone number (a User API
    `DELETE /users/<email>`) redacted, control characters escaped so no one can forge a log line."""
    return escape_control("/".join("redacted" if personal.kind(unquote(segment)) else segment
                                   for segment in path.split("/")))


def escape_control(text: str) -> str:
    """Text with its control characters (CR, LF, ESC, …) written as escapes: one line stays one line."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


class AccessLogger(GunicornLogger):
    """gunicorn's logger, whose access-log atoms carry no personal path segments and no control characters."""

    def atoms(self, resp, req, environ, request_time) -> dict:
        atoms = super().atoms(resp, req, environ, request_time)
        escaped = {key: escape_control(value) for key, value in atoms.items() if isinstance(value, str)}
        return {**atoms, **escaped, "U": access_path(atoms.get("U") or "")}


def mask_url_secrets() -> None:
    """Mask URL secrets in the HTTP client's own log lines, whatever level a deployment logs at; once per process."""
    logger = logging.getLogger(_HTTP_CLIENT_LOGGER)
    if not any(isinstance(f, _RedactURLSecrets) for f in logger.filters):
        logger.addFilter(_RedactURLSecrets())
