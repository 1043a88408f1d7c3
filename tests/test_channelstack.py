"""ChannelStack `POST /v1/track` through the Flask test client (docs/dialects/channelstack.md)."""
from __future__ import annotations

import io
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from models import Event, Send
from tests.conftest import BROWSER, RAW_PII, SEED_EXAMPLE
from tests.helpers import sha

GOLDEN = Path(__file__).parent / "golden"
UA = BROWSER["User-Agent"]
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
META_URL = "https://graph.facebook.com/v25.0/123/events"
MINIMAL = {"api_key": "key_demo_123", "event": "signed_up"}
NOT_FB_FORM = "dropped, not of the form fb.<digit>.<digits>.<value>"
PII_NOTE = "dropped, a custom property named like personal data is never stored"
SEED_NOTES = [f"fbc: {NOT_FB_FORM}", f"fbp: {NOT_FB_FORM}"]

# Raw personal values only this file sends; the session-end scan looks for them in every database.
PII_PROPERTIES = {
    "Phone_Number": "+44 20 7946 0958", "e-mail": "jane.roe@example.net", "full name": "Jane Roe",
    "IP": "198.51.100.77", "Date of Birth": "1985-07-04", "STREET": "10 Downing Street",
}
IDENTITY_EXTRAS = {"gender": "Female", "date_of_birth": "04.07.1985", "email": "jane.roe(at)example.net", "phone": "+47 12"}
NESTED_EMAIL = "nested.buyer@example.net"
RAW_PII.extend([*PII_PROPERTIES.values(), *IDENTITY_EXTRAS.values(), NESTED_EMAIL])


def stored() -> tuple[int, int]:
    """(events, sends) in the database."""
    return Event.select().count(), Send.select().count()


def sends() -> list[tuple]:
    return [(s.destination, s.platform, s.status, s.reason) for s in Send.select().order_by(Send.id)]


def track(client, body, query: str = "", headers: dict | None = None, **kwargs):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    kwargs.setdefault("content_type", "application/json")
    return client.post(f"/v1/track{query}", data=data, headers=BROWSER if headers is None else headers, **kwargs)


def dry_run(client, body, headers: dict | None = None) -> dict:
    response = track(client, body, "?dry_run=1", headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def ok(event_id: str) -> dict:
    return {"success": True, "eventId": event_id, "message": "Event recorded successfully"}


def skipped(reason: str) -> dict:
    """The example's Meta entry when Meta cannot take the event at all."""
    return {"name": "meta", "platform": "meta", "mode": "dry", "url": META_URL, "status": "skipped", "reason": reason,
            "payload": None, "match_quality": {"score": 0.0, "identifiers": []}}


@pytest.fixture
def make_client(request):
    """The test client built from `raw_config` as the test has edited it so far."""
    return lambda: request.getfixturevalue("client")


def add_blog_site(raw: dict) -> None:
    raw["sites"].append({
        "id": "blog", "name": "Blog", "keys": ["key_blog_456"], "default_country": "US", "default_currency": "USD",
        "allowed_origins": ["https://blog.example"],
        "destinations": [{"name": "meta", "platform": "meta", "mode": "dry", "pixel_id": "456"}],
    })


# --- the seed's complete example ----------------------------------------------------------------

def test_the_seed_example_is_stored_once_in_canonical_form(client):
    before = datetime.now(timezone.utc)
    response = track(client, SEED_EXAMPLE)
    after = datetime.now(timezone.utc)

    assert (response.status_code, response.get_json()) == (200, ok("evt_unique123"))
    row = Event.get()
    data = dict(row.__data__)
    assert data.pop("occurred_at") == data.pop("received_at") == row.received_at
    assert before <= row.received_at <= after
    assert data == {
        "id": row.id, "site": "shop", "dialect": "channelstack", "channel": "web",
        "event_name": "purchase_completed", "standard_name": "Purchase", "event_id": "evt_unique123",
        "external_id": "user_123", "anonymous_id": None,
        "identity": {
            "em": sha("john.doe@example.com"), "em_google": sha("john.doe@example.com"),
            "ph": sha("15551234567"), "ph_e164": sha("+15551234567"),
            "fn": sha("john"), "fn_compact": sha("john"), "ln": sha("doe"), "ln_compact": sha("doe"),
        },
        "location": {"city": "san francisco", "state": "ca", "zip": "94102", "country": "us"},
        "click_ids": {"gclid": "CjwKCAjw..."},
        "ip": "203.0.113.7", "user_agent": UA, "page_url": "https://example.com/checkout",
        "referrer": None, "language": None,
        "value": 149.99, "currency": "USD", "order_id": "ord_abc123", "items": [],
        "consent": True, "consent_categories": None,
        "properties": {"product_category": "electronics", "coupon_used": "SAVE20"},
        "notes": SEED_NOTES, "is_bot": False,
    }
    assert sends() == [("shop/meta", "meta", "pending", None)]
    text = json.dumps(data, default=str)
    assert [v for v in ("john.doe@example.com", "+15551234567", "15551234567", "John", "Doe") if v in text] == []


def test_a_dry_run_of_the_seed_example_answers_the_golden_body_and_stores_nothing(client, monkeypatch):
    monkeypatch.setattr("routes.channelstack.utcnow", lambda: datetime(2026, 3, 1, 12, 5, tzinfo=timezone.utc))
    response = track(client, {**SEED_EXAMPLE, "occurred_at": "2026-03-01T12:00:00Z"}, "?dry_run=1")
    golden = GOLDEN / "channelstack_seed_dry_run.json"
    if os.environ.get("POSTBACK_UPDATE_GOLDEN"):
        golden.write_text(json.dumps(response.get_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n")

    assert response.status_code == 200
    assert response.get_json() == json.loads(golden.read_text())
    assert stored() == (0, 0)
    # The golden's values, derived by hand: the normalized strings Meta's rules give for the seed's fields.
    payload = response.get_json()["destinations"][0]["payload"]
    assert payload["event_time"] == 1772366400  # 2026-03-01T12:00:00Z
    assert {k: v for k, v in payload["user_data"].items() if isinstance(v, list)} == {
        "em": [sha("john.doe@example.com")], "ph": [sha("15551234567")], "fn": [sha("john")], "ln": [sha("doe")],
        "ct": [sha("sanfrancisco")], "st": [sha("ca")], "zp": [sha("94102")], "country": [sha("us")],
        "external_id": [sha("user_123")],
    }


def test_a_dry_run_stores_nothing_even_when_every_destination_is_skipped(client):
    dry_run(client, {**SEED_EXAMPLE, "consent": False})
    dry_run(client, SEED_EXAMPLE, headers={**BROWSER, "User-Agent": GOOGLEBOT})
    assert stored() == (0, 0)


# --- dedup and ids ------------------------------------------------------------------------------

def test_a_repeated_event_id_is_stored_once(client):
    first = track(client, SEED_EXAMPLE)
    second = track(client, {**SEED_EXAMPLE, "event": "signed_up", "value": 1})

    assert (first.status_code, first.get_json()) == (200, ok("evt_unique123"))
    assert (second.status_code, second.get_json()) == (
        200, {"success": True, "eventId": "evt_unique123", "message": "Duplicate event ignored"})
    assert stored() == (1, 1)
    assert (Event.get().event_name, Event.get().value) == ("purchase_completed", 149.99)


def test_the_same_event_id_on_another_site_is_another_event(raw_config, make_client):
    add_blog_site(raw_config)
    client = make_client()
    shop = track(client, SEED_EXAMPLE)
    blog = track(client, {**SEED_EXAMPLE, "api_key": "key_blog_456"})

    assert shop.get_json() == blog.get_json() == ok("evt_unique123")
    assert [(e.site, e.event_id) for e in Event.select().order_by(Event.id)] == [
        ("shop", "evt_unique123"), ("blog", "evt_unique123")]
    assert sends() == [("shop/meta", "meta", "pending", None), ("blog/meta", "meta", "pending", None)]


def test_an_event_without_event_id_gets_a_generated_one_each_time(client):
    first = track(client, MINIMAL).get_json()
    second = track(client, MINIMAL).get_json()

    assert re.fullmatch(r"evt_[0-9a-f]{32}", first["eventId"]) and re.fullmatch(r"evt_[0-9a-f]{32}", second["eventId"])
    assert first == ok(first["eventId"]) and first["eventId"] != second["eventId"]
    assert [e.event_id for e in Event.select().order_by(Event.id)] == [first["eventId"], second["eventId"]]


@pytest.mark.parametrize("sent, kept", [(42, "42"), (42.0, "42"), ("  ord-7 ", "ord-7")])
def test_ids_may_be_strings_or_numbers(client, sent, kept):
    body = track(client, {**MINIMAL, "event_id": sent, "order_id": sent}).get_json()
    assert (body["eventId"], Event.get().event_id, Event.get().order_id) == (kept, kept, kept)


def test_an_empty_event_id_counts_as_absent(client):
    body = track(client, {**MINIMAL, "event_id": " ", "order_id": ""}).get_json()
    assert re.fullmatch(r"evt_[0-9a-f]{32}", body["eventId"])
    assert (Event.get().event_id, Event.get().order_id) == (body["eventId"], None)


# --- consent, privacy ---------------------------------------------------------------------------

@pytest.mark.parametrize("consent", [False, "false", " FALSE "])
def test_without_consent_the_event_is_stored_and_every_destination_skipped(client, consent):
    response = track(client, {**SEED_EXAMPLE, "consent": consent})

    assert (response.status_code, response.get_json()) == (200, ok("evt_unique123"))
    row = Event.get()
    assert (row.consent, row.ip) == (False, "203.0.113.0")  # nothing can go out: reduced right away
    assert sends() == [("shop/meta", "meta", "skipped", "no consent")]
    assert Send.get().finished_at == row.received_at


@pytest.mark.parametrize("consent, expected", [
    (None, ("skipped", "no consent")),
    (True, ("pending", None)),
    ("true", ("pending", None)),
])
def test_consent_default_denied_applies_only_when_consent_is_missing(raw_config, make_client, consent, expected):
    raw_config["privacy"]["consent_default"] = "denied"
    body = {**SEED_EXAMPLE, "consent": consent} if consent is not None else {k: v for k, v in SEED_EXAMPLE.items() if k != "consent"}
    track(make_client(), body)
    assert sends() == [("shop/meta", "meta", *expected)]
    assert Event.get().consent is (expected[0] == "pending")


@pytest.mark.parametrize("policy, ip, kept", [
    ("truncate", "203.0.113.7", "203.0.113.0"),
    ("truncate", "2001:db8:abcd:12:34::1", "2001:db8:abcd::"),
    ("drop", "203.0.113.7", None),
    ("drop", "2001:db8:abcd:12:34::1", None),
])
def test_when_every_send_is_final_at_once_the_ip_is_reduced_per_privacy_ip(raw_config, make_client, policy, ip, kept):
    raw_config["privacy"]["ip"] = policy
    track(make_client(), {**SEED_EXAMPLE, "consent": False}, headers={**BROWSER, "X-Postback-Client-IP": ip})
    assert Event.get().ip == kept


def test_while_a_send_can_still_go_out_the_full_ip_is_kept(raw_config, make_client):
    raw_config["privacy"]["ip"] = "drop"
    track(make_client(), SEED_EXAMPLE, headers={**BROWSER, "X-Postback-Client-IP": "2001:db8:abcd:12:34::1"})
    assert (Event.get().ip, sends()) == ("2001:db8:abcd:12:34::1", [("shop/meta", "meta", "pending", None)])


def test_a_site_without_destinations_keeps_only_the_reduced_ip(raw_config, make_client):
    raw_config["sites"][0]["destinations"] = []
    track(make_client(), SEED_EXAMPLE, headers=BROWSER)
    assert (Event.get().ip, sends()) == ("203.0.113.0", [])


def test_a_bot_is_stored_and_its_sends_skipped(client):
    response = track(client, SEED_EXAMPLE, headers={**BROWSER, "User-Agent": GOOGLEBOT})

    assert response.get_json() == ok("evt_unique123")
    assert (Event.get().is_bot, Event.get().user_agent, Event.get().ip) == (True, GOOGLEBOT, "203.0.113.0")
    assert sends() == [("shop/meta", "meta", "skipped", "bot")]


# --- refusals -----------------------------------------------------------------------------------

DEEP = "[" * 10000 + "]" * 10000


@pytest.mark.parametrize("body, status, message", [
    ("{not json", 400, "Invalid JSON body"),
    ("", 400, "Invalid JSON body"),
    ('{"api_key": "key_demo_123", "event": "x"', 400, "Invalid JSON body"),
    (b'{"api_key": "key_demo_123", "event": "\xff"}', 400, "Invalid JSON body"),
    (DEEP, 400, "Invalid JSON body"),
    ('{"api_key": "key_demo_123", "event": "x", "first_name": "\\ud800"}', 400, "Invalid JSON body"),
    ('[{"api_key": "key_demo_123", "event": "x"}]', 400, "Request body must be a JSON object"),
    ('"key_demo_123"', 400, "Request body must be a JSON object"),
    ("null", 400, "Request body must be a JSON object"),
    ({"event": "x"}, 401, "Invalid API key"),
    ({"api_key": "key_nope", "event": "x"}, 401, "Invalid API key"),
    ({"api_key": "", "event": "x"}, 401, "Invalid API key"),
    ({"api_key": None, "event": "x"}, 401, "Invalid API key"),
    ({"api_key": 123, "event": "x"}, 401, "Invalid API key"),
    ({"api_key": ["key_demo_123"], "event": "x"}, 401, "Invalid API key"),
    ({"api_key": {"key_demo_123": 1}, "event": "x"}, 401, "Invalid API key"),
    ({"api_key": "KEY_DEMO_123", "event": "x"}, 401, "Invalid API key"),
    ({"api_key": "key_demo_123"}, 400, "Missing required field: event"),
    ({"api_key": "key_demo_123", "event": None}, 400, "Missing required field: event"),
    ({**MINIMAL, "event": ""}, 400, "Invalid field: event (must be a non-empty string)"),
    ({**MINIMAL, "event": "   "}, 400, "Invalid field: event (must be a non-empty string)"),
    ({**MINIMAL, "event": 5}, 400, "Invalid field: event (must be a non-empty string)"),
    ({**MINIMAL, "event": ["purchase"]}, 400, "Invalid field: event (must be a non-empty string)"),
    ({**MINIMAL, "value": "abc"}, 400, "Invalid field: value (must be a number)"),
    ({**MINIMAL, "value": True}, 400, "Invalid field: value (must be a number)"),
    ({**MINIMAL, "value": {"amount": 1}}, 400, "Invalid field: value (must be a number)"),
    ({**MINIMAL, "value": "NaN"}, 400, "Invalid field: value (must be a number)"),
    ({**MINIMAL, "value": "1e999"}, 400, "Invalid field: value (must be a number)"),
    ('{"api_key": "key_demo_123", "event": "x", "value": 1' + "0" * 400 + "}", 400, "Invalid field: value (must be a number)"),
    ({**MINIMAL, "value": -5}, 400, "Invalid field: value (must not be negative)"),
    ({**MINIMAL, "currency": "XYZ"}, 400, "Invalid field: currency (must be an ISO 4217 currency code such as USD)"),
    ({**MINIMAL, "currency": "US Dollar"}, 400, "Invalid field: currency (must be an ISO 4217 currency code such as USD)"),
    ({**MINIMAL, "currency": 840}, 400, "Invalid field: currency (must be an ISO 4217 currency code such as USD)"),
    ({**MINIMAL, "occurred_at": "yesterday"}, 400, "Invalid field: occurred_at (must be an ISO 8601 date-time)"),
    ({**MINIMAL, "occurred_at": 1767225600}, 400, "Invalid field: occurred_at (must be an ISO 8601 date-time)"),
    ({**MINIMAL, "occurred_at": "0001-01-01T00:00:00+01:00"}, 400, "Invalid field: occurred_at (must be an ISO 8601 date-time)"),
    ({**MINIMAL, "consent": "maybe"}, 400, "Invalid field: consent (must be true or false)"),
    ({**MINIMAL, "consent": 1}, 400, "Invalid field: consent (must be true or false)"),
    ({**MINIMAL, "event_id": {}}, 400, "Invalid field: event_id (must be a string or number)"),
    ({**MINIMAL, "event_id": True}, 400, "Invalid field: event_id (must be a string or number)"),
    ({**MINIMAL, "event_id": "e" * 256}, 400, "Invalid field: event_id (must be at most 255 characters)"),
    ({**MINIMAL, "order_id": ["ord_1"]}, 400, "Invalid field: order_id (must be a string or number)"),
])
def test_a_refused_request_answers_the_seed_error_shape_and_stores_nothing(client, body, status, message):
    response = track(client, body)
    assert (response.status_code, response.get_json()) == (status, {"error": message, "code": status})
    assert stored() == (0, 0)


@pytest.mark.parametrize("body, status, message", [
    ('[{"api_key": "key_nope"}]', 400, "Request body must be a JSON object"),
    ({"api_key": "key_nope"}, 401, "Invalid API key"),
    ({"api_key": "key_nope", "event": 5, "value": "abc"}, 401, "Invalid API key"),
    ({"api_key": "key_demo_123", "value": "abc", "currency": "XYZ"}, 400, "Missing required field: event"),
    ({**MINIMAL, "event": 5, "value": "abc"}, 400, "Invalid field: event (must be a non-empty string)"),
    ({**MINIMAL, "value": "abc", "currency": "XYZ"}, 400, "Invalid field: value (must be a number)"),
    ({**MINIMAL, "currency": "XYZ", "occurred_at": "yesterday"}, 400,
     "Invalid field: currency (must be an ISO 4217 currency code such as USD)"),
    ({**MINIMAL, "occurred_at": "yesterday", "consent": "maybe"}, 400, "Invalid field: occurred_at (must be an ISO 8601 date-time)"),
    ({**MINIMAL, "consent": "maybe", "event_id": {}}, 400, "Invalid field: consent (must be true or false)"),
    ({**MINIMAL, "event_id": {}, "order_id": []}, 400, "Invalid field: event_id (must be a string or number)"),
])
def test_checks_run_in_the_specified_order(client, body, status, message):
    response = track(client, body)
    assert (response.status_code, response.get_json()) == (status, {"error": message, "code": status})
    assert stored() == (0, 0)


@pytest.fixture
def small_client(raw_config, make_client):
    raw_config["server"]["max_body_bytes"] = 512
    return make_client()


def padded(size: int, **fields) -> bytes:
    """A JSON object of exactly `size` bytes."""
    body = {**MINIMAL, "note": "", **fields}
    empty = len(json.dumps(body).encode())
    return json.dumps({**body, "note": "x" * (size - empty)}).encode()


@pytest.mark.parametrize("body", [
    padded(513),
    padded(513, api_key="key_nope"),
    b"{not json" + b" " * 600,
    b"[" + b" " * 600 + b"]",
])
def test_a_body_over_max_body_bytes_is_refused_before_anything_else(small_client, body):
    response = track(small_client, body)
    assert (response.status_code, response.get_json()) == (413, {"error": "Request body too large", "code": 413})
    assert stored() == (0, 0)


def test_a_chunked_body_without_content_length_is_measured_as_it_is_read(small_client):
    response = small_client.post("/v1/track", input_stream=io.BytesIO(padded(513)), content_type="application/json",
                                 headers={**BROWSER, "Transfer-Encoding": "chunked"},
                                 environ_overrides={"wsgi.input_terminated": True})  # what gunicorn sets for chunked
    assert (response.status_code, response.get_json()) == (413, {"error": "Request body too large", "code": 413})
    assert stored() == (0, 0)


class Trickle(io.BytesIO):
    """An input stream that hands out a few bytes per read, as a WSGI server may."""

    def read(self, size: int | None = -1) -> bytes:
        return super().read(7 if size is None or size < 0 else min(size, 7))


@pytest.mark.parametrize("size, status", [(512, 200), (513, 413)])
@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_read_in_short_pieces_is_read_whole(small_client, size, status, chunked):
    framing = {"headers": {**BROWSER, "Transfer-Encoding": "chunked"}, "environ_overrides": {"wsgi.input_terminated": True}}
    response = small_client.post("/v1/track", input_stream=Trickle(padded(size)), content_type="text/plain",
                                 **(framing if chunked else {"headers": BROWSER}))
    assert (response.status_code, stored()) == (status, (1, 1) if status == 200 else (0, 0))


def test_a_content_length_over_the_limit_is_refused_without_reading(small_client):
    response = small_client.post("/v1/track", data=padded(100), headers=BROWSER, environ_overrides={"CONTENT_LENGTH": "100000"})
    assert (response.status_code, response.get_json()) == (413, {"error": "Request body too large", "code": 413})


def test_a_body_of_exactly_max_body_bytes_is_accepted(small_client):
    body = padded(512)
    assert len(body) == 512
    response = track(small_client, body)
    assert (response.status_code, response.get_json()["message"]) == (200, "Event recorded successfully")
    assert stored() == (1, 1)


# --- accepted values ----------------------------------------------------------------------------

@pytest.mark.parametrize("fields, value, currency", [
    ({"value": "12.50", "currency": "USD"}, 12.5, "USD"),
    ({"value": " 7 ", "currency": " usd "}, 7.0, "USD"),
    ({"value": 10, "currency": "usd"}, 10.0, "USD"),
    ({"value": 10}, 10.0, "EUR"),
    ({"value": 0}, 0.0, "EUR"),
    ({"value": "", "currency": ""}, None, None),
    ({"currency": "gbp"}, None, "GBP"),
    ({}, None, None),
])
def test_value_and_currency_are_read_leniently(raw_config, make_client, fields, value, currency):
    raw_config["sites"][0]["default_currency"] = "EUR"
    response = track(make_client(), {**MINIMAL, **fields})
    assert response.status_code == 200
    assert (Event.get().value, Event.get().currency) == (value, currency)


@pytest.mark.parametrize("sent, expected", [
    ("2026-03-01T13:00:00+01:00", datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)),
    ("2026-03-01T12:00:00Z", datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)),
    ("2026-03-01T12:00:00", datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)),
    ("2026-03-01", datetime(2026, 3, 1, tzinfo=timezone.utc)),
])
def test_occurred_at_is_read_as_iso_8601_in_utc(client, sent, expected):
    track(client, {**MINIMAL, "occurred_at": sent})
    assert Event.get().occurred_at == expected


@pytest.mark.parametrize("content_type", ["text/plain;charset=UTF-8", "application/x-www-form-urlencoded", None])
def test_a_json_body_is_parsed_whatever_its_content_type(client, content_type):
    response = track(client, SEED_EXAMPLE, content_type=content_type)
    assert (response.status_code, response.get_json()) == (200, ok("evt_unique123"))
    assert stored() == (1, 1)


def test_items_are_kept_and_malformed_ones_dropped_with_a_reason(client):
    track(client, {**MINIMAL, "items": [{"id": "sku-1", "quantity": 2, "price": "9.50"}, {"id": {}}, "junk", {"id": 7}]})
    row = Event.get()
    assert row.items == [{"id": "sku-1", "quantity": 2, "price": 9.5}, {"id": "7"}]
    assert row.notes == ["items[1]: dropped, expected {id, quantity, price}", "items[2]: dropped, expected {id, quantity, price}"]


def test_identity_fields_are_judged_by_form_never_refused(client):
    response = track(client, {**MINIMAL, **IDENTITY_EXTRAS, "zip": 94102, "country": "Norway", "city": "!!!"})
    assert response.status_code == 200
    row = Event.get()
    assert row.identity == {"ge": sha("f"), "db": sha("19850704")}
    assert row.location == {"country": "no", "zip": "94102"}
    assert row.notes == ["email: not a valid email address", "phone: not a possible phone number for NO",
                         "city: nothing left after removing punctuation and spaces"]


# --- client context -----------------------------------------------------------------------------

def test_the_override_headers_win_over_the_connections_own(client):
    track(client, MINIMAL, headers={"User-Agent": "shop-backend/1.0", "X-Postback-Client-IP": " 198.51.100.9 ",
                                    "X-Postback-Client-User-Agent": UA, "X-Forwarded-For": "192.0.2.99"},
          environ_base={"REMOTE_ADDR": "10.0.0.5"})
    assert (Event.get().ip, Event.get().user_agent) == ("198.51.100.9", UA)


def test_without_override_headers_the_connection_gives_ip_user_agent_referrer_and_language(client):
    track(client, MINIMAL, headers={"User-Agent": UA, "Referer": "https://shop.example/cart",
                                    "Accept-Language": "de-CH,de;q=0.9"}, environ_base={"REMOTE_ADDR": "192.0.2.10"})
    row = Event.get()
    assert (row.ip, row.user_agent, row.referrer, row.language, row.page_url) == (
        "192.0.2.10", UA, "https://shop.example/cart", "de-CH", None)


def test_an_override_ip_that_is_not_an_address_falls_back_to_the_connection(client):
    track(client, MINIMAL, headers={"User-Agent": UA, "X-Postback-Client-IP": "not-an-ip"}, environ_base={"REMOTE_ADDR": "192.0.2.10"})
    assert Event.get().ip == "192.0.2.10"


@pytest.mark.parametrize("trusted, forwarded, expected", [
    (0, "198.51.100.1, 203.0.113.50", "192.0.2.10"),
    (1, "198.51.100.1, 203.0.113.50", "203.0.113.50"),
    (2, "198.51.100.1, 203.0.113.50", "198.51.100.1"),
    (3, "198.51.100.1, 203.0.113.50", "192.0.2.10"),
    (1, "garbage", None),
])
def test_x_forwarded_for_counts_only_with_trusted_proxies(raw_config, make_client, trusted, forwarded, expected):
    raw_config["server"]["trusted_proxies"] = trusted
    track(make_client(), MINIMAL, headers={"User-Agent": UA, "X-Forwarded-For": forwarded},
          environ_base={"REMOTE_ADDR": "192.0.2.10"})
    assert Event.get().ip == expected


@pytest.mark.parametrize("source_url, referer, page_url", [
    (None, "https://shop.example/thanks", "https://shop.example/thanks"),
    ("https://shop.example/checkout", "https://shop.example/thanks", "https://shop.example/checkout"),
    ("javascript:alert(1)", "https://shop.example/thanks", "https://shop.example/thanks"),
])
def test_the_referer_is_the_page_url_when_source_url_is_absent(client, source_url, referer, page_url):
    body = {**SEED_EXAMPLE, "source_url": source_url}
    answer = dry_run(client, body, headers={**BROWSER, "Referer": referer})
    assert answer["destinations"][0]["payload"]["event_source_url"] == page_url
    assert answer["notes"] == SEED_NOTES + (["source_url: dropped, not an http(s) URL"] if source_url == "javascript:alert(1)" else [])


# --- custom properties and click ids -------------------------------------------------------------

def test_custom_properties_named_like_personal_data_are_dropped_with_a_reason(client):
    kept = {"plan": "pro", "email_opt_in": True, "phone_model": "Pixel 9", "cart": {"size": 3}}
    nested = {"customer": {"Email": NESTED_EMAIL, "tier": "gold"}, "contacts": [{"tel": NESTED_EMAIL}]}
    track(client, {**MINIMAL, **PII_PROPERTIES, **kept, **nested})
    row = Event.get()
    assert row.properties == {**kept, "customer": {"tier": "gold"}, "contacts": [{}]}
    assert row.notes == [f"{key}: {PII_NOTE}" for key in PII_PROPERTIES] + [
        f"customer.Email: {PII_NOTE}", f"contacts[0].tel: {PII_NOTE}"]


@pytest.mark.parametrize("fields, click_ids, notes", [
    ({"fbc": "fb.1.1554763741205.AbCdEf", "fbp": "fb.1.1596403881668.1116446470"},
     {"fbc": "fb.1.1554763741205.AbCdEf", "fbp": "fb.1.1596403881668.1116446470"}, []),
    ({"fbc": "fb.1.1554763741205.AbCdEf.Ag"}, {"fbc": "fb.1.1554763741205.AbCdEf.Ag"}, []),
    ({"gbraid": "0AAAAA-gb", "wbraid": "1BBBB-wb", "gclid": "Cj0KCQ"},
     {"gclid": "Cj0KCQ"}, ["gbraid, wbraid: dropped, both given but Google accepts only one"]),
    ({"wbraid": "1BBBB-wb"}, {"wbraid": "1BBBB-wb"}, []),
    ({"fbc": "fb.1.1554763741205.AbCdEf\n"}, {}, ["fbc: dropped, not a click id (text without spaces expected)"]),
    ({"fbc": "fb.12.1554763741205.AbCdEf"}, {}, [f"fbc: {NOT_FB_FORM}"]),
    ({"gclid": "Cj0 KCQ", "ttclid": 12345}, {}, ["gclid: dropped, not a click id (text without spaces expected)",
                                                  "ttclid: dropped, not a click id (text without spaces expected)"]),
    ({"ScCid": "sc-1", "_scid": "scid-2", "client_id": "GA1.1.111.222", "ttp": "ttp-3"},
     {"sccid": "sc-1", "scid": "scid-2", "ga_client_id": "GA1.1.111.222", "ttp": "ttp-3"}, []),
])
def test_click_ids_are_kept_byte_for_byte_or_dropped_with_a_reason(client, fields, click_ids, notes):
    track(client, {**MINIMAL, **fields})
    assert (Event.get().click_ids, Event.get().notes, Event.get().properties) == (click_ids, notes, {})


def test_a_valid_fbc_reaches_meta_byte_for_byte(client):
    answer = dry_run(client, {**SEED_EXAMPLE, "fbc": "fb.1.1554763741205.AbCdEf"})
    assert answer["destinations"][0]["payload"]["user_data"]["fbc"] == "fb.1.1554763741205.AbCdEf"
    assert answer["notes"] == [f"fbp: {NOT_FB_FORM}"]


# --- CORS and HTTP plumbing ---------------------------------------------------------------------

CORS = {
    "Access-Control-Allow-Origin": "https://shop.example",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, X-Postback-Client-IP, X-Postback-Client-User-Agent",
    "Access-Control-Max-Age": "600",
    "Vary": "Origin",
}


def cors_headers(response) -> dict:
    return {k: v for k, v in response.headers.items() if k.startswith("Access-Control-") or k == "Vary"}


def test_a_preflight_from_an_allowed_origin_is_allowed(client):
    response = client.options("/v1/track", headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"})
    assert (response.status_code, cors_headers(response)) == (204, CORS)


def test_a_post_from_an_allowed_origin_is_allowed(client):
    response = track(client, MINIMAL, headers={**BROWSER, "Origin": "https://shop.example"})
    assert (response.status_code, cors_headers(response)) == (200, CORS)


@pytest.mark.parametrize("origin", ["https://evil.example", "https://shop.example.evil.example", "null"])
def test_a_disallowed_origin_gets_no_cors_headers(client, origin):
    preflight = client.options("/v1/track", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    post = track(client, MINIMAL, headers={**BROWSER, "Origin": origin})
    assert (cors_headers(preflight), cors_headers(post), post.status_code) == ({}, {}, 200)


def test_only_the_keys_site_decides_once_the_key_is_known(raw_config, make_client):
    add_blog_site(raw_config)
    client = make_client()
    preflight = client.options("/v1/track", headers={"Origin": "https://blog.example", "Access-Control-Request-Method": "POST"})
    shop = track(client, MINIMAL, headers={**BROWSER, "Origin": "https://blog.example"})
    blog = track(client, {**MINIMAL, "api_key": "key_blog_456"}, headers={**BROWSER, "Origin": "https://blog.example"})
    assert preflight.headers.get("Access-Control-Allow-Origin") == "https://blog.example"  # before the key is known
    assert (cors_headers(shop), blog.headers.get("Access-Control-Allow-Origin")) == ({}, "https://blog.example")


def test_a_star_in_allowed_origins_allows_any_origin(raw_config, make_client):
    raw_config["sites"][0]["allowed_origins"] = ["*"]
    response = track(make_client(), MINIMAL, headers={**BROWSER, "Origin": "https://anything.example"})
    assert cors_headers(response) == {**CORS, "Access-Control-Allow-Origin": "https://anything.example"}


def test_a_refusal_carries_cors_headers_so_the_browser_can_read_it(client):
    response = track(client, {"api_key": "key_nope"}, headers={**BROWSER, "Origin": "https://shop.example"})
    assert (response.status_code, cors_headers(response)) == (401, CORS)


def test_get_on_the_track_url_is_a_json_405(client):
    response = client.get("/v1/track")
    allowed = sorted(response.headers["Allow"].split(", "))  # Werkzeug's order varies with hash seeding
    assert (response.status_code, response.content_type, allowed, response.get_json()) == (
        405, "application/json", ["OPTIONS", "POST"], {"error": "The method is not allowed for the requested URL.", "code": 405})


def test_an_unknown_path_is_a_json_404(client):
    response = client.post("/v2/track", json=MINIMAL)
    assert (response.status_code, response.content_type, response.get_json()) == (404, "application/json", {
        "error": "The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.",
        "code": 404})


# --- event names and the Meta preview ----------------------------------------------------------

@pytest.mark.parametrize("name, standard, meta_name", [
    ("purchase_completed", "Purchase", "Purchase"),
    ("checkout_done", "Purchase", "Purchase"),
    ("CONTACT", "Lead", "Lead"),
    ("Order Completed", "Purchase", "Purchase"),
    ("SIGN-UP", "CompleteRegistration", "CompleteRegistration"),
    ("generate_lead", "Lead", "Lead"),
    ("Checkout Started", "InitiateCheckout", "InitiateCheckout"),
    ("page.view", "PageView", "PageView"),
    ("Newsletter Opened", "Custom", "Newsletter Opened"),
])
def test_event_names_go_through_the_event_map_then_the_defaults(raw_config, make_client, name, standard, meta_name):
    raw_config["sites"][0]["event_map"].update({"checkout_done": "Purchase", "contact": "Lead"})
    client = make_client()
    body = {**SEED_EXAMPLE, "event": name, "event_id": None}
    answer = dry_run(client, body)
    track(client, body)

    assert (answer["destinations"][0]["status"], answer["destinations"][0]["payload"]["event_name"]) == ("would_send", meta_name)
    assert (Event.get().event_name, Event.get().standard_name) == (name, standard)


def test_meta_is_skipped_without_a_user_agent(client):
    answer = dry_run(client, SEED_EXAMPLE, headers={"User-Agent": "", "X-Postback-Client-IP": "203.0.113.7"})
    assert answer["destinations"] == [skipped("no user agent: Meta needs client_user_agent for website events")]


def test_meta_is_skipped_without_a_page_url_or_referrer(client):
    answer = dry_run(client, {**SEED_EXAMPLE, "source_url": None})
    assert answer["destinations"] == [skipped("no page URL or referrer: Meta needs event_source_url for website events")]


@pytest.mark.parametrize("fields", [{"value": None, "currency": None}, {"value": None}])
def test_a_purchase_without_value_is_skipped_for_meta(client, fields):
    answer = dry_run(client, {**SEED_EXAMPLE, **fields})
    assert answer["destinations"] == [skipped("Purchase without value and currency: Meta rejects it (subcode 2804009)")]


def test_meta_is_skipped_without_any_identifier_it_can_match(client):
    body = {"api_key": "key_demo_123", "event": "signed_up", "source_url": "https://shop.example/", "city": "Austin"}
    response = track(client, body, "?dry_run=1", headers={"User-Agent": UA}, environ_base={"REMOTE_ADDR": ""})
    answer = response.get_json()
    assert answer["destinations"] == [skipped("no usable identifier for Meta (email, phone, external id, fbc, fbp or IP)")]


def test_a_dry_run_shows_the_payload_of_a_send_skipped_for_consent_or_age(client):
    no_consent = dry_run(client, {**SEED_EXAMPLE, "consent": False})["destinations"][0]
    too_old = dry_run(client, {**SEED_EXAMPLE, "occurred_at": "2020-01-01T00:00:00Z"})["destinations"][0]

    assert (no_consent["status"], no_consent["reason"], no_consent["payload"]["event_id"]) == ("skipped", "no consent", "evt_unique123")
    assert (too_old["status"], too_old["reason"], too_old["payload"]["event_time"]) == (
        "skipped", "older than Meta's 7-day window: not sent", 1577836800)


def test_a_disabled_destination_is_not_listed_in_a_dry_run(raw_config, make_client):
    raw_config["sites"][0]["destinations"][0]["enabled"] = False
    client = make_client()
    answer = dry_run(client, SEED_EXAMPLE)
    track(client, SEED_EXAMPLE)
    assert (answer["destinations"], sends()) == ([], [])


def test_custom_properties_nested_past_the_depth_cap_are_dropped_not_a_500(client):
    deep: dict = {"leaf": 1}
    for _ in range(600):
        deep = {"n": deep}
    response = track(client, {**SEED_EXAMPLE, "event_id": "deep", "blob": deep})
    assert response.status_code == 200
    event = Event.get(Event.event_id == "deep")
    depth, node = 0, event.properties["blob"]
    while isinstance(node, dict):
        depth, node = depth + 1, node["n"]
    assert (depth, node) == (16, None)
    assert "blob" + ".n" * 16 + ": dropped, nested deeper than 16 levels" in event.notes
