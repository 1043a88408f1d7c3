"""A real browser against the real service: Debian's Chromium driven by Playwright, Postback served by werkzeug
on 127.0.0.1, its Meta destination pointed at the fake Meta, the dispatcher run by the tests."""
from __future__ import annotations

import importlib.util
import os
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"  # Debian's package; Playwright's own browser download is never used
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"  # screenshots of every page, for a person to look at


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None or importlib.util.find_spec("pytest_playwright") is None:
        return "Playwright is not installed: `make test` installs requirements-dev.txt"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium package (apt-get, as root)"
    return None


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="module")
def fake_meta_server():
    from tests.fakes.meta import FakeMeta

    meta = FakeMeta(token="meta-token", pixels=("123",)).start()
    yield meta
    meta.stop()


@contextmanager
def serving(raw: dict):
    """Postback built from `raw` on a free port of 127.0.0.1: its base URL and its config."""
    from werkzeug.serving import make_server

    from app import create_app
    from models import database
    from tests.conftest import build_config, remember_database

    config = build_config(raw)
    remember_database(config.database)
    server = make_server("127.0.0.1", 0, create_app(config), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", config
    finally:
        server.shutdown()
        thread.join()
        database.close()


def console_config(tmp_path: Path, meta_url: str) -> dict:
    """The example config with its Meta destination at the fake and the browser tests' admin password."""
    from tests.conftest import base_config, meta_destination, with_destinations

    raw = with_destinations(base_config(tmp_path), meta_destination(meta_url))
    raw["admin"]["password"] = "browser-pass"
    return raw


@pytest.fixture(scope="module")
def service(tmp_path_factory, fake_meta_server):
    """Postback on a free port of 127.0.0.1, and its config."""
    with serving(console_config(tmp_path_factory.mktemp("console"), fake_meta_server.url)) as served:
        yield served


@pytest.fixture(scope="session")
def shots() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
