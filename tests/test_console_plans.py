"""Every console lookup reads events and sends through an index: no full scan, no sort of a whole table."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from console import accuracy, destinations, events, overview, story
from console.dialect_pages import page
from console.events import Filters
from dialects.adtarget.funnel import Lead
from models import database
from tests.conftest import BROWSER, build_config
from tests.helpers import signup

pytestmark = pytest.mark.sqlite_only(reason="SQLite's EXPLAIN QUERY PLAN")

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def plans(app, client):
    """The query plan of every SELECT the console runs."""
    client.post("/v1/track", json={**signup("e1"), "order_id": "o1"}, headers=BROWSER)
    seen: list[tuple[str, list[str]]] = []
    run = database.obj.execute_sql

    def explained(sql, params=None, *args, **kwargs):
        if sql.lstrip().upper().startswith("SELECT"):
            seen.append((sql, [row[3] for row in run(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()]))
        return run(sql, params, *args, **kwargs)

    database.obj.execute_sql = explained
    yield seen
    del database.obj.execute_sql


def full_scans(seen: list[tuple[str, list[str]]]) -> list[str]:
    """Plan steps that read a whole table, or sort every row it matched to order them."""
    return [f"{step} in {sql}" for sql, steps in seen for step in steps
            if (step.startswith("SCAN ") and " INDEX " not in step) or "TEMP B-TREE FOR ORDER BY" in step]


@pytest.mark.parametrize("lookup", [
    pytest.param(lambda config: overview.overview(config, NOW), id="overview"),
    pytest.param(lambda config: events.listing(config, Filters()), id="events"),
    pytest.param(lambda config: events.listing(config, Filters(site="shop", dialect="channelstack", event="Purchase",
                                                               status="failed"), page=3), id="filtered events"),
    pytest.param(lambda config: events.listing(config, Filters(q="o1")), id="events found by ?q="),
    pytest.param(lambda config: story.story(config, 1), id="an event's story"),
    pytest.param(lambda config: destinations.destinations(config, NOW), id="destinations"),
    pytest.param(lambda config: accuracy.report(config, NOW), id="accuracy"),
])
def test_a_console_lookup_uses_an_index_for_every_read(lookup, config, plans):
    lookup(config)
    assert plans, "the lookup ran no query"
    assert full_scans(plans) == []


@pytest.mark.parametrize("user", [None, "555000111"], ids=["every lead", "one lead"])
def test_the_leads_lookup_uses_an_index_for_every_read(user, raw_config, plans):
    raw_config["sites"][0]["telegram"] = {"bot_token": "", "channels": [
        {"id": "vip", "telegram_id": "-1001234567890", "title": "VIP", "event_type": "Lead"}]}
    config = build_config(raw_config)
    Lead.create(site="shop", telegram_user_id="555000111", first_seen_at=NOW, last_seen_at=NOW)
    page("leads").listing(config, user)
    assert plans, "the lookup ran no query"
    assert full_scans(plans) == []
