"""The dispatcher's statements read through indexes: none reads the sends or events tables whole, so a pass costs
what it claims and records, not what the database holds (a claim once scanned every send: seconds at millions)."""
from __future__ import annotations

import logging
import re

import pytest

from delivery import alerts
from ingest.canonical import utcnow
from models import database
from tests.conftest import BROWSER, build_config
from tests.helpers import signup

pytestmark = pytest.mark.sqlite_only(reason="SQLite's EXPLAIN QUERY PLAN; PostgreSQL plans by its statistics")


class Statements(logging.Handler):
    """The (sql, params) of every statement peewee runs while attached."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[str, list]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.msg, tuple):
            self.seen.append(record.msg)


def whole_table_reads(statements: list[tuple[str, list]]) -> list[str]:
    """Each statement on sends or events whose plan reads one of them whole, with that step of its plan."""
    found = []
    for sql, params in statements:
        if not re.search(r'\b"?(sends|events)"?\b', sql) or '"destination" NOT IN' in sql:
            continue  # the latter: skip_dropped, once per change of the configured destinations, not per pass
        for step in (row[3] for row in database.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall()):
            table = re.match(r"SCAN (\w+)", step)
            aliased = table and re.search(rf'"(sends|events)" AS "{table[1]}"', sql)
            # sends_leased is partial: it holds the sends in flight alone
            if table and (table[1] in ("sends", "events") or aliased) and "USING INDEX sends_leased" not in step:
                found.append(f"{step}: {sql[:160]}")
    return found


@pytest.fixture
def config(raw):
    return build_config(raw)  # its Meta destination live, at the fake


def test_a_dispatcher_pass_and_its_alert_check_read_no_table_whole(client, dispatcher, fake_meta, monkeypatch):
    monkeypatch.setattr(alerts, "CHECK_EVERY", alerts.CHECK_EVERY * 0)  # every tick checks
    for n in range(3):
        assert client.post("/v1/track", json=signup(f"e{n}"), headers=BROWSER).status_code == 200
    grab, peewee = Statements(), logging.getLogger("peewee")
    level = peewee.level
    peewee.addHandler(grab)
    peewee.setLevel(logging.DEBUG)
    try:
        dispatcher.tick()
        dispatcher.drain_once(now=utcnow())
        dispatcher.tick()
    finally:
        peewee.removeHandler(grab)
        peewee.setLevel(level)

    assert len(grab.seen) > 10 and received_all(fake_meta)
    assert whole_table_reads(grab.seen) == []


def received_all(fake) -> bool:
    return sorted(event["event_id"] for event in fake.events) == ["e0", "e1", "e2"]
