"""GA4 Measurement Protocol: payloads, answers and delivery end to end against the fake GA4 (docs/platforms/ga4.md)."""
from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timedelta, timezone
from functools import partial

import pytest
import requests

from ingest.canonical import CanonicalEvent, utcnow
from config import ConfigError, Destination
from models import DestinationState, Event, Send
from platforms import ga4
from platforms.base import REJECTED, RETRY, SENT, SETUP, THROTTLE, Http, Outcome, Skip
from tests import helpers
from tests.conftest import BROWSER, SEED_EXAMPLE, build_config, with_destinations
from tests.fakes.ga4 import FakeGA4
from tests.helpers import answer, check_golden, dry_run_entry, golden, sha, track

SECOND = timedelta(seconds=1)
GA_COOKIE = "GA1.1.1234567890.1767225600"
CLIENT_ID = "1234567890.1767225600"
SECRET = "ga4-secret"
FIXED_NOW = datetime(2026, 3, 1, 12, 5, tzinfo=timezone.utc)
OCCURRED = "2026-03-01T12:00:00Z"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
SERVER_ERROR = "GA4 HTTP 500: Internal Server Error"


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


def derived_client_id(visitor: str) -> str:
    """The stable client id written out: two numbers from SHA-256("postback:" + the visitor's id)."""
    digest = hashlib.sha256(f"postback:{visitor}".encode()).digest()
    return f"{int.from_bytes(digest[0:4], 'big') % 2147483647 + 1}.{int.from_bytes(digest[4:8], 'big') % 2147483647 + 1}"


def ga4_destination(api_base: str, **overrides) -> dict:
    dest = {"name": "ga4", "platform": "ga4", "mode": "live", "measurement_id": "G-TEST123",
            "api_secret": SECRET, "api_base": api_base}
    return {**dest, **overrides}


def lead(event_id: str, **fields) -> dict:
    """A website lead in the ChannelStack dialect whose only identifier is the visitor's anonymous id."""
    return {"api_key": "key_demo_123", "event": "lead", "event_id": event_id, "anonymous_id": f"anon-{event_id}",
            "source_url": "https://shop.example/thanks", **fields}


send_of = partial(helpers.send_of, destination="shop/ga4")
row = partial(helpers.row, destination="shop/ga4",
              fields=("status", "reason", "attempts", "retries", "last_status", "last_error", "response_excerpt"))


def event(**fields) -> CanonicalEvent:
    """A canonical web event for the pure build() tests."""
    base = dict(site_id="shop", dialect="channelstack", event_name="lead", standard_name="Lead", event_id="e1",
                occurred_at=FIXED_NOW, received_at=FIXED_NOW, anonymous_id="anon-1")
    return CanonicalEvent(**{**base, **fields})


def destination(**settings) -> Destination:
    mode = settings.pop("mode", "live")
    return Destination(site_id="shop", name="ga4", platform="ga4", mode=mode, enabled=True, events=None,
                       consent_category=None, settings={"measurement_id": "G-TEST123", "api_secret": SECRET, **settings})


@pytest.fixture
def fake_ga4():
    with FakeGA4(streams={"G-TEST123": SECRET}) as fake:
        yield fake


@pytest.fixture
def ga4_settings() -> dict:
    return {}


@pytest.fixture
def raw(raw_config, fake_ga4, ga4_settings, dispatch_settings) -> dict:
    """The example config whose only destination is a GA4 stream at the fake."""
    raw = with_destinations(raw_config, ga4_destination(fake_ga4.url, **ga4_settings))
    raw["dispatch"].update(dispatch_settings)
    return raw


@pytest.fixture
def config(raw):
    return build_config(raw)


# --- golden payloads ------------------------------------------------------------------------------

SEED_WITH_COOKIE = {**SEED_EXAMPLE, "ga_client_id": GA_COOKIE, "occurred_at": OCCURRED}


@pytest.mark.parametrize("ga4_settings", [{"mode": "dry"}])
def test_the_seeds_purchase_builds_the_golden_payload(client, frozen_ingest):
    payload = dry_run_entry(client, SEED_WITH_COOKIE)["payload"]

    check_golden("ga4_purchase.json", payload)
    # The golden's values, derived by hand from Google's rules (uid-data: Gmail dots, +E.164, plain address).
    assert payload["client_id"] == CLIENT_ID  # the _ga cookie without its GA1.1. prefix
    assert payload["user_id"] == "user_123"  # plain, never hashed
    assert payload["timestamp_micros"] == payload["events"][0]["timestamp_micros"] == 1772366400000000
    assert payload["user_data"] == {
        "sha256_email_address": [sha("john.doe@example.com")],
        "sha256_phone_number": [sha("+15551234567")],
        "address": [{"sha256_first_name": sha("john"), "sha256_last_name": sha("doe"), "city": "san francisco",
                     "region": "ca", "postal_code": "94102", "country": "US"}],
    }
    assert payload["events"][0]["name"] == "purchase"
    assert payload["events"][0]["params"] == {
        "transaction_id": "ord_abc123", "value": 149.99, "currency": "USD",
        "page_location": "https://example.com/checkout", "engagement_time_msec": 100,
        "product_category": "electronics", "coupon_used": "SAVE20",
    }


@pytest.mark.parametrize("ga4_settings", [{"mode": "dry"}])
def test_a_minimal_lead_builds_the_golden_payload_with_a_client_id_derived_from_its_anonymous_id(client, frozen_ingest):
    body = {"api_key": "key_demo_123", "event": "lead", "event_id": "lead_1", "anonymous_id": "anon-42",
            "occurred_at": OCCURRED}
    payload = dry_run_entry(client, body)["payload"]

    check_golden("ga4_lead.json", payload)
    assert payload == {
        "client_id": derived_client_id("anon-42"),
        "timestamp_micros": 1772366400000000,
        "consent": {"ad_user_data": "GRANTED", "ad_personalization": "DENIED"},
        "events": [{"name": "generate_lead", "timestamp_micros": 1772366400000000,
                    "params": {"engagement_time_msec": 100}}],
    }


@pytest.mark.parametrize("ga4_settings", [{"mode": "dry"}])
def test_a_dry_run_lists_ga4_with_its_payload_a_masked_url_and_match_quality(client, frozen_ingest, fake_ga4):
    response = client.post("/v1/track?dry_run=1", json=SEED_WITH_COOKIE, headers=BROWSER)
    [entry] = response.get_json()["destinations"]

    assert entry == {
        "name": "ga4", "platform": "ga4", "mode": "dry", "status": "would_send",
        "url": f"{fake_ga4.url}/mp/collect?measurement_id=G-TEST123&api_secret=***",
        "payload": golden("ga4_purchase.json"),
        "match_quality": {"score": 10.0, "identifiers": [
            "client_id", "user_id", "sha256_email_address", "sha256_phone_number", "sha256_first_name",
            "sha256_last_name", "city", "region", "postal_code", "country"]},
    }
    assert SECRET not in response.get_data(as_text=True)
    assert Event.select().count() == 0 and fake_ga4.requests == []


@pytest.mark.parametrize("ga4_settings", [{"mode": "dry"}])
def test_a_dry_run_says_why_ga4_would_skip_an_event(client, frozen_ingest):
    entry = dry_run_entry(client, {"api_key": "key_demo_123", "event": "lead"})

    assert (entry["status"], entry["reason"], entry["payload"], entry["match_quality"]) == (
        "skipped", "no client id for GA4: no ga_client_id (_ga cookie), anonymous id or external id", None,
        {"score": 0.0, "identifiers": []})


# --- client ids -----------------------------------------------------------------------------------

@pytest.mark.parametrize("cookie, client_id", [
    ("GA1.1.1234567890.1767225600", "1234567890.1767225600"),
    ("GA1.2.987654321.1767000000", "987654321.1767000000"),
    ("1234567890.1767225600", "1234567890.1767225600"),
])
def test_the_client_id_is_the_ga_cookies(cookie, client_id):
    item = ga4.build(event(click_ids={"ga_client_id": cookie}), destination())
    assert item["client_id"] == client_id


def test_without_a_cookie_the_client_id_is_derived_from_the_anonymous_id_and_stable():
    first = ga4.build(event(event_id="e1", anonymous_id="anon-7", external_id="u-1"), destination())
    again = ga4.build(event(event_id="e2", anonymous_id="anon-7", external_id="u-2"), destination())
    other = ga4.build(event(anonymous_id="anon-8"), destination())

    assert first["client_id"] == again["client_id"] == derived_client_id("anon-7")
    assert other["client_id"] == derived_client_id("anon-8") != first["client_id"]


def test_without_cookie_or_anonymous_id_the_client_id_is_derived_from_the_external_id():
    item = ga4.build(event(anonymous_id=None, external_id="user_123"), destination())
    assert (item["client_id"], item["user_id"]) == (derived_client_id("user_123"), "user_123")


def test_a_cookie_that_is_not_gas_form_falls_back_to_the_derived_id():
    item = ga4.build(event(click_ids={"ga_client_id": "not-a-ga-cookie"}, anonymous_id="anon-3"), destination())
    assert item["client_id"] == derived_client_id("anon-3")


@pytest.mark.parametrize("fields, reason", [
    ({"anonymous_id": None}, "no client id for GA4: no ga_client_id (_ga cookie), anonymous id or external id"),
    ({"anonymous_id": None, "click_ids": {"ga_client_id": "xyz"}},
     "ga_client_id is not a GA client id (GA1.1.<digits>.<digits> or <digits>.<digits>) "
     "and there is no anonymous or external id to derive one from"),
])
def test_an_event_without_any_client_id_is_skipped(fields, reason):
    with pytest.raises(Skip) as skip:
        ga4.build(event(**fields), destination())
    assert skip.value.reason == reason


def test_a_telegram_funnel_event_reuses_the_landing_pages_client_id():
    joined = event(channel="chat", standard_name="Lead", external_id="tg:5551234", anonymous_id=None,
                   click_ids={"ga_client_id": GA_COOKIE})

    item = ga4.build(joined, destination())

    assert (item["client_id"], item["user_id"]) == (CLIENT_ID, "tg:5551234")
    assert item["events"][0]["params"] == {"engagement_time_msec": 100}  # no page in a chat


# --- event names and params -----------------------------------------------------------------------

@pytest.mark.parametrize("standard, name", [
    ("Purchase", "purchase"), ("Lead", "generate_lead"), ("CompleteRegistration", "sign_up"),
    ("Subscribe", "subscribe"), ("AddToCart", "add_to_cart"), ("InitiateCheckout", "begin_checkout"),
    ("ViewContent", "view_item"), ("PageView", "page_view"), ("Search", "search"), ("Contact", "contact"),
])
def test_standard_events_get_ga4s_names(standard, name):
    assert ga4.build(event(standard_name=standard), destination())["events"][0]["name"] == name


@pytest.mark.parametrize("custom, name", [
    ("video_watched", "video_watched"), ("Video Watched", "Video_Watched"), ("checkout-step.2", "checkout_step_2"),
    ("заявка_отправлена", "заявка_отправлена"), ("x" * 40, "x" * 40),
])
def test_a_custom_event_keeps_its_name_with_separators_made_underscores(custom, name):
    item = ga4.build(event(event_name=custom, standard_name="Custom"), destination())
    assert item["events"][0]["name"] == name


@pytest.mark.parametrize("custom, reason", [
    ("2fa enabled", "event name '2fa enabled' cannot be a GA4 event name: at most 40 letters, digits or "
                    "underscores, starting with a letter"),
    ("x" * 41, f"event name {'x' * 41!r} cannot be a GA4 event name: at most 40 letters, digits or "
               "underscores, starting with a letter"),
    ("price$drop", "event name 'price$drop' cannot be a GA4 event name: at most 40 letters, digits or "
                   "underscores, starting with a letter"),
    ("session start", "event name 'session_start' is reserved by GA4"),
    ("screen_view", "event name 'screen_view' is reserved by GA4"),
    ("firebase_sync", "event name 'firebase_sync' is reserved by GA4"),
])
def test_a_custom_event_ga4_cannot_name_is_skipped_with_the_reason(custom, reason):
    with pytest.raises(Skip) as skip:
        ga4.build(event(event_name=custom, standard_name="Custom"), destination())
    assert skip.value.reason == reason


def test_params_carry_the_order_items_page_and_custom_properties_within_ga4s_limits():
    properties = {"coupon code": "SAVE20", "note": "n" * 150, "_private": 1, "ga_session_number": 2,
                  "gtag.x": 3, "1st_visit": True, "nested": {"a": 1}, "listed": [1], "empty": "",
                  "returning": True, "session_id": "1767225000", "value": 1, "firebase_conversion": 1}
    properties.update({f"extra_{i:02}": i for i in range(30)})
    item = ga4.build(event(standard_name="Purchase", event_name="purchase", value=49.5, currency="EUR",
                           order_id="A-1", items=[{"id": "sku-1", "quantity": 2, "price": 20.0}, {"quantity": 1},
                                                  {"id": 7}],
                           page_url="https://shop.example/" + "p" * 1200, properties=properties), destination())

    params = item["events"][0]["params"]
    assert list(params)[:11] == ["transaction_id", "value", "currency", "items", "page_location", "session_id",
                                 "engagement_time_msec", "coupon_code", "note", "returning", "extra_00"]
    assert {k: v for k, v in params.items() if not k.startswith("extra_")} == {
        "transaction_id": "A-1", "value": 49.5, "currency": "EUR",
        "items": [{"item_id": "sku-1", "quantity": 2, "price": 20.0}, {"item_id": "7"}],
        "page_location": ("https://shop.example/" + "p" * 1200)[:1000],
        "session_id": "1767225000", "engagement_time_msec": 100, "coupon_code": "SAVE20", "note": "n" * 100,
        "returning": "true",
    }
    assert len(params) == 25 and params["extra_00"] == 0 and "extra_14" in params and "extra_15" not in params


def test_an_email_used_as_the_user_id_is_not_sent_as_ga4s_user_id():
    item = ga4.build(event(external_id="someone@example.com"), destination())
    assert "user_id" not in item


def test_a_client_clock_ahead_of_ours_does_not_send_a_future_timestamp():
    item = ga4.build(event(occurred_at=FIXED_NOW + timedelta(minutes=5)), destination())
    assert item["timestamp_micros"] == item["events"][0]["timestamp_micros"] == micros(FIXED_NOW)


def test_ad_personalization_follows_the_destinations_setting():
    item = ga4.build(event(), destination(ad_personalization="granted"))
    assert item["consent"] == {"ad_user_data": "GRANTED", "ad_personalization": "GRANTED"}


def test_a_pre_hashed_location_is_left_out_because_ga4_wants_it_plain():
    ids = {"fn": sha("jane"), "ct": sha("paris")}
    item = ga4.build(event(identity=ids, location={"country": "fr"}), destination())
    assert item["user_data"] == {"address": [{"sha256_first_name": sha("jane"), "country": "FR"}]}


def test_an_event_too_big_for_one_request_is_skipped():
    huge = [{"id": f"sku-{i:05}", "quantity": 1, "price": 1.0} for i in range(3000)]
    with pytest.raises(Skip) as skip:
        ga4.build(event(items=huge), destination())
    assert skip.value.reason.endswith("bytes: GA4 takes bodies under 130 kB")


def test_one_request_holds_one_client_and_one_set_of_user_fields():
    key = lambda **fields: ga4.request_key(ga4.build(event(**fields), destination()))  # noqa: E731
    assert key(event_id="e1") == key(event_id="e2", occurred_at=FIXED_NOW - SECOND)
    assert key(anonymous_id="anon-1") != key(anonymous_id="anon-2")
    assert key(external_id="u-1") != key(external_id="u-2")
    assert key() != key(identity={"em_google": sha("a@example.com")})


# --- settings and url -----------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, problems", [
    ({"api_secret": ""}, ["sites[0].destinations[0].api_secret: required in live mode"]),
    ({"mode": "test", "api_secret": None}, ["sites[0].destinations[0].api_secret: required in test mode"]),
    ({"measurement_id": "1234567"}, ["sites[0].destinations[0].measurement_id: must be a web data stream's "
                                     "measurement id such as G-XXXXXXX"]),
    ({"measurement_id": None}, ["sites[0].destinations[0].measurement_id: required"]),
    ({"ad_personalization": "maybe"}, ["sites[0].destinations[0].ad_personalization: must be granted or denied"]),
])
def test_a_ga4_destination_without_what_it_needs_is_a_config_error(raw_config, overrides, problems):
    dest = {k: v for k, v in ga4_destination("https://ga.example", **overrides).items() if v is not None}
    with pytest.raises(ConfigError) as error:
        build_config(with_destinations(raw_config, dest))
    assert error.value.problems == problems


def test_a_dry_destination_needs_no_api_secret(raw_config):
    dest = ga4_destination("https://ga.example", mode="dry")
    del dest["api_secret"]
    assert build_config(with_destinations(raw_config, dest)).destination("shop/ga4").mode == "dry"


@pytest.mark.parametrize("mode, shown", [
    ("live", "https://www.google-analytics.com/mp/collect?measurement_id=G-TEST123&api_secret=***"),
    ("test", "https://www.google-analytics.com/debug/mp/collect?measurement_id=G-TEST123&api_secret=***"),
    ("dry", "https://www.google-analytics.com/mp/collect?measurement_id=G-TEST123&api_secret=***"),
])
def test_the_url_shown_masks_the_api_secret(mode, shown):
    assert ga4.url(destination(mode=mode)) == shown


# --- classification -------------------------------------------------------------------------------

VALIDATION = json.dumps({"validationMessages": [
    {"fieldPath": "events", "description": "Event at index: [0] has invalid name [_bad]. Names must start with an "
                                           "alphabetic character.", "validationCode": "NAME_INVALID"},
    {"fieldPath": "user_data.sha256_email_address", "description": "Not hashed", "validationCode": "VALUE_INVALID"},
]})
NAME_INVALID = ("GA4 validation: NAME_INVALID at events: Event at index: [0] has invalid name [_bad]. Names must "
                "start with an alphabetic character.; VALUE_INVALID at user_data.sha256_email_address: Not hashed")


@pytest.mark.parametrize("status, body, headers, reason, validating, expected", [
    # sent: /mp/collect says 2xx to anything; the validation server's empty list
    (204, "", {}, "No Content", False, Outcome(SENT, 204)),
    (200, "", {}, "OK", False, Outcome(SENT, 200)),
    (200, '{"validationMessages": []}', {}, "OK", True, Outcome(SENT, 200, response='{"validationMessages": []}')),
    # rejected: validation messages (test mode), any other non-2xx
    (200, VALIDATION, {}, "OK", True, Outcome(REJECTED, 200, NAME_INVALID, response=VALIDATION, whole_batch=True)),
    (400, '{"error": {"code": 400, "message": "Invalid JSON payload received."}}', {}, "Bad Request", False,
     Outcome(REJECTED, 400, "GA4 HTTP 400: Invalid JSON payload received.", whole_batch=True,
             response='{"error": {"code": 400, "message": "Invalid JSON payload received."}}')),
    (404, "<html>Not Found</html>", {}, "Not Found", False,
     Outcome(REJECTED, 404, "GA4 HTTP 404: Not Found", response="<html>Not Found</html>", whole_batch=True)),
    (413, "", {}, "Request Entity Too Large", False,
     Outcome(REJECTED, 413, "GA4 HTTP 413: Request Entity Too Large", whole_batch=True)),
    # retry: 5xx; a validation answer that is not one
    (500, "<html>Error 500</html>", {}, "Internal Server Error", False,
     Outcome(RETRY, 500, SERVER_ERROR, response="<html>Error 500</html>")),
    (503, "", {}, "Service Unavailable", True, Outcome(RETRY, 503, "GA4 HTTP 503: Service Unavailable")),
    (200, "<html>proxy</html>", {}, "OK", True,
     Outcome(RETRY, 200, "GA4 validation server answered HTTP 200 without validationMessages",
             response="<html>proxy</html>")),
    # throttle: 429, waiting for Retry-After
    (429, "Too Many Requests", {"Retry-After": "30"}, "Too Many Requests", False,
     Outcome(THROTTLE, 429, "GA4 HTTP 429: Too Many Requests", response="Too Many Requests", retry_after=30.0)),
    # setup error: 401/403
    (401, "", {}, "Unauthorized", False,
     Outcome(SETUP, 401, "GA4 HTTP 401: Unauthorized (check measurement_id and api_secret)")),
    (403, "", {}, "Forbidden", False, Outcome(SETUP, 403, "GA4 HTTP 403: Forbidden (check measurement_id and api_secret)")),
])
def test_ga4s_answers_are_classified_into_the_five_outcomes(status, body, headers, reason, validating, expected):
    outcomes = ga4.classify(answer(status, body, headers, reason), 2, validating=validating)
    assert outcomes == [expected, expected]


def test_a_single_rejected_event_is_not_split_further():
    [outcome] = ga4.classify(answer(400, "", reason="Bad Request"), 1)
    assert (outcome.kind, outcome.whole_batch) == (REJECTED, False)


def test_an_api_secret_echoed_in_an_answer_is_masked():
    body = "<html>POST /mp/collect?measurement_id=G-TEST123&api_secret=s3cr3t not allowed</html>"
    [outcome] = ga4.classify(answer(405, body, reason="Method Not Allowed"), 1)
    assert outcome.response == "<html>POST /mp/collect?measurement_id=G-TEST123&api_secret=*** not allowed</html>"


def test_network_failures_are_retried(fake_ga4):
    fake_ga4.stop()  # nothing listens on the port any more
    item = ga4.build(event(), destination(api_base=fake_ga4.url))
    assert ga4.send([item], destination(api_base=fake_ga4.url), Http(1)) == [
        Outcome(RETRY, error="connection failed (ConnectionError)")]


def test_a_request_over_130_kb_is_split_without_being_sent(fake_ga4):
    items = [ga4.build(event(items=[{"id": f"s{i:05}-{j:04}"} for j in range(2500)]), destination()) for i in range(3)]
    outcomes = ga4.send(items, destination(api_base=fake_ga4.url), Http(1))
    assert {(o.kind, o.whole_batch) for o in outcomes} == {(REJECTED, True)}
    assert fake_ga4.requests == []


# --- delivery end to end --------------------------------------------------------------------------

def test_the_seeds_purchase_reaches_ga4_as_exactly_this_request(client, fake_ga4, dispatcher):
    now = track(client, {**SEED_EXAMPLE, "ga_client_id": GA_COOKIE})
    occurred = micros(Event.get().occurred_at)

    assert dispatcher.drain_once(now=now) == {"shop/ga4": 1}

    expected = {
        "client_id": CLIENT_ID,
        "user_id": "user_123",
        "timestamp_micros": occurred,
        "consent": {"ad_user_data": "GRANTED", "ad_personalization": "DENIED"},
        "user_data": {
            "sha256_email_address": [sha("john.doe@example.com")],
            "sha256_phone_number": [sha("+15551234567")],
            "address": [{"sha256_first_name": sha("john"), "sha256_last_name": sha("doe"), "city": "san francisco",
                         "region": "ca", "postal_code": "94102", "country": "US"}],
        },
        "events": [{"name": "purchase", "timestamp_micros": occurred, "params": {
            "transaction_id": "ord_abc123", "value": 149.99, "currency": "USD",
            "page_location": "https://example.com/checkout", "engagement_time_msec": 100,
            "product_category": "electronics", "coupon_used": "SAVE20"}}],
    }
    [request] = fake_ga4.requests
    assert (request["method"], request["path"], request["query"], request["status"], request["answer"]) == \
        ("POST", "/mp/collect", {"measurement_id": "G-TEST123", "api_secret": SECRET}, 204, None)
    assert request["headers"]["Content-Type"] == "application/json"
    assert (request["body"], request["accepted"], request["problems"]) == (expected, True, [])
    assert fake_ga4.accepted == [expected]
    assert row("evt_unique123") == {
        "status": "sent", "reason": None, "attempts": 1, "retries": 0, "last_status": 204, "last_error": None,
        "response_excerpt": None,
    }
    send = send_of("evt_unique123")
    assert send.payload == expected
    assert send.match_quality == {"score": 10.0, "identifiers": [
        "client_id", "user_id", "sha256_email_address", "sha256_phone_number", "sha256_first_name",
        "sha256_last_name", "city", "region", "postal_code", "country"]}


def test_events_of_two_clients_in_one_drain_go_in_two_requests(client, fake_ga4, dispatcher):
    now = track(client, lead("a1", anonymous_id="anon-a"), lead("b1", anonymous_id="anon-b"),
                lead("a2", anonymous_id="anon-a"))

    assert dispatcher.drain_once(now=now) == {"shop/ga4": 3}

    # the two requests go side by side (GA4's IN_FLIGHT): either may arrive first
    bodies = sorted((r["body"] for r in fake_ga4.requests), key=lambda body: -len(body["events"]))
    assert [(b["client_id"], len(b["events"])) for b in bodies] == [
        (derived_client_id("anon-a"), 2), (derived_client_id("anon-b"), 1)]
    assert all(r["accepted"] for r in fake_ga4.requests)
    # each request's first send keeps its payload as the sample; the others are rebuilt when shown
    assert bodies[0]["events"][0] == send_of("a1").payload["events"][0]
    assert bodies[1]["events"] == send_of("b1").payload["events"]
    assert send_of("a2").payload is None
    assert {row(i)["status"] for i in ("a1", "b1", "a2")} == {"sent"}


def test_thirty_events_of_one_client_go_in_25_and_then_5(client, fake_ga4, dispatcher):
    ids = [f"e{i:02}" for i in range(30)]
    now = track(client, *(lead(i, anonymous_id="anon-1") for i in ids))

    assert dispatcher.drain_once(now=now) == {"shop/ga4": 30}

    assert sorted(len(r["body"]["events"]) for r in fake_ga4.requests) == [5, 25]  # side by side: either first
    assert all(r["accepted"] for r in fake_ga4.requests)
    assert [send_of(i).payload is not None for i in ids] == [i in ("e00", "e25") for i in ids]  # a sample each
    first, then = sorted(fake_ga4.requests, key=lambda r: -len(r["body"]["events"]))
    assert [first["body"]["events"][0], then["body"]["events"][0]] == [
        send_of(i).payload["events"][0] for i in ("e00", "e25")]
    assert {(row(i)["status"], row(i)["attempts"]) for i in ids} == {("sent", 1)}


def test_a_500_is_retried_after_the_backoff_and_delivered_on_the_retry(client, fake_ga4, dispatcher):
    fake_ga4.script("500")
    now = track(client, lead("e1"))

    dispatcher.drain_once(now=now)

    assert row("e1") == {
        "status": "pending", "reason": None, "attempts": 1, "retries": 1, "last_status": 500,
        "last_error": SERVER_ERROR, "response_excerpt": fake_ga4.requests[0]["answer"],
    }
    assert now + 8 * SECOND <= send_of("e1").next_attempt_at <= now + 12 * SECOND
    assert dispatcher.drain_once(now=now + 7 * SECOND) == {"shop/ga4": 0}

    assert dispatcher.drain_once(now=now + 12 * SECOND) == {"shop/ga4": 1}
    assert len(fake_ga4.accepted) == 1
    assert row("e1") == {
        "status": "sent", "reason": None, "attempts": 2, "retries": 1, "last_status": 204, "last_error": None,
        "response_excerpt": None,
    }


def test_a_throttled_send_waits_for_retry_after_without_counting_a_retry(client, fake_ga4, dispatcher):
    fake_ga4.script("429")
    now = track(client, lead("e1"))

    dispatcher.drain_once(now=now)

    assert row("e1") == {
        "status": "pending", "reason": None, "attempts": 1, "retries": 0, "last_status": 429,
        "last_error": "GA4 HTTP 429: Too Many Requests", "response_excerpt": "Too Many Requests",
    }
    assert send_of("e1").next_attempt_at == now + SECOND  # Retry-After: 1

    dispatcher.drain_once(now=now + SECOND)
    assert (row("e1")["status"], row("e1")["attempts"], row("e1")["retries"]) == ("sent", 2, 0)


@pytest.mark.parametrize("dispatch_settings", [{"timeout_seconds": 0.1}])  # the hang is cut short soon
def test_a_request_that_outlasts_the_timeout_is_retried(client, fake_ga4, dispatcher):
    fake_ga4.script(("hang", 5))
    now = track(client, lead("e1"))

    dispatcher.drain_once(now=now)

    assert (row("e1")["status"], row("e1")["retries"], row("e1")["last_error"]) == \
        ("pending", 1, "no answer within 0.1 s")


def test_a_403_pauses_the_destination_until_its_config_changes(client, fake_ga4, raw, live, dispatcher):
    fake_ga4.script("403")
    now = track(client, lead("e1"))

    assert dispatcher.drain_once(now=now) == {"shop/ga4": 1}

    message = "GA4 HTTP 403: Forbidden (check measurement_id and api_secret)"
    paused = DestinationState.get()
    assert (paused.destination, paused.paused_reason, paused.paused_at) == ("shop/ga4", message, now)
    assert (row("e1")["status"], row("e1")["attempts"], row("e1")["last_error"]) == ("pending", 0, message)
    assert dispatcher.drain_once(now=now + timedelta(hours=1)) == {"shop/ga4": 0}
    assert len(fake_ga4.requests) == 1

    fake_ga4.set_secret("G-TEST123", "rotated-secret")
    live.config = build_config(with_destinations(raw, ga4_destination(fake_ga4.url, api_secret="rotated-secret")))
    assert dispatcher.drain_once(now=now + timedelta(hours=1)) == {"shop/ga4": 1}

    assert fake_ga4.requests[1]["query"]["api_secret"] == "rotated-secret" and fake_ga4.requests[1]["accepted"]
    assert (row("e1")["status"], row("e1")["attempts"]) == ("sent", 1)
    assert DestinationState.select().count() == 0


@pytest.mark.parametrize("ga4_settings", [{"api_secret": "stale-secret"}])
def test_a_wrong_api_secret_still_gets_a_2xx_so_the_send_counts_as_sent(client, fake_ga4, dispatcher):
    now = track(client, lead("e1"))

    dispatcher.drain_once(now=now)

    [request] = fake_ga4.requests
    assert (request["status"], request["accepted"], request["problems"]) == (204, False, [
        {"fieldPath": "api_secret", "description": "api_secret is not a secret of this data stream",
         "validationCode": "VALUE_INVALID"}])
    assert fake_ga4.accepted == [] and row("e1")["status"] == "sent"  # GA4 gives no way to tell


def test_a_refused_request_is_split_and_the_failure_lands_on_its_own_row(client, fake_ga4, dispatcher):
    fake_ga4.refuse("ord-bad", "Payload rejected by the proxy", status=400)
    now = track(client, lead("e1", anonymous_id="anon-1"), lead("bad", anonymous_id="anon-1", order_id="ord-bad"),
                lead("e3", anonymous_id="anon-1"))

    assert dispatcher.drain_once(now=now) == {"shop/ga4": 3}

    assert [len(r["body"]["events"]) for r in fake_ga4.requests] == [3, 1, 2, 1, 1]  # 3 → 1 + 2 → 1 + 1
    assert row("bad") == {
        "status": "failed", "reason": "GA4 HTTP 400: Payload rejected by the proxy", "attempts": 1, "retries": 0,
        "last_status": 400, "last_error": "GA4 HTTP 400: Payload rejected by the proxy",
        "response_excerpt": '{"error": {"code": 400, "message": "Payload rejected by the proxy"}}',
    }
    assert (row("e1")["status"], row("e3")["status"]) == ("sent", "sent")
    assert [e["params"].get("transaction_id") for e in fake_ga4.events] == [None, None]


def test_an_event_past_ga4s_72_hours_fails_without_being_sent(client, fake_ga4, dispatcher):
    old = (utcnow() - timedelta(hours=73)).isoformat()
    now = track(client, lead("old", occurred_at=old), lead("fresh"))

    assert dispatcher.drain_once(now=now) == {"shop/ga4": 2}

    assert row("old") == {
        "status": "failed", "reason": "older than GA4's 3-day window: not sent", "attempts": 0, "retries": 0,
        "last_status": None, "last_error": None, "response_excerpt": None,
    }
    assert [r["body"]["client_id"] for r in fake_ga4.requests] == [derived_client_id("anon-fresh")]


@pytest.mark.parametrize("ga4_settings", [{"mode": "test"}])
def test_a_test_destination_asks_the_validation_server_and_nothing_is_recorded(client, fake_ga4, dispatcher):
    now = track(client, lead("e1"))

    dispatcher.drain_once(now=now)

    [request] = fake_ga4.requests
    assert (request["path"], request["query"], request["body"]) == (
        "/debug/mp/collect", {"measurement_id": "G-TEST123", "api_secret": SECRET}, send_of("e1").payload)
    assert request["answer"] == {"validationMessages": []} and fake_ga4.accepted == []
    assert row("e1") == {
        "status": "sent", "reason": None, "attempts": 1, "retries": 0, "last_status": 200, "last_error": None,
        "response_excerpt": '{"validationMessages": []}',
    }


@pytest.mark.parametrize("ga4_settings", [{"mode": "test"}])
def test_test_mode_stores_the_validation_messages_on_the_send_they_are_about(client, fake_ga4, dispatcher):
    fake_ga4.refuse("ord-bad", "Value of transaction_id is not allowed")
    now = track(client, lead("good", anonymous_id="anon-1"), lead("bad", anonymous_id="anon-1", order_id="ord-bad"))

    dispatcher.drain_once(now=now)

    assert [len(r["body"]["events"]) for r in fake_ga4.requests] == [2, 1, 1]
    error = ("GA4 validation: VALUE_INVALID at events.params.transaction_id: Value of transaction_id is not allowed")
    assert row("bad") == {
        "status": "failed", "reason": error, "attempts": 1, "retries": 0, "last_status": 200, "last_error": error,
        "response_excerpt": json.dumps({"validationMessages": [{
            "fieldPath": "events.params.transaction_id", "description": "Value of transaction_id is not allowed",
            "validationCode": "VALUE_INVALID"}]}),
    }
    assert (row("good")["status"], row("good")["response_excerpt"]) == ("sent", '{"validationMessages": []}')
    assert fake_ga4.accepted == []


@pytest.mark.parametrize("ga4_settings", [{"mode": "dry"}])
def test_a_dry_destination_records_the_payload_and_sends_nothing(client, fake_ga4, dispatcher):
    now = track(client, lead("e1"))

    assert dispatcher.drain_once(now=now) == {"shop/ga4": 1}

    assert fake_ga4.requests == []
    assert row("e1") == {
        "status": "skipped", "reason": "dry mode", "attempts": 0, "retries": 0, "last_status": None,
        "last_error": None, "response_excerpt": None,
    }
    at = micros(Event.get().occurred_at)
    assert send_of("e1").payload == {
        "client_id": derived_client_id("anon-e1"), "timestamp_micros": at,
        "consent": {"ad_user_data": "GRANTED", "ad_personalization": "DENIED"},
        "events": [{"name": "generate_lead", "timestamp_micros": at,
                    "params": {"page_location": "https://shop.example/thanks", "engagement_time_msec": 100}}],
    }
    assert send_of("e1").match_quality == {"score": 3.0, "identifiers": ["client_id"]}


@pytest.mark.parametrize("body, reason", [
    ({"api_key": "key_demo_123", "event": "lead", "event_id": "e1"},
     "no client id for GA4: no ga_client_id (_ga cookie), anonymous id or external id"),
    (lead("e1", event="2fa enabled"), "event name '2fa enabled' cannot be a GA4 event name: at most 40 letters, "
                                      "digits or underscores, starting with a letter"),
    (lead("e1", event="session_start"), "event name 'session_start' is reserved by GA4"),
])
def test_events_ga4_cannot_take_are_skipped_with_the_reason(client, fake_ga4, dispatcher, body, reason):
    now = track(client, body)

    dispatcher.drain_once(now=now)

    assert (row("e1")["status"], row("e1")["reason"], row("e1")["attempts"]) == ("skipped", reason, 0)
    assert fake_ga4.requests == []


def test_the_api_secret_is_never_logged_nor_stored(client, fake_ga4, dispatcher, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")  # logs.configure() quiets it; the filter must not rely on that
    fake_ga4.script("500")
    now = track(client, lead("e1"))

    dispatcher.drain_once(now=now)
    dispatcher.drain_once(now=now + 12 * SECOND)

    assert "/mp/collect?measurement_id=G-TEST123&api_secret=***" in caplog.text  # urllib3's request line, masked
    assert SECRET not in caplog.text
    assert all(SECRET not in str(value) for value in Send.select().tuples().get())


# --- the fake -------------------------------------------------------------------------------------

def collect(fake, body, path="/mp/collect", measurement_id="G-TEST123", secret=SECRET) -> requests.Response:
    return requests.post(f"{fake.url}{path}", params={"measurement_id": measurement_id, "api_secret": secret},
                         json=body, timeout=5)


def fresh(**overrides) -> dict:
    now = micros(utcnow()) - 60_000_000
    return {"client_id": CLIENT_ID, "timestamp_micros": now,
            "events": [{"name": "generate_lead", "params": {"engagement_time_msec": 100}}], **overrides}


@pytest.mark.parametrize("body, secret, code, where", [
    (fresh(), "wrong", "VALUE_INVALID", "api_secret"),
    (fresh(events=[{"name": "lead"}] * 26), SECRET, "EXCEEDED_MAX_ENTITIES", "events"),
    (fresh(events=[{"name": "_bad"}]), SECRET, "NAME_INVALID", "events[0].name"),
    (fresh(events=[{"name": "session_start"}]), SECRET, "NAME_RESERVED", "events[0].name"),
    (fresh(events=[{"name": "lead", "params": {"ga_x": 1}}]), SECRET, "NAME_RESERVED", "events[0].params.ga_x"),
    (fresh(events=[{"name": "lead", "params": {"note": "n" * 101}}]), SECRET, "VALUE_OUT_OF_BOUNDS",
     "events[0].params.note"),
    (fresh(timestamp_micros=1767225600000), SECRET, "VALUE_INVALID", "timestamp_micros"),
    (fresh(timestamp_micros=micros(utcnow() - timedelta(hours=73))), SECRET, "VALUE_OUT_OF_BOUNDS", "timestamp_micros"),
    (fresh(client_id=None), SECRET, "VALUE_REQUIRED", "client_id"),
    (fresh(user_data={"sha256_email_address": ["a@example.com"]}), SECRET, "VALUE_INVALID",
     "user_data.sha256_email_address"),
    (fresh(events=[]), SECRET, "VALUE_REQUIRED", "events"),
])
def test_the_fake_answers_204_to_anything_but_records_what_google_would_drop(fake_ga4, body, secret, code, where):
    body = {k: v for k, v in body.items() if v is not None}
    response = collect(fake_ga4, body, secret=secret)
    debug = collect(fake_ga4, body, path="/debug/mp/collect", secret=secret)

    assert (response.status_code, response.content) == (204, b"")
    assert fake_ga4.requests[0]["accepted"] is False and fake_ga4.accepted == []
    assert [(m["validationCode"], m["fieldPath"]) for m in fake_ga4.requests[0]["problems"]][-1] == (code, where)
    if where != "api_secret":  # the validation server checks the payload, not the keys
        assert (code, where) in [(m["validationCode"], m["fieldPath"]) for m in debug.json()["validationMessages"]]


def test_the_fake_keeps_a_valid_request_and_validates_it_with_no_messages(fake_ga4):
    body = fresh()
    assert collect(fake_ga4, body).status_code == 204
    assert collect(fake_ga4, body, path="/debug/mp/collect").json() == {"validationMessages": []}
    assert fake_ga4.accepted == [body] and fake_ga4.events == body["events"]


def test_the_fake_refuses_a_body_of_130_kb(fake_ga4):
    body = fresh(events=[{"name": "lead", "params": {f"p{i}": "x" * 100 for i in range(25)}}] * 25)
    body["padding_events"] = ["y" * 100] * 800
    collect(fake_ga4, body)
    assert fake_ga4.requests[0]["problems"][0]["validationCode"] == "VALUE_OUT_OF_BOUNDS"


@pytest.mark.parametrize("script, status", [("500", 500), ("429", 429), ("403", 403), (("status", 400, "bad"), 400)])
def test_the_fake_fails_on_cue(fake_ga4, script, status):
    fake_ga4.script(script)
    assert collect(fake_ga4, fresh()).status_code == status
    assert collect(fake_ga4, fresh()).status_code == 204
