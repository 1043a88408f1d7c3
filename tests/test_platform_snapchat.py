"""Snapchat Conversions API v3: payloads, answer classification, and delivery end to end against the fake Snap."""
from __future__ import annotations

import json
import logging
import time
from datetime import timedelta
from functools import partial

import pytest
import requests

from ingest.canonical import CanonicalEvent, utcnow
from config import ConfigError, Destination
from models import DestinationState, Event
from platforms import REGISTRY, snapchat
from platforms.base import REJECTED, RETRY, SENT, SETUP, THROTTLE, Http, Outcome, Skip
from tests import helpers
from tests.conftest import BROWSER, SEED_EXAMPLE, build_config, with_destinations
from tests.fakes.snapchat import FakeSnapchat
from tests.helpers import answer, as_kept, check_golden, dry_run_entry, received, sha, signup, track

SECOND = timedelta(seconds=1)
TOKEN = "snap-token"
SCCID = "a1b2c3d4-e5f6-4a5b-8c7d-0e1f2a3b4c5d"  # the ScCid a Snap ad click appends to the landing URL
SCID = "4f3e2d1c-0b9a-4876-a5b4-c3d2e1f00a1b"  # the Snap Pixel's _scid cookie
UNAUTHORIZED = "Snapchat INVALID (HTTP 401): Unauthorized: the access token is invalid or expired"


def snap_destination(api_base: str, **overrides) -> dict:
    dest = {"name": "snap", "platform": "snapchat", "mode": "live", "pixel_id": "px-1",
            "access_token": TOKEN, "api_base": api_base}
    return {**dest, **overrides}


send_of = partial(helpers.send_of, destination="shop/snap")
row = partial(helpers.row, destination="shop/snap")


def sent_row(attempts: int = 1, retries: int = 0) -> dict:
    return {"status": "sent", "reason": None, "attempts": attempts, "retries": retries, "last_status": 200,
            "last_error": None, "trace_id": None}


@pytest.fixture
def fake_snap():
    with FakeSnapchat(token=TOKEN, pixels=("px-1", "px-2")) as fake:
        yield fake


@pytest.fixture
def snap_settings() -> dict:
    return {}


@pytest.fixture
def raw(raw_config, fake_snap, snap_settings, dispatch_settings) -> dict:
    """The example config whose only destination is a live Snapchat pointing at the fake."""
    raw = with_destinations(raw_config, snap_destination(**{"api_base": fake_snap.url, **snap_settings}))
    raw["dispatch"].update(dispatch_settings)
    return raw


@pytest.fixture
def config(raw):
    return build_config(raw)


def destination(mode: str = "live", **settings) -> Destination:
    return Destination(site_id="shop", name="snap", platform="snapchat", mode=mode, enabled=True, events=None,
                       consent_category=None, settings={"pixel_id": "px-1", "access_token": TOKEN, **settings})


# --- golden payloads ----------------------------------------------------------------------------

@pytest.mark.parametrize("snap_settings", [{"mode": "dry", "api_base": None}])
def test_the_seeds_complete_purchase_matches_the_golden_payload(client, frozen_ingest):
    body = {**SEED_EXAMPLE, "ScCid": SCCID, "_scid": SCID, "occurred_at": "2026-03-01T12:00:00Z"}

    entry = dry_run_entry(client, body, headers=BROWSER)

    check_golden("snapchat_purchase.json", entry)
    assert (entry["status"], entry["url"]) == ("would_send", "https://tr.snapchat.com/v3/px-1/events?access_token=***")
    payload = entry["payload"]
    assert (payload["event_name"], payload["event_time"], payload["action_source"]) == ("PURCHASE", 1772366400, "WEB")
    # The golden's hashes, derived by hand from Snap's normalization rules (docs/platforms/snapchat.md).
    assert {k: v for k, v in payload["user_data"].items() if isinstance(v, list)} == {
        "em": [sha("john.doe@example.com")], "ph": [sha("15551234567")], "fn": [sha("john")], "ln": [sha("doe")],
        "ct": [sha("sanfrancisco")], "st": [sha("ca")], "zp": [sha("94102")], "country": [sha("us")],
        "external_id": [sha("user_123")],
    }
    assert {k: v for k, v in payload["user_data"].items() if isinstance(v, str)} == {
        "client_ip_address": "203.0.113.7", "client_user_agent": BROWSER["User-Agent"],
        "sc_click_id": SCCID, "sc_cookie1": SCID,
    }
    assert entry["match_quality"]["score"] == 10.0


@pytest.mark.parametrize("snap_settings", [{"mode": "dry", "api_base": None}])
def test_a_minimal_lead_matches_the_golden_payload(client, frozen_ingest):
    body = {"api_key": "key_demo_123", "event": "lead", "event_id": "lead-1", "email": "jane@example.org",
            "source_url": "https://shop.example/contact", "occurred_at": "2026-03-01T12:00:00Z"}

    entry = dry_run_entry(client, body, headers={"User-Agent": ""}, environ_base={"REMOTE_ADDR": ""})

    check_golden("snapchat_lead.json", entry)
    assert entry["payload"] == {
        "event_name": "SIGN_UP", "event_time": 1772366400, "event_id": "lead-1", "action_source": "WEB",
        "event_source_url": "https://shop.example/contact",
        "user_data": {"em": [sha("jane@example.org")], "country": [sha("us")]},  # country: the site's default
    }
    assert entry["match_quality"] == {"score": 3.2, "identifiers": ["em", "country"]}


@pytest.mark.parametrize("snap_settings", [{"mode": "test"}])
def test_a_dry_run_shows_the_validate_url_of_a_test_destination_with_its_token_masked(client, fake_snap):
    response = client.post("/v1/track?dry_run=1", json=signup("e1"), headers=BROWSER)

    [entry] = response.get_json()["destinations"]
    assert (entry["name"], entry["platform"], entry["mode"], entry["status"]) == ("snap", "snapchat", "test", "would_send")
    assert entry["url"] == f"{fake_snap.url}/v3/px-1/events/validate?access_token=***"
    assert TOKEN not in response.get_data(as_text=True)
    assert entry["match_quality"] == {"score": 2.2, "identifiers": [
        "external_id", "client_ip_address", "client_user_agent", "country"]}


# --- payload rules ------------------------------------------------------------------------------

def canonical(**fields) -> CanonicalEvent:
    now = utcnow()
    event = {"site_id": "shop", "dialect": "channelstack", "event_name": "signed_up",
             "standard_name": "CompleteRegistration", "event_id": "e1", "occurred_at": now, "received_at": now,
             "ip": "203.0.113.7", "user_agent": "Mozilla/5.0", "page_url": "https://shop.example/"}
    return CanonicalEvent(**{**event, **fields})


@pytest.mark.parametrize("standard, snap_name", [
    ("Purchase", "PURCHASE"), ("Lead", "SIGN_UP"), ("CompleteRegistration", "SIGN_UP"), ("Subscribe", "SUBSCRIBE"),
    ("AddToCart", "ADD_CART"), ("InitiateCheckout", "START_CHECKOUT"), ("ViewContent", "VIEW_CONTENT"),
    ("PageView", "PAGE_VIEW"), ("Search", "SEARCH"),
])
def test_standard_events_get_snaps_event_names(standard, snap_name):
    item = snapchat.build(canonical(standard_name=standard, value=5.0, currency="USD"), destination())
    assert item["event_name"] == snap_name


@pytest.mark.parametrize("fields, reason", [
    ({"event_name": "newsletter_optin", "standard_name": "Custom"},
     "custom event 'newsletter_optin': Snapchat takes no custom event names "
     "(map it to one of CUSTOM_EVENT_1..5 under event_names)"),
    ({"event_name": "contact", "standard_name": "Contact"},
     "Contact has no Snapchat event (map it to one of CUSTOM_EVENT_1..5 under event_names)"),
    ({"ip": None}, "no usable identifier for Snapchat (email, phone, or IP address with user agent)"),
    ({"user_agent": None}, "no usable identifier for Snapchat (email, phone, or IP address with user agent)"),
    ({"page_url": None}, "no page URL or referrer: Snapchat needs event_source_url for web events"),
    ({"standard_name": "Purchase", "value": 10.0}, "PURCHASE without value and currency: Snapchat rejects it"),
    ({"standard_name": "Purchase", "currency": "USD"}, "PURCHASE without value and currency: Snapchat rejects it"),
])
def test_events_snap_could_not_take_are_skipped_with_the_reason(fields, reason):
    with pytest.raises(Skip) as skip:
        snapchat.build(canonical(**fields), destination())
    assert skip.value.reason == reason


def test_an_email_alone_or_a_phone_alone_is_enough_to_match():
    by_email = canonical(ip=None, user_agent=None, identity={"em": sha("a@example.com")})
    by_phone = canonical(ip=None, user_agent=None, identity={"ph": sha("15551234567")})
    assert snapchat.identifiers(snapchat.build(by_email, destination())) == ["em"]
    assert snapchat.identifiers(snapchat.build(by_phone, destination())) == ["ph"]


def test_event_names_maps_contact_and_custom_events_to_snaps_custom_slots():
    dest = destination(event_names={"Contact": "CUSTOM_EVENT_1", "Newsletter Opt-In": "CUSTOM_EVENT_2",
                                    "lead": "CUSTOM_EVENT_3"})
    contact = snapchat.build(canonical(event_name="contact_form", standard_name="Contact"), dest)
    custom = snapchat.build(canonical(event_name="newsletter_optin", standard_name="Custom"), dest)
    lead = snapchat.build(canonical(event_name="generate_lead", standard_name="Lead"), dest)
    assert (contact["event_name"], custom["event_name"], lead["event_name"]) == \
        ("CUSTOM_EVENT_1", "CUSTOM_EVENT_2", "CUSTOM_EVENT_3")


def test_a_telegram_funnel_event_goes_as_offline_and_needs_no_page_url():
    event = canonical(channel="chat", standard_name="Lead", event_name="channel_join", page_url=None,
                      external_id="tg:12345", click_ids={"sccid": SCCID})
    item = snapchat.build(event, destination())
    assert item == {
        "event_name": "SIGN_UP", "event_time": int(event.occurred_at.timestamp()), "event_id": "e1",
        "action_source": "OFFLINE",
        "user_data": {"external_id": [sha("tg:12345")], "client_ip_address": "203.0.113.7",
                      "client_user_agent": "Mozilla/5.0", "sc_click_id": SCCID},
    }


def test_a_purchase_carries_its_order_and_items_as_contents():
    event = canonical(standard_name="Purchase", value=59.0, currency="EUR", order_id="o-9",
                      items=[{"id": "sku-1", "quantity": 2, "price": 20.0}, {"id": 7, "price": 19.0}, {"name": "no id"}])
    assert snapchat.build(event, destination())["custom_data"] == {
        "value": 59.0, "currency": "EUR", "order_id": "o-9",
        "contents": [{"id": "sku-1", "quantity": 2, "item_price": 20.0}, {"id": "7", "item_price": 19.0}],
        "num_items": 3,
    }


def test_pre_hashed_identity_and_external_ids_are_not_hashed_again():
    digest = sha("someone")
    event = canonical(identity={"em": digest, "ct": digest}, external_id=digest.upper())
    user_data = snapchat.build(event, destination())["user_data"]
    assert (user_data["em"], user_data["ct"], user_data["external_id"]) == ([digest], [digest], [digest])


@pytest.mark.parametrize("mode, settings, problems", [
    ("live", {"pixel_id": "px-1", "access_token": TOKEN}, []),
    ("dry", {"pixel_id": "px-1"}, []),
    ("live", {"pixel_id": "px-1"}, [("access_token", "required in live mode")]),
    ("test", {"pixel_id": "px-1"}, [("access_token", "required in test mode")]),
    ("dry", {}, [("pixel_id", "required")]),
    ("dry", {"pixel_id": "px-1", "event_names": ["CUSTOM_EVENT_1"]},
     [("event_names", "must be a mapping of event name to Snapchat event name")]),
    ("dry", {"pixel_id": "px-1", "event_names": {"Contact": "CONTACT"}},
     [("event_names.Contact", "'CONTACT' is not a Snapchat event; one of " + ", ".join(snapchat.EVENT_NAMES))]),
])
def test_settings_are_checked(mode, settings, problems):
    dest = Destination("shop", "snap", "snapchat", mode, True, None, None, settings)
    assert snapchat.check_settings(dest) == problems


def test_a_live_destination_without_its_token_is_a_config_error_naming_the_yaml_path(raw_config):
    raw = with_destinations(raw_config, {"name": "snap", "platform": "snapchat", "mode": "live", "pixel_id": "px-1"})
    with pytest.raises(ConfigError) as error:
        build_config(raw)
    assert "sites[0].destinations[0].access_token: required in live mode" in str(error.value)


def test_the_url_masks_the_token_in_every_mode():
    assert snapchat.url(destination()) == "https://tr.snapchat.com/v3/px-1/events?access_token=***"
    assert snapchat.url(destination("test", api_base="http://127.0.0.1:9/")) == \
        "http://127.0.0.1:9/v3/px-1/events/validate?access_token=***"


def test_snapchat_is_in_the_registry():
    assert REGISTRY["snapchat"] is snapchat


# --- classification (docs/platforms/snapchat.md: 5xx retry, 429 throttle, 401/403 setup, 400 INVALID rejected) ------

def invalid(reason: str, **extra) -> dict:
    return {"status": "INVALID", "reason": reason, **extra}


@pytest.mark.parametrize("status, body, headers, kind, error, retry_after, whole_batch", [
    # sent
    (200, {"status": "VALID"}, {}, SENT, None, None, False),
    (200, "", {}, SENT, None, None, False),
    # retry
    (500, invalid("Internal server error"), {}, RETRY, "Snapchat INVALID (HTTP 500): Internal server error", None, False),
    (503, "<html>Service Unavailable</html>", {}, RETRY, "HTTP 503 with a body that is not Snapchat's JSON", None, False),
    # throttle
    (429, invalid("Too many requests"), {"Retry-After": "7"}, THROTTLE,
     "Snapchat INVALID (HTTP 429): Too many requests", 7.0, False),
    (429, "Too Many Requests", {}, THROTTLE, "HTTP 429 with a body that is not Snapchat's JSON", None, False),
    # setup error
    (401, invalid("Unauthorized"), {}, SETUP, "Snapchat INVALID (HTTP 401): Unauthorized", None, False),
    (403, invalid("Forbidden: the access token has no access to pixel px-9"), {}, SETUP,
     "Snapchat INVALID (HTTP 403): Forbidden: the access token has no access to pixel px-9", None, False),
    (404, "<html>Not Found</html>", {}, SETUP, "HTTP 404 with a body that is not Snapchat's JSON", None, False),
    (400, invalid("Invalid access_token"), {}, SETUP, "Snapchat INVALID (HTTP 400): Invalid access_token", None, False),
    # rejected: Snap answers one status for the request and names no event, so the dispatcher splits
    (400, invalid("Invalid hashed IP address", param="user_data.client_ip_address"), {}, REJECTED,
     "Snapchat INVALID (HTTP 400): Invalid hashed IP address (param user_data.client_ip_address)", None, True),
    (400, invalid("Missing price and/or currency in Purchase event"), {}, REJECTED,
     "Snapchat INVALID (HTTP 400): Missing price and/or currency in Purchase event", None, True),
    (400, {}, {}, REJECTED, "Snapchat (HTTP 400): no reason given", None, True),
    (413, "<html>Request Entity Too Large</html>", {}, REJECTED,
     "HTTP 413 with a body that is not Snapchat's JSON", None, True),
    (200, invalid("Insufficient PII"), {}, REJECTED, "Snapchat INVALID (HTTP 200): Insufficient PII", None, True),
])
def test_snap_answers_are_classified(status, body, headers, kind, error, retry_after, whole_batch):
    outcomes = snapchat.classify(answer(status, body, headers), 2)

    text = body if isinstance(body, str) else json.dumps(body)
    expected = Outcome(kind, status, error, None, text, retry_after, whole_batch)
    assert outcomes == [expected, expected]


def test_a_rejection_of_a_single_event_is_not_split_further():
    [outcome] = snapchat.classify(answer(400, invalid("Insufficient PII")), 1)
    assert (outcome.kind, outcome.whole_batch) == (REJECTED, False)


def test_the_validate_endpoints_per_event_logs_land_on_each_event():
    body = {"status": "INVALID", "test_event": True, "reason": "Some events are invalid", "event_logs": [
        {"event": 0, "status": "VALID", "warnings": []},
        {"event": 1, "status": "INVALID", "warnings": [],
         "errors": {"codes": ["INVALID_PARAMETER"], "error_msgs": ["Invalid hashed IP address"]}},
    ]}
    response = answer(400, body)
    text = json.dumps(body)

    assert snapchat.classify(response, 2) == [
        Outcome(SENT, 400, None, None, text),
        Outcome(REJECTED, 400, "Snapchat INVALID INVALID_PARAMETER: Invalid hashed IP address", None, text),
    ]


# --- delivery end to end ------------------------------------------------------------------------

def test_a_complete_purchase_reaches_snap_as_exactly_this_item(client, fake_snap, dispatcher):
    now = track(client, {**SEED_EXAMPLE, "ScCid": SCCID, "_scid": SCID})
    occurred_at = Event.get().occurred_at

    assert dispatcher.drain_once(now=now) == {"shop/snap": 1}

    expected = {
        "event_name": "PURCHASE",
        "event_time": int(occurred_at.timestamp()),
        "event_id": "evt_unique123",
        "action_source": "WEB",
        "event_source_url": "https://example.com/checkout",
        "user_data": {
            "em": [sha("john.doe@example.com")], "ph": [sha("15551234567")],
            "fn": [sha("john")], "ln": [sha("doe")],
            "ct": [sha("sanfrancisco")], "st": [sha("ca")], "zp": [sha("94102")], "country": [sha("us")],
            "external_id": [sha("user_123")],
            "client_ip_address": "203.0.113.7", "client_user_agent": BROWSER["User-Agent"],
            "sc_click_id": SCCID, "sc_cookie1": SCID,
        },
        "custom_data": {"value": 149.99, "currency": "USD", "order_id": "ord_abc123"},
    }
    [request] = fake_snap.requests
    assert (request["method"], request["path"], request["query"]) == ("POST", "/v3/px-1/events", {"access_token": TOKEN})
    assert request["body"] == {"data": [expected]}
    assert (request["status"], request["answer"]) == (200, {"status": "VALID"})
    assert fake_snap.events == [expected] and fake_snap.validated == []
    assert row("evt_unique123") == sent_row()
    send = send_of("evt_unique123")
    assert send.payload == as_kept(expected)  # the platform got the full IP; the kept copy holds its /24
    assert send.match_quality == {"score": 10.0, "identifiers": [
        "em", "ph", "sc_click_id", "sc_cookie1", "external_id", "client_ip_address", "client_user_agent",
        "fn", "ln", "ct", "st", "zp", "country"]}
    assert json.loads(send.response_excerpt) == {"status": "VALID"}
    assert Event.get().ip == "203.0.113.0"  # every send of the event is final: the IP is reduced


def test_a_500_is_retried_after_the_backoff_and_delivered_on_the_retry(client, fake_snap, dispatcher):
    fake_snap.script("500")
    now = track(client, signup("e1"))

    dispatcher.drain_once(now=now)

    assert row("e1") == {
        "status": "pending", "reason": None, "attempts": 1, "retries": 1, "last_status": 500,
        "last_error": "Snapchat INVALID (HTTP 500): Internal server error", "trace_id": None,
    }
    assert now + 8 * SECOND <= send_of("e1").next_attempt_at <= now + 12 * SECOND  # 10 s ± 20 %
    assert dispatcher.drain_once(now=now + 7 * SECOND) == {"shop/snap": 0}

    assert dispatcher.drain_once(now=now + 12 * SECOND) == {"shop/snap": 1}

    assert received(fake_snap) == ["e1"] and len(fake_snap.requests) == 2
    assert row("e1") == sent_row(attempts=2, retries=1)


@pytest.mark.parametrize("dispatch_settings", [{"timeout_seconds": 0.1}])  # the hang is cut short soon
def test_a_request_that_outlasts_the_timeout_is_retried(client, fake_snap, dispatcher):
    fake_snap.script(("hang", 5))
    now = track(client, signup("e1"))

    dispatcher.drain_once(now=now)

    assert row("e1") == {
        "status": "pending", "reason": None, "attempts": 1, "retries": 1, "last_status": None,
        "last_error": "no answer within 0.1 s", "trace_id": None,
    }
    dispatcher.drain_once(now=now + 12 * SECOND)
    assert received(fake_snap) == ["e1"] and row("e1") == sent_row(attempts=2, retries=1)


def test_a_429_waits_for_retry_after_and_never_counts_a_retry(client, fake_snap, raw, live, dispatcher):
    raw["dispatch"]["max_attempts"] = 1
    live.config = build_config(raw)
    fake_snap.script("429", "429")
    now = track(client, signup("e1"))

    dispatcher.drain_once(now=now)

    assert row("e1") == {
        "status": "pending", "reason": None, "attempts": 1, "retries": 0, "last_status": 429,
        "last_error": "Snapchat INVALID (HTTP 429): Too many requests", "trace_id": None,
    }
    assert send_of("e1").next_attempt_at == now + SECOND  # Retry-After: 1

    dispatcher.drain_once(now=now + SECOND)
    dispatcher.drain_once(now=now + 2 * SECOND)

    assert received(fake_snap) == ["e1"]
    assert row("e1") == sent_row(attempts=3, retries=0)


def test_an_invalid_token_pauses_the_destination_until_its_config_changes(client, fake_snap, raw, live, dispatcher):
    fake_snap.set_token("rotated-token")  # the admin made a new token in Ads Manager, not yet in the config
    now = track(client, signup("e1"))

    assert dispatcher.drain_once(now=now) == {"shop/snap": 1}

    paused = DestinationState.get()
    assert (paused.destination, paused.paused_reason, paused.paused_at) == ("shop/snap", UNAUTHORIZED, now)
    assert row("e1") == {
        "status": "pending", "reason": None, "attempts": 0, "retries": 0, "last_status": 401,
        "last_error": UNAUTHORIZED, "trace_id": None,
    }
    assert dispatcher.drain_once(now=now + timedelta(hours=1)) == {"shop/snap": 0}
    assert len(fake_snap.requests) == 1

    live.config = build_config(with_destinations(raw, snap_destination(fake_snap.url, access_token="rotated-token")))
    assert dispatcher.drain_once(now=now + timedelta(hours=1)) == {"shop/snap": 1}

    assert fake_snap.requests[1]["query"] == {"access_token": "rotated-token"}
    assert received(fake_snap) == ["e1"] and row("e1") == sent_row()
    assert DestinationState.select().count() == 0


def test_an_expired_token_answer_pauses_the_destination(client, fake_snap, dispatcher):
    fake_snap.script("401")
    now = track(client, signup("e1"), signup("e2"))

    assert dispatcher.drain_once(now=now) == {"shop/snap": 2}

    assert DestinationState.get().paused_reason == UNAUTHORIZED
    assert [(row(i)["status"], row(i)["attempts"]) for i in ("e1", "e2")] == [("pending", 0)] * 2
    assert len(fake_snap.requests) == 1  # a setup error is never split


@pytest.mark.parametrize("snap_settings", [{"pixel_id": "px-9"}])
def test_a_pixel_the_token_cannot_reach_pauses_the_destination(client, fake_snap, dispatcher):
    now = track(client, signup("e1"))

    dispatcher.drain_once(now=now)

    assert DestinationState.get().paused_reason == \
        "Snapchat INVALID (HTTP 403): Forbidden: the access token has no access to pixel px-9"
    assert (row("e1")["status"], row("e1")["attempts"], row("e1")["last_status"]) == ("pending", 0, 403)


def test_one_rejected_event_in_a_batch_of_50_fails_alone_and_the_other_49_are_sent(client, fake_snap, dispatcher):
    ids = [f"e{i:02}" for i in range(50)]
    fake_snap.reject_event("e17", "Invalid event_id format")
    now = track(client, *(signup(i) for i in ids))

    assert dispatcher.drain_once(now=now) == {"shop/snap": 50}

    assert len(fake_snap.requests[0]["body"]["data"]) == 50  # one batch first, split only when rejected
    assert sorted(received(fake_snap)) == [i for i in ids if i != "e17"]
    error = "Snapchat INVALID (HTTP 400): Invalid event_id format"
    assert row("e17") == {
        "status": "failed", "reason": error, "attempts": 1, "retries": 0, "last_status": 400,
        "last_error": error, "trace_id": None,
    }
    assert {tuple(row(i).values()) for i in ids if i != "e17"} == {tuple(sent_row().values())}


def test_an_event_past_snaps_37_day_window_fails_unsent_while_a_30_day_old_one_goes(client, fake_snap, dispatcher):
    days_ago = lambda n: (utcnow() - timedelta(days=n)).isoformat()  # noqa: E731
    now = track(client, signup("old", occurred_at=days_ago(38)), signup("late", occurred_at=days_ago(30)))

    assert dispatcher.drain_once(now=now) == {"shop/snap": 2}

    assert row("old") == {
        "status": "failed", "reason": "older than Snapchat's 37-day window: not sent", "attempts": 0, "retries": 0,
        "last_status": None, "last_error": None, "trace_id": None,
    }
    assert row("late") == sent_row()
    assert [item["event_id"] for r in fake_snap.requests for item in r["body"]["data"]] == ["late"]


@pytest.mark.parametrize("snap_settings", [{"mode": "test"}])
def test_a_test_destination_posts_to_the_validate_endpoint_which_records_nothing(client, fake_snap, dispatcher):
    now = track(client, signup("e1"))

    dispatcher.drain_once(now=now)

    [request] = fake_snap.requests
    assert (request["path"], request["query"]) == ("/v3/px-1/events/validate", {"access_token": TOKEN})
    assert as_kept(request["body"]) == {"data": [send_of("e1").payload]}
    assert request["body"]["data"][0]["user_data"]["client_ip_address"] == "203.0.113.7"
    assert request["answer"] == {"status": "VALID", "test_event": True,
                                 "event_logs": [{"event": 0, "status": "VALID", "warnings": []}]}
    assert fake_snap.events == [] and [e["event_id"] for e in fake_snap.validated] == ["e1"]
    assert row("e1") == sent_row()


@pytest.mark.parametrize("snap_settings", [{"mode": "test"}])
def test_in_test_mode_the_validate_verdict_fails_only_the_invalid_event_without_a_split(client, fake_snap, dispatcher):
    fake_snap.reject_event("e2", "Invalid event_id format")
    now = track(client, signup("e1"), signup("e2"), signup("e3"))

    dispatcher.drain_once(now=now)

    assert len(fake_snap.requests) == 1
    assert [row(i)["status"] for i in ("e1", "e2", "e3")] == ["sent", "failed", "sent"]
    assert row("e2")["reason"] == "Snapchat INVALID INVALID_PARAMETER: Invalid event_id format"
    assert [e["event_id"] for e in fake_snap.validated] == ["e1", "e3"] and fake_snap.events == []


@pytest.mark.parametrize("snap_settings", [{"mode": "dry"}])
def test_a_dry_destination_records_the_payload_and_sends_nothing(client, fake_snap, dispatcher):
    now = track(client, signup("e1"))

    assert dispatcher.drain_once(now=now) == {"shop/snap": 1}

    assert fake_snap.requests == []
    assert row("e1") == {
        "status": "skipped", "reason": "dry mode", "attempts": 0, "retries": 0, "last_status": None,
        "last_error": None, "trace_id": None,
    }
    send = send_of("e1")
    assert send.payload == {
        "event_name": "SIGN_UP",
        "event_time": int(Event.get().occurred_at.timestamp()),
        "event_id": "e1",
        "action_source": "WEB",
        "event_source_url": "https://shop.example/welcome",
        "user_data": {
            "country": [sha("us")],
            "external_id": [sha("user-e1")],
            "client_ip_address": "203.0.113.0",  # kept with its /24, as the event once its sends are final
            "client_user_agent": BROWSER["User-Agent"],
        },
    }
    assert send.match_quality == {"score": 2.2, "identifiers": [
        "external_id", "client_ip_address", "client_user_agent", "country"]}


def test_events_snap_cannot_take_are_skipped_with_their_reasons_and_never_sent(client, fake_snap, dispatcher):
    no_ua = {"User-Agent": "", "X-Postback-Client-IP": "203.0.113.7"}
    track(client, signup("custom", event="newsletter_optin"), signup("contact", event="contact"),
          signup("no-url", source_url=None), signup("no-value", event="purchase", currency="USD"))
    now = track(client, signup("no-ua"), headers=no_ua)

    assert dispatcher.drain_once(now=now) == {"shop/snap": 5}

    assert fake_snap.requests == []
    reasons = {i: (row(i)["status"], row(i)["reason"]) for i in ("custom", "contact", "no-url", "no-value", "no-ua")}
    assert reasons == {
        "custom": ("skipped", "custom event 'newsletter_optin': Snapchat takes no custom event names "
                              "(map it to one of CUSTOM_EVENT_1..5 under event_names)"),
        "contact": ("skipped", "Contact has no Snapchat event (map it to one of CUSTOM_EVENT_1..5 under event_names)"),
        "no-url": ("skipped", "no page URL or referrer: Snapchat needs event_source_url for web events"),
        "no-value": ("skipped", "PURCHASE without value and currency: Snapchat rejects it"),
        "no-ua": ("skipped", "no usable identifier for Snapchat (email, phone, or IP address with user agent)"),
    }


@pytest.mark.parametrize("snap_settings", [{"event_names": {"Contact": "CUSTOM_EVENT_1"}}])
def test_a_contact_mapped_to_a_custom_slot_is_delivered_under_it(client, fake_snap, dispatcher):
    now = track(client, signup("c1", event="contact"))

    dispatcher.drain_once(now=now)

    assert [(e["event_id"], e["event_name"]) for e in fake_snap.events] == [("c1", "CUSTOM_EVENT_1")]
    assert row("c1") == sent_row()


def test_the_token_never_reaches_the_logs_even_at_debug_level(client, fake_snap, dispatcher, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")  # as if a deployment turned the HTTP client's logs on
    fake_snap.script("500")
    now = track(client, signup("e1"))

    dispatcher.drain_once(now=now)
    dispatcher.drain_once(now=now + 12 * SECOND)

    assert row("e1")["status"] == "sent"
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "access_token=***" in text  # urllib3's request line, masked
    assert TOKEN not in text and all(TOKEN not in json.dumps(r.__dict__, default=str) for r in caplog.records)


def test_a_connection_failure_is_retried_and_its_error_carries_no_url():
    dest = destination(api_base="http://127.0.0.1:9")  # nothing listens on the discard port
    [outcome] = snapchat.send([{"event_name": "PAGE_VIEW"}], dest, Http(timeout=1))
    assert (outcome.kind, outcome.error) == (RETRY, "connection failed (ConnectionError)")


def test_a_telegram_funnel_event_is_accepted_by_snap_as_offline(fake_snap):
    event = canonical(channel="chat", standard_name="Lead", event_name="channel_join", page_url=None,
                      external_id="tg:12345")
    item = snapchat.build(event, destination(api_base=fake_snap.url))

    assert snapchat.send([item], destination(api_base=fake_snap.url), Http(timeout=5)) == \
        [Outcome(SENT, 200, response='{"status": "VALID"}')]
    assert fake_snap.events == [item]


# --- the fake checks what Snap checks -----------------------------------------------------------

def post(fake: FakeSnapchat, data, token: str | None = TOKEN, pixel: str = "px-1", validate: bool = False):
    path = f"/v3/{pixel}/events" + ("/validate" if validate else "")
    params = {"access_token": token} if token else {}
    return requests.post(fake.url + path, params=params, json={"data": data}, timeout=5)


def snap_event(**overrides) -> dict:
    item = {"event_name": "SIGN_UP", "event_time": int(time.time()) - 60, "event_id": "e1", "action_source": "WEB",
            "event_source_url": "https://shop.example/", "user_data": {"em": [sha("a@example.com")]}}
    return {**item, **overrides}


@pytest.mark.parametrize("overrides, status, reason", [
    ({"user_data": {"client_ip_address": sha("203.0.113.7"), "client_user_agent": "UA"}}, 400,
     "Invalid hashed IP address"),
    ({"user_data": {"em": ["a@example.com"]}}, 400, "Unhashed PII in user_data.em"),
    ({"user_data": {"em": [sha("a").upper()]}}, 400, "Unhashed PII in user_data.em"),
    ({"user_data": {"client_ip_address": "203.0.113.7"}}, 400, "Insufficient PII"),
    ({"event_time": int(time.time() * 1000)}, 400,
     "Timestamp invalid or out of range (Unix seconds, at most 37 days old)"),
    ({"event_time": int(time.time()) - 38 * 86400}, 400,
     "Timestamp invalid or out of range (Unix seconds, at most 37 days old)"),
    ({"event_name": "LEAD"}, 400, "Invalid event_name 'LEAD'"),
    ({"action_source": "website"}, 400, "Invalid action_source 'website': one of MOBILE_APP, OFFLINE, WEB"),
    ({"event_source_url": None}, 400, "Missing required field event_source_url for WEB events"),
    ({"event_name": "PURCHASE", "custom_data": {"value": 5.0}}, 400, "Missing price and/or currency in Purchase event"),
])
def test_the_fake_refuses_what_snap_refuses(fake_snap, overrides, status, reason):
    response = post(fake_snap, [snap_event(**overrides)])
    assert (response.status_code, response.json()["status"], response.json()["reason"]) == (status, "INVALID", reason)
    assert fake_snap.events == []


@pytest.mark.parametrize("token, pixel, status", [(None, "px-1", 401), ("wrong", "px-1", 401), (TOKEN, "px-9", 403)])
def test_the_fake_checks_the_token_and_the_pixel(fake_snap, token, pixel, status):
    assert post(fake_snap, [snap_event()], token=token, pixel=pixel).status_code == status


def test_the_fake_takes_at_most_2000_events_a_request(fake_snap):
    assert post(fake_snap, [snap_event(event_id=f"e{i}") for i in range(2000)]).status_code == 200
    response = post(fake_snap, [snap_event(event_id=f"e{i}") for i in range(2001)])
    assert (response.status_code, response.json()["reason"]) == (400, "data must hold at most 2000 events")


def test_the_fakes_validate_endpoint_judges_each_event_and_records_none(fake_snap):
    response = post(fake_snap, [snap_event(), snap_event(event_id="e2", user_data={})], validate=True)
    assert response.status_code == 400
    assert [log["status"] for log in response.json()["event_logs"]] == ["VALID", "INVALID"]
    assert fake_snap.events == [] and [e["event_id"] for e in fake_snap.validated] == ["e1"]


def test_the_fake_answers_scripted_failures_in_order(fake_snap):
    fake_snap.script("429", "401", "500", ("invalid", "Something is wrong"))
    answers = [post(fake_snap, [snap_event()]) for _ in range(5)]
    assert [(a.status_code, a.json().get("reason")) for a in answers] == [
        (429, "Too many requests"), (401, "Unauthorized: the access token is invalid or expired"),
        (500, "Internal server error"), (400, "Something is wrong"), (200, None)]
    assert answers[0].headers["Retry-After"] == "1"
    with pytest.raises(ValueError):
        fake_snap.script("teapot")
