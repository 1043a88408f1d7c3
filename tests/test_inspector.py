"""The inspector: refused and partly accepted requests, bounded, PII-free, behind the admin password."""
from __future__ import annotations

import base64

import pytest

from ingest import inspector
from ingest.inspector import Refusal
from tests.conftest import BROWSER, SEED_EXAMPLE

PASSWORD = "s3cret-admin"
ADMIN = {"Authorization": f"Bearer {PASSWORD}"}


@pytest.fixture
def raw_config(raw_config):
    raw_config["admin"]["password"] = PASSWORD
    return raw_config


def listing(client, query: str = "") -> list[dict]:
    response = client.get(f"/admin/api/inspector{query}", headers=ADMIN)
    assert response.status_code == 200, response.get_json()
    return [{k: v for k, v in e.items() if k not in ("id", "created_at")} for e in response.get_json()["entries"]]


def test_a_refused_request_is_listed_with_its_reason_and_no_personal_data(client):
    client.post("/v1/track", json={**SEED_EXAMPLE, "api_key": "key_wrong_999"}, headers=BROWSER)
    client.post("/v1/track", json={**SEED_EXAMPLE, "value": "abc"}, headers=BROWSER)

    entries = listing(client)

    assert [(e["site"], e["dialect"], e["reason"]) for e in entries] == [
        ("shop", "channelstack", "Invalid field: value (must be a number)"),
        (None, "channelstack", "Invalid API key"),
    ]
    excerpt = entries[1]["excerpt"]
    assert excerpt["api_key"] == "key_…"
    assert excerpt["event"] == "purchase_completed" and excerpt["event_id"] == "evt_unique123"
    assert {excerpt[k] for k in ("email", "phone", "first_name", "last_name", "city", "distinct_id")} == {"<str>"}
    assert "john.doe" not in str(entries) and "5551234567" not in str(entries)


def test_a_partly_accepted_event_is_listed_with_what_was_dropped(client):
    client.post("/v1/track", json=SEED_EXAMPLE, headers=BROWSER)
    [entry] = listing(client)
    assert entry["reason"] == ("partly accepted: fbc: dropped, not of the form fb.<digit>.<digits>.<value>; "
                               "fbp: dropped, not of the form fb.<digit>.<digits>.<value>")


def test_a_dry_run_leaves_no_inspector_entry(client):
    client.post("/v1/track?dry_run=1", json={**SEED_EXAMPLE, "value": "abc"}, headers=BROWSER)
    client.post("/v1/track?dry_run=1", json=SEED_EXAMPLE, headers=BROWSER)
    assert Refusal.select().count() == 0


def test_entries_filter_by_site_and_dialect(client):
    client.post("/v1/track", data="{nope", headers=BROWSER)
    client.post("/v1/track", json={"api_key": "key_demo_123"}, headers=BROWSER)
    assert [e["reason"] for e in listing(client, "?site=shop")] == ["Missing required field: event"]
    assert [e["reason"] for e in listing(client, "?dialect=channelstack")] == ["Missing required field: event", "Invalid JSON body"]
    assert listing(client, "?dialect=octeth") == []


def test_each_reason_keeps_only_its_newest_entries(client, monkeypatch):
    monkeypatch.setattr(inspector, "KEEP_PER_REASON", 3)
    for i in range(5):
        client.post("/v1/track", json={"api_key": "key_demo_123", "event_id": f"e{i}"}, headers=BROWSER)
    client.post("/v1/track", data="{nope", headers=BROWSER)

    entries = listing(client)
    assert [(e["reason"], e["excerpt"] and e["excerpt"].get("event_id")) for e in entries] == [
        ("Invalid JSON body", None),
        ("Missing required field: event", "e4"),
        ("Missing required field: event", "e3"),
        ("Missing required field: event", "e2"),
    ]


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": "Basic " + base64.b64encode(b"admin:wrong").decode()},
])
def test_the_inspector_needs_the_admin_password(client, headers):
    response = client.get("/admin/api/inspector", headers=headers)
    assert (response.status_code, response.get_json()) == (401, {"error": "Authentication required", "code": 401})
    assert response.headers["WWW-Authenticate"] == 'Basic realm="Postback admin"'


def test_basic_auth_with_the_admin_password_is_accepted(client):
    basic = "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
    assert client.get("/admin/api/inspector", headers={"Authorization": basic}).get_json() == {"entries": []}


def test_a_login_session_authenticates_like_the_password(client):
    assert client.post("/admin/api/login", json={"password": "nope"}).get_json() == {"error": "Wrong password", "code": 401}
    session = client.post("/admin/api/login", json={"password": PASSWORD}).get_json()["session_id"]
    response = client.get("/admin/api/inspector", headers={"Authorization": f"Bearer {session}"})
    assert response.get_json() == {"entries": []}


@pytest.mark.sqlite_only(reason="the generated password is kept beside the SQLite file; on PostgreSQL in data/")
def test_without_an_admin_password_the_admin_api_takes_the_generated_one(raw_config, tmp_path, request):
    raw_config["admin"]["password"] = ""
    client = request.getfixturevalue("client")
    generated = (tmp_path / "db" / "admin-password").read_text().strip()
    refused = {"error": "Authentication required", "code": 401}
    assert client.get("/admin/api/inspector", headers={"Authorization": "Bearer "}).get_json() == refused
    assert client.post("/admin/api/login", json={"password": ""}).get_json() == {"error": "Wrong password", "code": 401}
    assert client.get("/admin/api/inspector", headers={"Authorization": f"Bearer {generated}"}).get_json() == {"entries": []}


def test_a_bad_limit_is_refused(client):
    response = client.get("/admin/api/inspector?limit=ten", headers=ADMIN)
    assert (response.status_code, response.get_json()) == (400, {"error": "Invalid field: limit (must be a whole number)", "code": 400})


@pytest.mark.parametrize("body, shown", [
    ({"email": "a@b.co", "api_key": "abc"}, {"email": "<str>", "api_key": "<secret>"}),
    ({"user": {"email": "a@b.co"}, "context": {"page": {"url": "https://x"}, "device": {"cookie": "_fbp=1"}}},
     {"user": "<dict>", "context": {"page": {"url": "<str>"}, "device": {"cookie": "<str>"}}}),
    ([1, 2], "<list>"),
    ({"value": 12.5, "currency": "USD", "note": "call me at 555"}, {"value": 12.5, "currency": "USD", "note": "<str>"}),
])
def test_an_excerpt_keeps_the_shape_and_only_values_that_name_no_one(body, shown):
    assert inspector.excerpt(body) == shown


def test_the_keys_the_dialects_declare_compose_the_inspectors_lists():
    fold = inspector.fold
    assert inspector.SAFE_KEYS == {fold(k) for k in (
        "event", "event_name", "event_id", "order_id", "value", "currency", "occurred_at", "consent",
        "event_token", "category", "listid", "list_id", "revenue", "amount", "eventtype", "tc_s", "id",
        "type", "channel", "eventtime", "source", "conversionid", "conversionname", "conversionvalue")}
    assert inspector.SECRET_KEYS == {fold(k) for k in (
        "api_key", "apikey", "access_token", "token", "sessionid", "key", "secret")}
    assert inspector.IDENTITY_KEYS == inspector.PII_PROPERTY_KEYS | {fold(k) for k in (
        "first_name", "last_name", "gender", "date_of_birth", "city", "state", "zip", "country",
        "distinct_id", "user_id", "email", "phone", "pii", "params", "cookie", "user")}


def test_an_excerpt_stops_at_four_levels():
    assert inspector.excerpt({"a": {"b": {"c": {"d": {"e": 1}}}}}) == {"a": {"b": {"c": {"d": "<dict>"}}}}


def test_a_site_keeps_only_its_newest_entries_whatever_their_reasons(client, monkeypatch):
    monkeypatch.setattr(inspector, "KEEP_PER_SITE", 2)
    for i in range(4):
        client.post("/v1/track", json={"api_key": "key_demo_123", "event": "x", f"Email{'_' * i}": "x"}, headers=BROWSER)
    assert [e["reason"] for e in listing(client)] == [
        "partly accepted: Email___: dropped, a custom property named like personal data is never stored",
        "partly accepted: Email__: dropped, a custom property named like personal data is never stored",
    ]


def test_a_key_that_is_an_email_or_a_phone_shows_only_what_it_is():
    body = {"context": {"john.doe@example.com": {"x": 1}, "+1 415 555 0100": 2, "plan": "pro"}}
    assert inspector.excerpt(body) == {"context": {"<an email address as a key>": {"x": "<int>"},
                                                   "<a phone number as a key>": "<int>", "plan": "<str>"}}
