"""An operator who can act and see: retry-now (CLI and admin API), stats with paused and backing-off destinations,
one log line per change of a destination's state, a slow platform named once, a stop that hands a claim back."""
from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest

from delivery.dispatcher import Dispatcher
from ingest.canonical import utcnow
from models import DestinationState
from tests.conftest import base_config, build_config, meta_destination
from tests.helpers import row, send_of, signup, track
from tests.test_cli import run  # noqa: F401 - the CLI runner fixture, against this module's raw_config

SECOND = timedelta(seconds=1)
PASSWORD = "change-me"
UNKNOWN_ERROR = "Meta error 1: An unknown error occurred"


@pytest.fixture
def raw_config(tmp_path, fake_meta):
    raw = base_config(tmp_path)
    raw["sites"][0]["destinations"] = [meta_destination(fake_meta.url)]
    raw["admin"] = {"password": PASSWORD}
    return raw


def destination_lines(caplog) -> list[tuple]:
    return [(r.message, r.destination, getattr(r, "sends", None)) for r in caplog.records
            if r.name == "delivery.states"]


def test_retry_now_makes_a_backing_off_send_due_and_stats_shows_it_waiting_until_then(client, fake_meta, dispatcher,
                                                                                       run):
    fake_meta.script("500")
    dispatcher.drain_once(now=track(client, signup("e1")))
    due = send_of("e1", "shop/meta").next_attempt_at

    waiting = run("stats").splitlines()[2]
    assert re.fullmatch(rf"backing off shop/meta: 1 send\(s\), next attempt at {due:%Y-%m-%d %H:%M:%S}Z "
                        r"\(in \d+ s\)", waiting), waiting
    assert run("retry-now", "shop/meta") == "shop/meta: 1 backing-off send(s) due now\n"
    assert send_of("e1", "shop/meta").next_attempt_at <= utcnow()
    assert "backing off" not in run("stats")

    assert dispatcher.drain_once() == {"shop/meta": 1}
    assert row("e1", "shop/meta")["status"] == "sent"


def test_the_admin_api_makes_a_destinations_backing_off_sends_due_now(client, fake_meta, dispatcher):
    fake_meta.script("500")
    dispatcher.drain_once(now=track(client, signup("e1")))
    url = "/admin/api/destinations/shop/meta/retry-now"

    assert client.post(url).status_code == 401
    answer = client.post(url, auth=("admin", PASSWORD))
    assert (answer.status_code, answer.get_json()) == (200, {"destination": "shop/meta", "due_now": 1})
    again = client.post(url, auth=("admin", PASSWORD))
    assert again.get_json() == {"destination": "shop/meta", "due_now": 0}
    unknown = client.post("/admin/api/destinations/shop/nowhere/retry-now", auth=("admin", PASSWORD))
    assert (unknown.status_code, unknown.get_json()) == (404, {"error": "No enabled destination shop/nowhere", "code": 404})


def test_stats_shows_a_paused_destination_with_why_and_since_when(client, fake_meta, dispatcher, run):
    fake_meta.script("invalid_token")
    dispatcher.drain_once(now=track(client, signup("e1")))
    state = DestinationState.get()

    assert f"paused shop/meta since {state.paused_at:%Y-%m-%d %H:%M:%S}Z: {state.paused_reason}\n" in run("stats")
    assert run("retry-now", "shop/meta") == (
        f"shop/meta: 0 backing-off send(s) due now (paused: {state.paused_reason}; `resume shop/meta` to send them)\n")


def test_an_outage_is_logged_once_when_it_begins_and_once_when_it_is_over(client, fake_meta, dispatcher, caplog):
    fake_meta.script("500", "500")
    now = track(client, signup("e1"))
    dispatcher.drain_once(now=now)
    dispatcher.drain_once(now=now + 15 * SECOND)  # still down: no second line
    dispatcher.drain_once(now=now + 60 * SECOND)
    assert destination_lines(caplog) == [("destination outage begun", "shop/meta", 1),
                                         ("destination recovered from outage", "shop/meta", 2)]
    assert caplog.records[-1].after_seconds == 60


def test_a_throttle_is_logged_with_the_wait_the_platform_asked_for(client, fake_meta, dispatcher, caplog):
    fake_meta.script("429")
    now = track(client, signup("e1"))
    dispatcher.drain_once(now=now)
    dispatcher.drain_once(now=now + 2 * SECOND)
    assert destination_lines(caplog) == [("destination throttled", "shop/meta", 1),
                                         ("destination recovered from throttled", "shop/meta", 1)]
    assert [r.retry_after_seconds for r in caplog.records if r.message == "destination throttled"] == [1]


def test_sends_given_up_are_logged_with_their_count(client, fake_meta, caplog, raw_config):
    raw_config["dispatch"]["max_attempts"] = 1
    config = build_config(raw_config)
    fake_meta.script("500")
    track(client, signup("e1"), signup("e2"))
    Dispatcher(lambda: config).drain_once()
    given_up = [r for r in caplog.records if r.message == "destination gave up sends"]
    assert [(r.destination, r.sends, r.error) for r in given_up] == [("shop/meta", 2, UNKNOWN_ERROR)]


def test_a_platform_slower_than_timeout_seconds_is_named_once(client, fake_meta, caplog, raw_config):
    raw_config["dispatch"]["timeout_seconds"] = 0.3
    config = build_config(raw_config)
    fake_meta.script(("hang", 1), ("hang", 1))
    now = track(client, signup("e1"))
    dispatcher = Dispatcher(lambda: config)
    dispatcher.drain_once(now=now)
    dispatcher.drain_once(now=now + 60 * SECOND)
    dispatcher.close()
    slow = [r for r in caplog.records if "slower than timeout_seconds" in r.message]
    assert [(r.destination, r.timeout_seconds) for r in slow] == [("shop/meta", 0.3)]


def test_a_stop_that_outlives_its_wait_hands_the_claim_back_and_the_late_answer_records_nothing(client, fake_meta,
                                                                                                 dispatcher):
    fake_meta.script(("hang", 1))
    track(client, signup("e1"))
    dispatcher.tick()
    deadline = time.monotonic() + 10
    while not fake_meta.requests and time.monotonic() < deadline:
        time.sleep(0.01)

    assert dispatcher.stop(timeout=0.1) == 1
    handed_back = row("e1", "shop/meta", ("status", "attempts", "last_status"))
    dispatcher.close()  # the drain gets its late answer now: its claim is gone, so nothing is recorded
    assert handed_back == row("e1", "shop/meta", ("status", "attempts", "last_status")) == {
        "status": "pending", "attempts": 0, "last_status": None}
