"""Alerts (docs/operations.md#alerts): told once per change of state, to a fake webhook and the fake Telegram."""
from __future__ import annotations

from datetime import timedelta

import pytest

from config import ConfigError
from delivery import alerts
from delivery.sends import DROPPED
from models import DestinationState, Send
from outbound import Http
from tests.conftest import build_config
from tests.fakes.meta import EXPIRED
from tests.fakes.telegram import FakeTelegram
from tests.fakes.webhook import FakeWebhook
from tests.helpers import row, signup, track

PAUSED = f"Postback: shop/meta paused: Meta error 190/463: {EXPIRED}"
LATER = timedelta(seconds=11)  # past alerts.CHECK_EVERY


@pytest.fixture
def webhook():
    with FakeWebhook() as fake:
        yield fake


@pytest.fixture
def raw_alerts(raw, webhook) -> dict:
    return {**raw, "alerts": {"webhook": f"{webhook.url}/hooks/postback"}}


@pytest.fixture
def config(raw_alerts):
    return build_config(raw_alerts)


def test_a_paused_destination_produces_exactly_one_alert_at_the_webhook(client, fake_meta, webhook, dispatcher, config):
    fake_meta.script("invalid_token")
    now = track(client, signup("e1"))
    dispatcher.drain_once(now=now)
    assert DestinationState.get().destination == "shop/meta"

    for step in range(4):  # ticks keep finding it paused
        alerts.tick(config, now + step * LATER, dispatcher.http)

    assert webhook.texts() == [PAUSED]
    assert webhook.requests[0]["path"] == "/hooks/postback"


def test_a_resumed_destination_is_told_once_too(client, fake_meta, webhook, dispatcher, config):
    fake_meta.script("invalid_token")
    now = track(client, signup("e1"))
    dispatcher.drain_once(now=now)
    alerts.tick(config, now, dispatcher.http)

    DestinationState.delete().execute()
    alerts.tick(config, now + LATER, dispatcher.http)
    alerts.tick(config, now + 2 * LATER, dispatcher.http)

    assert webhook.texts() == [PAUSED, "Postback: shop/meta resumed"]


def test_checks_closer_than_ten_seconds_apart_tell_nothing_new(client, fake_meta, webhook, dispatcher, config):
    now = track(client, signup("e1"))
    alerts.tick(config, now, dispatcher.http)
    fake_meta.script("invalid_token")
    dispatcher.drain_once(now=now)

    assert alerts.tick(config, now + timedelta(seconds=9), dispatcher.http) == []
    assert alerts.tick(config, now + LATER, dispatcher.http) == [PAUSED]


@pytest.mark.parametrize("dispatch_settings", [{"timeout_seconds": 1, "max_attempts": 2}])
def test_sends_given_up_are_told_once_with_their_count_and_never_an_events_data(client, fake_meta, webhook,
                                                                                dispatcher, config):
    now = track(client, signup("e1", email="john.doe@example.com"), signup("e2"))
    alerts.tick(config, now, dispatcher.http)
    fake_meta.script("500", "500")
    dispatcher.drain_once(now=now)
    dispatcher.drain_once(now=now + timedelta(hours=2))
    assert row("e1", "shop/meta")["status"] == "failed"

    alerts.tick(config, now + timedelta(hours=2, seconds=1), dispatcher.http)
    alerts.tick(config, now + timedelta(hours=3), dispatcher.http)

    assert webhook.texts() == ["Postback: shop/meta: 2 send(s) given up after 2 attempts"]


def test_a_platform_failing_for_longer_than_failing_minutes_is_told_and_so_is_its_recovery(
        client, fake_meta, webhook, dispatcher, config):
    now = track(client, signup("e1"))
    fake_meta.script("500")
    dispatcher.drain_once(now=now)
    assert row("e1", "shop/meta")["status"] == "pending"

    alerts.tick(config, now + timedelta(minutes=10), dispatcher.http)  # not yet 15 minutes
    alerts.tick(config, now + timedelta(minutes=16), dispatcher.http)
    dispatcher.drain_once(now=now + timedelta(minutes=17))
    alerts.tick(config, now + timedelta(minutes=18), dispatcher.http)

    assert webhook.texts() == [
        "Postback: shop/meta has been failing for over 15 minutes: Meta error 1: An unknown error occurred",
        "Postback: shop/meta is delivering again",
    ]


def test_purchase_coverage_below_the_sites_threshold_is_told_once(client, fake_meta, webhook, dispatcher, raw_alerts):
    raw_alerts["sites"][0]["coverage_alert_below"] = 0.9
    config = build_config(raw_alerts)
    fake_meta.reject_event("p1")
    now = track(client, signup("p1", event="purchase_completed", value=10, currency="USD"),
                signup("p2", event="purchase_completed", value=10, currency="USD"))
    dispatcher.drain_once(now=now)

    alerts.tick(config, now + timedelta(minutes=20), dispatcher.http)
    alerts.tick(config, now + timedelta(minutes=21), dispatcher.http)

    assert webhook.texts() == ["Postback: site shop: 50% of purchases delivered over the last 24 h, below 90%"]


def test_a_telegram_chat_gets_the_alert_through_the_sites_bot(client, fake_meta, dispatcher, raw):
    with FakeTelegram() as telegram:
        raw["sites"][0]["telegram"].update(bot_token=telegram.token, api_base=telegram.url)
        raw["alerts"] = {"telegram": {"site": "shop", "chat_id": "-1001234567890"}}
        config = build_config(raw)
        fake_meta.script("invalid_token")
        now = track(client, signup("e1"))
        dispatcher.drain_once(now=now)

        alerts.tick(config, now, Http(1))
        alerts.tick(config, now + LATER, Http(1))

    assert [(c["params"], c["token_ok"], c["status"]) for c in telegram.calls("sendMessage")] == [
        ({"chat_id": "-1001234567890", "text": PAUSED}, True, 200)]


def test_a_webhook_that_fails_does_not_stop_the_dispatcher_nor_make_the_alert_repeat(
        client, fake_meta, webhook, dispatcher, config):
    webhook.script("500")
    fake_meta.script("invalid_token")
    now = track(client, signup("e1"))
    dispatcher.drain_once(now=now)

    assert alerts.tick(config, now, dispatcher.http) == [PAUSED]
    assert alerts.tick(config, now + LATER, dispatcher.http) == []
    assert [r["status"] for r in webhook.requests] == [500]


def test_a_disabled_destination_has_its_pending_sends_skipped_with_a_reason(client, fake_meta, dispatcher, raw_alerts):
    now = track(client, signup("e1"))
    alerts.tick(build_config(raw_alerts), now, dispatcher.http)
    raw_alerts["sites"][0]["destinations"][0]["enabled"] = False

    alerts.tick(build_config(raw_alerts), now + timedelta(seconds=1), dispatcher.http)

    assert Send.select(Send.status, Send.reason).tuples()[:] == [("skipped", DROPPED)]
    assert fake_meta.requests == []


@pytest.mark.parametrize("alerts_section, problem", [
    ({"webhook": "ftp://x"}, "alerts.webhook: must be an http:// or https:// URL"),
    ({"telegram": {"site": "nope", "chat_id": "-100"}},
     "alerts.telegram.site: must name a site with a telegram.bot_token; 'nope' has none"),
    ({"telegram": {"site": "shop"}}, "alerts.telegram.chat_id: required"),
    ({"telegram": "yes"}, "alerts.telegram: must be a mapping"),
    ({"failing_minutes": 0}, "alerts.failing_minutes: must be at least 1"),
    ("on", "alerts: must be a mapping"),
])
def test_check_config_names_each_alerts_problem(raw, alerts_section, problem):
    raw["alerts"] = alerts_section
    with pytest.raises(ConfigError) as caught:
        build_config(raw)
    assert problem in caught.value.problems


def test_the_dispatchers_tick_skips_the_sends_of_a_destination_a_reload_disabled(client, fake_meta, live, dispatcher,
                                                                                 raw_alerts):
    track(client, signup("e1"))
    raw_alerts["sites"][0]["destinations"][0]["enabled"] = False
    live.config = build_config(raw_alerts)

    dispatcher.tick()

    assert Send.select(Send.status, Send.reason).tuples()[:] == [("skipped", DROPPED)]
