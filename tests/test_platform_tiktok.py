"""TikTok Events API 2.0: payloads, answer classification, and delivery end to end against the fake."""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timedelta, timezone
from functools import partial

import pytest
import requests

from delivery import sends as delivery
from ingest.canonical import CanonicalEvent, utcnow
from config import Config, ConfigError
from ingest.accept import accept
from models import DestinationState, Event, Send
from platforms import tiktok
from platforms.base import REJECTED, RETRY, SENT, SETUP, THROTTLE, Http, Outcome, Skip
from tests import helpers
from tests.conftest import BROWSER, RAW_PII, SEED_EXAMPLE, build_config, with_destinations
from tests.fakes.tiktok import GATEWAY_PAGE, FakeTikTok
from tests.helpers import answer, as_kept, check_golden, dry_run_entry, golden, received, sha, signup, track

SECOND = timedelta(seconds=1)
UA = BROWSER["User-Agent"]
TTCLID = "E.C.P.CqgBiNZ5Qn2kVt0xYb3WcL8rDs1HfGaJ"
TTP = "2Tj8Z5pLxq0WmN3vR7sK1yB9cD4"
TRACK_URL = "/open_api/v1.3/event/track/"
BAD_CONTENT_ID = "Batch.0.properties.contents.0.content_id: Not a valid string"
OCCURRED = "2026-03-01T12:00:00Z"
OCCURRED_AT = 1772366400  # 2026-03-01T12:00:00Z
NO_IDENTIFIER = "no usable identifier for TikTok (email, phone, external id, ttclid, ttp or IP)"
RAW_PII.append("Jane@Example.ORG")  # the only raw personal value this file sends that conftest does not list
NO_LANDING_PAGE = ("Telegram event without a landing page URL: TikTok has no messaging source, "
                   "so it takes such an event only as a website event of that page")


def tiktok_destination(api_base: str, **overrides) -> dict:
    dest = {"name": "tiktok", "platform": "tiktok", "mode": "live", "pixel_code": "C123",
            "access_token": "tiktok-token", "api_base": api_base}
    return {**dest, **overrides}


send_of = partial(helpers.send_of, destination="shop/tiktok")
row = partial(helpers.row, destination="shop/tiktok")


def request_id(request: dict) -> str:
    return request["answer"]["request_id"]


def signup_item(event_id: str, occurred_at: datetime) -> dict:
    """What TikTok receives for `signup(event_id)` posted with BROWSER headers."""
    return {
        "event": "CompleteRegistration",
        "event_time": int(occurred_at.timestamp()),
        "event_id": event_id,
        "user": {"external_id": sha(f"user-{event_id}"), "country": "us", "ip": "203.0.113.7", "user_agent": UA},
        "page": {"url": "https://shop.example/welcome"},
    }


@pytest.fixture
def fake_tiktok():
    with FakeTikTok(token="tiktok-token", pixels=("C123", "C456")) as fake:
        yield fake


@pytest.fixture
def tiktok_settings() -> dict:
    return {}


@pytest.fixture
def raw(raw_config, fake_tiktok, tiktok_settings, dispatch_settings) -> dict:
    """The example config whose only destination is a live TikTok pointing at the fake."""
    raw = with_destinations(raw_config, tiktok_destination(fake_tiktok.url, **tiktok_settings))
    raw["dispatch"].update(dispatch_settings)
    return raw


@pytest.fixture
def config(raw) -> Config:
    return build_config(raw)


def canonical(**fields) -> CanonicalEvent:
    """A canonical event as a dialect would hand it over, for the pure builder."""
    moment = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    base = {"site_id": "shop", "dialect": "adtarget", "event_name": "join", "standard_name": "Lead",
            "event_id": "j1", "occurred_at": moment, "received_at": moment}
    return CanonicalEvent(**{**base, **fields})


def destination(config: Config):
    return config.destination("shop/tiktok")


# --- payloads ----------------------------------------------------------------------------------

def test_the_seeds_complete_purchase_matches_the_golden_payload(client, frozen_ingest):
    body = {**SEED_EXAMPLE, "ttclid": TTCLID, "ttp": TTP, "occurred_at": OCCURRED}
    entry = dry_run_entry(client, body, headers={**BROWSER, "Accept-Language": "en-US,en;q=0.9"})

    payload = entry["payload"]
    check_golden("tiktok_purchase.json", payload)
    # The golden's values, derived by hand: the normalized strings TikTok's rules give for the seed.
    assert payload["event"] == "Purchase" and payload["event_time"] == OCCURRED_AT
    assert payload["user"] == {
        "email": sha("john.doe@example.com"),
        "phone": sha("+15551234567"),  # E.164 with "+"
        "external_id": sha("user_123"),  # as given, not lower-cased
        "first_name": sha("john"), "last_name": sha("doe"),
        "city": "san francisco", "state": "ca", "zip_code": sha("94102"), "country": "us",
        "ttclid": TTCLID, "ttp": TTP, "ip": "203.0.113.7", "user_agent": UA, "locale": "en-US",
    }
    assert payload["properties"] == {
        "value": 149.99, "currency": "USD", "order_id": "ord_abc123",
        "product_category": "electronics", "coupon_used": "SAVE20",
    }
    assert payload["page"] == {"url": "https://example.com/checkout"}


def test_a_minimal_lead_matches_the_golden_payload(client, frozen_ingest):
    body = {"api_key": "key_demo_123", "event": "generate_lead", "event_id": "lead_1",
            "email": "  Jane@Example.ORG ", "occurred_at": OCCURRED}
    entry = dry_run_entry(client, body, headers={"User-Agent": "", "X-Postback-Client-IP": "203.0.113.9"})  # a server's call

    check_golden("tiktok_lead.json", entry["payload"])
    assert entry["payload"] == {
        "event": "Lead", "event_time": OCCURRED_AT, "event_id": "lead_1",
        "user": {"email": sha("jane@example.org"), "country": "us", "ip": "203.0.113.9"},
    }


def test_items_become_contents_with_a_product_content_type(client, frozen_ingest):
    items = [{"id": "sku-1", "quantity": 2, "price": 49.5}, {"id": 77, "quantity": 1.5}, {"price": 3}]
    entry = dry_run_entry(client, {**signup("e1"), "event": "purchase", "value": 99, "items": items})

    assert entry["payload"]["properties"] == {
        "value": 99.0, "currency": "USD", "content_type": "product",
        # an integer quantity only: TikTok fails the batch on 1.5; an item without id is left out
        "contents": [{"content_id": "sku-1", "quantity": 2, "price": 49.5}, {"content_id": "77"}],
    }


def test_custom_properties_are_sent_and_our_own_fields_win_a_clash(client, frozen_ingest):
    entry = dry_run_entry(client, {**signup("e1"), "event": "purchase", "value": 5, "currency": "EUR", "coupon": "SAVE5",
                             "contents": "from the shop", "content_type": "vehicle", "items": [{"id": "a"}]})

    assert entry["payload"]["properties"] == {
        "coupon": "SAVE5", "contents": [{"content_id": "a"}], "content_type": "product",
        "value": 5.0, "currency": "EUR",
    }


@pytest.mark.parametrize("event, name", [
    ("purchase", "Purchase"), ("generate_lead", "Lead"), ("sign_up", "CompleteRegistration"),
    ("subscribe", "Subscribe"), ("add_to_cart", "AddToCart"), ("begin_checkout", "InitiateCheckout"),
    ("view_item", "ViewContent"), ("page_view", "Pageview"), ("search", "Search"), ("contact", "Contact"),
    ("quiz_finished", "quiz_finished"),  # TikTok takes custom events (reportable, not optimisable)
])
def test_event_names_follow_tiktoks_list_and_custom_events_keep_their_name(client, frozen_ingest, event, name):
    assert dry_run_entry(client, signup("e1", event=event))["payload"]["event"] == name


def test_an_external_id_that_already_is_a_digest_is_sent_as_it_is_lower_cased(client, frozen_ingest):
    digest = sha("user-9").upper()
    entry = dry_run_entry(client, signup("e1", distinct_id=f" {digest} "))
    assert entry["payload"]["user"]["external_id"] == digest.lower()


def test_pre_hashed_city_state_and_country_are_left_out_because_tiktok_wants_them_in_clear(client, frozen_ingest):
    body = signup("e1", city=sha("paris"), state=sha("idf"), country=sha("fr"), zip=sha("75001"))
    user = dry_run_entry(client, body)["payload"]["user"]
    assert {k: user.get(k) for k in ("city", "state", "country", "zip_code")} == \
        {"city": None, "state": None, "country": None, "zip_code": sha("75001")}


def test_a_telegram_event_with_its_landing_page_goes_as_that_pages_web_event(config):
    event = canonical(channel="chat", page_url="https://shop.example/vip", click_ids={"ttclid": TTCLID},
                      ip="203.0.113.7", user_agent=UA)
    assert tiktok.build(event, destination(config)) == {
        "event": "Lead", "event_time": OCCURRED_AT, "event_id": "j1",
        "user": {"ttclid": TTCLID, "ip": "203.0.113.7", "user_agent": UA},
        "page": {"url": "https://shop.example/vip"},
    }


def test_a_telegram_event_without_a_landing_page_is_skipped(config):
    event = canonical(channel="chat", click_ids={"ttclid": TTCLID})
    with pytest.raises(Skip) as skip:
        tiktok.build(event, destination(config))
    assert skip.value.reason == NO_LANDING_PAGE


def test_an_event_with_nothing_tiktok_can_match_on_is_skipped(config):
    event = canonical(channel="web", page_url="https://shop.example/", user_agent=UA,
                      location={"city": "paris", "country": "fr"}, identity={"fn_compact": sha("jane")})
    with pytest.raises(Skip) as skip:
        tiktok.build(event, destination(config))
    assert skip.value.reason == NO_IDENTIFIER


# --- config ------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings, problems", [
    ({"mode": "live", "access_token": None}, ["sites[0].destinations[0].access_token: required in live mode"]),
    ({"mode": "test", "access_token": "t"}, ["sites[0].destinations[0].test_event_code: required in test mode"]),
    ({"mode": "live", "pixel_code": None}, ["sites[0].destinations[0].pixel_code: required"]),
])
def test_a_destination_without_its_credentials_is_a_config_error(raw_config, settings, problems):
    dest = {k: v for k, v in tiktok_destination("http://127.0.0.1:9", **settings).items() if v is not None}
    with pytest.raises(ConfigError) as error:
        build_config(with_destinations(raw_config, dest))
    assert error.value.problems == problems


def test_a_dry_destination_needs_no_token(raw_config):
    dest = {"name": "tiktok", "platform": "tiktok", "mode": "dry", "pixel_code": "C123"}
    config = build_config(with_destinations(raw_config, dest))
    assert tiktok.url(config.destination("shop/tiktok")) == "https://business-api.tiktok.com/open_api/v1.3/event/track/"


# --- classification ----------------------------------------------------------------------------

def tt(code: int, message: str) -> dict:
    return {"code": code, "message": message, "request_id": "202603011200001A2B3C4D5E6F708192", "data": {}}


@pytest.mark.parametrize("status, body, headers, kind, error, retry_after", [
    # sent: code 0; 20001 too, as RudderStack counts it (docs/platforms/tiktok.md)
    (200, tt(0, "OK"), {}, SENT, None, None),
    (200, tt(20001, "Partial success"), {}, SENT, None, None),
    # retry: 5xxxx codes, HTTP 5xx, HTML gateway pages, RudderStack's 40700
    (200, tt(50000, "Internal service error"), {}, RETRY, "TikTok error 50000: Internal service error", None),
    (200, tt(51004, "System busy"), {}, RETRY, "TikTok error 51004: System busy", None),
    (500, tt(50000, "Internal service error"), {}, RETRY, "TikTok error 50000: Internal service error", None),
    (503, tt(40002, "Invalid parameter"), {}, RETRY, "TikTok error 40002: Invalid parameter", None),
    (502, GATEWAY_PAGE, {}, RETRY, "HTTP 502 with a body that is not TikTok's JSON", None),
    (504, "<html><body>Gateway Timeout</body></html>", {}, RETRY,
     "HTTP 504 with a body that is not TikTok's JSON", None),
    (200, "<html>captive portal</html>", {}, RETRY, "HTTP 200 with a body that is not TikTok's JSON", None),
    (200, tt(40700, "Server busy"), {}, RETRY, "TikTok error 40700: Server busy", None),
    # throttle: 40100 in a 200 body; a proxy's 429
    (200, tt(40100, "Too many requests"), {}, THROTTLE, "TikTok error 40100: Too many requests", None),
    (200, tt(40100, "Too many requests"), {"Retry-After": "7"}, THROTTLE, "TikTok error 40100: Too many requests", 7.0),
    (429, "Too Many Requests", {"Retry-After": "30"}, THROTTLE, "HTTP 429 with a body that is not TikTok's JSON", 30.0),
    # setup error: token, permission on the pixel, a pixel code TikTok refuses, a wrong api_base
    (200, tt(40105, "Access token is incorrect or has been revoked."), {}, SETUP,
     "TikTok error 40105: Access token is incorrect or has been revoked.", None),
    (200, tt(40104, "Access token is null"), {}, SETUP, "TikTok error 40104: Access token is null", None),
    (200, tt(40001, "No permission to operate pixel code: C999."), {}, SETUP,
     "TikTok error 40001: No permission to operate pixel code: C999.", None),
    (200, tt(40001, "Authorization failed for this advertiser"), {}, SETUP,
     "TikTok error 40001: Authorization failed for this advertiser", None),
    (200, tt(40002, "Invalid value for event_source_id: not a valid string."), {}, SETUP,
     "TikTok error 40002: Invalid value for event_source_id: not a valid string.", None),
    (404, "404 page not found", {}, SETUP, "HTTP 404 with a body that is not TikTok's JSON", None),
    (401, "Unauthorized", {}, SETUP, "HTTP 401 with a body that is not TikTok's JSON", None),
    # rejected: 40002 and other per-event validation; the whole batch, so it is split
    (200, tt(40002, BAD_CONTENT_ID), {}, REJECTED, f"TikTok error 40002: {BAD_CONTENT_ID}", None),
    (200, tt(40001, "Event type not allowed in this request"), {}, REJECTED,
     "TikTok error 40001: Event type not allowed in this request", None),
    (200, tt(40006, "Batch.0.event_time: Too far in the past."), {}, REJECTED,
     "TikTok error 40006: Batch.0.event_time: Too far in the past.", None),
    (200, {"code": 40002}, {}, REJECTED, "TikTok error 40002: no message", None),
])
def test_tiktok_answers_are_classified_by_their_code(status, body, headers, kind, error, retry_after):
    outcomes = tiktok.classify(answer(status, body, headers), 2)

    text = body if isinstance(body, str) else json.dumps(body)
    trace_id = body.get("request_id") if isinstance(body, dict) else None
    expected = Outcome(kind, status, error, trace_id, text, retry_after, whole_batch=kind == REJECTED)
    assert outcomes == [expected, expected]


def test_a_rejection_of_a_single_event_is_not_split_further():
    [outcome] = tiktok.classify(answer(200, tt(40002, BAD_CONTENT_ID)), 1)
    assert (outcome.kind, outcome.whole_batch) == (REJECTED, False)


@pytest.mark.parametrize("scripted, kind, status, error", [
    (("code", 40100), THROTTLE, 200, "TikTok error 40100: Too many requests. Please retry in some time."),
    (("code", 40105), SETUP, 200, "TikTok error 40105: Access token is incorrect or has been revoked."),
    (("code", 40002, BAD_CONTENT_ID), REJECTED, 200, f"TikTok error 40002: {BAD_CONTENT_ID}"),
    ("500", RETRY, 500, "TikTok error 50000: Internal service error. Please retry later."),
    ("html502", RETRY, 502, "HTTP 502 with a body that is not TikTok's JSON"),
])
def test_the_fakes_scripted_answers_classify_as_tiktoks_would(fake_tiktok, config, scripted, kind, status, error):
    fake_tiktok.script(scripted)
    item = signup_item("e1", utcnow())

    [outcome] = tiktok.send([item], destination(config), Http(timeout=5))

    assert (outcome.kind, outcome.status, outcome.error) == (kind, status, error)
    assert outcome.whole_batch is False


# --- delivery end to end ------------------------------------------------------------------------

def test_a_signup_reaches_tiktok_as_exactly_this_item(client, fake_tiktok, dispatcher):
    now = track(client, signup("e1"))
    expected = signup_item("e1", Event.get().occurred_at)

    assert dispatcher.drain_once(now=now) == {"shop/tiktok": 1}

    [request] = fake_tiktok.requests
    assert (request["method"], request["path"], request["query"], request["token"]) == \
        ("POST", TRACK_URL, "", "tiktok-token")
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["body"] == {"event_source": "web", "event_source_id": "C123", "data": [expected]}
    assert request["status"] == 200 and request["answer"]["code"] == 0
    assert fake_tiktok.events == [expected] and fake_tiktok.test_events == []
    assert row("e1") == {
        "status": "sent", "reason": None, "attempts": 1, "retries": 0, "last_status": 200,
        "last_error": None, "trace_id": request_id(request),
    }
    send = send_of("e1")
    assert send.payload == as_kept(expected)  # the platform got the full IP; the kept copy holds its /24
    assert send.match_quality == {"score": 2.8, "identifiers": ["external_id", "ip", "user_agent", "country"]}
    assert json.loads(send.response_excerpt) == request["answer"]
    assert (send.finished_at, send.lease_owner, send.lease_until) == (now, None, None)


@pytest.mark.parametrize("failure, status, error", [
    ("500", 500, "TikTok error 50000: Internal service error. Please retry later."),
    ("html502", 502, "HTTP 502 with a body that is not TikTok's JSON"),
    (("code", 50002), 200, "TikTok error 50002: Error."),
])
def test_a_server_error_is_retried_after_the_backoff_and_delivered_on_the_retry(client, fake_tiktok, dispatcher,
                                                                                  failure, status, error):
    fake_tiktok.script(failure)
    now = track(client, signup("e1"))

    dispatcher.drain_once(now=now)

    first = fake_tiktok.requests[0]
    assert row("e1") == {
        "status": "pending", "reason": None, "attempts": 1, "retries": 1, "last_status": status,
        "last_error": error, "trace_id": first["answer"]["request_id"] if isinstance(first["answer"], dict) else None,
    }
    assert now + 8 * SECOND <= send_of("e1").next_attempt_at <= now + 12 * SECOND  # 10 s ± 20 %
    assert dispatcher.drain_once(now=now + 7 * SECOND) == {"shop/tiktok": 0}

    assert dispatcher.drain_once(now=now + 12 * SECOND) == {"shop/tiktok": 1}

    assert received(fake_tiktok) == ["e1"]
    assert row("e1") == {
        "status": "sent", "reason": None, "attempts": 2, "retries": 1, "last_status": 200,
        "last_error": None, "trace_id": request_id(fake_tiktok.requests[1]),
    }


@pytest.mark.parametrize("dispatch_settings", [{"timeout_seconds": 0.1}])  # the hang is cut short soon
def test_a_request_that_outlasts_the_timeout_is_retried(client, fake_tiktok, dispatcher):
    fake_tiktok.script(("hang", 5))
    now = track(client, signup("e1"))

    dispatcher.drain_once(now=now)

    assert row("e1") == {
        "status": "pending", "reason": None, "attempts": 1, "retries": 1, "last_status": None,
        "last_error": "no answer within 0.1 s", "trace_id": None,
    }
    dispatcher.drain_once(now=now + 12 * SECOND)
    assert received(fake_tiktok) == ["e1"] and row("e1")["status"] == "sent"


@pytest.mark.parametrize("dispatch_settings", [{"timeout_seconds": 1, "max_attempts": 1}])
def test_a_throttled_send_is_delivered_later_without_counting_a_retry(client, fake_tiktok, dispatcher):
    fake_tiktok.script(("code", 40100), ("code", 40100))
    now = track(client, signup("e1"))

    dispatcher.drain_once(now=now)

    assert row("e1") == {
        "status": "pending", "reason": None, "attempts": 1, "retries": 0, "last_status": 200,
        "last_error": "TikTok error 40100: Too many requests. Please retry in some time.",
        "trace_id": request_id(fake_tiktok.requests[0]),
    }
    assert now + 8 * SECOND <= send_of("e1").next_attempt_at <= now + 12 * SECOND

    dispatcher.drain_once(now=now + 12 * SECOND)  # throttled again: max_attempts 1 is not used up
    dispatcher.drain_once(now=now + 60 * SECOND)

    assert received(fake_tiktok) == ["e1"]
    assert row("e1") == {
        "status": "sent", "reason": None, "attempts": 3, "retries": 0, "last_status": 200,
        "last_error": None, "trace_id": request_id(fake_tiktok.requests[2]),
    }


def test_a_throttle_stops_the_drain_so_the_next_batch_waits_too(client, fake_tiktok, dispatcher, monkeypatch):
    monkeypatch.setattr(tiktok, "BATCH_LIMIT", 2)
    fake_tiktok.script(("code", 40100))
    now = track(client, *(signup(f"e{i}") for i in range(3)))

    assert dispatcher.drain_once(now=now) == {"shop/tiktok": 2}

    assert len(fake_tiktok.requests) == 1 and fake_tiktok.events == []
    assert [(row(f"e{i}")["status"], row(f"e{i}")["attempts"]) for i in range(3)] == \
        [("pending", 1), ("pending", 1), ("pending", 0)]


def test_an_invalid_token_pauses_the_destination_until_its_config_changes(client, fake_tiktok, raw, live, dispatcher):
    fake_tiktok.set_token("rotated-token")  # the admin made a new token in Events Manager, not yet in the config
    now = track(client, signup("e1"), signup("e2"))

    assert dispatcher.drain_once(now=now) == {"shop/tiktok": 2}

    message = "TikTok error 40105: Access token is incorrect or has been revoked."
    paused = DestinationState.get()
    assert (paused.destination, paused.paused_reason, paused.paused_at, paused.fingerprint) == \
        ("shop/tiktok", message, now, live.config.destination("shop/tiktok").fingerprint())
    for event_id in ("e1", "e2"):  # never split: no event is to blame
        assert row(event_id) == {
            "status": "pending", "reason": None, "attempts": 0, "retries": 0, "last_status": 200,
            "last_error": message, "trace_id": request_id(fake_tiktok.requests[0]),
        }
    assert len(fake_tiktok.requests) == 1

    assert dispatcher.drain_once(now=now + timedelta(hours=1)) == {"shop/tiktok": 0}
    assert len(fake_tiktok.requests) == 1

    rotated = tiktok_destination(fake_tiktok.url, access_token="rotated-token")
    live.config = build_config(with_destinations(raw, rotated))
    assert dispatcher.drain_once(now=now + timedelta(hours=1)) == {"shop/tiktok": 2}

    assert fake_tiktok.requests[1]["token"] == "rotated-token"
    assert sorted(received(fake_tiktok)) == ["e1", "e2"]
    assert row("e1") == {
        "status": "sent", "reason": None, "attempts": 1, "retries": 0, "last_status": 200,
        "last_error": None, "trace_id": request_id(fake_tiktok.requests[1]),
    }
    assert DestinationState.select().count() == 0


@pytest.mark.parametrize("tiktok_settings", [{"pixel_code": "C999"}])
def test_a_pixel_the_token_cannot_use_pauses_the_destination(client, fake_tiktok, dispatcher):
    now = track(client, signup("e1"))

    dispatcher.drain_once(now=now)

    assert DestinationState.get().paused_reason == "TikTok error 40001: No permission to operate pixel code: C999."
    assert (row("e1")["status"], row("e1")["attempts"]) == ("pending", 0)
    assert fake_tiktok.events == []


def test_a_scripted_40105_pauses_until_an_admin_resumes(client, fake_tiktok, dispatcher):
    fake_tiktok.script(("code", 40105))
    now = track(client, signup("e1"))
    dispatcher.drain_once(now=now)
    assert dispatcher.drain_once(now=now + SECOND) == {"shop/tiktok": 0}

    assert delivery.resume_destination("shop/tiktok") is True
    assert dispatcher.drain_once(now=now + SECOND) == {"shop/tiktok": 1}
    assert received(fake_tiktok) == ["e1"] and row("e1")["status"] == "sent"


def test_one_rejected_event_in_a_batch_of_50_fails_alone_and_the_other_49_are_sent(client, fake_tiktok, dispatcher):
    ids = [f"e{i:02}" for i in range(50)]
    fake_tiktok.reject_event("e17", BAD_CONTENT_ID)
    now = track(client, *(signup(i) for i in ids))

    assert dispatcher.drain_once(now=now) == {"shop/tiktok": 50}

    assert len(fake_tiktok.requests[0]["body"]["data"]) == 50  # one batch first, split only when rejected
    assert sorted(received(fake_tiktok)) == [i for i in ids if i != "e17"]
    [alone] = [r for r in fake_tiktok.requests if r["answer"]["code"] == 40002 and len(r["body"]["data"]) == 1]
    assert row("e17") == {
        "status": "failed", "reason": f"TikTok error 40002: {BAD_CONTENT_ID}", "attempts": 1, "retries": 0,
        "last_status": 200, "last_error": f"TikTok error 40002: {BAD_CONTENT_ID}", "trace_id": request_id(alone),
    }
    others = [row(i) for i in ids if i != "e17"]
    assert {(r["status"], r["reason"], r["attempts"], r["retries"], r["last_status"]) for r in others} == \
        {("sent", None, 1, 0, 200)}


def test_an_event_past_tiktoks_7_day_window_fails_without_being_sent(client, fake_tiktok, dispatcher):
    eight_days_ago = (utcnow() - timedelta(days=8)).isoformat()
    now = track(client, signup("old", occurred_at=eight_days_ago), signup("fresh"))

    assert dispatcher.drain_once(now=now) == {"shop/tiktok": 2}

    assert row("old") == {
        "status": "failed", "reason": "older than TikTok's 7-day window: not sent", "attempts": 0, "retries": 0,
        "last_status": None, "last_error": None, "trace_id": None,
    }
    assert [item["event_id"] for r in fake_tiktok.requests for item in r["body"]["data"]] == ["fresh"]


@pytest.mark.parametrize("tiktok_settings", [{"mode": "test", "test_event_code": "TEST98765"}])
def test_a_test_destination_sends_the_test_event_code(client, fake_tiktok, dispatcher):
    now = track(client, signup("e1"))

    dispatcher.drain_once(now=now)

    [request] = fake_tiktok.requests
    assert as_kept(request["body"]) == {"event_source": "web", "event_source_id": "C123",
                                        "test_event_code": "TEST98765", "data": [send_of("e1").payload]}
    assert request["body"]["data"][0]["user"]["ip"] == "203.0.113.7"
    assert [e["event_id"] for e in fake_tiktok.test_events] == ["e1"] and fake_tiktok.events == []
    assert (row("e1")["status"], row("e1")["attempts"]) == ("sent", 1)


@pytest.mark.parametrize("tiktok_settings", [{"mode": "dry", "access_token": None}])
def test_a_dry_destination_records_the_payload_and_sends_nothing(client, fake_tiktok, dispatcher):
    now = track(client, signup("e1"))

    assert dispatcher.drain_once(now=now) == {"shop/tiktok": 1}

    assert fake_tiktok.requests == []
    assert row("e1") == {
        "status": "skipped", "reason": "dry mode", "attempts": 0, "retries": 0, "last_status": None,
        "last_error": None, "trace_id": None,
    }
    send = send_of("e1")
    assert send.payload == as_kept(signup_item("e1", Event.get().occurred_at))
    assert send.match_quality == {"score": 2.8, "identifiers": ["external_id", "ip", "user_agent", "country"]}


def test_a_custom_event_is_sent_under_its_own_name(client, fake_tiktok, dispatcher):
    now = track(client, signup("e1", event="quiz_finished"))

    dispatcher.drain_once(now=now)

    assert [e["event"] for e in fake_tiktok.events] == ["quiz_finished"]
    assert row("e1")["status"] == "sent"


def test_an_event_without_an_identifier_is_skipped_with_the_reason(client, fake_tiktok, dispatcher):
    body = {"api_key": "key_demo_123", "event": "signed_up", "event_id": "e1", "source_url": "https://shop.example/"}
    response = client.post("/v1/track", json=body, headers={"User-Agent": UA}, environ_base={"REMOTE_ADDR": ""})
    assert response.status_code == 200

    dispatcher.drain_once(now=utcnow())

    assert (row("e1")["status"], row("e1")["reason"]) == ("skipped", NO_IDENTIFIER)
    assert fake_tiktok.requests == []


def test_telegram_events_go_as_web_events_of_their_landing_page_or_are_skipped(app, config, fake_tiktok, dispatcher):
    now = utcnow()
    site = config.site("shop")
    joined = canonical(channel="chat", event_id="j1", occurred_at=now, received_at=now,
                       page_url="https://shop.example/vip", click_ids={"ttclid": TTCLID})
    bare = canonical(channel="chat", event_id="j2", occurred_at=now, received_at=now, click_ids={"ttclid": TTCLID})
    accept(joined, site, config)
    accept(bare, site, config)

    assert dispatcher.drain_once(now=now) == {"shop/tiktok": 2}

    assert fake_tiktok.events == [{
        "event": "Lead", "event_time": int(now.timestamp()), "event_id": "j1",
        "user": {"ttclid": TTCLID}, "page": {"url": "https://shop.example/vip"},
    }]
    assert fake_tiktok.requests[0]["body"]["event_source"] == "web"
    assert (row("j1")["status"], row("j2")["status"], row("j2")["reason"]) == ("sent", "skipped", NO_LANDING_PAGE)


def test_the_access_token_never_reaches_the_logs_nor_the_database(client, fake_tiktok, dispatcher, caplog):
    caplog.set_level(logging.DEBUG)
    fake_tiktok.script(("code", 40002, BAD_CONTENT_ID))
    now = track(client, signup("e1"), signup("e2"))

    dispatcher.drain_once(now=now)

    assert {r["token"] for r in fake_tiktok.requests} == {"tiktok-token"}  # it went, in the header only
    assert all("tiktok-token" not in json.dumps(r.__dict__, default=str) for r in caplog.records)
    stored = [json.dumps(s.__data__, default=str) for s in Send.select()]
    assert len(stored) == 2 and all("tiktok-token" not in text for text in stored)


def test_a_dry_run_lists_tiktok_with_its_payload_url_and_match_quality(client, fake_tiktok, frozen_ingest):
    entry = dry_run_entry(client, {**SEED_EXAMPLE, "ttclid": TTCLID, "occurred_at": OCCURRED})

    payload = golden("tiktok_purchase.json")
    del payload["user"]["ttp"], payload["user"]["locale"]
    assert entry == {
        "name": "tiktok", "platform": "tiktok", "mode": "live", "status": "would_send",
        "url": f"{fake_tiktok.url}{TRACK_URL}", "payload": payload,
        "match_quality": {"score": 10.0, "identifiers": [
            "email", "phone", "external_id", "ttclid", "ip", "user_agent", "first_name", "last_name",
            "city", "state", "zip_code", "country"]},
    }
    assert "tiktok-token" not in json.dumps(entry)
    assert fake_tiktok.requests == [] and Event.select().count() == 0


def test_a_dry_run_says_why_tiktok_would_skip(client, frozen_ingest):
    body = {"api_key": "key_demo_123", "event": "signed_up", "event_id": "e1"}
    response = client.post("/v1/track?dry_run=1", json=body, headers={}, environ_base={"REMOTE_ADDR": ""})
    [entry] = response.get_json()["destinations"]
    assert (entry["status"], entry["reason"], entry["payload"]) == ("skipped", NO_IDENTIFIER, None)
    assert entry["match_quality"] == {"score": 0.0, "identifiers": []}


# --- the fake validates like TikTok --------------------------------------------------------------

def post(fake: FakeTikTok, data, token: str | None = "tiktok-token", pixel: str = "C123", **fields) -> dict:
    headers = {"Access-Token": token} if token is not None else {}
    body = {"event_source": "web", "event_source_id": pixel, **fields, "data": data}
    response = requests.post(f"{fake.url}{TRACK_URL}", json=body, headers=headers, timeout=5)
    assert response.status_code == 200
    return response.json()


def item(**overrides) -> dict:
    base = {"event": "Lead", "event_time": int(time.time()) - 60, "event_id": "e1",
            "user": {"email": sha("a@b.example")}}
    return {**base, **overrides}


@pytest.mark.parametrize("kwargs, code, message", [
    ({"token": None}, 40104, "Access token is null, please include it in the Access-Token header."),
    ({"token": "nope"}, 40105, "Access token is incorrect or has been revoked."),
    ({"pixel": "C999"}, 40001, "No permission to operate pixel code: C999."),
    ({"pixel": ""}, 40002, "Invalid value for event_source_id: not a valid string."),
])
def test_the_fake_checks_the_token_and_the_pixel(fake_tiktok, kwargs, code, message):
    answer = post(fake_tiktok, [item()], **kwargs)
    assert (answer["code"], answer["message"]) == (code, message)
    assert fake_tiktok.events == []


@pytest.mark.parametrize("event, message", [
    (item(user={"phone": "+15551234567"}), "Batch.1.user.phone: Must be SHA-256 hashed (64 lowercase hex characters)."),
    (item(user={"email": sha("a@b.example").upper()}),
     "Batch.1.user.email: Must be SHA-256 hashed (64 lowercase hex characters)."),
    (item(user={"external_id": "user_123"}),
     "Batch.1.user.external_id: Must be SHA-256 hashed (64 lowercase hex characters)."),
    (item(event_time=int(time.time() * 1000)), "Batch.1.event_time: Must be a Unix timestamp in seconds."),
    (item(event_time="1772366400"), "Batch.1.event_time: Not a valid integer."),
    ({k: v for k, v in item().items() if k != "event"}, "Batch.1.event: Missing data for required field."),
    ({k: v for k, v in item().items() if k != "event_time"}, "Batch.1.event_time: Missing data for required field."),
    (item(properties={"contents": [{"content_id": 7}]}),
     "Batch.1.properties.contents.0.content_id: Not a valid string"),
])
def test_one_invalid_event_fails_the_whole_batch_naming_its_field(fake_tiktok, event, message):
    answer = post(fake_tiktok, [item(event_id="ok"), event])
    assert (answer["code"], answer["message"]) == (40002, message)
    assert fake_tiktok.events == []


def test_the_fake_takes_at_most_1000_events_a_request(fake_tiktok):
    assert post(fake_tiktok, [item(event_id=f"e{i}") for i in range(1001)])["code"] == 40002
    assert post(fake_tiktok, [item(event_id=f"e{i}") for i in range(1000)])["code"] == 0
    assert len(fake_tiktok.events) == 1000


def test_the_fake_keeps_test_events_apart(fake_tiktok):
    assert post(fake_tiktok, [item()], test_event_code="TEST98765")["code"] == 0
    assert (fake_tiktok.events, [e["event_id"] for e in fake_tiktok.test_events]) == ([], ["e1"])


def test_the_fake_answers_an_unknown_path_with_a_404_page(fake_tiktok):
    response = requests.post(f"{fake_tiktok.url}/open_api/v1.2/event/track/", json={}, timeout=5)
    assert (response.status_code, response.text) == (404, "404 page not found")


def test_the_fake_refuses_an_unknown_scripted_answer(fake_tiktok):
    with pytest.raises(ValueError):
        fake_tiktok.script(("throttle", 4))
