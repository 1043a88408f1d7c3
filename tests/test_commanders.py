"""Commanders Act `POST /events`, User API and Product API through the Flask test client (docs/dialects/commanders.md)."""
from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from delivery import sends as delivery
from ingest.canonical import utcnow
from dialects.commanders.catalog import Product
from delivery.dispatcher import Dispatcher
from ingest.inspector import Refusal
from console.story import story
from models import Event, Send, database
from platforms import meta
from dialects.commanders.profiles import Profile
from tests.conftest import BROWSER, RAW_PII, build_config, meta_destination, with_destinations
from tests.helpers import every_table_text, sha

AUTH = {"Authorization": "Bearer key_demo_123"}
SEED_UA = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_0) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/46.0.2490.86 Safari/537.36")
SEED_EMAIL = "claire.dubois@example.com"  # the seed's "[email protected]" is a scraping artifact
# The seed's example, verbatim but for the email.
SEED = {
    "event_name": "search",
    "search_term": "t-shirts",
    "user": {"id": "12345", "email": SEED_EMAIL, "consent_categories": ["1", "3"]},
    "context": {
        "event_id": "202110130000000000",
        "page": {
            "title": "Search page",
            "url": "https://shop.com/search?q=...",
            "lang": "en",
            "referrer": "https://www.google.fr",
            "viewport": {"width": 320, "height": 568},
        },
        "device": {
            "user_agent": SEED_UA,
            "ip": "102.3.4.56",
            "lang": "fr",
            "cookie": "_fbp=123; _fbc=456; _ga=789",
            "timezone": "Europe/Paris",
        },
        "event_timestamp": "1639044446636",
    },
}
SEED_TIME = datetime(2021, 12, 9, 10, 7, 26, 636000, tzinfo=timezone.utc)
SEED_NOTES = ["fbc: dropped, not of the form fb.<digit>.<digits>.<value>",
              "fbp: dropped, not of the form fb.<digit>.<digits>.<value>"]
SEED_PROPERTIES = {
    "search_term": "t-shirts",
    "context": {"page": {"title": "Search page", "lang": "en", "viewport": {"width": 320, "height": 568}},
                "device": {"timezone": "Europe/Paris"}},
}
FBP = "fb.1.1596403881668.1116446470"
FBC = "fb.1.1554763741205.IwAR2F4-dbP0l7Mn1IawQQGCINEz7PYXQvwjNwB_qa2ofrHyiLjcbCRxTDMgk"

# Raw personal values only this file sends; the session-end scan looks for them in every database.
ERASED_EMAIL, SECOND_EMAIL, OTHER_EMAIL = "margot.lefevre@example.fr", "m.lefevre@example.org", "paul.girard@example.net"
ERASED_PHONE = "+33 6 12 34 56 78"
RAW_PII.extend([SEED_EMAIL, ERASED_EMAIL, SECOND_EMAIL, OTHER_EMAIL, ERASED_PHONE, "+33612345678", "33612345678",
                "Margot", "Lefevre", "Girard", "not-an-email", "1985-07-04", "+1 (555) 123-4567"])


def post(client, path: str, body, query: str = "tc_s=shop", headers: dict | None = None, **kwargs):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    kwargs.setdefault("content_type", "application/json")
    return client.post(f"{path}?{query}", data=data, headers=AUTH if headers is None else headers, **kwargs)


def event(client, body, **kwargs):
    return post(client, "/events", body, **kwargs)


def stored() -> tuple[int, int]:
    """(events, sends) in the database."""
    return Event.select().count(), Send.select().count()


def sends() -> list[tuple]:
    return [(s.destination, s.status, s.reason) for s in Send.select().order_by(Send.id)]


def refusals() -> list[tuple]:
    return [(r.site, r.dialect, r.reason) for r in Refusal.select().order_by(Refusal.id)]


def now_ms() -> int:
    return int(time.time() * 1000)


def fresh(event_id: str, **fields) -> dict:
    """A minimal event of now, as a website's server would post it."""
    return {"event_name": "page_view", **fields,
            "context": {"event_id": event_id, "event_timestamp": now_ms(),
                        "page": {"url": "https://shop.example/"}, "device": {"user_agent": BROWSER["User-Agent"]},
                        **fields.pop("context", {})}}


def add_blog_site(raw: dict) -> None:
    raw["sites"].append({"id": "blog", "name": "Blog", "keys": ["key_blog_456"], "default_country": "US",
                         "default_currency": "USD", "destinations": []})


@pytest.fixture
def make_client(request):
    """The test client built from `raw_config` as the test has edited it so far."""
    return lambda: request.getfixturevalue("client")


# --- the seed's example -------------------------------------------------------------------------

def test_the_seeds_example_is_stored_once_in_canonical_form(client):
    response = event(client, SEED)

    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})
    row = Event.get()
    data = dict(row.__data__)
    assert data.pop("received_at") == row.received_at
    assert data == {
        "id": row.id, "site": "shop", "dialect": "commanders", "channel": "web",
        "event_name": "search", "standard_name": "Search", "event_id": "202110130000000000",
        "occurred_at": SEED_TIME, "external_id": "12345", "anonymous_id": None,
        "identity": {"em": sha(SEED_EMAIL), "em_google": sha(SEED_EMAIL)},
        "location": {"country": "us"},
        "click_ids": {"ga_client_id": "789"},
        "ip": "102.3.4.56", "user_agent": SEED_UA, "page_url": "https://shop.com/search?q=...",
        "referrer": "https://www.google.fr", "language": "fr",
        "value": None, "currency": None, "order_id": None, "items": [],
        "consent": True, "consent_categories": ["1", "3"],
        "properties": SEED_PROPERTIES, "notes": SEED_NOTES, "is_bot": False,
    }
    assert sends() == [("shop/meta", "pending", None)]
    assert refusals() == [("shop", "commanders", "partly accepted: " + "; ".join(SEED_NOTES))]


def test_a_dry_run_of_the_seeds_example_shows_metas_item_and_stores_nothing(client):
    response = event(client, SEED, query="tc_s=shop&dry_run=1")

    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ok", "dry_run": True, "notes": SEED_NOTES,
        "destinations": [{
            "name": "meta", "platform": "meta", "mode": "dry", "url": "https://graph.facebook.com/v25.0/123/events",
            "status": "skipped", "reason": "older than Meta's 7-day window: not sent",
            "payload": {
                "event_name": "Search", "event_time": 1639044446, "event_id": "202110130000000000",
                "action_source": "website", "event_source_url": "https://shop.com/search?q=...",
                "user_data": {"em": [sha(SEED_EMAIL)], "country": [sha("us")], "external_id": [sha("12345")],
                              "client_ip_address": "102.3.4.56", "client_user_agent": SEED_UA},
                "custom_data": SEED_PROPERTIES,
            },
            "match_quality": {"score": 5.8, "identifiers": ["em", "external_id", "client_ip_address", "client_user_agent", "country"]},
        }],
    }
    assert (stored(), refusals()) == ((0, 0), [])


def test_the_seeds_example_is_acknowledged_again_but_stored_once(client):
    first, second = event(client, SEED), event(client, {**SEED, "event_name": "purchase"})
    assert first.get_json() == second.get_json() == {"status": "ok"}
    assert stored() == (1, 1)
    assert Event.get().event_name == "search"


def test_the_same_event_id_on_another_site_is_another_event(raw_config, make_client):
    add_blog_site(raw_config)
    client = make_client()
    event(client, SEED)
    event(client, SEED, query="tc_s=blog", headers={"Authorization": "Bearer key_blog_456"})
    assert [(e.site, e.event_id) for e in Event.select().order_by(Event.id)] == [
        ("shop", "202110130000000000"), ("blog", "202110130000000000")]


def test_an_event_without_event_id_gets_a_generated_one(client):
    event(client, {"event_name": "page_view"})
    event(client, {"event_name": "page_view"})
    ids = [e.event_id for e in Event.select()]
    assert len(set(ids)) == 2 and all(i.startswith("evt_") and len(i) == 36 for i in ids)


@pytest.mark.parametrize("content_type", ["text/plain;charset=UTF-8", "application/x-www-form-urlencoded", None])
def test_a_json_body_is_read_whatever_its_content_type(client, content_type):
    response = event(client, SEED, content_type=content_type)
    assert (response.get_json(), stored()) == ({"status": "ok"}, (1, 1))


def test_the_key_may_come_in_the_token_parameter_as_the_vendors_newer_docs_show(client):
    response = event(client, SEED, query="tc_s=shop&token=key_demo_123", headers={})
    assert (response.get_json(), stored()) == ({"status": "ok"}, (1, 1))


# --- the seed's two 400s, and everything else a silent 200 --------------------------------------

@pytest.mark.parametrize("data, message", [
    ("{nope", "Invalid JSON body"),
    ("", "Invalid JSON body"),
    ('{"event_name": "\\ud800"}', "Invalid JSON body"),
    ("[" * 100000 + "]" * 100000, "Request body too large"),
    ('{"a":' * 5000 + "1" + "}" * 5000, "Invalid JSON body"),
])
def test_only_invalid_json_or_an_oversize_body_is_a_400(client, data, message):
    response = event(client, data)
    assert (response.status_code, response.get_json()) == (400, {"status": "error", "message": message})
    assert (stored(), refusals()) == ((0, 0), [("shop", "commanders", message)])


def test_a_body_over_32_kb_is_refused_even_with_a_valid_key(client):
    body = json.dumps({**SEED, "search_term": "x" * 32768})
    response = event(client, body)
    assert (response.status_code, response.get_json(), stored()) == (
        400, {"status": "error", "message": "Request body too large"}, (0, 0))


GOOD = {"event_name": "purchase", "id": "ord-1", "revenue": 10, "currency": "EUR"}


@pytest.mark.parametrize("query, headers, body, site, reason", [
    ("", AUTH, GOOD, None, "Missing tc_s (site id)"),
    ("tc_s=", AUTH, GOOD, None, "Missing tc_s (site id)"),
    ("tc_s=nope", AUTH, GOOD, None, "Unknown site (tc_s)"),
    ("tc_s=shop", {}, GOOD, "shop", "Missing source key"),
    ("tc_s=shop", {"Authorization": "Basic a2V5X2RlbW9fMTIzOg=="}, GOOD, "shop", "Missing source key"),
    ("tc_s=shop", {"Authorization": "Bearer "}, GOOD, "shop", "Missing source key"),
    ("tc_s=shop", {"Authorization": "Bearer key_wrong_999"}, GOOD, "shop", "Invalid source key"),
    ("tc_s=shop", AUTH, [GOOD], "shop", "Request body must be a JSON object"),
    ("tc_s=shop", AUTH, "\"purchase\"", "shop", "Request body must be a JSON object"),
    ("tc_s=shop", AUTH, {"id": "ord-1"}, "shop", "Missing required field: event_name"),
    ("tc_s=shop", AUTH, {"event_name": 5}, "shop", "Invalid field: event_name (must be a non-empty string)"),
    ("tc_s=shop", AUTH, {"event_name": "  "}, "shop", "Invalid field: event_name (must be a non-empty string)"),
    ("tc_s=shop", AUTH, {**GOOD, "context": {"event_id": {"$gt": ""}}}, "shop",
     "Invalid field: context.event_id (must be a string or number)"),
    ("tc_s=shop", AUTH, {**GOOD, "context": {"event_id": "e" * 256}}, "shop",
     "Invalid field: context.event_id (must be at most 255 characters)"),
    ("tc_s=shop", AUTH, {**GOOD, "context": {"event_timestamp": "yesterday"}}, "shop",
     "Invalid field: context.event_timestamp (must be epoch milliseconds)"),
    ("tc_s=shop", AUTH, {**GOOD, "context": {"event_timestamp": 1639044446}}, "shop",
     "Invalid field: context.event_timestamp (must be epoch milliseconds; this is before 2000, seconds perhaps)"),
    ("tc_s=shop", AUTH, {**GOOD, "context": {"event_timestamp": True}}, "shop",
     "Invalid field: context.event_timestamp (must be epoch milliseconds)"),
    ("tc_s=shop", AUTH, {**GOOD, "context": {"event_timestamp": 1e300}}, "shop",
     "Invalid field: context.event_timestamp (must be epoch milliseconds)"),
    ("tc_s=shop", AUTH, {**GOOD, "context": {"event_timestamp": 10 ** 40}}, "shop",
     "Invalid field: context.event_timestamp (must be epoch milliseconds)"),
    ("tc_s=shop", AUTH, {**GOOD, "context": {"event_timestamp": "NaN"}}, "shop",
     "Invalid field: context.event_timestamp (must be epoch milliseconds)"),
    ("tc_s=shop", AUTH, {**GOOD, "context": {"event_timestamp": [1639044446636]}}, "shop",
     "Invalid field: context.event_timestamp (must be epoch milliseconds)"),
    ("tc_s=shop", AUTH, {**GOOD, "id": {"a": 1}}, "shop", "Invalid field: id (must be a string or number)"),
    ("tc_s=shop", AUTH, {**GOOD, "revenue": "abc"}, "shop", "Invalid field: revenue (must be a number)"),
    ("tc_s=shop", AUTH, {**GOOD, "revenue": True}, "shop", "Invalid field: revenue (must be a number)"),
    ("tc_s=shop", AUTH, {**GOOD, "value": -1}, "shop", "Invalid field: value (must not be negative)"),
    ("tc_s=shop", AUTH, {**GOOD, "value": 1e400}, "shop", "Invalid field: value (must be a number)"),
    ("tc_s=shop", AUTH, {**GOOD, "currency": "EURO"}, "shop",
     "Invalid field: currency (must be an ISO 4217 currency code such as USD)"),
    ("tc_s=shop", AUTH, {**GOOD, "user": {"consent_categories": "1,3"}}, "shop",
     "Invalid field: user.consent_categories (must be a list of category ids)"),
    ("tc_s=shop", AUTH, {**GOOD, "user": {"consent_categories": [[1]]}}, "shop",
     "Invalid field: user.consent_categories (must be a list of category ids)"),
    ("tc_s=shop", AUTH, {**GOOD, "user": {"consent_categories": [True]}}, "shop",
     "Invalid field: user.consent_categories (must be a list of category ids)"),
])
def test_anything_else_refused_is_a_silent_200_seen_in_the_inspector(client, query, headers, body, site, reason):
    response = event(client, body, query=query, headers=headers)
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})
    assert (stored(), refusals()) == ((0, 0), [(site, "commanders", reason)])


def test_a_key_of_another_site_is_refused_in_the_words_of_an_invalid_key(raw_config, make_client):
    add_blog_site(raw_config)
    client = make_client()
    response = event(client, SEED, query="tc_s=blog")
    user_api = client.post("/users?tc_s=blog", json={"id": "u1"}, headers=AUTH)
    assert (response.get_json(), user_api.get_json(), stored(), refusals()) == (
        {"status": "ok"}, {"status": "error", "message": "Invalid source key"}, (0, 0),
        [("blog", "commanders", "Invalid source key")] * 2)


def test_a_refused_dry_run_says_why_and_keeps_nothing(client):
    response = event(client, SEED, query="tc_s=shop&dry_run=1", headers={"Authorization": "Bearer key_wrong_999"})
    assert response.get_json() == {"status": "ok", "dry_run": True, "refused": "Invalid source key"}
    assert (stored(), refusals()) == ((0, 0), [])


def test_the_inspector_excerpt_of_a_refused_event_shows_no_personal_data(client):
    event(client, SEED, headers={"Authorization": "Bearer key_wrong_999"})
    excerpt = Refusal.get().excerpt
    assert excerpt["event_name"] == "search" and excerpt["user"] == "<dict>"
    assert excerpt["context"]["device"] == {"user_agent": "<str>", "ip": "<str>", "lang": "<str>", "cookie": "<str>",
                                            "timezone": "<str>"}
    assert SEED_EMAIL not in json.dumps(excerpt) and "102.3.4.56" not in json.dumps(excerpt)


# --- field mapping ------------------------------------------------------------------------------

@pytest.mark.parametrize("sent, expected", [
    ("1639044446636", SEED_TIME),
    (1639044446636, SEED_TIME),
    (" 1639044446636 ", SEED_TIME),
    (1639044446636.0, SEED_TIME),
    ("1639044446636.5", datetime(2021, 12, 9, 10, 7, 26, 636500, tzinfo=timezone.utc)),
])
def test_event_timestamp_is_epoch_milliseconds_as_a_string_or_number(client, sent, expected):
    event(client, {"event_name": "page_view", "context": {"event_timestamp": sent}})
    assert Event.get().occurred_at == expected


@pytest.mark.parametrize("cookie, click_ids, notes", [
    (f"_fbp={FBP}; _fbc={FBC}; _ga=GA1.1.1234567890.1639044446",
     {"fbp": FBP, "fbc": FBC, "ga_client_id": "GA1.1.1234567890.1639044446"}, []),
    ("_ttp=2Abc-ttp_Q; _scid=8f0e2a4c-scid; _gcl_aw=GCL.1639044446.CjwKCAjw-gclid_123",
     {"ttp": "2Abc-ttp_Q", "scid": "8f0e2a4c-scid", "gclid": "CjwKCAjw-gclid_123"}, []),
    ("_gcl_aw=CjwKCAjw-gclid_123", {}, ["_gcl_aw: dropped, not of the form GCL.<timestamp>.<gclid>"]),
    (f"session=s3cr3t;_fbp={FBP};_fbp=fb.1.1.other", {"fbp": FBP}, []),
    (f"  _fbp = {FBP} ;;; junk ; =x", {"fbp": FBP}, []),
    ("_ga=has space", {}, ["ga_client_id: dropped, not a click id (text without spaces expected)"]),
    ("_fbc=456", {}, ["fbc: dropped, not of the form fb.<digit>.<digits>.<value>"]),
    (42, {}, ["context.device.cookie: dropped, must be a string"]),
    ("", {}, []),
])
def test_click_ids_come_from_the_cookie_string_byte_for_byte(client, cookie, click_ids, notes):
    event(client, {"event_name": "page_view", "context": {"device": {"cookie": cookie}}})
    row = Event.get()
    assert (row.click_ids, row.notes, row.properties) == (click_ids, notes, {})


def test_the_cookie_string_itself_is_never_stored(client):
    event(client, {"event_name": "page_view", "context": {"device": {"cookie": f"session=s3cr3t-value; _fbp={FBP}"}}})
    assert "s3cr3t-value" not in json.dumps(Event.get().__data__, default=str)


def test_context_fields_win_over_the_request_and_the_request_fills_the_rest(client):
    headers = {**AUTH, **BROWSER, "Referer": "https://shop.example/cart", "Accept-Language": "de-DE,de;q=0.9"}
    event(client, SEED, headers=headers)
    event(client, {"event_name": "page_view", "context": {"event_id": "bare"}}, headers=headers)
    seed_row, bare = Event.select().order_by(Event.id)
    assert (seed_row.ip, seed_row.user_agent, seed_row.referrer, seed_row.language) == (
        "102.3.4.56", SEED_UA, "https://www.google.fr", "fr")
    assert (bare.ip, bare.user_agent, bare.referrer, bare.language, bare.page_url) == (
        "203.0.113.7", BROWSER["User-Agent"], "https://shop.example/cart", "de-DE", None)


@pytest.mark.parametrize("request_context, notes", [
    ({"device": {"ip": "999.1.1.1"}}, ["context.device.ip: dropped, not an IP address"]),
    ({"device": {"ip": 12}}, ["context.device.ip: dropped, not an IP address"]),
    ({"device": {"user_agent": ["x"]}}, ["context.device.user_agent: dropped, must be a string"]),
    ({"page": {"url": "javascript:alert(1)"}}, ["context.page.url: dropped, not an http(s) URL"]),
    ({"page": "https://shop.example/"}, ["context.page: ignored, must be an object"]),
    ({"device": [1, 2]}, ["context.device: ignored, must be an object"]),
])
def test_a_bad_context_field_is_dropped_with_a_reason_and_the_request_fills_in(client, request_context, notes):
    event(client, {"event_name": "page_view", "context": request_context}, headers={**AUTH, **BROWSER})
    row = Event.get()
    assert (row.notes, row.ip, row.user_agent, row.page_url) == (notes, "203.0.113.7", BROWSER["User-Agent"], None)
    assert refusals() == [("shop", "commanders", "partly accepted: " + "; ".join(notes))]


def test_a_context_that_is_not_an_object_is_ignored_with_a_reason(client):
    event(client, {"event_name": "page_view", "context": "nope"})
    assert (Event.get().notes, Event.get().properties) == (["context: ignored, must be an object"], {})


def test_the_user_object_is_hashed_and_its_unknown_keys_are_never_stored(client):
    user = {"id": 4711, "consistent_anonymous_id": "cax-77", "email": " Claire.Dubois@Example.com ",
            "phone": "+1 (555) 123-4567", "firstname": "Margot", "lastname": "Lefevre", "gender": "F",
            "birthdate": "1985-07-04", "city": "Paris", "zipcode": "75001", "country": "France",
            "email_md5": "0f1e2d", "loyalty": "gold", "consent_categories": []}
    event(client, {"event_name": "sign_up", "user": user})
    row = Event.get()
    assert (row.external_id, row.anonymous_id, row.standard_name) == ("4711", "cax-77", "CompleteRegistration")
    assert row.identity == {
        "em": sha(SEED_EMAIL), "em_google": sha(SEED_EMAIL), "ph": sha("15551234567"), "ph_e164": sha("+15551234567"),
        "fn": sha("margot"), "fn_compact": sha("margot"), "ln": sha("lefevre"), "ln_compact": sha("lefevre"),
        "ge": sha("f"), "db": sha("19850704"),
    }
    assert row.location == {"city": "paris", "zip": "75001", "country": "fr"}
    assert row.notes == ["user: dropped email_md5, loyalty (unknown user properties are never stored)"]
    assert (row.properties, row.consent_categories) == ({}, [])


@pytest.mark.parametrize("user, identity, notes", [
    ({"email": "not-an-email"}, {}, ["user.email: dropped, not a valid email address"]),
    ({"email_sha256": sha(SEED_EMAIL).upper()}, {"em": sha(SEED_EMAIL), "em_google": sha(SEED_EMAIL)}, []),
    ({"email_sha256": "abc"}, {}, ["user.email_sha256: dropped, not a SHA-256 hex digest"]),
    ({"email": SEED_EMAIL, "email_sha256": "0" * 64}, {"em": sha(SEED_EMAIL), "em_google": sha(SEED_EMAIL)}, []),
    ({"firstname": "..."}, {}, ["user.firstname: dropped, nothing left after removing punctuation and spaces"]),
    ({"gender": "x", "birthdate": "1985-07-04T00:00"}, {},
     ["user.gender: dropped, not one of f, m, female, male",
      "user.birthdate: dropped, not a date in YYYY-MM-DD, YYYYMMDD, MM/DD/YYYY or DD.MM.YYYY"]),
    ({"id": {"nested": 1}}, {}, ["user.id: dropped, must be a string or number"]),
    ("12345", {}, ["user: dropped, must be an object"]),
])
def test_a_bad_user_field_is_dropped_with_a_reason_and_the_event_kept(client, user, identity, notes):
    response = event(client, {"event_name": "page_view", "user": user})
    row = Event.get()
    assert (response.get_json(), row.identity, row.notes, row.external_id) == ({"status": "ok"}, identity, notes, None)


def test_unknown_top_level_keys_are_properties_but_never_those_named_like_personal_data(client):
    event(client, {"event_name": "page_view", "coupon": "XMAS", "email": "not-an-email", "nested": {"phone": "1985-07-04"}})
    row = Event.get()
    assert row.properties == {"coupon": "XMAS", "nested": {}}
    assert row.notes == ["email: dropped, a custom property named like personal data is never stored",
                         "nested.phone: dropped, a custom property named like personal data is never stored"]


PURCHASE_ITEMS = [
    {"id": "SKU_1", "quantity": 2, "price": 9.99, "variant": "red",
     "product": {"id": "P1", "name": "Trex tshirt", "category_1": "clothes", "brand": "Lacoste", "price": 12.0}},
    {"product": {"id": "P2", "price": "5"}, "quantity": "1"},
    {"id": "SKU_3"},
    "junk",
    {"id": "SKU_4", "quantity": "lots"},
    {"id": "SKU_5", "product": "P5"},
]


def test_purchase_fields_map_to_value_order_id_and_items(client):
    body = {"event_name": "purchase", "id": "O_12345", "revenue": "16.00", "value": 22.53, "currency": "eur",
            "items": PURCHASE_ITEMS}
    event(client, body)
    row = Event.get()
    assert (row.standard_name, row.order_id, row.value, row.currency) == ("Purchase", "O_12345", 16.0, "EUR")
    assert row.items == [
        {"id": "SKU_1", "quantity": 2, "price": 9.99, "name": "Trex tshirt", "category": "clothes", "brand": "Lacoste"},
        {"id": "P2", "quantity": 1, "price": 5.0},
        {"id": "SKU_3"},
        {"id": "SKU_5"},
    ]
    assert row.properties == {"value": 22.53}  # revenue is the value; the other figure is kept
    assert row.notes == ["items[3]: dropped, must be an object", "items[4]: dropped, quantity must be a number",
                         "items[5].product: ignored, must be an object"]


@pytest.mark.parametrize("fields, value, currency", [
    ({"value": 22.53, "currency": "EUR"}, 22.53, "EUR"),
    ({"revenue": 0}, 0.0, "USD"),
    ({"value": "7"}, 7.0, "USD"),
    ({"currency": "GBP"}, None, "GBP"),
    ({}, None, None),
])
def test_value_is_revenue_else_value_in_the_sites_default_currency(client, fields, value, currency):
    event(client, {"event_name": "purchase", **fields})
    assert (Event.get().value, Event.get().currency, Event.get().properties) == (value, currency, {})


def test_items_that_are_not_a_list_are_dropped_with_a_reason(client):
    event(client, {"event_name": "purchase", "items": {"id": "SKU_1"}})
    assert (Event.get().items, Event.get().notes) == ([], ["items: dropped, must be a list of objects"])


def test_unicode_and_huge_values_are_kept(client):
    name = "Achat confirmé ✓ 注文"
    event(client, {"event_name": name, "note": "é" * 4000, "user": {"firstname": "Zoë"}})
    row = Event.get()
    assert (row.event_name, row.standard_name, len(row.properties["note"]), row.identity["fn"]) == (
        name, "Custom", 4000, sha("zoë"))


# --- consent and routing ------------------------------------------------------------------------

def with_gated_destinations(raw: dict) -> dict:
    base = {"platform": "meta", "mode": "dry", "pixel_id": "123"}
    return with_destinations(raw, {**base, "name": "ads", "consent_category": 3},
                             {**base, "name": "analytics", "consent_category": "2"}, {**base, "name": "plain"})


@pytest.mark.parametrize("categories, expected", [
    (["1", "3"], [("shop/ads", "pending", None), ("shop/analytics", "skipped", "no consent for category 2"),
                  ("shop/plain", "pending", None)]),
    ([3, 2], [("shop/ads", "pending", None), ("shop/analytics", "pending", None), ("shop/plain", "pending", None)]),
    ([], [("shop/ads", "skipped", "no consent for category 3"),
          ("shop/analytics", "skipped", "no consent for category 2"), ("shop/plain", "pending", None)]),
    (None, [("shop/ads", "skipped", "no consent for category 3"),
            ("shop/analytics", "skipped", "no consent for category 2"), ("shop/plain", "pending", None)]),
])
def test_consent_categories_gate_the_destinations_that_name_one(raw_config, request, categories, expected):
    raw_config.update(with_gated_destinations(raw_config))
    client = request.getfixturevalue("client")
    user = {} if categories is None else {"consent_categories": categories}
    event(client, {**SEED, "user": user})
    assert sends() == expected


@pytest.mark.parametrize("categories, expected", [
    (["3"], [("shop/ads", "pending", None), ("shop/analytics", "skipped", "no consent for category 2"),
             ("shop/plain", "pending", None)]),
    ([], [("shop/ads", "skipped", "no consent"), ("shop/analytics", "skipped", "no consent"),
          ("shop/plain", "skipped", "no consent")]),
])
def test_with_consent_default_denied_only_categories_open_destinations(raw_config, request, categories, expected):
    raw_config.update(with_gated_destinations(raw_config))
    raw_config["privacy"]["consent_default"] = "denied"
    event(request.getfixturevalue("client"), {**SEED, "user": {"consent_categories": categories}})
    assert sends() == expected


def test_bot_traffic_is_stored_and_skipped(client):
    bot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
    event(client, {**SEED, "context": {**SEED["context"], "device": {"user_agent": bot}}})
    assert (Event.get().is_bot, sends()) == (True, [("shop/meta", "skipped", "bot")])


# --- CORS ---------------------------------------------------------------------------------------

def test_a_browser_preflight_from_an_allowed_origin_may_send_the_authorization_header(client):
    response = client.options("/events?tc_s=shop", headers={"Origin": "https://shop.example",
                                                            "Access-Control-Request-Method": "POST"})
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert response.headers["Access-Control-Allow-Headers"] == (
        "Content-Type, X-Postback-Client-IP, X-Postback-Client-User-Agent, Authorization")


def test_another_origin_gets_no_cors_headers(client):
    response = event(client, SEED, headers={**AUTH, "Origin": "https://evil.example"})
    assert (response.status_code, "Access-Control-Allow-Origin" in response.headers) == (200, False)


# --- User API -----------------------------------------------------------------------------------

PROFILE = {"id": "user-4711", "email": ERASED_EMAIL, "phone": ERASED_PHONE, "firstname": "Margot",
           "lastname": "Lefevre", "city": "Lyon", "country": "FR", "consistent_anonymous_id": "cax-9f3c",
           "consent_categories": ["1"]}
PROFILE_HASHES = {
    "em": sha(ERASED_EMAIL), "em_google": sha(ERASED_EMAIL), "ph": sha("33612345678"), "ph_e164": sha("+33612345678"),
    "fn": sha("margot"), "fn_compact": sha("margot"), "ln": sha("lefevre"), "ln_compact": sha("lefevre"),
}


def test_a_user_is_upserted_with_identity_hashed_at_ingest(client):
    first = post(client, "/users", PROFILE)
    second = post(client, "/users", {"id": "user-4711", "email": SECOND_EMAIL, "zipcode": "69001"})

    assert first.get_json() == second.get_json() == {"status": "ok"}
    profile = Profile.get()
    assert (profile.site, profile.user_id, profile.anonymous_id) == ("shop", "user-4711", "cax-9f3c")
    assert profile.identity == {**PROFILE_HASHES, "em": sha(SECOND_EMAIL), "em_google": sha(SECOND_EMAIL)}
    assert profile.location == {"city": "lyon", "zip": "69001", "country": "fr"}
    assert profile.updated_at >= profile.created_at
    assert refusals() == []


def test_an_event_naming_a_known_user_gets_the_profiles_identity(client):
    post(client, "/users", PROFILE)
    event(client, {"event_name": "page_view", "user": {"id": "user-4711", "firstname": "Margo"}})
    row = Event.get()
    assert row.identity == {**PROFILE_HASHES, "fn": sha("margo"), "fn_compact": sha("margo")}  # the event's own wins
    assert (row.location, row.anonymous_id) == ({"city": "lyon", "country": "fr"}, "cax-9f3c")


@pytest.mark.parametrize("query, headers, body, site, message", [
    ("tc_s=shop", {"Authorization": "Bearer key_wrong_999"}, PROFILE, "shop", "Invalid source key"),
    ("", AUTH, PROFILE, None, "Missing tc_s (site id)"),
    ("tc_s=shop", AUTH, {"email": ERASED_EMAIL}, "shop", "Missing required field: id"),
    ("tc_s=shop", AUTH, {"id": ["user-4711"]}, "shop", "Invalid field: id (must be a string or number)"),
    ("tc_s=shop", AUTH, [PROFILE], "shop", "Request body must be a JSON object"),
])
def test_a_refused_user_upsert_answers_200_with_an_error_body(client, query, headers, body, site, message):
    response = post(client, "/users", body, query=query, headers=headers)
    assert (response.status_code, response.get_json()) == (200, {"status": "error", "message": message})
    assert (Profile.select().count(), refusals()) == (0, [(site, "commanders", message)])


def test_a_user_upsert_with_invalid_json_is_a_400(client):
    response = post(client, "/users", "{nope")
    assert (response.status_code, response.get_json()) == (400, {"status": "error", "message": "Invalid JSON body"})


def test_a_partly_accepted_user_is_stored_and_shown_without_its_id(client):
    response = post(client, "/users", {"id": "user-4711", "email": "not-an-email", "phone": ERASED_PHONE})
    assert response.get_json() == {"status": "ok"}
    assert Profile.get().identity == {"ph": sha("33612345678"), "ph_e164": sha("+33612345678")}
    [entry] = Refusal.select()
    assert entry.reason == "partly accepted: user.email: dropped, not a valid email address"
    assert entry.excerpt == {"id": "<user id>", "email": "<str>", "phone": "<str>"}


def test_a_user_dry_run_stores_nothing(client):
    response = post(client, "/users", {**PROFILE, "email": "not-an-email"}, query="tc_s=shop&dry_run=1")
    assert response.get_json() == {
        "status": "ok", "dry_run": True, "notes": ["user.email: dropped, not a valid email address"],
        "identity": ["fn", "fn_compact", "ln", "ln_compact", "ph", "ph_e164"], "location": ["city", "country"]}
    assert (Profile.select().count(), refusals()) == (0, [])


# --- GDPR erasure -------------------------------------------------------------------------------

def seed_the_erased_users_data(client, config) -> None:
    """Events of user-4711 reached five ways, a few already dispatched (dry mode keeps their payloads)."""
    track = {"api_key": "key_demo_123", "event": "lead", "event_id": "cs-phone", "phone": "0033612345678",
             "source_url": "https://shop.example/lp"}
    assert post(client, "/users", PROFILE).get_json() == {"status": "ok"}
    event(client, fresh("by-id", user={"id": "user-4711"}, context={"device": {
        "user_agent": BROWSER["User-Agent"], "cookie": f"_fbp={FBP}", "ip": "198.51.100.23"}}))
    event(client, fresh("by-email", user={"email": ERASED_EMAIL.upper(), "email_sha256": "ignored"}))
    assert client.post("/v1/track", json=track, headers=BROWSER).status_code == 200
    event(client, fresh("by-anonymous-id", user={"consistent_anonymous_id": "cax-9f3c"}))
    event(client, fresh("other-user", user={"id": "user-0815", "email": OTHER_EMAIL, "firstname": "Margot",
                                            "lastname": "Girard"}))
    Dispatcher(lambda: config).drain_once(now=utcnow())  # dry mode: sends end skipped, payloads kept
    # Linked only through the second email, which only an event already found carries.
    event(client, fresh("by-second-email-a", user={"id": "user-4711", "email": SECOND_EMAIL}))
    event(client, fresh("by-second-email-b", user={"email": SECOND_EMAIL}))


def test_erasing_a_user_removes_every_trace_of_them_and_nothing_of_anyone_else(client, config):
    seed_the_erased_users_data(client, config)
    other_before = Event.get(Event.event_id == "other-user").__data__
    personal = {*PROFILE_HASHES.values(), sha(SECOND_EMAIL), sha("user-4711"), sha("cax-9f3c"),
                "user-4711", "cax-9f3c", FBP, "198.51.100.0"} - {sha("margot")}  # the other user is a Margot too
    before = every_table_text()
    assert all(value in before for value in personal - {sha("cax-9f3c")})
    assert "198.51.100.23" not in before  # every send is final: the event and the kept payloads hold the /24

    response = client.delete("/users/user-4711?tc_s=shop", headers=AUTH)

    assert (response.status_code, response.get_json()) == (
        200, {"status": "ok", "erased": {"profile": True, "events": 6, "sends": 6}})
    text = every_table_text()
    assert [value for value in personal if value in text] == []
    assert Profile.select().count() == 0
    erased = Event.select().where(Event.event_id != "other-user").order_by(Event.id)
    assert [(e.event_id, e.identity, e.location, e.external_id, e.anonymous_id, e.click_ids, e.ip, e.notes[-1])
            for e in erased] == [
        (event_id, {}, {}, None, None, {}, None, "personal data erased at the user's request (User API)")
        for event_id in ("by-id", "by-email", "cs-phone", "by-anonymous-id", "by-second-email-a", "by-second-email-b")]
    assert Event.get(Event.event_id == "other-user").__data__ == other_before
    assert [(s.event.event_id, s.status, s.reason, s.payload) for s in Send.select().order_by(Send.id)] == [
        ("by-id", "skipped", "dry mode", None),
        ("by-email", "skipped", "dry mode", None),
        ("cs-phone", "skipped", "dry mode", None),
        ("by-anonymous-id", "skipped", "dry mode", None),
        ("other-user", "skipped", "dry mode", None),  # not its claim's sample: rebuilt when shown
        ("by-second-email-a", "skipped", "user erased (User API): not sent", None),
        ("by-second-email-b", "skipped", "user erased (User API): not sent", None),
    ]
    other = story(config, Event.get(Event.event_id == "other-user").id)["sends"][0]
    assert (other["rebuilt"], other["payload"]["user_data"]["em"]) == (True, [sha(OTHER_EMAIL)])


@pytest.mark.sqlite_only(reason="SQLite's secure_delete and its files; PostgreSQL's dead tuples wait for VACUUM")
def test_after_erasure_the_database_files_hold_none_of_the_users_hashes(client, config):
    seed_the_erased_users_data(client, config)
    database.obj.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # their values now sit in the main file's pages
    database.obj.execute_sql("PRAGMA secure_delete = 0")  # SQLite's stock default (Debian builds it ON)
    client.delete("/users/user-4711?tc_s=shop", headers=AUTH)
    assert database.obj.execute_sql("PRAGMA secure_delete").fetchone() == (0,)  # the connection is as it was
    path = Path(config.database[len("sqlite:///"):])
    files = b"".join(f.read_bytes() for f in (path, path.with_name(path.name + "-wal")) if f.exists())
    assert [h for h in (sha(ERASED_EMAIL), sha(SECOND_EMAIL), sha("+33612345678"), sha("lefevre")) if h.encode() in files] == []


def test_a_send_in_flight_when_its_user_is_erased_records_nothing_back(client):
    event(client, fresh("in-flight", user={"id": "user-4711", "email": ERASED_EMAIL}))
    [claimed] = delivery.claim("shop/meta", meta.BATCH_LIMIT, utcnow(), timedelta(seconds=30))

    client.delete("/users/user-4711?tc_s=shop", headers=AUTH)

    assert delivery.finish(claimed, "sent", utcnow(), "truncate", payload={"em": sha(ERASED_EMAIL)}) is False
    assert (Send.get().status, Send.get().reason, Send.get().payload) == ("skipped", "user erased (User API): not sent", None)


def test_erasing_an_unknown_user_is_ok_and_erases_nothing(client):
    event(client, SEED)
    response = client.delete("/users/nobody?tc_s=shop", headers=AUTH)
    assert response.get_json() == {"status": "ok", "erased": {"profile": False, "events": 0, "sends": 0}}
    assert Event.get().identity == {"em": sha(SEED_EMAIL), "em_google": sha(SEED_EMAIL)}


def test_erasure_is_scoped_to_the_sites_own_events(raw_config, make_client):
    add_blog_site(raw_config)
    client = make_client()
    event(client, SEED)
    response = client.delete("/users/12345?tc_s=blog", headers={"Authorization": "Bearer key_blog_456"})
    assert response.get_json()["erased"] == {"profile": False, "events": 0, "sends": 0}
    assert Event.get().external_id == "12345"


def test_a_user_id_with_a_slash_or_unicode_is_erased_too(client):
    event(client, {"event_name": "page_view", "user": {"id": "crm/Zoë 7"}})
    response = client.delete("/users/crm%2FZo%C3%AB%207?tc_s=shop", headers=AUTH)
    assert (response.get_json()["erased"], Event.get().external_id) == ({"profile": False, "events": 1, "sends": 1}, None)


@pytest.mark.parametrize("query, headers, site, message", [
    ("tc_s=shop", {"Authorization": "Bearer key_wrong_999"}, "shop", "Invalid source key"),
    ("tc_s=shop", {}, "shop", "Missing source key"),
    ("tc_s=nope", AUTH, None, "Unknown site (tc_s)"),
])
def test_a_refused_erasure_erases_nothing_and_says_so(client, query, headers, site, message):
    post(client, "/users", PROFILE)
    response = client.delete(f"/users/user-4711?{query}", headers=headers)
    assert (response.status_code, response.get_json()) == (200, {"status": "error", "message": message})
    assert (Profile.select().count(), refusals()) == (1, [(site, "commanders", message)])


def test_a_user_id_longer_than_255_characters_is_refused(client):
    response = client.delete(f"/users/{'u' * 256}?tc_s=shop", headers=AUTH)
    assert response.get_json() == {"status": "error", "message": "Invalid user id (1 to 255 characters)"}


# --- Product API --------------------------------------------------------------------------------

TSHIRT = {"id": "SKU_1", "name": "Trex tshirt", "price": 12.5, "currency": "EUR", "category": "clothes",
          "brand": "Lacoste", "url": "https://shop.example/p/trex", "image_url": "https://cdn.shop.example/trex.jpg"}


def products() -> list[dict]:
    return [{k: v for k, v in p.__data__.items() if k not in ("id", "updated_at")}
            for p in Product.select().order_by(Product.id)]


def test_products_are_upserted_one_or_many_at_a_time(client):
    one = post(client, "/products", TSHIRT)
    many = post(client, "/products", [{"id": "SKU_1", "price": "11"}, {"id": 2, "name": "Cap"}])

    assert one.get_json() == {"status": "ok", "upserted": 1}
    assert many.get_json() == {"status": "ok", "upserted": 2}
    assert products() == [
        {"site": "shop", "product_id": "SKU_1", "name": "Trex tshirt", "price": 11.0, "currency": "EUR",
         "category": "clothes", "brand": "Lacoste", "url": "https://shop.example/p/trex",
         "attributes": {"image_url": "https://cdn.shop.example/trex.jpg"}},
        {"site": "shop", "product_id": "2", "name": "Cap", "price": None, "currency": None, "category": None,
         "brand": None, "url": None, "attributes": {}},
    ]


def test_bad_products_are_refused_one_by_one_and_the_rest_stored(client):
    body = [TSHIRT, {"name": "no id"}, {"id": "SKU_2", "price": "free"}, {"id": "SKU_3", "url": "ftp://x"},
            {"id": "SKU_4", "currency": "euros"}, {"id": "SKU_5", "name": {"en": "Cap"}}, "SKU_6",
            {"id": "SKU_7", "email": "not-an-email"}]
    response = post(client, "/products", body)

    assert response.get_json() == {"status": "error", "message": "6 of 8 products refused", "upserted": 2, "rejected": [
        {"index": 1, "message": "Missing required field: id"},
        {"index": 2, "message": "Invalid field: price (must be a number)"},
        {"index": 3, "message": "Invalid field: url (must be an http(s) URL)"},
        {"index": 4, "message": "Invalid field: currency (must be an ISO 4217 currency code such as USD)"},
        {"index": 5, "message": "Invalid field: name (must be text)"},
        {"index": 6, "message": "Invalid field: product (must be an object)"},
    ]}
    assert [p["product_id"] for p in products()] == ["SKU_1", "SKU_7"]
    assert products()[1]["attributes"] == {}
    assert refusals()[0][2].startswith("partly accepted: products[1]: Missing required field: id; ")
    assert refusals()[0][2].endswith("; products[7].email: dropped, a custom property named like personal data is never stored")


@pytest.mark.parametrize("query, headers, body, site, message", [
    ("tc_s=shop", {"Authorization": "Bearer key_wrong_999"}, TSHIRT, "shop", "Invalid source key"),
    ("tc_s=shop", AUTH, "\"SKU_1\"", "shop", "Request body must be a product object or a list of them"),
])
def test_a_refused_product_upsert_answers_200_with_an_error_body(client, query, headers, body, site, message):
    response = post(client, "/products", body, query=query, headers=headers)
    assert (response.status_code, response.get_json()) == (200, {"status": "error", "message": message})
    assert (products(), refusals()) == ([], [(site, "commanders", message)])


def test_a_product_dry_run_validates_and_stores_nothing(client):
    response = post(client, "/products", [TSHIRT, {"price": 1}], query="tc_s=shop&dry_run=1")
    assert response.get_json() == {"status": "error", "message": "1 of 2 products refused", "upserted": 1,
                                   "rejected": [{"index": 1, "message": "Missing required field: id"}], "dry_run": True}
    assert (products(), refusals()) == ([], [])


def test_purchase_items_are_enriched_from_the_catalogue_at_ingest(client):
    post(client, "/products", [TSHIRT, {"id": "SKU_2", "name": "Cap", "price": 5, "currency": "USD"},
                               {"id": "SKU_3", "name": "Sticker", "price": 1}])
    event(client, {"event_name": "purchase", "revenue": 30, "currency": "EUR", "items": [
        {"id": "SKU_1", "quantity": 2}, {"id": "SKU_2", "quantity": 1}, {"id": "SKU_3", "price": 2, "name": "Own name"},
        {"id": "SKU_404"}]})
    assert Event.get().items == [
        {"id": "SKU_1", "quantity": 2, "price": 12.5, "name": "Trex tshirt", "category": "clothes", "brand": "Lacoste"},
        {"id": "SKU_2", "quantity": 1, "name": "Cap"},  # a USD price would be wrong in an EUR order
        {"id": "SKU_3", "price": 2.0, "name": "Own name"},
        {"id": "SKU_404"},
    ]


def test_the_catalogue_of_another_site_is_not_used(raw_config, make_client):
    add_blog_site(raw_config)
    client = make_client()
    post(client, "/products", TSHIRT, query="tc_s=blog", headers={"Authorization": "Bearer key_blog_456"})
    event(client, {"event_name": "purchase", "items": [{"id": "SKU_1"}]})
    assert Event.get().items == [{"id": "SKU_1"}]


# --- through the dispatcher to a fake Meta ------------------------------------------------------

@pytest.fixture
def live_meta(raw_config, fake_meta, request):
    """A client whose site's only destination is a live Meta at the fake, and a dispatcher for it."""
    raw_config.update(with_destinations(raw_config, meta_destination(fake_meta.url)))
    client = request.getfixturevalue("client")
    dispatcher = Dispatcher(lambda: build_config(raw_config))
    yield client, dispatcher
    dispatcher.close()


def test_an_enriched_purchase_reaches_meta_with_the_catalogues_prices(live_meta, fake_meta):
    client, dispatcher = live_meta
    post(client, "/products", [TSHIRT, {"id": "SKU_2", "name": "Cap", "price": 5, "currency": "EUR"}])
    moment = now_ms()
    event(client, {
        "event_name": "purchase", "id": "O_12345", "revenue": 30, "currency": "EUR",
        "items": [{"id": "SKU_1", "quantity": 2}, {"id": "SKU_2"}],
        "user": {"id": "12345", "email": SEED_EMAIL, "consent_categories": ["1"]},
        "context": {"event_id": "purchase-1", "event_timestamp": str(moment),
                    "page": {"url": "https://shop.example/thanks"},
                    "device": {"user_agent": SEED_UA, "ip": "102.3.4.56", "cookie": f"_fbp={FBP}; _fbc={FBC}"}},
    })

    assert dispatcher.drain_once(now=utcnow()) == {"shop/meta": 1}

    assert fake_meta.events == [{
        "event_name": "Purchase",
        "event_time": moment // 1000,
        "event_id": "purchase-1",
        "action_source": "website",
        "event_source_url": "https://shop.example/thanks",
        "user_data": {"em": [sha(SEED_EMAIL)], "country": [sha("us")], "external_id": [sha("12345")],
                      "client_ip_address": "102.3.4.56", "client_user_agent": SEED_UA, "fbc": FBC, "fbp": FBP},
        "custom_data": {"value": 30.0, "currency": "EUR", "order_id": "O_12345",
                        "contents": [{"id": "SKU_1", "quantity": 2, "item_price": 12.5}, {"id": "SKU_2", "item_price": 5.0}],
                        "content_ids": ["SKU_1", "SKU_2"], "content_type": "product", "num_items": 3},
    }]
    assert Send.get().status == "sent"
