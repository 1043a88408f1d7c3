"""Meta Conversions API: payloads, answer classification, delivery end to end, and the fake that checks like Graph."""
from __future__ import annotations

import json
import time
from datetime import timedelta
from functools import partial

import pytest
import requests

from config import Config, Destination
from ingest.canonical import CanonicalEvent, utcnow
from models import DestinationState, Event
from platforms import meta
from platforms.base import REJECTED, RETRY, SENT, SETUP, THROTTLE, Outcome
from tests import helpers
from tests.conftest import BROWSER, RAW_PII, SEED_EXAMPLE, build_config, fbtrace_id, meta_destination, with_destinations
from tests.fakes.meta import FakeMeta
from tests.helpers import answer, as_kept, check_golden, dry_run_entry, received, sha, signup, track

SECOND = timedelta(seconds=1)
UA = BROWSER["User-Agent"]
UNKNOWN_ERROR = "Meta error 1: An unknown error occurred"
FBC = "fb.1.1554763741205.AbCdEf"
FBP = "fb.1.1554763741205.1098115397"
OCCURRED = "2026-03-01T12:00:00Z"  # five minutes before the frozen ingest
OCCURRED_AT = 1772366400  # 2026-03-01T12:00:00Z
RAW_PII.extend(value for value in ("Jane@Example.ORG",) if value not in RAW_PII)

send_of = partial(helpers.send_of, destination="shop/meta")
row = partial(helpers.row, destination="shop/meta")


@pytest.fixture
def config(raw) -> Config:
    return build_config(raw)


# --- payloads ----------------------------------------------------------------------------------

def test_the_seeds_complete_purchase_matches_the_golden_payload(client, frozen_ingest):
    entry = dry_run_entry(client, {**SEED_EXAMPLE, "fbc": FBC, "fbp": FBP, "occurred_at": OCCURRED})

    payload = entry["payload"]
    check_golden("meta_purchase.json", payload)
    # The golden's values, derived by hand: the normalized strings Meta's rules give for the seed.
    assert (payload["event_name"], payload["event_time"], payload["action_source"]) == ("Purchase", OCCURRED_AT, "website")
    assert payload["user_data"] == {
        "em": [sha("john.doe@example.com")], "ph": [sha("15551234567")],  # digits only, no "+"
        "fn": [sha("john")], "ln": [sha("doe")],
        "ct": [sha("sanfrancisco")], "st": [sha("ca")], "zp": [sha("94102")], "country": [sha("us")],
        "external_id": [sha("user_123")], "fbc": FBC, "fbp": FBP,
        "client_ip_address": "203.0.113.7", "client_user_agent": UA,
    }
    assert payload["custom_data"] == {
        "value": 149.99, "currency": "USD", "order_id": "ord_abc123",
        "product_category": "electronics", "coupon_used": "SAVE20",
    }


def test_a_minimal_lead_matches_the_golden_payload(client, frozen_ingest):
    body = {"api_key": "key_demo_123", "event": "generate_lead", "event_id": "lead_1",
            "email": "  Jane@Example.ORG ", "occurred_at": OCCURRED, "source_url": "https://shop.example/contact"}
    entry = dry_run_entry(client, body, headers={**BROWSER, "X-Postback-Client-IP": "203.0.113.9"})

    check_golden("meta_lead.json", entry["payload"])
    assert entry["payload"] == {
        "event_name": "Lead", "event_time": OCCURRED_AT, "event_id": "lead_1", "action_source": "website",
        "event_source_url": "https://shop.example/contact",
        "user_data": {"em": [sha("jane@example.org")], "country": [sha("us")],
                      "client_ip_address": "203.0.113.9", "client_user_agent": UA},
    }


DEST = Destination(site_id="shop", name="meta", platform="meta", mode="dry", enabled=True, events=None,
                   consent_category=None, settings={"pixel_id": "123"})


def purchase(items: list[dict], **properties) -> CanonicalEvent:
    now = utcnow()
    return CanonicalEvent(site_id="shop", dialect="test", event_name="purchase", standard_name="Purchase",
                          event_id="o1", occurred_at=now, received_at=now, identity={"em": "a" * 64},
                          user_agent="Mozilla/5.0", page_url="https://shop.example/thanks", value=30.0,
                          currency="EUR", items=items, properties=properties)


@pytest.mark.parametrize("items, extra", [
    ([{"id": "A", "quantity": 2, "price": 10.0, "name": "Shirt", "category": "Apparel"}],
     {"content_name": "Shirt", "content_category": "Apparel"}),
    ([{"id": "A", "name": "Shirt", "category": "Apparel"}, {"id": "B", "name": "Cap", "category": "Apparel"}],
     {"content_category": "Apparel"}),
    ([{"id": "A", "name": "Shirt"}, {"id": "B"}], {}),
])
def test_contents_carry_ids_and_a_name_or_category_only_when_every_item_agrees(items, extra):
    data = meta.build(purchase(items), DEST)["custom_data"]
    ids = [i["id"] for i in items]
    assert data == {"value": 30.0, "currency": "EUR", "content_type": "product", "content_ids": ids,
                    "contents": [{k: v for k, v in (("id", i["id"]), ("quantity", i.get("quantity")),
                                                     ("item_price", i.get("price"))) if v is not None} for i in items],
                    "num_items": sum(i.get("quantity", 1) for i in items), **extra}


def test_server_side_dollar_properties_never_reach_meta():
    data = meta.build(purchase([], coupon="SAVE20", **{"$current_url": "https://shop.example/?email=a@b.co"}), DEST)["custom_data"]
    assert data == {"value": 30.0, "currency": "EUR", "coupon": "SAVE20"}


# --- classification ----------------------------------------------------------------------------

def graph(code: int, message: str = "Something", subcode: int | None = None, transient: bool = False, **extra) -> dict:
    error = {"message": message, "type": "OAuthException", "code": code, "is_transient": transient,
             "fbtrace_id": "AbCdEfGhIjK", **extra}
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


OK = {"events_received": 2, "messages": [], "fbtrace_id": "AbCdEfGhIjK"}


@pytest.mark.parametrize("status, body, headers, kind, error, retry_after", [
    # sent
    (200, OK, {}, SENT, None, None),
    # retry: Meta's transient codes, is_transient, 5xx whatever the body
    (500, graph(1, "An unknown error occurred", transient=True), {}, RETRY, "Meta error 1: An unknown error occurred", None),
    (400, graph(2, "Service temporarily unavailable"), {}, RETRY, "Meta error 2: Service temporarily unavailable", None),
    (400, graph(100, "Try again", transient=True), {}, RETRY, "Meta error 100: Try again", None),
    (503, graph(99, "Down"), {}, RETRY, "Meta error 99: Down", None),
    (502, "<html>Bad Gateway</html>", {}, RETRY, "HTTP 502 with a body that is not Meta's JSON", None),
    # throttle: Meta's rate-limit codes arrive as HTTP 400; 429 always is one
    (429, graph(4, "(#4) Application request limit reached"), {"Retry-After": "7"}, THROTTLE,
     "Meta error 4: (#4) Application request limit reached", 7.0),
    (400, graph(17, "(#17) User request limit reached", 2446079), {}, THROTTLE,
     "Meta error 17/2446079: (#17) User request limit reached", None),
    (400, graph(341, "(#341) Application limit reached"), {}, THROTTLE, "Meta error 341: (#341) Application limit reached", None),
    (400, graph(613, "(#613) Rate limit", 1487742), {}, THROTTLE, "Meta error 613/1487742: (#613) Rate limit", None),
    (400, graph(80000, "Too many calls"), {}, THROTTLE, "Meta error 80000: Too many calls", None),
    (400, graph(80004, "Too many calls"), {}, THROTTLE, "Meta error 80004: Too many calls", None),
    (400, graph(80014, "Too many calls"), {}, THROTTLE, "Meta error 80014: Too many calls", None),
    (400, graph(368, "Blocked for policy"), {}, THROTTLE, "Meta error 368: Blocked for policy", 3600.0),
    (429, "Too Many Requests", {"Retry-After": "30"}, THROTTLE, "HTTP 429 with a body that is not Meta's JSON", 30.0),
    # setup error: token, permission, unknown pixel or path
    (400, graph(190, "Session has expired", 463), {}, SETUP, "Meta error 190/463: Session has expired", None),
    (403, graph(10, "Permission denied"), {}, SETUP, "Meta error 10: Permission denied", None),
    (400, graph(200, "Permissions error"), {}, SETUP, "Meta error 200: Permissions error", None),
    (400, graph(299, "Permissions error"), {}, SETUP, "Meta error 299: Permissions error", None),
    (400, graph(100, "Object with ID '123' does not exist", 33), {}, SETUP,
     "Meta error 100/33: Object with ID '123' does not exist", None),
    (404, graph(803, "Some of the aliases you requested do not exist"), {}, SETUP,
     "Meta error 803: Some of the aliases you requested do not exist", None),
    (404, "<html>Not Found</html>", {}, SETUP, "HTTP 404 with a body that is not Meta's JSON", None),
    # rejected: this payload
    (400, graph(100, "Invalid parameter", 2804003, error_user_title="Event Timestamp Too Old",
                error_user_msg="Events need to be sent within 7 days."), {}, REJECTED,
     "Meta error 100/2804003: Invalid parameter: Event Timestamp Too Old — Events need to be sent within 7 days.", None),
    (400, graph(100, "Invalid parameter", 2804009, error_user_title="Missing Value for Purchase Event"), {}, REJECTED,
     "Meta error 100/2804009: Invalid parameter: Missing Value for Purchase Event", None),
    (400, graph(100, "Bad event", 2804019, error_user_title="Invalid Parameter", error_user_msg="Bad event"), {}, REJECTED,
     "Meta error 100/2804019: Bad event: Invalid Parameter", None),
    (400, graph(100, "Invalid parameter", 2804019, error_user_title="Invalid Parameter", error_user_msg="Invalid parameter"),
     {}, REJECTED, "Meta error 100/2804019: Invalid parameter", None),
    (400, {"error": {}}, {}, REJECTED, "HTTP 400: no message", None),
])
def test_meta_answers_are_classified_by_their_error_code(status, body, headers, kind, error, retry_after):
    outcomes = meta.classify(answer(status, body, headers), 2)

    text = body if isinstance(body, str) else json.dumps(body)
    trace_id = "AbCdEfGhIjK" if isinstance(body, dict) and (body.get("error") or body.get("fbtrace_id")) else None
    expected = Outcome(kind, status, error, trace_id, text, retry_after, whole_batch=kind == REJECTED)
    assert outcomes == [expected, expected]


def test_a_rejection_of_a_single_event_is_not_split_further():
    [outcome] = meta.classify(answer(400, graph(100, "Invalid parameter", 2804003)), 1)
    assert (outcome.kind, outcome.whole_batch) == (REJECTED, False)


def test_a_long_answer_is_kept_as_an_excerpt():
    body = {**OK, "messages": ["x" * 5000]}
    [outcome] = meta.classify(answer(200, body), 1)
    assert outcome.response == json.dumps(body)[:2000]


# --- delivery end to end ------------------------------------------------------------------------

def test_the_seeds_complete_example_reaches_meta_as_exactly_this_item(client, fake_meta, dispatcher):
    now = track(client, SEED_EXAMPLE)
    occurred_at = Event.get().occurred_at

    assert dispatcher.drain_once(now=now) == {"shop/meta": 1}

    # The seed's fbc/fbp ("_fbc.1.1554...") are not Meta cookies: dropped at ingest; gclid is not Meta's.
    expected = {
        "event_name": "Purchase",
        "event_time": int(occurred_at.timestamp()),
        "event_id": "evt_unique123",
        "action_source": "website",
        "event_source_url": "https://example.com/checkout",
        "user_data": {
            "em": [sha("john.doe@example.com")],
            "ph": [sha("15551234567")],
            "fn": [sha("john")],
            "ln": [sha("doe")],
            "ct": [sha("sanfrancisco")],
            "st": [sha("ca")],
            "zp": [sha("94102")],
            "country": [sha("us")],
            "external_id": [sha("user_123")],
            "client_ip_address": "203.0.113.7",
            "client_user_agent": BROWSER["User-Agent"],
        },
        "custom_data": {
            "value": 149.99, "currency": "USD", "order_id": "ord_abc123",
            "product_category": "electronics", "coupon_used": "SAVE20",
        },
    }
    [request] = fake_meta.requests
    assert (request["method"], request["path"], request["query"], request["token_in_query"]) == \
        ("POST", "/v25.0/123/events", {}, False)
    assert request["body"] == {"data": [expected], "access_token": "meta-token"}
    assert request["status"] == 200 and fake_meta.events == [expected]
    assert row("evt_unique123") == {
        "status": "sent", "reason": None, "attempts": 1, "retries": 0, "last_status": 200,
        "last_error": None, "trace_id": request["answer"]["fbtrace_id"],
    }
    send = send_of("evt_unique123")
    assert send.payload == as_kept(expected)  # the platform got the full IP; the kept copy holds its /24
    assert send.match_quality == {"score": 10.0, "identifiers": [
        "em", "ph", "external_id", "client_ip_address", "client_user_agent",
        "fn", "ln", "ct", "st", "zp", "country"]}
    assert json.loads(send.response_excerpt) == request["answer"]
    assert (send.finished_at, send.lease_owner, send.lease_until) == (now, None, None)
    assert Event.get().ip == "203.0.113.0"  # privacy.ip truncate: every send of the event is final


def test_a_500_is_retried_after_the_backoff_and_delivered_on_the_retry(client, fake_meta, dispatcher):
    fake_meta.script("500")
    now = track(client, signup("e1"))

    dispatcher.drain_once(now=now)

    first = fake_meta.requests[0]
    assert row("e1") == {
        "status": "pending", "reason": None, "attempts": 1, "retries": 1, "last_status": 500,
        "last_error": UNKNOWN_ERROR, "trace_id": fbtrace_id(first),
    }
    assert now + 8 * SECOND <= send_of("e1").next_attempt_at <= now + 12 * SECOND  # 10 s ± 20 %
    assert dispatcher.drain_once(now=now + 7 * SECOND) == {"shop/meta": 0}
    assert len(fake_meta.requests) == 1

    assert dispatcher.drain_once(now=now + 12 * SECOND) == {"shop/meta": 1}

    assert received(fake_meta) == ["e1"]
    assert row("e1") == {
        "status": "sent", "reason": None, "attempts": 2, "retries": 1, "last_status": 200,
        "last_error": None, "trace_id": fbtrace_id(fake_meta.requests[1]),
    }


@pytest.mark.parametrize("dispatch_settings", [{"timeout_seconds": 0.1}])  # the hang is cut short soon
def test_a_request_that_outlasts_the_timeout_is_retried(client, fake_meta, dispatcher):
    fake_meta.script(("hang", 5))
    now = track(client, signup("e1"))

    dispatcher.drain_once(now=now)

    assert row("e1") == {
        "status": "pending", "reason": None, "attempts": 1, "retries": 1, "last_status": None,
        "last_error": "no answer within 0.1 s", "trace_id": None,
    }
    assert now + 8 * SECOND <= send_of("e1").next_attempt_at <= now + 12 * SECOND

    dispatcher.drain_once(now=now + 12 * SECOND)
    assert received(fake_meta) == ["e1"] and row("e1")["status"] == "sent"


@pytest.mark.parametrize("answer, status, error, wait", [
    ("429", 429, "Meta error 4: (#4) Application request limit reached", (1, 1)),  # Retry-After: 1
    (("throttle", 17), 400, "Meta error 17/2446079: (#17) User request limit reached", (8, 12)),
    (("throttle", 80004), 400, "Meta error 80004: (#80004) There have been too many calls to this ad-account. "
                               "Wait a bit and try again.", (8, 12)),
])
def test_a_throttled_send_is_delivered_later_without_counting_a_retry(client, fake_meta, dispatcher,
                                                                       answer, status, error, wait):
    fake_meta.script(answer)
    now = track(client, signup("e1"))

    dispatcher.drain_once(now=now)

    assert row("e1") == {
        "status": "pending", "reason": None, "attempts": 1, "retries": 0, "last_status": status,
        "last_error": error, "trace_id": fbtrace_id(fake_meta.requests[0]),
    }
    shortest, longest = wait
    assert now + shortest * SECOND <= send_of("e1").next_attempt_at <= now + longest * SECOND

    dispatcher.drain_once(now=now + longest * SECOND)

    assert received(fake_meta) == ["e1"]
    assert row("e1") == {
        "status": "sent", "reason": None, "attempts": 2, "retries": 0, "last_status": 200,
        "last_error": None, "trace_id": fbtrace_id(fake_meta.requests[1]),
    }


def test_an_invalid_token_pauses_the_destination_until_its_config_changes(client, fake_meta, raw, live, dispatcher):
    fake_meta.set_token("rotated-token")  # the admin rotated the token at Meta, not yet in the config
    now = track(client, signup("e1"))

    assert dispatcher.drain_once(now=now) == {"shop/meta": 1}

    message = "Meta error 190: Invalid OAuth access token - Cannot parse access token"
    paused = DestinationState.get()
    assert (paused.destination, paused.paused_reason, paused.paused_at, paused.fingerprint) == \
        ("shop/meta", message, now, live.config.destination("shop/meta").fingerprint())
    assert row("e1") == {
        "status": "pending", "reason": None, "attempts": 0, "retries": 0, "last_status": 400,
        "last_error": message, "trace_id": fbtrace_id(fake_meta.requests[0]),
    }
    assert send_of("e1").next_attempt_at == now

    assert dispatcher.drain_once(now=now + timedelta(hours=1)) == {"shop/meta": 0}
    assert len(fake_meta.requests) == 1

    live.config = build_config(with_destinations(raw, meta_destination(fake_meta.url, access_token="rotated-token")))
    assert dispatcher.drain_once(now=now + timedelta(hours=1)) == {"shop/meta": 1}

    assert fake_meta.requests[1]["body"]["access_token"] == "rotated-token"
    assert received(fake_meta) == ["e1"]
    assert row("e1") == {
        "status": "sent", "reason": None, "attempts": 1, "retries": 0, "last_status": 200,
        "last_error": None, "trace_id": fbtrace_id(fake_meta.requests[1]),
    }
    assert DestinationState.select().count() == 0


def test_one_rejected_event_in_a_batch_of_50_fails_alone_and_the_other_49_are_sent(client, fake_meta, dispatcher):
    ids = [f"e{i:02}" for i in range(50)]
    fake_meta.reject_event("e17", "Invalid parameter: custom_data.contents must be a list")
    now = track(client, *(signup(i) for i in ids))

    assert dispatcher.drain_once(now=now) == {"shop/meta": 50}

    assert len(fake_meta.requests[0]["body"]["data"]) == 50  # one batch first, split only when rejected
    assert sorted(received(fake_meta)) == [i for i in ids if i != "e17"]
    rejected = [r for r in fake_meta.requests if r["status"] == 400 and len(r["body"]["data"]) == 1]
    assert row("e17") == {
        "status": "failed", "reason": "Meta error 100/2804019: Invalid parameter: custom_data.contents must be a list",
        "attempts": 1, "retries": 0, "last_status": 400,
        "last_error": "Meta error 100/2804019: Invalid parameter: custom_data.contents must be a list",
        "trace_id": fbtrace_id(rejected[0]),
    }
    others = [row(i) for i in ids if i != "e17"]
    assert {(r["status"], r["reason"], r["attempts"], r["retries"], r["last_status"]) for r in others} == \
        {("sent", None, 1, 0, 200)}


def test_an_event_past_metas_7_day_window_fails_without_being_sent(client, fake_meta, dispatcher):
    eight_days_ago = (utcnow() - timedelta(days=8)).isoformat()
    now = track(client, signup("old", occurred_at=eight_days_ago), signup("fresh"))

    assert dispatcher.drain_once(now=now) == {"shop/meta": 2}

    assert row("old") == {
        "status": "failed", "reason": "older than Meta's 7-day window: not sent", "attempts": 0, "retries": 0,
        "last_status": None, "last_error": None, "trace_id": None,
    }
    assert received(fake_meta) == ["fresh"]  # the old one did not sink the batch
    assert [item["event_id"] for r in fake_meta.requests for item in r["body"]["data"]] == ["fresh"]


@pytest.mark.parametrize("meta_settings", [{"mode": "test", "test_event_code": "TEST123"}])
def test_a_test_destination_sends_the_test_event_code(client, fake_meta, dispatcher):
    now = track(client, signup("e1"))

    dispatcher.drain_once(now=now)

    [request] = fake_meta.requests
    assert as_kept(request["body"]) == {"data": [send_of("e1").payload], "access_token": "meta-token",
                                        "test_event_code": "TEST123"}
    assert request["body"]["data"][0]["user_data"]["client_ip_address"] == "203.0.113.7"
    assert [e["event_id"] for e in fake_meta.test_events] == ["e1"] and fake_meta.events == []
    assert (row("e1")["status"], row("e1")["attempts"]) == ("sent", 1)


@pytest.mark.parametrize("meta_settings", [{"mode": "dry"}])
def test_a_dry_destination_records_the_payload_and_sends_nothing(client, fake_meta, dispatcher):
    now = track(client, signup("e1"))

    assert dispatcher.drain_once(now=now) == {"shop/meta": 1}

    assert fake_meta.requests == []
    assert row("e1") == {
        "status": "skipped", "reason": "dry mode", "attempts": 0, "retries": 0, "last_status": None,
        "last_error": None, "trace_id": None,
    }
    send = send_of("e1")
    assert send.payload == {
        "event_name": "CompleteRegistration",
        "event_time": int(Event.get().occurred_at.timestamp()),
        "event_id": "e1",
        "action_source": "website",
        "event_source_url": "https://shop.example/welcome",
        "user_data": {
            "country": [sha("us")],  # the site's default_country
            "external_id": [sha("user-e1")],
            "client_ip_address": "203.0.113.0",  # kept with its /24, as the event once its sends are final
            "client_user_agent": BROWSER["User-Agent"],
        },
    }
    assert send.match_quality == {
        "score": 2.8, "identifiers": ["external_id", "client_ip_address", "client_user_agent", "country"]}
    assert Event.get().ip == "203.0.113.0"


# --- the fake validates like Graph ---------------------------------------------------------------

def event(**overrides) -> dict:
    item = {
        "event_name": "Lead", "event_time": int(time.time()) - 60, "event_id": "e1",
        "action_source": "website", "event_source_url": "https://shop.example/thanks",
        "user_data": {"em": [sha("a@example.com")], "client_user_agent": "Mozilla/5.0", "fbc": "fb.1.1767225590123.IwAR2F4"},
    }
    return {**item, **overrides}


def post(fake: FakeMeta, data, token="meta-token", pixel="123", timeout=5, **fields) -> requests.Response:
    body = {"data": data, "access_token": token, **fields}
    return requests.post(f"{fake.url}/v25.0/{pixel}/events", json=body, timeout=timeout)


def error_of(response) -> dict:
    """Graph's error object in an answer."""
    return response.json()["error"]


def test_a_valid_batch_is_accepted_and_recorded(fake_meta):
    items = [event(), event(event_id="e2", event_name="Purchase", custom_data={"value": 49.0, "currency": "USD"})]
    response = post(fake_meta, items)
    assert response.status_code == 200
    assert response.json()["events_received"] == 2
    assert len(response.json()["fbtrace_id"]) == 11
    assert fake_meta.events == items
    assert fake_meta.requests[0]["pixel_id"] == "123" and fake_meta.requests[0]["status"] == 200
    assert fake_meta.requests[0]["token_in_query"] is False


def test_a_wrong_token_is_rejected_with_code_190(fake_meta):
    response = post(fake_meta, [event()], token="nope")
    assert response.status_code == 400
    assert error_of(response)["code"] == 190 and error_of(response)["type"] == "OAuthException"
    assert fake_meta.events == []


def test_an_unhashed_email_fails_naming_the_field(fake_meta):
    response = post(fake_meta, [event(user_data={"em": "a@example.com", "client_user_agent": "UA"})])
    assert error_of(response)["code"] == 100
    assert "user_data.em" in error_of(response)["message"]


def test_one_event_older_than_seven_days_fails_the_whole_batch(fake_meta):
    old = event(event_id="old", event_time=int(time.time()) - 8 * 86400)
    response = post(fake_meta, [event(), old])
    assert response.status_code == 400
    assert error_of(response)["error_subcode"] == 2804003
    assert error_of(response)["error_user_title"] == "Event Timestamp Too Old"
    assert fake_meta.events == []


def test_a_purchase_without_value_is_rejected(fake_meta):
    response = post(fake_meta, [event(event_name="Purchase")])
    assert error_of(response)["error_subcode"] == 2804009


def test_a_rejected_event_id_fails_its_batch(fake_meta):
    fake_meta.reject_event("e2", "bad event")
    response = post(fake_meta, [event(), event(event_id="e2")])
    assert (error_of(response)["code"], error_of(response)["error_subcode"]) == (100, 2804019)
    assert error_of(response)["message"] == "bad event"
    assert fake_meta.events == []


def test_an_unknown_pixel_is_code_100_subcode_33(fake_meta):
    response = post(fake_meta, [event()], pixel="999")
    assert (error_of(response)["code"], error_of(response)["error_subcode"]) == (100, 33)


def test_a_scripted_500_is_answered_once_then_validation_resumes(fake_meta):
    fake_meta.script("500")
    first, second = post(fake_meta, [event()]), post(fake_meta, [event(event_id="e2")])
    assert first.status_code == 500 and error_of(first)["is_transient"] is True
    assert second.status_code == 200
    assert [e["event_id"] for e in fake_meta.events] == ["e2"]
    assert [r["status"] for r in fake_meta.requests] == [500, 200]


def test_a_scripted_429_carries_retry_after_and_code_4(fake_meta):
    fake_meta.script("429", ("throttle", 80004))
    first, second = post(fake_meta, [event()]), post(fake_meta, [event()])
    assert first.status_code == 429 and first.headers["Retry-After"] == "1" and error_of(first)["code"] == 4
    assert second.status_code == 400 and error_of(second)["code"] == 80004


def test_a_hang_longer_than_the_client_timeout_times_out_the_client(fake_meta):
    fake_meta.script(("hang", 5))
    with pytest.raises(requests.Timeout):
        post(fake_meta, [event()], timeout=0.3)
    started = time.monotonic()
    fake_meta.stop()
    assert time.monotonic() - started < 1


def test_a_token_in_the_query_is_flagged(fake_meta):
    response = requests.post(f"{fake_meta.url}/v25.0/123/events", params={"access_token": "meta-token"},
                             json={"data": [event()]}, timeout=5)
    assert response.status_code == 200
    assert fake_meta.requests[0]["token_in_query"] is True


def test_a_form_encoded_body_is_accepted_like_graph(fake_meta):
    response = requests.post(f"{fake_meta.url}/v25.0/123/events", timeout=5,
                             data={"access_token": "meta-token", "data": json.dumps([event()])})
    assert response.status_code == 200 and len(fake_meta.events) == 1


def test_test_events_are_kept_apart_from_production_events(fake_meta):
    post(fake_meta, [event()], test_event_code="TEST123")
    assert fake_meta.events == [] and len(fake_meta.test_events) == 1


def test_a_batch_of_1001_events_is_rejected(fake_meta):
    response = post(fake_meta, [event(event_id=f"e{i}") for i in range(1001)])
    assert response.status_code == 400 and error_of(response)["code"] == 100
    assert "1000" in error_of(response)["message"]
    assert fake_meta.events == []


def test_other_paths_get_a_graph_404(fake_meta):
    response = requests.get(f"{fake_meta.url}/v25.0/123/events", timeout=5)
    assert response.status_code == 404 and error_of(response)["code"] == 803
