"""Every public endpoint, fuzzed: no answer is a 5xx, each is in its dialect's documented shape, a refused
request stores nothing, and the personal data it carried reaches neither the database nor the logs.

Cases come from sources: `SOURCES` maps a name to a function from an endpoint to a Hypothesis strategy of
`Case`s, so another generator plugs in beside `hostile_cases`. The API description (`GET /openapi.json`) is
the other source: schemathesis generates requests from it and checks every answer against it, with the same
no-5xx and nothing-stored-on-refusal checks. `make test` runs a few derandomized examples per endpoint and per
operation; `POSTBACK_FUZZ_EXAMPLES=2000` runs a bigger, random search.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

from app import create_app
from models import Event, Send, database
from routes.openapi import DOCUMENT
from tests.conftest import base_config, build_config, remember_database
from tests.helpers import every_table_text
from tests.fakes.telegram import FREE, VIP, FakeTelegram, telegram_section

EXAMPLES = int(os.environ.get("POSTBACK_FUZZ_EXAMPLES", "0"))
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True, database=None,
                          suppress_health_check=list(HealthCheck))
settings.register_profile("deep", max_examples=EXAMPLES or 1, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck))
PROFILE = "deep" if EXAMPLES else "ci"

SECRET = "whsec_Fuzz-Secret_1"
PASSWORD = "fuzz-admin-password"
KEY = "key_demo_123"
PIXEL_TOKEN = "52fb5565a7b23ec66fad3988"


@dataclass(frozen=True)
class Case:
    """One request: everything a client controls."""

    method: str
    path: str
    query: dict = field(default_factory=dict)
    headers: dict = field(default_factory=dict)
    body: bytes | None = None
    personal: tuple[str, ...] = ()  # the raw personal values it carries, to look for afterwards


# --- what a hostile client sends --------------------------------------------------------------------------

header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=60)
url_like = st.one_of(
    st.sampled_from(["http://[", "http://[::1", "https://[::1]:99999/", "http://", "javascript:alert(1)", "//x",
                     "https://shop.example/p?fbclid=IwAR2F4&gclid=Cj0&utm_source=x", "http://%zz", "ftp://x/"]),
    header_text.map(lambda t: "https://shop.example/" + t),
    header_text,
)
numbers = st.one_of(st.integers(-(2 ** 70), 2 ** 70), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([1e308, -0.0, 2 ** 53 + 1, 10 ** 30]))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=40), url_like,
                    st.sampled_from(["", " ", "\ud800", "NaN", "-Infinity", "1e999", "0x10", "\x00", "null"]))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                           max_leaves=12)

hostile_values = st.one_of(url_like, numbers, json_values)


@st.composite
def personal_data(draw) -> tuple[str, str]:
    """An email and a phone number no other test sends, so finding them anywhere is a leak."""
    marker = draw(st.integers(10 ** 6, 10 ** 7 - 1))
    return f"fuzz.{marker}@example.com", f"+1415{marker}"


def encode(value: Any) -> bytes:
    """JSON as a careless writer makes it: NaN and Infinity as bare tokens, lone surrogates escaped."""
    return json.dumps(value, allow_nan=True).encode()


@dataclass(frozen=True)
class Endpoint:
    """A public endpoint, a body of the shape it takes, and the check that an answer is in its dialect's shape."""

    name: str
    method: str
    path: str
    shape: Callable[[Any], bool]
    body: dict | None = None
    headers: dict = field(default_factory=dict)
    query: dict = field(default_factory=dict)
    segments: dict = field(default_factory=dict)  # path segment -> a valid value
    personal: tuple[str, str] = ("email", "phone")  # where the body carries an email and a phone


def with_value(body: Any, dotted: str, value: Any) -> Any:
    """`body` with `value` at the dotted key (made when missing)."""
    if not isinstance(body, dict):
        return body
    head, _, rest = dotted.partition(".")
    return {**body, head: with_value(body.get(head, {}), rest, value) if rest else value}


@st.composite
def hostile_cases(draw, endpoint: Endpoint) -> Case:
    """Valid-shaped requests with hostile values, arbitrary JSON, not JSON at all, hostile headers and paths."""
    email, phone = draw(personal_data())
    body: Any = None
    if endpoint.body is not None:
        shaped = with_value(with_value(endpoint.body, endpoint.personal[0], email), endpoint.personal[1], phone)
        for key in draw(st.lists(st.sampled_from(sorted(shaped) + ["extra", "items", "value", "event_id"]), max_size=3)):
            shaped = {**shaped, key: draw(hostile_values)}
        raw = draw(st.one_of(
            st.just(encode(shaped)),
            st.just(encode(shaped)),
            json_values.map(encode),
            st.binary(max_size=60),
            st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
            st.integers(1, 3000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
            st.just(encode(shaped)[:-1].replace(b'"', b'"\\ud800', 1) + b"}"),
            st.sampled_from([b"", b"null", b"NaN", b'{"value": Infinity}', b"\xff\xfe", b"{'a': 1}"]),
        ))
        body = raw
    headers = dict(endpoint.headers)
    for name in draw(st.lists(st.sampled_from(["Origin", "Referer", "Content-Type", "Authorization",
                                               "X-Postback-Client-IP", "X-Postback-Client-User-Agent",
                                               "X-Forwarded-For", "Cookie"]), max_size=3, unique=True)):
        headers[name] = draw(url_like)
    query = dict(endpoint.query)
    for key in draw(st.lists(st.sampled_from(["dry_run", "debug", "site", "tc_s", "params", "amount", "event_token",
                                              "limit", "channel", "fbclid", "token"]), max_size=3)):
        query[key] = draw(st.one_of(header_text, url_like, st.sampled_from(["1", "true", "-1", "NaN", "1e999"])))
    if "params" in query and draw(st.booleans()):
        params = encode({"email": email, "phone": phone, "event_id": draw(json_values)})
        query["params"] = base64.b64encode(params).decode()
    path = endpoint.path
    for segment, valid in endpoint.segments.items():
        value = draw(st.one_of(st.just(valid), st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e,
                                                                        exclude_characters="/?#%"), min_size=1, max_size=30)))
        path = path.replace("{" + segment + "}", value)
    return Case(endpoint.method, path, query, headers, body, (email, phone))


SOURCES: dict[str, Callable[[Endpoint], st.SearchStrategy[Case]]] = {"hostile": hostile_cases}


# --- the dialects' answer shapes --------------------------------------------------------------------------

def json_of(response) -> Any:
    return response.get_json(silent=True) if response.mimetype == "application/json" else None


def channelstack_shape(response) -> bool:
    body = json_of(response)
    if response.status_code == 200:
        return isinstance(body, dict) and body.get("success") is True and {"eventId", "message"} <= set(body)
    return isinstance(body, dict) and set(body) == {"error", "code"} and body["code"] == response.status_code


def octeth_shape(response) -> bool:
    body = json_of(response)
    if response.status_code == 200:
        return isinstance(body, dict) and (body.get("status") == "success" or {"ListID", "Properties"} <= set(body))
    errors = body.get("Errors") if isinstance(body, dict) else None
    return bool(errors) and all(set(e) == {"Code", "Message"} for e in errors)


def commanders_shape(response) -> bool:
    body = json_of(response)
    return response.status_code in (200, 400) and isinstance(body, dict) and body.get("status") in ("ok", "error")


def pixel_shape(response) -> bool:
    if response.status_code == 404:
        return response.data == b""
    return response.status_code == 200 and (response.mimetype == "image/gif" or isinstance(json_of(response), dict))


def adtarget_shape(response) -> bool:
    body = json_of(response)
    if response.status_code < 300:
        return isinstance(body, (dict, list))
    return isinstance(body, dict) and set(body) == {"error", "message"}


def invite_shape(response) -> bool:
    if response.status_code == 302:
        return response.location.startswith("https://t.me/")
    return adtarget_shape(response) if response.mimetype == "application/json" else response.mimetype == "text/html"


def telegram_shape(response) -> bool:
    return (response.status_code, json_of(response)) in (
        (200, {"ok": True}),
        (403, {"error": "FORBIDDEN", "message": "Wrong or missing X-Telegram-Bot-Api-Secret-Token"}))


def admin_shape(response) -> bool:
    body = json_of(response)
    if response.status_code == 200:
        return isinstance(body, dict) and (set(body) == {"session_id", "expires_at"} or set(body) == {"entries"}
                                           or set(body) == {"destination", "since", "dry_run", "queued", "left_out"})
    return isinstance(body, dict) and set(body) == {"error", "code"} and body["code"] == response.status_code


def health_shape(response) -> bool:
    return (response.status_code, json_of(response)) == (200, {"status": "ok", "database": "ok"})


ADTARGET = {"Authorization": f"Bearer {KEY}"}
COMMANDERS_QUERY = {"tc_s": "shop"}
LEAD = {"telegramUserId": 555000111, "channelId": "vip", "eventType": "Purchase", "value": 49, "currency": "USD"}
ENDPOINTS = [
    Endpoint("channelstack", "POST", "/v1/track", channelstack_shape,
             {"api_key": KEY, "event": "purchase_completed", "value": 10, "currency": "USD", "event_id": "e1",
              "source_url": "https://shop.example/"}),
    Endpoint("octeth event", "POST", "/api/v1/event", octeth_shape,
             {"APIKey": KEY, "ListID": 94, "Event": "conversion", "Properties": {"conversion-id": "c1"}},
             personal=("Email", "Properties.phone")),
    Endpoint("octeth properties", "POST", "/api/v1/website_events.properties", octeth_shape,
             {"APIKey": KEY, "ListID": 94}, personal=("Email", "Phone")),
    Endpoint("commanders events", "POST", "/events", commanders_shape,
             {"event_name": "purchase", "id": "o1", "revenue": 10, "currency": "EUR",
              "context": {"page": {"url": "https://shop.example/"}}}, ADTARGET, COMMANDERS_QUERY,
             personal=("user.email", "user.phone")),
    Endpoint("commanders users", "POST", "/users", commanders_shape, {"id": "u1"}, ADTARGET, COMMANDERS_QUERY),
    Endpoint("commanders products", "POST", "/products", commanders_shape,
             {"id": "p1", "url": "https://shop.example/p1", "price": 10}, ADTARGET, COMMANDERS_QUERY),
    Endpoint("pixel event", "GET", "/{token}/event.gif", pixel_shape, query={"event_token": "signup"},
             segments={"token": PIXEL_TOKEN}),
    Endpoint("pixel revenue", "GET", "/{token}/revenue.gif", pixel_shape,
             query={"event_token": "buy", "amount": "1999"}, segments={"token": PIXEL_TOKEN}),
    Endpoint("adtarget visit", "POST", "/api/v1/events/visit", adtarget_shape,
             {"href": "https://shop.example/vip?fbclid=IwAR2F4", "tempId": "t1"}, ADTARGET,
             personal=("pii.email", "pii.phone")),
    Endpoint("adtarget update-fbp", "POST", "/api/v1/events/update-fbp", adtarget_shape,
             {"tempId": "t1", "fbp": "fb.1.1767225600000.1116446470"}, ADTARGET),
    Endpoint("adtarget invite", "POST", "/api/v1/events/invite", adtarget_shape,
             {"tempId": "t1", "channelId": "vip"}, ADTARGET),
    Endpoint("adtarget conversion", "POST", "/api/v1/events/conversion", adtarget_shape, LEAD, ADTARGET,
             personal=("pii.email", "pii.phone")),
    Endpoint("adtarget lead event", "POST", "/api/v1/leads/{lead}/events", adtarget_shape,
             {"eventType": "Purchase", "value": 5, "currency": "USD"}, ADTARGET, segments={"lead": "555000111"},
             personal=("pii.email", "pii.phone")),
    Endpoint("adtarget conversion value", "POST", "/api/v1/leads/{lead}/conversions/{conversion}/value",
             adtarget_shape, {"value": 5, "currency": "USD"}, ADTARGET,
             segments={"lead": "555000111", "conversion": "1"}),
    Endpoint("adtarget lead", "GET", "/api/v1/leads/{lead}", adtarget_shape, headers=ADTARGET,
             segments={"lead": "555000111"}),
    Endpoint("adtarget channels", "GET", "/api/v1/channels", adtarget_shape, headers=ADTARGET),
    Endpoint("telegram webhook", "POST", "/telegram/webhook/{site}", telegram_shape,
             {"update_id": 1, "chat_join_request": {"chat": {"id": -1001234567890}, "from": {"id": 42},
                                                    "date": 1767225600}},
             {"X-Telegram-Bot-Api-Secret-Token": SECRET}, segments={"site": "shop"},
             personal=("chat_join_request.from.username", "chat_join_request.from.first_name")),
    Endpoint("tracker init", "POST", "/track/init", adtarget_shape,
             {"site": "shop", "href": "https://shop.example/vip?fbclid=IwAR2F4"}),
    Endpoint("tracker invite", "GET", "/track/invite", invite_shape, query={"site": "shop", "channel": "vip"}),
    Endpoint("admin login", "POST", "/admin/api/login", admin_shape, {"password": PASSWORD},
             personal=("email", "phone")),
    Endpoint("admin inspector", "GET", "/admin/api/inspector", admin_shape,
             headers={"Authorization": f"Bearer {PASSWORD}"}, query={"limit": "5"}),
    Endpoint("admin backfill", "POST", "/admin/api/destinations/{site}/{name}/backfill", admin_shape,
             {"since": "7d", "dry_run": True}, {"Authorization": f"Bearer {PASSWORD}"},
             segments={"site": "shop", "name": "meta"}),
    Endpoint("admin submit value", "POST", "/admin/api/leads/{site}/{lead}/conversions/{conversion}/value",
             admin_shape, {"value": 5, "currency": "USD"}, {"Authorization": f"Bearer {PASSWORD}"},
             segments={"site": "shop", "lead": "555000111", "conversion": "conv_x"}, personal=("pii.email", "pii.phone")),
    Endpoint("healthz", "GET", "/healthz", health_shape),
]


# --- the harness --------------------------------------------------------------------------------------------

class Captured(logging.Handler):
    """Every log line the app writes during the run, formatted with its extras."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.getMessage()} {record.__dict__} {record.exc_text or ''}")


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    telegram = FakeTelegram(chats=(VIP, FREE)).start()
    raw = base_config(tmp_path_factory.mktemp("fuzz"))
    raw["admin"]["password"] = PASSWORD
    raw["sites"][0]["telegram"] = telegram_section(telegram.url, telegram.token, SECRET)
    config = build_config(raw)
    remember_database(config.database)
    app = create_app(config)
    yield app
    database.close()
    telegram.stop()


@pytest.fixture
def captured():
    handler, root = Captured(), logging.getLogger()
    level, root.level = root.level, logging.DEBUG
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


def refused(response) -> bool:
    body = json_of(response)
    return response.status_code >= 400 or (isinstance(body, dict) and body.get("status") == "error")


def stored_rows() -> tuple[int, int]:
    return Event.select().count(), Send.select().count()


def send(client, case: Case):
    return client.open(case.path, method=case.method, query_string=case.query, headers=case.headers, data=case.body)


NON_NUMBERS = re.compile(r"^-?(nan|inf|infinity)$", re.IGNORECASE)


@pytest.mark.parametrize("source", sorted(SOURCES))
@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.name for e in ENDPOINTS])
def test_no_request_gets_a_5xx_an_answer_out_of_shape_a_half_stored_refusal_or_a_leak(
        fuzz_app, captured, endpoint, source):
    client = fuzz_app.test_client()
    personal: list[str] = []

    @settings(settings.get_profile(PROFILE))
    @given(SOURCES[source](endpoint))
    def one_request(case: Case):
        personal.extend(case.personal)
        before = stored_rows()
        response = send(client, case)
        assert response.status_code < 500, (case, response.data[:300])
        assert endpoint.shape(response), (case, response.status_code, response.data[:300])
        if refused(response):
            assert stored_rows() == before, case

    one_request()
    stored = [(e.event_id, e.order_id, e.value) for e in Event.select(Event.event_id, Event.order_id, Event.value)]
    assert not [row for row in stored if NON_NUMBERS.match(str(row[0])) or NON_NUMBERS.match(str(row[1]))
                or str(row[2]).lower() in ("nan", "inf", "-inf")]
    url = fuzz_app.config["POSTBACK"].database
    if url.startswith("sqlite:///"):  # every file beside the database: its -wal too
        written = b"".join(f.read_bytes() for f in Path(url[len("sqlite:///"):]).parent.iterdir() if f.is_file())
    else:
        written = every_table_text().encode()
    logged = "\n".join(captured.lines)
    leaks = [value for value in personal
             if value.encode() in written or value in logged or value.removeprefix("+") in logged]
    assert not leaks, leaks


# --- the API description as a source of cases -------------------------------------------------------------------

# What a client that holds the credentials sends, by the security scheme an operation names in /openapi.json.
CREDENTIALS = {"adminBearer": {"Authorization": f"Bearer {PASSWORD}"}, "siteKey": {"Authorization": f"Bearer {KEY}"},
               "telegramSecret": {"X-Telegram-Bot-Api-Secret-Token": SECRET}}
CONFORMANCE = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
               response_schema_conformance]


DESCRIBED = schemathesis.openapi.from_dict(yaml.safe_load(DOCUMENT.read_text(encoding="utf-8")))
OPERATIONS = sorted(result.ok().label for result in DESCRIBED.get_all_operations())


def credentials(case) -> dict:
    """The headers of the first security scheme of the operation that we hold credentials for."""
    options = case.operation.definition.raw.get("security", [])
    return next((CREDENTIALS[name] for option in options for name in option if name in CREDENTIALS), {})


@pytest.mark.parametrize("operation", OPERATIONS)
def test_every_answer_to_a_request_the_api_description_allows_matches_it_and_a_refusal_stores_nothing(
        fuzz_app, operation):
    method, _, path = operation.partition(" ")

    @settings(settings.get_profile(PROFILE), max_examples=EXAMPLES or 10)
    @given(DESCRIBED[path][method].as_strategy())
    def one_request(case):
        before = stored_rows()
        response = case.call_and_validate(headers=credentials(case), checks=CONFORMANCE, app=fuzz_app)
        body = response.json() if response.headers.get("content-type", [""])[0].startswith("application/json") else None
        if response.status_code >= 400 or (isinstance(body, dict) and body.get("status") == "error"):
            assert stored_rows() == before, (case.path, case.body)

    one_request()
