"""Fixtures that compose: config -> app -> client; fake platforms on 127.0.0.1.

The database is a temp-file SQLite, or with `DATABASE_URL=postgresql://…` (`make test-postgres`) a schema of
its own in that PostgreSQL database for each config a test builds. Tests about one backend are marked
`sqlite_only(reason)` or `postgres_only(reason)` and skipped on the other.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import os
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from flask import Flask

import logs
from app import bind, create_app
from config import Config, parse_config
from delivery.dispatcher import Dispatcher
from models import database
from platforms import REGISTRY
from tests.fakes.meta import FakeMeta
from tests.fakes.telegram import FREE, VIP, FakeTelegram

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


@functools.cache
def example_config() -> dict:
    """config.example.yaml as parsed YAML, read once: callers take a deep copy."""
    return yaml.load((ROOT / "config.example.yaml").read_text(), Loader=yaml.CSafeLoader)


# Taken out of the environment: there it would override the database of every config the tests write.
POSTGRES_URL = os.environ.pop("DATABASE_URL") if os.environ.get("DATABASE_URL", "").startswith("postgres") else ""
_schemas = itertools.count(1)


def on_postgres() -> bool:
    """The suite runs against PostgreSQL (`make test-postgres`), not SQLite files."""
    return bool(POSTGRES_URL)


def fresh_database(tmp_path: Path) -> str:
    """A new, empty database's URL: a file in the temp folder, or a new schema in the PostgreSQL database."""
    if not on_postgres():
        return f"sqlite:///{tmp_path}/db/postback.db"
    import psycopg2  # only the PostgreSQL run needs the driver

    schema = f"test_{os.getpid()}_{next(_schemas)}"
    with psycopg2.connect(POSTGRES_URL) as connection, connection.cursor() as cursor:
        cursor.execute(f"CREATE SCHEMA {schema}")
    connection.close()
    return f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}options=-csearch_path%3D{schema}"


def base_config(tmp_path: Path, all_destinations: bool = False) -> dict:
    """The example config with a fresh database (fresh_database); by default with its Meta destination only,
    so a test sees one platform unless it asks for more (test_all_platforms uses them all)."""
    raw = copy.deepcopy(example_config())
    raw["storage"]["database"] = fresh_database(tmp_path)
    if not all_destinations:
        site = raw["sites"][0]
        site["destinations"] = [d for d in site["destinations"] if d["platform"] == "meta"]
    return raw


def build_config(raw: dict, env: dict | None = None) -> Config:
    return parse_config(yaml.dump(raw, Dumper=yaml.CSafeDumper), env or {}, platforms=REGISTRY)


@pytest.fixture
def raw_config(tmp_path) -> dict:
    return base_config(tmp_path)


@pytest.fixture
def config(raw_config) -> Config:
    return build_config(raw_config)


DATABASE_FILES: list[Path] = []


def remember_database(url: str) -> None:
    """Have the end-of-run scan read this SQLite file (PostgreSQL's schemas are all scanned anyway)."""
    if url.startswith("sqlite:///"):
        DATABASE_FILES.append(Path(url[len("sqlite:///"):]))


@pytest.fixture(scope="session")
def template_database(tmp_path_factory) -> Path:
    """A database with every table, made once: each test's starts as a copy, far cheaper than creating tables."""
    config = build_config(base_config(tmp_path_factory.mktemp("template")))
    create_app(config)
    database.close()  # closed, SQLite folds the WAL into the file that gets copied
    return sqlite_path(config)


def sqlite_path(config: Config) -> Path | None:
    """The file of a config's SQLite database; None for another database or an in-memory one."""
    path = config.database[len("sqlite:///"):] if config.database.startswith("sqlite:///") else ":memory:"
    return None if path == ":memory:" else Path(path)


@pytest.fixture(scope="session")
def assembled_app(tmp_path_factory) -> Flask:
    """create_app's app, made once: registering its routes again cost ~8 ms a test. Each test binds it to its own
    config and database (`app.bind`); that is all create_app does with a config, as two apps built here show."""
    configs = [build_config(base_config(tmp_path_factory.mktemp("assembled"), everything)) for everything in (False, True)]
    first, second = (bind(create_app(config), configs[0]) for config in configs)
    database.close()
    assert assembly(first) == assembly(second), "create_app now assembles by the config: move that into app.bind"
    first.testing = True
    return first


def assembly(app: Flask) -> tuple:
    """What create_app puts in an app besides the config: settings, routes, error handlers and request hooks."""
    def names(functions) -> list[str]:
        return [f.__qualname__ for f in functions]

    settings = {key: value for key, value in app.config.items() if key != "POSTBACK"}
    routes = sorted((rule.rule, rule.endpoint, sorted(rule.methods)) for rule in app.url_map.iter_rules())
    handlers = {name: {code: names(by_class.values()) for code, by_class in spec.items()}
                for name, spec in app.error_handler_spec.items()}
    hooks = [{name: names(functions) for name, functions in registry.items()}
             for registry in (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs)]
    return settings, routes, handlers, hooks, sorted(app.extensions)


@pytest.fixture
def app(config, template_database, assembled_app):
    remember_database(config.database)
    path = sqlite_path(config)
    if path is not None:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(template_database, path)
    yield bind(assembled_app, config)  # the copy only saves time: opening the database makes any table it lacks
    database.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def fake_meta():
    meta = FakeMeta(token="meta-token", pixels=("123", "456")).start()
    yield meta
    meta.stop()


@pytest.fixture
def fake_telegram():
    """Telegram's Bot API, with a bot that administers the funnels' two channels."""
    with FakeTelegram(chats=(VIP, FREE)) as telegram:
        yield telegram


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


def fbtrace_id(request: dict) -> str:
    """The fbtrace_id the fake Meta answered a request with, success or error."""
    answer = request["answer"]
    return answer["fbtrace_id"] if "fbtrace_id" in answer else answer["error"]["fbtrace_id"]


@pytest.fixture
def meta_settings() -> dict:
    return {}


@pytest.fixture
def dispatch_settings() -> dict:
    return {"timeout_seconds": 1}


@pytest.fixture
def raw(raw_config, fake_meta, meta_settings, dispatch_settings) -> dict:
    """The example config whose only destination is a live Meta pointing at the fake; platform suites override it."""
    raw = with_destinations(raw_config, meta_destination(fake_meta.url, **meta_settings))
    raw["dispatch"].update(dispatch_settings)
    return raw


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


@pytest.fixture(scope="session", autouse=True)
def url_secrets_masked():
    """The HTTP client's log lines are masked here as logs.configure() masks them in every Postback process."""
    logs.mask_url_secrets()


@pytest.fixture(scope="session", autouse=True)
def no_raw_pii_in_databases():
    """After the whole suite, scan every database file the tests wrote, and every row of every table of the
    PostgreSQL database, for the raw PII they sent."""
    yield
    files = [f for db in DATABASE_FILES for f in (db, db.with_name(db.name + "-wal")) if f.exists()]
    # No raw value holds a NUL byte, so one is in a file exactly when it is in the file with its runs of NULs
    # (most of a small SQLite file) squeezed to one: the search then reads a tenth of the bytes.
    assert not any("\0" in value for value in RAW_PII)
    squeezed = {f: re.sub(rb"\0+", b"\0", f.read_bytes()) for f in files}
    # A value of a few letters ("Doe", "Ada") turns up by chance in a file's binary parts (a WAL frame's random
    # salts, encoded numbers): those are looked for in the text of every row instead; longer ones in every byte.
    distinctive = [value for value in RAW_PII if len(value) >= SHORT_PII]
    short = [value for value in RAW_PII if len(value) < SHORT_PII]
    leaks = [f"{f}: {value}" for f, data in squeezed.items() for value in distinctive if value.encode() in data]
    leaks += [f"{db}: {value}" for db in DATABASE_FILES if db.exists() for value in short if value in sqlite_rows_text(db)]
    if on_postgres():
        leaks += postgres_rows_holding(RAW_PII)
    assert not leaks, f"raw personal data found in databases: {leaks}"
    assert all(db.exists() for db in DATABASE_FILES), "a database the tests used is gone before the scan"


SHORT_PII = 6


def sqlite_rows_text(path: Path) -> str:
    """The text of every row of every table of a SQLite database file (its WAL folded in by the read)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return "\n".join(repr(row) for table in tables for row in db.execute(f'SELECT * FROM "{table}"'))


def postgres_rows_holding(values: list[str]) -> list[str]:
    """"schema.table: row" for each row of every table in the PostgreSQL database whose text holds one of `values`."""
    import psycopg2

    connection = psycopg2.connect(POSTGRES_URL)
    connection.autocommit = True  # a transaction per statement: one over every table would run out of locks
    with connection.cursor() as cursor:
        # kept_values holds random tokens Postback made for itself (console/kept.py), never a request's data: a
        # short value ("Doe") turns up in one of them by chance.
        cursor.execute("SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables "
                       "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') AND tablename <> 'kept_values'")
        tables = [row[0] for row in cursor.fetchall()]
        found = []
        for start in range(0, len(tables), 200):  # one statement per 200 tables: the scan takes seconds, not minutes
            cursor.execute(" UNION ALL ".join(f"(SELECT '{table}', r::text FROM {table} r WHERE r::text LIKE ANY(%(v)s))"
                                              for table in tables[start:start + 200]),
                           {"v": [f"%{value}%" for value in values]})
            found += [f"{table}: {row}" for table, row in cursor.fetchall()]
    connection.close()
    return found


def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only(reason): about SQLite itself; skipped on PostgreSQL")
    config.addinivalue_line("markers", "postgres_only(reason): about PostgreSQL itself; skipped on SQLite")


def pytest_runtest_setup(item):
    other = "sqlite_only" if on_postgres() else "postgres_only"
    marker = item.get_closest_marker(other)
    if marker is not None:
        pytest.skip(f"{other}: {marker.kwargs.get('reason') or (marker.args or ('',))[0]}")


os.environ.setdefault("POSTBACK_CONFIG", str(ROOT / "config.example.yaml"))
