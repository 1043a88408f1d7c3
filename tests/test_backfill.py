"""Backfill: a destination added later receives the stored events it would have taken, inside its platform's window."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
import yaml
from click.testing import CliRunner

from app import create_app
from cli import cli
from delivery import backfill as backfilling
from delivery.backfill import parse_since
from delivery.dispatcher import Dispatcher
from ingest.canonical import utcnow
from models import Event, Send, database
from tests.conftest import BROWSER, Live, build_config, meta_destination, with_destinations
from tests.fakes.tiktok import FakeTikTok
from tests.helpers import received, sha
from tests.test_platform_tiktok import tiktok_destination

PASSWORD = "backfill-pass"
ADMIN = {"Authorization": f"Bearer {PASSWORD}"}
UA = BROWSER["User-Agent"]
DAY = timedelta(days=1)
NOW = utcnow().replace(microsecond=0)  # the moment every backfill of this file runs at
RECENT = ("recent-1", "recent-2")
OLD = ("old-1", "old-2")


def purchase(event_id: str, occurred_at: datetime, **fields) -> dict:
    return {"api_key": "key_demo_123", "event": "purchase", "event_id": event_id, "distinct_id": f"user-{event_id}",
            "value": 25.5, "currency": "EUR", "source_url": "https://shop.example/thanks",
            "occurred_at": occurred_at.isoformat(), **fields}


def tiktok_item(event_id: str, occurred_at: datetime) -> dict:
    """What TikTok receives for `purchase(event_id, occurred_at)` once its event's IP was reduced."""
    return {
        "event": "Purchase",
        "event_time": int(occurred_at.timestamp()),
        "event_id": event_id,
        "user": {"external_id": sha(f"user-{event_id}"), "country": "us", "ip": "203.0.113.0", "user_agent": UA},
        "properties": {"value": 25.5, "currency": "EUR"},
        "page": {"url": "https://shop.example/thanks"},
    }


@pytest.fixture
def fake_tiktok():
    with FakeTikTok(token="tiktok-token", pixels=("C123",)) as fake:
        yield fake


@pytest.fixture
def raw_config(raw_config, fake_meta) -> dict:
    """A site whose one destination is a live Meta, pointing at the fake."""
    raw = with_destinations(raw_config, meta_destination(fake_meta.url))
    raw["admin"]["password"] = PASSWORD
    return raw


@pytest.fixture
def stored(client, config, fake_meta) -> dict[str, datetime]:
    """Purchases a day and ten days old, and one without consent, delivered to Meta: each event's occurred_at."""
    moments = {**dict.fromkeys(RECENT, NOW - DAY), **dict.fromkeys(OLD, NOW - 10 * DAY), "no-consent": NOW - DAY}
    for event_id, moment in moments.items():
        body = purchase(event_id, moment, **({"consent": False} if event_id == "no-consent" else {}))
        assert client.post("/v1/track", json=body, headers=BROWSER).status_code == 200
    drain(config)
    assert received(fake_meta) == list(RECENT)  # the old ones failed at Meta's 7-day window: every send is final
    return moments


@pytest.fixture
def restarted(raw_config, fake_tiktok, stored, tmp_path, monkeypatch):
    """Postback started again with TikTok added to the site; its CLI runs at NOW. Returns the new config."""
    raw = with_destinations(raw_config, *raw_config["sites"][0]["destinations"], tiktok_destination(fake_tiktok.url))
    (tmp_path / "postback.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("POSTBACK_CONFIG", str(tmp_path / "postback.yaml"))
    monkeypatch.setattr("ingest.canonical.utcnow", lambda: NOW)
    database.close()
    config = build_config(raw)
    create_app(config)
    return config


def run(*args: str, code: int = 0):
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == code, result.output
    return result


def drain(config) -> None:
    """One dispatch pass now: after NOW, so every send queued by then is due."""
    dispatcher = Dispatcher(Live(config))
    dispatcher.drain_once()
    dispatcher.close()


def tiktok_sends() -> list[tuple[str, str]]:
    return sorted((send.event.event_id, send.status) for send in Send.select().where(Send.destination == "shop/tiktok"))


SINCE = (NOW - 7 * DAY).isoformat()


def test_the_new_destination_receives_only_the_consented_events_inside_its_window_once(restarted, stored, fake_tiktok,
                                                                                         fake_meta):
    assert run("backfill", "shop/tiktok").stdout == (
        f"shop/tiktok: 2 send(s) queued, events since {SINCE}\n"
        "left out, outside the window: 2\nleft out, no consent: 1\n")
    drain(restarted)

    assert fake_tiktok.events == [tiktok_item(event_id, stored[event_id]) for event_id in RECENT]
    assert tiktok_sends() == [("recent-1", "sent"), ("recent-2", "sent")]
    assert received(fake_meta) == list(RECENT)  # Meta sees nothing new

    assert run("backfill", "shop/tiktok").stdout == (
        f"shop/tiktok: 0 send(s) queued, events since {SINCE}\n"
        "left out, outside the window: 2\nleft out, already has a send: 2\nleft out, no consent: 1\n")
    drain(restarted)
    assert len(fake_tiktok.requests) == 1 and tiktok_sends() == [("recent-1", "sent"), ("recent-2", "sent")]


def test_a_dry_run_prints_the_same_counts_and_queues_nothing(restarted, fake_tiktok):
    assert run("backfill", "shop/tiktok", "--dry-run").stdout == (
        f"shop/tiktok: dry run, 2 send(s) would be queued, events since {SINCE}\n"
        "left out, outside the window: 2\nleft out, no consent: 1\n")
    drain(restarted)
    assert fake_tiktok.requests == [] and tiktok_sends() == []


def test_since_narrows_the_window_below_the_platforms(restarted, fake_tiktok):
    assert run("backfill", "shop/tiktok", "--since", "12h").stdout == (
        f"shop/tiktok: 0 send(s) queued, events since {(NOW - timedelta(hours=12)).isoformat()}\n"
        "left out, outside the window: 5\n")
    assert tiktok_sends() == []


def test_events_stored_after_the_destination_was_added_count_as_already_sent(restarted):
    client = restarted_client(restarted)
    assert client.post("/v1/track", json=purchase("after", NOW), headers=BROWSER).status_code == 200
    assert run("backfill", "shop/tiktok", "--dry-run").stdout == (
        f"shop/tiktok: dry run, 2 send(s) would be queued, events since {SINCE}\n"
        "left out, outside the window: 2\nleft out, already has a send: 1\nleft out, no consent: 1\n")


def restarted_client(config):
    app = create_app(config)
    app.testing = True
    return app.test_client()


def test_each_rule_of_ingest_and_of_the_platform_is_counted_by_its_name(raw_config, client, fake_tiktok, tmp_path,
                                                                         monkeypatch):
    track = [purchase("signup", NOW, event="signed_up"), purchase("ip-only", NOW, distinct_id=None),
             purchase("kept", NOW)]
    for body in track:
        body = {key: value for key, value in body.items() if value is not None}
        assert client.post("/v1/track", json=body, headers=BROWSER).status_code == 200
    bot = {**BROWSER, "User-Agent": "Googlebot/2.1 (+http://www.google.com/bot.html)"}
    assert client.post("/v1/track", json=purchase("bot", NOW), headers=bot).status_code == 200
    # Its only identifier for TikTok was the IP, gone as `privacy.ip: drop` leaves it once its sends are final.
    Event.update(ip=None).where(Event.event_id == "ip-only").execute()

    def left_out(**tiktok) -> list[str]:
        raw = with_destinations(raw_config, *raw_config["sites"][0]["destinations"],
                                tiktok_destination(fake_tiktok.url, **tiktok))
        (tmp_path / "postback.yaml").write_text(yaml.safe_dump(raw))
        monkeypatch.setenv("POSTBACK_CONFIG", str(tmp_path / "postback.yaml"))
        return run("backfill", "shop/tiktok", "--dry-run").stdout.splitlines()[1:]

    assert left_out(events=["Purchase"]) == [
        "left out, bot: 1", "left out, not in the destination's events: 1", "left out, not taken by the platform: 1"]
    assert left_out(consent_category="marketing") == ["left out, bot: 1", "left out, no consent for its category: 3"]


def test_two_backfills_of_one_destination_at_once_queue_each_event_once(restarted, monkeypatch):
    dest = restarted.destination("shop/tiktok")
    insert_many, first_inserting, second_inserting = Send.insert_many, threading.Event(), threading.Event()

    def inserting(rows):
        if first_inserting.is_set():
            second_inserting.set()
        else:
            first_inserting.set()
            second_inserting.wait(1)  # time for the other to insert too, unless it waits for this one to commit
        return insert_many(rows)

    monkeypatch.setattr(Send, "insert_many", inserting)
    outcomes = []

    def backfill():
        outcomes.append(backfilling.backfill(dest, NOW))
        database.close()

    first = threading.Thread(target=backfill)
    first.start()
    assert first_inserting.wait(10)
    second = threading.Thread(target=backfill)  # another admin, or another node, while the first is inserting
    second.start()
    first.join(10)
    second.join(10)

    assert sorted((o.queued, o.left_out["already_sent"]) for o in outcomes) == [(0, 2), (2, 0)]
    assert tiktok_sends() == [("recent-1", "pending"), ("recent-2", "pending")]


def test_the_counts_are_the_same_when_the_events_come_in_many_chunks(restarted, monkeypatch):
    monkeypatch.setattr(backfilling, "CHUNK", 2)
    result = run("backfill", "shop/tiktok")
    assert result.stdout.splitlines()[0] == f"shop/tiktok: 2 send(s) queued, events since {SINCE}"
    assert result.stderr == "shop/tiktok: 2/3 event(s) judged\nshop/tiktok: 3/3 event(s) judged\n"
    assert tiktok_sends() == [("recent-1", "pending"), ("recent-2", "pending")]


def test_an_unknown_or_disabled_destination_is_an_error(restarted, raw_config, tmp_path):
    assert run("backfill", "shop/nope", code=1).stderr == (
        "no destination 'shop/nope' in the config (site/name, e.g. shop/meta)\n")
    raw = yaml.safe_load((tmp_path / "postback.yaml").read_text())
    raw["sites"][0]["destinations"][1]["enabled"] = False
    (tmp_path / "postback.yaml").write_text(yaml.safe_dump(raw))
    assert run("backfill", "shop/tiktok", code=1).stderr == "destination 'shop/tiktok' is disabled: enable it first\n"
    assert run("backfill", "shop/tiktok", "--since", "7w", code=2).stderr.splitlines()[-1] == (
        "Error: Invalid value for --since: a whole number followed by s, m, h or d, e.g. 7d")


@pytest.mark.parametrize("text, duration", [("7d", timedelta(days=7)), ("12h", timedelta(hours=12)),
                                            ("30m", timedelta(minutes=30)), ("90s", timedelta(seconds=90))])
def test_since_takes_seconds_minutes_hours_or_days(text, duration):
    assert parse_since(text) == duration


@pytest.mark.parametrize("text", ["7", "d", "0d", "-1d", "7w", "1.5d", "", "7 d"])
def test_since_refuses_anything_else(text):
    with pytest.raises(ValueError, match="a whole number followed by s, m, h or d, e.g. 7d"):
        parse_since(text)


# --- the admin API twin ----------------------------------------------------------------------------------

def backfill_answer(config, body: dict | None = None, key: str = "shop/tiktok", headers: dict | None = None):
    client = restarted_client(config)
    response = client.post(f"/admin/api/destinations/{key}/backfill", json=body,
                           headers=ADMIN if headers is None else headers)
    return response.status_code, response.get_json()


def counts(already: int = 0, outside: int = 2, no_consent: int = 1) -> dict:
    return {"outside_window": outside, "already_sent": already, "no_consent": no_consent, "bot": 0, "filtered": 0,
            "consent_category": 0, "no_attribution": 0, "not_taken": 0}


def test_the_admin_api_backfills_and_answers_the_counts(restarted, fake_tiktok, monkeypatch):
    monkeypatch.setattr("routes.admin.utcnow", lambda: NOW)
    assert backfill_answer(restarted, {"dry_run": True}) == (200, {
        "destination": "shop/tiktok", "since": SINCE, "dry_run": True, "queued": 2, "left_out": counts()})
    assert tiktok_sends() == []

    assert backfill_answer(restarted) == (200, {
        "destination": "shop/tiktok", "since": SINCE, "dry_run": False, "queued": 2, "left_out": counts()})
    assert backfill_answer(restarted, {"since": "3d"}) == (200, {
        "destination": "shop/tiktok", "since": (NOW - 3 * DAY).isoformat(), "dry_run": False, "queued": 0,
        "left_out": counts(already=2)})
    drain(restarted)
    assert [item["event_id"] for item in fake_tiktok.events] == list(RECENT)


def test_the_admin_api_refuses_what_it_cannot_backfill(restarted):
    assert backfill_answer(restarted, key="shop/nope") == (404, {
        "error": "no destination 'shop/nope' in the config (site/name, e.g. shop/meta)", "code": 404})
    assert backfill_answer(restarted, {"since": "a week"}) == (400, {
        "error": "Invalid field: since (a whole number followed by s, m, h or d, e.g. 7d)", "code": 400})
    assert backfill_answer(restarted, {"dry_run": "yes"}) == (400, {
        "error": "Invalid field: dry_run (must be true or false)", "code": 400})
    assert backfill_answer(restarted, [1]) == (400, {"error": "Request body must be a JSON object", "code": 400})
    assert backfill_answer(restarted, {}, headers={})[0] == 401
    assert tiktok_sends() == []


def test_a_disabled_destination_is_not_found_by_the_admin_api(restarted, raw_config):
    raw = with_destinations(raw_config, *raw_config["sites"][0]["destinations"],
                            tiktok_destination("http://127.0.0.1:9", enabled=False))
    assert backfill_answer(build_config(raw)) == (404, {
        "error": "destination 'shop/tiktok' is disabled: enable it first", "code": 404})
