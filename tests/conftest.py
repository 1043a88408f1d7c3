"""Fixtures that compose: config -> app (temp-file SQLite) -> client; fake platforms on 127.0.0.1."""
from __future__ import annotations

import copy
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

import logs
from app import create_app
from config import Config, parse_config
from delivery.dispatcher import Dispatcher
from models import database
from platforms import REGISTRY
from tests.fakes.meta import FakeMeta

ROOT = Path(__file__).resolve().parent.parent
SEED_EXAMPLE = {
    "api_key": "key_demo_123",
    "event": "purchase_completed",
    "email": "john.doe@example.com",
    "phone": "+15551234567",
    "distinct_id": "user_123",
    "first_name": "John",
    "last_name": "Doe",
    "city": "San Francisco",
    "state": "CA",
    "zip": "94102",
    "country": "US",
    "value": 149.99,
    "currency": "USD",
    "order_id": "ord_abc123",
    "gclid": "CjwKCAjw...",
    "fbc": "_fbc.1.1554...",
    "fbp": "_fbp.1.1554...",
    "event_id": "evt_unique123",
    "source_url": "https://example.com/checkout",
    "consent": True,
    "product_category": "electronics",
    "coupon_used": "SAVE20",
}
BROWSER = {
    "User-Agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "X-Postback-Client-IP": "203.0.113.7",
}
# Every raw personal value the suite sends; none may ever be found in a database file.
RAW_PII = ["john.doe@example.com", "+15551234567", "15551234567", "John", "Doe", "jane@example.org", "4155550100",
           # sent under names that say nothing (`customer_email`, `billing_phone`, a URL parameter, a user id)
           "jane.roe@example.com", "user.email@example.org", "contact.person@example.net", "+1 415 555 2671",
           "14155552671", "in.url@example.com", "in.url%40example.com", "Id.Person@Example.com",
           "visitor.link@example.com"]


def base_config(tmp_path: Path, all_destinations: bool = False) -> dict:
    """The example config with the database in a temp folder; by default with its Meta destination only,
    so a test sees one platform unless it asks for more (test_all_platforms uses them all)."""
    raw = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    raw["storage"]["database"] = f"sqlite:///{tmp_path}/db/postback.db"
    if not all_destinations:
        site = raw["sites"][0]
        site["destinations"] = [d for d in site["destinations"] if d["platform"] == "meta"]
    return raw


def build_config(raw: dict, env: dict | None = None) -> Config:
    return parse_config(yaml.safe_dump(raw), env or {}, platforms=REGISTRY)


@pytest.fixture
def raw_config(tmp_path) -> dict:
    return base_config(tmp_path)


@pytest.fixture
def config(raw_config) -> Config:
    return build_config(raw_config)


DATABASE_FILES: list[Path] = []


@pytest.fixture
def app(config):
    if config.database.startswith("sqlite:///"):
        DATABASE_FILES.append(Path(config.database[len("sqlite:///"):]))
    app = create_app(config)
    app.testing = True
    yield app
    database.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def fake_meta():
    meta = FakeMeta(token="meta-token", pixels=("123", "456")).start()
    yield meta
    meta.stop()


class Live:
    """The config the dispatcher reads on every pass; a test swaps it the way a reload would."""

    def __init__(self, config: Config):
        self.config = config

    def __call__(self) -> Config:
        return self.config


@pytest.fixture
def live(config) -> Live:
    return Live(config)


@pytest.fixture
def dispatcher(live):
    dispatcher = Dispatcher(live)
    yield dispatcher
    dispatcher.close()


@pytest.fixture
def frozen_ingest(monkeypatch):
    """Dry runs received five minutes after 2026-03-01T12:00:00Z, so the golden payloads never change."""
    monkeypatch.setattr("routes.channelstack.utcnow", lambda: datetime(2026, 3, 1, 12, 5, tzinfo=timezone.utc))


def meta_destination(api_base: str, **overrides) -> dict:
    dest = {"name": "meta", "platform": "meta", "mode": "live", "pixel_id": "123",
            "access_token": "meta-token", "api_version": "v25.0", "api_base": api_base}
    return {**dest, **overrides}


def with_destinations(raw: dict, *destinations: dict) -> dict:
    raw = copy.deepcopy(raw)
    raw["sites"][0]["destinations"] = list(destinations)
    return raw


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


@pytest.fixture(scope="session", autouse=True)
def url_secrets_masked():
    """The HTTP client's log lines are masked here as logs.configure() masks them in every Postback process."""
    logs.mask_url_secrets()


@pytest.fixture(scope="session", autouse=True)
def no_raw_pii_in_databases():
    """After the whole suite, scan every database file the tests wrote for the raw PII they sent."""
    yield
    files = [f for db in DATABASE_FILES for f in (db, db.with_name(db.name + "-wal")) if f.exists()]
    leaks = [f"{f}: {value}" for f in files for value in RAW_PII if value.encode() in f.read_bytes()]
    assert not leaks, f"raw personal data found in database files: {leaks}"
    assert all(db.exists() for db in DATABASE_FILES), "a database the tests used is gone before the scan"


os.environ.setdefault("POSTBACK_CONFIG", str(ROOT / "config.example.yaml"))
