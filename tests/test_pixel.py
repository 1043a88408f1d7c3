"""PitchTarget pixel `GET /{app_token}/{event|revenue}.gif` through the Flask test client (docs/dialects/pixel.md)."""
from __future__ import annotations

import base64
import json
import logging
import re
import runpy
from datetime import timedelta
from types import SimpleNamespace
from urllib.parse import parse_qsl, urlencode

import pytest
from gunicorn.config import Config as GunicornConfig
from gunicorn.glogging import Logger as GunicornLogger
from peewee import SqliteDatabase
from werkzeug.exceptions import NotFound
from werkzeug.test import EnvironBuilder

from ingest import inspector
from dialects.pixel import profiles as pixel_profiles
from ingest.canonical import utcnow
from delivery.dispatcher import Dispatcher
from ingest.inspector import Refusal
from models import Event, Send, database
from dialects.pixel.profiles import PixelProfile
from routes.pixel import COOKIE, GIF
from tests.conftest import BROWSER, RAW_PII, ROOT, build_config, meta_destination, with_destinations
from tests.helpers import sha

TOKEN = "52fb5565a7b23ec66fad3988"
UA = BROWSER["User-Agent"]
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
SIGNUP_PAGE = "https://shop.example/signup.html"
THANKS_PAGE = "https://shop.example/thanks"
# The seed's two examples, verbatim but for the host.
SEED_SIGNUP = (f"/{TOKEN}/event.gif?event_token=signup&params="
               "eyJtZXRob2QiOiJlbWFpbCIsInBhZ2UiOiJzaWdudXAuaHRtbCIsImVtYWlsIjoiam9obi5kb2VAZXhhbXBsZS5jb20ifQ==")
SEED_REVENUE = f"/{TOKEN}/revenue.gif?event_token=purchase&amount=2500"
SEED_EMAIL = "john.doe@example.com"
OTHER_EMAIL = "mary.major@example.net"
ACCESS_TOKEN = "EAABsbCS1iHgBAKZCZBpixeltokenZDZD"
PERSON = {"email": OTHER_EMAIL, "phone_number": "+1 415 555 0100", "full_name": "Marigold Quixote", "first_name": "Marigold"}
# The access token is no PII, but it must never be stored either.
RAW_PII.extend([OTHER_EMAIL, ACCESS_TOKEN, "+1 415 555 0100", "Marigold Quixote", "Marigold"])
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
EVENT_ID_RE = re.compile(r"evt_[0-9a-f]{32}")
DROPPED_KEY = "dropped, keys starting with $ or _ or containing . are ignored"


def b64(value, url_safe: bool = False, padded: bool = True) -> str:
    raw = json.dumps(value, separators=(",", ":")).encode() if not isinstance(value, bytes) else value
    text = (base64.urlsafe_b64encode if url_safe else base64.b64encode)(raw).decode()
    return text if padded else text.rstrip("=")


def page(url: str = SIGNUP_PAGE, ua: str = UA) -> dict:
    """What a browser sends when an <img> on `url` loads the pixel."""
    return {"User-Agent": ua, "Referer": url}


def hit(client, category: str = "event", query: str | dict = "", headers: dict | None = None, token: str = TOKEN, **kwargs):
    query = urlencode(query) if isinstance(query, dict) else query
    kwargs.setdefault("environ_base", {"REMOTE_ADDR": "203.0.113.7"})
    return client.get(f"/{token}/{category}.gif" + (f"?{query}" if query else ""),
                      headers=page() if headers is None else headers, **kwargs)


def assert_gif(response) -> None:
    assert (response.status_code, response.data, response.content_type) == (200, GIF, "image/gif")
    assert response.headers["Cache-Control"] == "no-store"


def stored() -> tuple[int, int, int]:
    """(events, sends, profiles) in the database."""
    return Event.select().count(), Send.select().count(), PixelProfile.select().count()


def reasons() -> list[str]:
    return [r.reason for r in Refusal.select().order_by(Refusal.id)]


def visitor(client) -> str:
    return client.get_cookie(COOKIE).value


def profile(uuid: str) -> dict:
    row = PixelProfile.get(PixelProfile.uuid == uuid)
    return {"site": row.site, "uuid": row.uuid, "identity": row.identity, "fbid": row.fbid}


def em(email: str) -> dict:
    return {"em": sha(email), "em_google": sha(email)}


# --- the GIF itself -----------------------------------------------------------------------------

def test_the_gif_is_the_43_byte_transparent_1x1_gif89a():
    assert len(GIF) == 43
    assert GIF[:6] == b"GIF89a" and GIF[6:10] == b"\x01\x00\x01\x00"  # width 1, height 1
    graphic_control = GIF[19:27]
    assert graphic_control[:3] == b"!\xf9\x04" and graphic_control[3] & 1 == 1  # transparency flag set
    assert GIF[-1:] == b";"


# --- the seed's examples ------------------------------------------------------------------------

def test_the_seed_signup_example_answers_the_gif_and_stores_the_canonical_event(client):
    response = hit(client, query=SEED_SIGNUP.split("?")[1])

    assert_gif(response)
    assert response.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    uuid = visitor(client)
    assert UUID_RE.fullmatch(uuid)
    row = Event.get()
    data = dict(row.__data__)
    assert data.pop("occurred_at") == data.pop("received_at")
    assert EVENT_ID_RE.fullmatch(data.pop("event_id"))
    assert data == {
        "id": row.id, "site": "shop", "dialect": "pixel", "channel": "web",
        "event_name": "signup", "standard_name": "CompleteRegistration",
        "external_id": None, "anonymous_id": uuid,
        "identity": em(SEED_EMAIL), "location": {"country": "us"}, "click_ids": {},
        "ip": "203.0.113.7", "user_agent": UA, "page_url": SIGNUP_PAGE, "referrer": None, "language": None,
        "value": None, "currency": None, "order_id": None, "items": [],
        "consent": True, "consent_categories": None,
        "properties": {"method": "email", "page": "signup.html"}, "notes": [], "is_bot": False,
    }
    assert [(s.destination, s.status, s.reason) for s in Send.select()] == [("shop/meta", "pending", None)]
    assert profile(uuid) == {"site": "shop", "uuid": uuid, "identity": em(SEED_EMAIL), "fbid": None}
    assert reasons() == []


def test_the_seed_revenue_example_is_a_purchase_matched_on_the_email_sent_at_signup(client):
    assert_gif(hit(client, query=SEED_SIGNUP.split("?")[1]))
    uuid = visitor(client)

    response = hit(client, "revenue", SEED_REVENUE.split("?")[1], headers=page(THANKS_PAGE))

    assert_gif(response)
    assert visitor(client) == uuid
    row = Event.select().order_by(Event.id.desc()).get()
    assert (row.event_name, row.standard_name, row.value, row.currency) == ("purchase", "Purchase", 25.0, "USD")
    assert (row.anonymous_id, row.identity, row.page_url, row.properties, row.notes) == (uuid, em(SEED_EMAIL), THANKS_PAGE, {}, [])
    assert stored() == (2, 2, 1)


@pytest.fixture
def meta_client(raw_config, fake_meta, request):
    """A client whose site's only destination is a live Meta at the fake, and a dispatcher reading the same config."""
    raw = with_destinations(raw_config, meta_destination(fake_meta.url))
    raw_config.clear()
    raw_config.update(raw)
    dispatcher = Dispatcher(lambda: build_config(raw))
    yield request.getfixturevalue("client"), dispatcher
    dispatcher.close()


def test_a_revenue_call_without_email_reaches_meta_with_the_email_hash_from_the_earlier_call(meta_client, fake_meta):
    client, dispatcher = meta_client
    assert_gif(hit(client, query=SEED_SIGNUP.split("?")[1]))
    assert_gif(hit(client, "revenue", "event_token=checkout&amount=2500", headers=page(THANKS_PAGE)))
    signup, purchase = Event.select().order_by(Event.id)

    assert dispatcher.drain_once(now=utcnow()) == {"shop/meta": 2}

    user = {"em": [sha(SEED_EMAIL)], "country": [sha("us")], "client_ip_address": "203.0.113.7", "client_user_agent": UA}
    assert fake_meta.events == [
        {"event_name": "CompleteRegistration", "event_time": int(signup.occurred_at.timestamp()),
         "event_id": signup.event_id, "action_source": "website", "event_source_url": SIGNUP_PAGE,
         "user_data": user, "custom_data": {"method": "email", "page": "signup.html"}},
        {"event_name": "Purchase", "event_time": int(purchase.occurred_at.timestamp()),
         "event_id": purchase.event_id, "action_source": "website", "event_source_url": THANKS_PAGE,
         "user_data": user, "custom_data": {"value": 25.0, "currency": "USD"}},
    ]
    assert [s.status for s in Send.select().order_by(Send.id)] == ["sent", "sent"]


def test_an_fbid_given_earlier_reaches_meta_in_clear_as_fb_login_id(meta_client, fake_meta):
    client, dispatcher = meta_client
    assert_gif(hit(client, query={"event_token": "signup", "params": b64({"fbid": "10001"})}, headers=page(SIGNUP_PAGE)))
    assert_gif(hit(client, "revenue", "event_token=checkout&amount=990", headers=page(THANKS_PAGE)))

    dispatcher.drain_once(now=utcnow())

    assert [e["user_data"].get("fb_login_id") for e in fake_meta.events] == ["10001", "10001"]


# --- the visitor: uuid, cookie, profile ---------------------------------------------------------

def test_the_cookie_lasts_400_days_for_the_whole_host_and_is_lax_over_http(client):
    hit(client, query={"event_token": "signup"})
    cookie = client.get_cookie(COOKIE)
    assert (cookie.max_age, cookie.path, cookie.http_only, cookie.secure, cookie.same_site) == (400 * 86400, "/", True, False, "Lax")


def test_over_https_the_cookie_is_secure_and_samesite_none(client):
    hit(client, query={"event_token": "signup"}, base_url="https://localhost")
    cookie = client.get_cookie(COOKIE)
    assert (cookie.secure, cookie.same_site) == (True, "None")


@pytest.mark.parametrize("trusted, secure", [(0, False), (1, True)])
def test_x_forwarded_proto_counts_only_behind_trusted_proxies(raw_config, request, trusted, secure):
    raw_config["server"]["trusted_proxies"] = trusted
    client = request.getfixturevalue("client")
    header = hit(client, query={"event_token": "signup"}, headers={**page(), "X-Forwarded-Proto": "https"}).headers["Set-Cookie"]
    assert ("Secure" in header, "SameSite=None" in header) == (secure, secure)


def test_a_uuid_in_params_wins_over_the_cookie_and_becomes_the_cookie(client):
    hit(client, query={"event_token": "view"})
    first = visitor(client)

    hit(client, query={"event_token": "signup", "params": b64({"uuid": "acct-42", "email": SEED_EMAIL})})
    hit(client, "revenue", {"event_token": "checkout", "amount": "1999"})

    assert visitor(client) == "acct-42"
    assert [e.anonymous_id for e in Event.select().order_by(Event.id)] == [first, "acct-42", "acct-42"]
    assert Event.select().order_by(Event.id.desc()).get().identity == em(SEED_EMAIL)
    assert [p.uuid for p in PixelProfile.select()] == ["acct-42"]


def test_a_numeric_uuid_is_kept_as_text(client):
    hit(client, query={"event_token": "signup", "params": b64({"uuid": 12345, "fbid": 678})})
    assert (visitor(client), profile("12345")["fbid"]) == ("12345", "678")


def test_another_visitor_does_not_inherit_the_first_ones_email(app):
    alice, bob = app.test_client(), app.test_client()
    hit(alice, query=SEED_SIGNUP.split("?")[1])
    hit(bob, "revenue", SEED_REVENUE.split("?")[1])

    purchase = Event.select().order_by(Event.id.desc()).get()
    assert visitor(alice) != visitor(bob) == purchase.anonymous_id
    assert purchase.identity == {}


def test_later_calls_merge_into_the_profile_and_newer_values_win(client):
    hit(client, query={"event_token": "signup", "params": b64({"email": SEED_EMAIL, "fbid": "10001"})})
    hit(client, query={"event_token": "lead", "params": b64({"phone": "+1 415 555 0100"})})
    hit(client, query={"event_token": "lead", "params": b64({"email": OTHER_EMAIL})})
    hit(client, query={"event_token": "view"})

    uuid = visitor(client)
    phone = {"ph": sha("14155550100"), "ph_e164": sha("+14155550100")}
    assert profile(uuid) == {"site": "shop", "uuid": uuid, "identity": {**em(OTHER_EMAIL), **phone}, "fbid": "10001"}
    assert [e.identity for e in Event.select().order_by(Event.id)] == [
        em(SEED_EMAIL), {**em(SEED_EMAIL), **phone}, {**em(OTHER_EMAIL), **phone}, {**em(OTHER_EMAIL), **phone}]


@pytest.mark.parametrize("fbid, kept", [("10001", "10001"), (10001, "10001"), (" 42 ", "42")])
def test_a_numeric_fbid_attaches_to_the_profile(client, fbid, kept):
    assert_gif(hit(client, query={"event_token": "signup", "params": b64({"fbid": fbid})}))
    assert profile(visitor(client))["fbid"] == kept
    assert (Event.get().notes, Event.get().properties) == ([], {})


@pytest.mark.parametrize("fbid", ["john.doe", "zuck", -5, 1.5, True, {"id": 1}, "1" * 21])
def test_an_fbid_that_is_not_numeric_is_dropped_with_a_reason(client, fbid):
    assert_gif(hit(client, query={"event_token": "signup", "params": b64({"fbid": fbid})}))
    note = "fbid: dropped, must be a numeric Facebook user id (usernames are not accepted)"
    assert (Event.get().notes, stored()) == ([note], (1, 1, 0))
    assert reasons() == [f"partly accepted: {note}"]


@pytest.mark.parametrize("uuid", ["has space", "x" * 256, "", {"a": 1}])
def test_an_unusable_uuid_falls_back_to_the_cookie(client, uuid):
    hit(client, query={"event_token": "view"})
    first = visitor(client)
    hit(client, query={"event_token": "signup", "params": b64({"uuid": uuid, "email": SEED_EMAIL})})
    assert (visitor(client), Event.select().order_by(Event.id.desc()).get().anonymous_id) == (first, first)
    notes = Event.select().order_by(Event.id.desc()).get().notes
    assert notes == ([] if uuid == "" else ["uuid: dropped, must be printable text without spaces, at most 255 characters"])


def test_a_tampered_cookie_is_replaced_by_a_new_uuid(client):
    client.set_cookie(COOKIE, "bad value with spaces")
    hit(client, query={"event_token": "view"})
    assert UUID_RE.fullmatch(visitor(client)) and Event.get().anonymous_id == visitor(client)


# --- event names, amounts, currencies -----------------------------------------------------------

@pytest.mark.parametrize("token, standard", [
    ("signup", "CompleteRegistration"),
    ("signed_up", "CompleteRegistration"),  # the site's event_map
    ("Add To Cart", "AddToCart"),
    ("purchase", "Purchase"),
    ("newsletter_optin", "Custom"),
    ("inscrição", "Custom"),
])
def test_event_gif_maps_its_token_like_any_event_name(client, token, standard):
    assert_gif(hit(client, query={"event_token": token}))
    assert (Event.get().event_name, Event.get().standard_name) == (token, standard)


@pytest.mark.parametrize("token", ["checkout", "purchase", "signup", "renewal"])
def test_every_revenue_gif_event_is_a_purchase_that_keeps_its_token_as_name(client, token):
    assert_gif(hit(client, "revenue", {"event_token": token, "amount": "2500"}))
    row = Event.get()
    assert (row.event_name, row.standard_name, row.value, row.currency) == (token, "Purchase", 25.0, "USD")


@pytest.mark.parametrize("amount, currency, value, kept", [
    ("2500", None, 25.0, "USD"),
    ("1999", "eur", 19.99, "EUR"),
    ("0", None, 0.0, "USD"),
    (" 7 ", None, 0.07, "USD"),
    ("2500", "JPY", 2500.0, "JPY"),  # `amount` counts the currency's minor unit: yen have none
    ("2500", "KWD", 2.5, "KWD"),
    ("999999999999999", None, 9999999999999.99, "USD"),
])
def test_amount_is_integer_minor_units_in_the_sites_currency_unless_params_carry_one(client, amount, currency, value, kept):
    params = {"params": b64({"currency": currency})} if currency else {}
    assert_gif(hit(client, "revenue", {"event_token": "checkout", "amount": amount, **params}))
    assert (Event.get().value, Event.get().currency) == (value, kept)


def test_an_amount_on_event_gif_is_its_value(client):
    hit(client, query={"event_token": "lead", "amount": "500"})
    assert (Event.get().standard_name, Event.get().value, Event.get().currency) == ("Lead", 5.0, "USD")


def test_an_event_gif_without_amount_has_no_value(client):
    hit(client, query={"event_token": "lead", "params": b64({"currency": "EUR"})})
    assert (Event.get().value, Event.get().currency) == (None, "EUR")


def test_an_event_id_in_params_is_the_dedup_key_and_a_repeat_is_stored_once(client):
    query = {"event_token": "checkout", "amount": "2500", "params": b64({"event_id": "order-77", "email": SEED_EMAIL})}
    assert_gif(hit(client, "revenue", query))
    assert_gif(hit(client, "revenue", query))
    assert (Event.get().event_id, stored()) == ("order-77", (1, 1, 1))


def test_without_an_event_id_each_load_is_its_own_event(client):
    hit(client, query={"event_token": "view"})
    hit(client, query={"event_token": "view"})
    ids = [e.event_id for e in Event.select()]
    assert len(set(ids)) == 2 and all(EVENT_ID_RE.fullmatch(i) for i in ids)


# --- params: formats and key rules --------------------------------------------------------------

TRICKY = {"note": "ÿþ>?~~", "n": 1}  # its Base64 holds '+' and '/' (or '-' and '_' in the URL-safe alphabet)


@pytest.mark.parametrize("encoded", [
    b64(TRICKY),
    b64(TRICKY, padded=False),
    b64(TRICKY, url_safe=True),
    b64(TRICKY, url_safe=True, padded=False),
    json.dumps(TRICKY),
    json.dumps(TRICKY, ensure_ascii=False),
    base64.encodebytes(json.dumps({**TRICKY, "pad": "x" * 80}).encode()).decode(),  # MIME-wrapped lines
])
def test_params_may_be_standard_or_url_safe_base64_padded_or_not_or_url_encoded_json(client, encoded):
    assert re.search(r"[+/]", b64(TRICKY)) and re.search(r"[-_]", b64(TRICKY, url_safe=True))
    assert_gif(hit(client, query={"event_token": "view", "params": encoded}))
    assert {k: v for k, v in Event.get().properties.items() if k != "pad"} == TRICKY


def test_a_base64_plus_left_unescaped_in_the_url_still_decodes(client):
    encoded = b64(TRICKY)
    assert "+" in encoded
    assert_gif(hit(client, query=f"event_token=view&params={encoded}"))  # '+' arrives as a space
    assert Event.get().properties == TRICKY


def test_unicode_in_params_and_tokens_is_kept(client):
    hit(client, query={"event_token": "注册", "params": b64({"plan": "Über 🚀", "city": "São Paulo"})})
    row = Event.get()
    assert (row.event_name, row.properties, row.location) == ("注册", {"plan": "Über 🚀"}, {"city": "são paulo", "country": "us"})


def test_keys_starting_with_dollar_or_underscore_or_containing_a_dot_are_dropped_at_any_depth(client):
    params = {"$browser": "x", "_ga": "y", "a.b": 1, "plan": "pro", "cart": {"_internal": 1, "sku": "s1", "x.y": [1]},
              "lines": [{"$price": 2, "qty": 1}]}
    assert_gif(hit(client, query={"event_token": "view", "params": b64(params)}))
    row = Event.get()
    notes = [f"params.$browser: {DROPPED_KEY}", f"params._ga: {DROPPED_KEY}", f"params.a.b: {DROPPED_KEY}",
             f"params.cart._internal: {DROPPED_KEY}", f"params.cart.x.y: {DROPPED_KEY}", f"params.lines.$price: {DROPPED_KEY}"]
    assert (row.properties, row.notes) == ({"plan": "pro", "cart": {"sku": "s1"}, "lines": [{"qty": 1}]}, notes)
    assert reasons() == ["partly accepted: " + "; ".join(notes)]


def test_personal_data_in_params_is_hashed_or_dropped_never_stored_raw(client):
    assert_gif(hit(client, query={"event_token": "signup", "params": b64({**PERSON, "plan": "pro"})}))
    row = Event.get()
    assert row.identity == {**em(OTHER_EMAIL), "fn": sha("marigold"), "fn_compact": sha("marigold")}
    assert row.properties == {"plan": "pro"}
    assert row.notes == ["phone_number: dropped, a custom property named like personal data is never stored",
                         "full_name: dropped, a custom property named like personal data is never stored"]


def test_a_bad_email_is_dropped_with_a_reason_and_the_event_kept(client):
    hit(client, query={"event_token": "signup", "params": b64({"email": "not-an-address"})})
    assert (Event.get().identity, Event.get().notes, stored()) == ({}, ["email: not a valid email address"], (1, 1, 0))


def test_an_access_token_is_dropped_never_stored_and_never_shown(client):
    assert_gif(hit(client, query={"event_token": "signup", "params": b64({"access_token": ACCESS_TOKEN, "plan": "pro"})}))
    note = "access_token: dropped, Facebook access tokens are neither resolved nor stored"
    assert (Event.get().properties, Event.get().notes) == ({"plan": "pro"}, [note])
    [entry] = Refusal.select()
    assert entry.reason == f"partly accepted: {note}"
    assert ACCESS_TOKEN[:4] not in json.dumps(entry.excerpt) and "access_token" not in entry.excerpt["params_fields"]


def test_click_ids_in_params_are_kept_and_malformed_ones_dropped(client):
    hit(client, query={"event_token": "view", "params": b64({"fbp": "fb.1.1700000000000.123", "fbc": "nope", "gclid": "Cj0K"})})
    assert (Event.get().click_ids, Event.get().notes) == (
        {"fbp": "fb.1.1700000000000.123", "gclid": "Cj0K"}, ["fbc: dropped, not of the form fb.<digit>.<digits>.<value>"])


@pytest.mark.parametrize("consent, status", [(False, ("skipped", "no consent")), ("true", ("pending", None))])
def test_consent_in_params_gates_every_destination(client, consent, status):
    hit(client, query={"event_token": "signup", "params": b64({"consent": consent})})
    assert (Event.get().consent, [(s.status, s.reason) for s in Send.select()]) == (status[0] == "pending", [status])


# --- client context -----------------------------------------------------------------------------

def test_ip_user_agent_and_language_come_from_the_request_and_the_referer_is_the_page(client):
    hit(client, query={"event_token": "view"}, headers={**page("https://shop.example/p/1?ref=x"), "Accept-Language": "fr-CA,fr;q=0.8"},
        environ_base={"REMOTE_ADDR": "198.51.100.4"})
    row = Event.get()
    assert (row.ip, row.user_agent, row.page_url, row.referrer, row.language) == (
        "198.51.100.4", UA, "https://shop.example/p/1?ref=x", None, "fr-CA")


def test_a_referer_that_is_not_a_web_page_is_dropped_with_a_reason(client):
    hit(client, query={"event_token": "view"}, headers={"User-Agent": UA, "Referer": "android-app://com.example"})
    assert (Event.get().page_url, Event.get().notes) == (None, ["Referer: dropped, not an http(s) URL"])


def test_a_bot_is_stored_and_skipped(client):
    assert_gif(hit(client, query={"event_token": "signup"}, headers=page(ua=GOOGLEBOT)))
    assert (Event.get().is_bot, [(s.status, s.reason) for s in Send.select()]) == (True, [("skipped", "bot")])


# --- refusals: still a GIF, nothing stored, the reason in the inspector -------------------------

def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


MALFORMED = [
    ({"amount": "1"}, "Missing required field: event_token"),
    ({"event_token": "   "}, "Missing required field: event_token"),
    ({"event_token": "x" * 256}, "Invalid field: event_token (must be at most 255 characters)"),
    ({"event_token": "sign\x00up"}, "Invalid field: event_token (must not contain control characters)"),
    ({"event_token": "v", "params": "!!!not-base64!!!"}, "Invalid field: params (neither Base64 nor URL-encoded JSON)"),
    ({"event_token": "v", "params": "abcde"}, "Invalid field: params (neither Base64 nor URL-encoded JSON)"),
    ({"event_token": "v", "params": "ab+-"}, "Invalid field: params (neither Base64 nor URL-encoded JSON)"),
    ({"event_token": "v", "params": b64(b"hello world")}, "Invalid field: params (Base64 that does not decode to UTF-8 JSON)"),
    ({"event_token": "v", "params": b64(b"\xff\xfe{}")}, "Invalid field: params (Base64 that does not decode to UTF-8 JSON)"),
    ({"event_token": "v", "params": b64([1, 2])}, "Invalid field: params (must be a JSON object)"),
    ({"event_token": "v", "params": "[1,2]"}, "Invalid field: params (must be a JSON object)"),
    ({"event_token": "v", "params": '"text"'}, "Invalid field: params (must be a JSON object)"),
    ({"event_token": "v", "params": "123"}, "Invalid field: params (must be a JSON object)"),
    ({"event_token": "v", "params": "null"}, "Invalid field: params (must be a JSON object)"),
    ({"event_token": "v", "params": '{"email":'}, "Invalid field: params (not valid JSON)"),
    ("event_token=v&params=%FF%FE", "Invalid field: params (neither Base64 nor URL-encoded JSON)"),
    ({"event_token": "v", "params": '{"a":"\\ud800"}'}, "Invalid field: params (holds a lone \\u surrogate escape, which is not text)"),
    ({"event_token": "v", "params": nested(21)}, "Invalid field: params (nested deeper than 20 levels)"),
    ({"event_token": "v", "params": '{"a":' + "[" * 30 + "]" * 30 + "}"}, "Invalid field: params (nested deeper than 20 levels)"),
    ({"event_token": "v", "params": nested(5000)}, "Invalid field: params (not valid JSON)"),
    ({"event_token": "v", "params": "{" + '"k":1,' * 6000 + '"z":1}'},
     "Invalid field: params (longer than server.max_body_bytes (32768 bytes))"),
    ({"event_token": "v", "params": b64({"currency": "dollars"})},
     "Invalid field: params.currency (must be an ISO 4217 currency code such as USD)"),
    ({"event_token": "v", "params": b64({"event_id": {"x": 1}})}, "Invalid field: params.event_id (must be a string or number)"),
    ({"event_token": "v", "params": b64({"event_id": "e" * 300})}, "Invalid field: params.event_id (must be at most 255 characters)"),
    ({"event_token": "v", "params": b64({"consent": "maybe"})}, "Invalid field: params.consent (must be true or false)"),
]
AMOUNT_WHY = "Invalid field: amount (must be a whole number of cents, such as 2500 for 25.00)"
MALFORMED_REVENUE = [
    ({"event_token": "checkout"}, "Missing required field: amount"),
    ({"event_token": "checkout", "amount": ""}, "Missing required field: amount"),
    *(({"event_token": "checkout", "amount": junk}, AMOUNT_WHY)
      for junk in ("25.00", "-100", "abc", "1e3", "2,500", "٣", "１", "1" * 16, "NaN", "0x10")),
]


@pytest.mark.parametrize("category, query, reason",
                         [("event", q, r) for q, r in MALFORMED] + [("revenue", q, r) for q, r in MALFORMED_REVENUE])
def test_a_malformed_call_still_answers_the_gif_stores_nothing_and_records_why(client, category, query, reason):
    if isinstance(query, dict) and "params" not in query:  # an email that must not reach a profile either
        query = {**query, "params": b64({"email": SEED_EMAIL, "uuid": "v-1"})}
    response = hit(client, category, query)

    assert_gif(response)
    assert stored() == (0, 0, 0)
    assert reasons() == [reason]


@pytest.mark.parametrize("query, reason", [(MALFORMED[0][0], MALFORMED[0][1]), (MALFORMED[8][0], MALFORMED[8][1])])
def test_a_refused_call_keeps_the_cookie_it_had(client, query, reason):
    hit(client, query={"event_token": "view"})
    first = visitor(client)
    hit(client, query=query)
    assert (visitor(client), reasons()[-1]) == (first, reason)


def test_a_refusals_inspector_excerpt_shows_the_shape_without_personal_data(client):
    hit(client, "revenue", {"event_token": "checkout", "amount": "12.5", "email": SEED_EMAIL,
                            "params": b64({"email": SEED_EMAIL, "plan": "pro", "access_token": ACCESS_TOKEN})})
    [entry] = Refusal.select()
    assert (entry.site, entry.dialect, entry.reason) == ("shop", "pixel", AMOUNT_WHY)
    assert entry.excerpt == {"category": "revenue", "event_token": "checkout", "amount": "12.5", "email": "<str>",
                             "params_fields": {"email": "<str>", "plan": "<str>"}}


def test_undecodable_params_show_only_as_text_in_the_inspector(client):
    hit(client, query={"event_token": "v", "params": "{" + SEED_EMAIL})
    assert Refusal.get().excerpt == {"category": "event", "event_token": "v", "params": "<str>"}


# --- 404: no GIF without a valid token and category ---------------------------------------------

@pytest.mark.parametrize("path, reason", [
    ("/0000000000000000deadbeef/event.gif?event_token=signup", (None, "Unknown app token")),
    ("/key_demo_123/event.gif?event_token=signup", (None, "Unknown app token")),  # API keys are secrets, not pixel tokens
    (f"/{TOKEN}/purchase.gif?event_token=signup", ("shop", "Unknown category (use event.gif or revenue.gif)")),
    (f"/{TOKEN}/EVENT.gif?event_token=signup", ("shop", "Unknown category (use event.gif or revenue.gif)")),
])
def test_an_unknown_token_or_category_is_a_404_with_an_empty_body(client, path, reason):
    response = client.get(path, headers=page())
    assert (response.status_code, response.data, response.headers["Cache-Control"]) == (404, b"", "no-store")
    assert COOKIE not in response.headers.get("Set-Cookie", "")
    assert stored() == (0, 0, 0)
    assert [(r.site, r.reason) for r in Refusal.select()] == [reason]


@pytest.mark.parametrize("path", ["/event.gif", f"/{TOKEN}/.gif", f"/{TOKEN}/event.png", f"/{TOKEN}/event", f"/x/{TOKEN}/event.gif"])
def test_a_missing_token_or_category_is_a_404_that_stores_nothing(client, path):
    response = client.get(path + "?event_token=signup", headers=page())
    assert response.status_code == 404 and response.data != GIF and len(response.data) < 300
    assert stored() == (0, 0, 0)


def test_the_pixel_route_matches_only_two_segments_ending_in_gif(app):
    urls = app.url_map.bind("localhost")
    assert urls.match(f"/{TOKEN}/event.gif") == ("pixel.hit", {"app_token": TOKEN, "category": "event"})
    assert urls.match("/static/pixel.gif")[0] == "static"
    assert urls.match("/v1/track", method="POST")[0] == "channelstack.track"
    for path in ("/zz/yy/xx.gif", "/zz/yy.gif/xx", "/zz/yy.gifx"):
        with pytest.raises(NotFound):
            urls.match(path)


def test_a_head_request_answers_the_headers_and_stores_nothing(client):
    response = client.head(f"/{TOKEN}/event.gif?event_token=signup", headers=page())
    assert (response.status_code, response.content_type, response.headers["Content-Length"]) == (200, "image/gif", "43")
    assert client.head(f"/{TOKEN}/nope.gif", headers=page()).status_code == 404
    assert (stored(), reasons()) == ((0, 0, 0), [])


# --- debug=1 ------------------------------------------------------------------------------------

def test_debug_answers_json_saying_what_was_accepted_and_stores_like_a_normal_call(client):
    hit(client, query=SEED_SIGNUP.split("?")[1])
    response = hit(client, "revenue", {"event_token": "checkout", "amount": "2500", "debug": "1",
                                       "params": b64({"$x": 1, "coupon": "SAVE20"})}, headers=page(THANKS_PAGE))

    assert (response.status_code, response.content_type, response.headers["Cache-Control"]) == (200, "application/json", "no-store")
    row = Event.select().order_by(Event.id.desc()).get()
    assert response.get_json() == {
        "accepted": True, "stored": True, "message": "Event recorded", "event_id": row.event_id,
        "event_name": "checkout", "standard_name": "Purchase", "value": 25.0, "currency": "USD", "uuid": visitor(client),
        "identity": [], "identity_from_profile": True, "notes": [f"params.$x: {DROPPED_KEY}"],
        "sends": [{"destination": "shop/meta", "status": "pending", "reason": None}],
    }
    assert stored() == (2, 2, 1)


def test_debug_says_which_identity_fields_this_call_attached(client):
    response = hit(client, query={"event_token": "signup", "debug": "1", "params": b64({"email": SEED_EMAIL, "fbid": "7"})},
                   headers=page(ua=GOOGLEBOT))
    body = response.get_json()
    assert (body["identity"], body["identity_from_profile"], body["standard_name"], body["sends"]) == (
        ["email"], False, "CompleteRegistration", [{"destination": "shop/meta", "status": "skipped", "reason": "bot"}])


def test_debug_answers_a_refusal_as_json_and_records_it(client):
    response = hit(client, "revenue", {"event_token": "checkout", "amount": "25.00", "debug": "1"})
    assert (response.status_code, response.get_json()) == (200, {
        "accepted": False, "stored": False, "error": AMOUNT_WHY, "uuid": visitor(client)})
    assert (stored(), reasons()) == ((0, 0, 0), [AMOUNT_WHY])


def test_debug_says_when_a_repeat_was_not_stored_again(client):
    query = {"event_token": "signup", "debug": "1", "params": b64({"event_id": "e-1"})}
    hit(client, query=query)
    body = hit(client, query=query).get_json()
    assert (body["accepted"], body["stored"], body["message"], body["event_id"]) == (True, False, "Duplicate event ignored", "e-1")
    assert stored()[:2] == (1, 1)


def test_debug_on_an_unknown_token_is_still_an_empty_404(client):
    response = hit(client, query={"event_token": "signup", "debug": "1"}, token="nope")
    assert (response.status_code, response.data) == (404, b"")


# --- logs ---------------------------------------------------------------------------------------

def test_gunicorns_access_log_format_has_the_path_without_the_query_string():
    settings = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    fmt = settings["access_log_format"]
    assert "%(U)s" in fmt
    assert not re.search(r"%\((r|q|f|\{query_string\}e|\{raw_uri\}e|\{referer\}i)\)s", fmt, re.IGNORECASE)


def test_an_access_log_line_for_a_pixel_call_carries_no_params_and_no_email():
    settings = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    path = f"/{TOKEN}/event.gif"
    query = urlencode({"event_token": "signup", "params": b64({"email": SEED_EMAIL})})
    environ = EnvironBuilder(path=path, query_string=query, headers=page()).get_environ()
    environ["RAW_URI"] = f"{path}?{query}"
    logger = GunicornLogger(GunicornConfig())
    response = SimpleNamespace(status="200 OK", headers=[("Content-Type", "image/gif")], sent=43)
    atoms = logger.atoms(response, SimpleNamespace(headers=list(page().items())), environ, timedelta(milliseconds=3))

    line = settings["access_log_format"] % logger.atoms_wrapper_class(atoms)

    assert line == f'"GET {path}" 200 43 3ms'


def test_nothing_logged_while_handling_a_pixel_call_carries_the_query(client, caplog):
    caplog.set_level(logging.DEBUG)
    encoded = b64({"email": SEED_EMAIL, "uuid": "log-1"})
    hit(client, query={"event_token": "signup", "params": encoded})
    hit(client, "revenue", {"event_token": "checkout", "amount": "oops", "params": encoded})
    text = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert caplog.records and encoded not in text and SEED_EMAIL not in text and "params=" not in text


def test_the_inspector_lists_pixel_refusals_under_the_pixel_dialect(client):
    hit(client, query={"params": b64({"plan": "pro"})})
    assert [(e["dialect"], e["reason"]) for e in inspector.listing(dialect="pixel")] == [
        ("pixel", "Missing required field: event_token")]


# --- profiles -----------------------------------------------------------------------------------

def test_an_event_and_its_visitors_profile_are_stored_together_or_not_at_all(client):
    refuse_profiles("database or disk is full")  # the profile's write fails after the event's, in one transaction

    response = hit(client, query={**dict(parse_qsl(SEED_SIGNUP.split("?")[1])), "debug": "1"})
    assert (response.status_code, response.get_json()) == (503, {
        "accepted": False, "stored": False,
        "error": "Storage unavailable: the disk is full; nothing was stored, try again later"})
    assert stored() == (0, 0, 0)

    refuse_profiles(None)
    assert_gif(hit(client, query=SEED_SIGNUP.split("?")[1]))
    assert stored() == (1, 1, 1)


def refuse_profiles(message: str | None) -> None:
    """A trigger that fails every write of a pixel profile with `message`; None drops it."""
    postgres = not isinstance(database.obj, SqliteDatabase)
    database.execute_sql("DROP TRIGGER IF EXISTS refuse_profiles" + (" ON pixel_profiles" if postgres else ""))
    if message is None:
        return
    if postgres:
        database.execute_sql(f"CREATE OR REPLACE FUNCTION refuse_profiles() RETURNS trigger AS $$ BEGIN "
                             f"RAISE EXCEPTION '{message}'; END $$ LANGUAGE plpgsql")
        database.execute_sql("CREATE TRIGGER refuse_profiles BEFORE INSERT ON pixel_profiles "
                             "FOR EACH ROW EXECUTE FUNCTION refuse_profiles()")
    else:
        database.execute_sql(f"CREATE TRIGGER refuse_profiles BEFORE INSERT ON pixel_profiles "
                             f"BEGIN SELECT RAISE(ABORT, '{message}'); END")


def test_profiles_are_forgotten_by_uuid_and_purged_after_retention(client):
    hit(client, query={"event_token": "signup", "params": b64({"uuid": "old", "email": SEED_EMAIL})})
    hit(client, query={"event_token": "signup", "params": b64({"uuid": "gone", "email": OTHER_EMAIL})})

    assert pixel_profiles.forget("shop", "gone") == 1
    assert pixel_profiles.purge(timedelta(days=90), now=utcnow() + timedelta(days=89)) == 0
    assert pixel_profiles.purge(timedelta(days=90), now=utcnow() + timedelta(days=91)) == 1
    assert PixelProfile.select().count() == 0


def test_erasing_a_user_through_the_user_api_also_forgets_their_pixel_profile(client):
    hit(client, query={"event_token": "signup", "params": b64({"email": SEED_EMAIL})})
    uuid = visitor(client)
    assert profile(uuid)["identity"] == em(SEED_EMAIL)
    auth = {"Authorization": "Bearer key_demo_123"}
    client.post("/users?tc_s=shop", json={"id": "u-77", "email": SEED_EMAIL}, headers=auth)

    response = client.delete("/users/u-77?tc_s=shop", headers=auth)

    assert response.get_json()["status"] == "ok"
    assert PixelProfile.select().count() == 0
    assert Event.get().identity == {}
