"""Browser keys (docs/tracker.md): accepted on `POST /v1/track` and the tracker from the site's origins, within
their events and rate; refused everywhere a server key opens, as an unknown key is."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from config import ConfigError
from ingest.browser_keys import BrowserKeyMinute, purge
from ingest.inspector import Refusal
from models import Event
from tests.conftest import BROWSER, build_config
from tests.helpers import signup

SHOP = "https://shop.example"
PAGE = {**BROWSER, "Origin": SHOP}
LIMITED = "pk_limited_signups"
OPEN = "pk_open_to_every_event"


@pytest.fixture
def raw_config(raw_config):
    raw_config["sites"][0]["browser_keys"] = [
        OPEN, {"key": LIMITED, "events": ["signed_up"], "rate_per_minute": 2}]
    return raw_config


def browser_signup(event_id: str, key: str = OPEN, **fields) -> dict:
    return {**signup(event_id), "api_key": key, **fields}


def test_a_browser_key_from_an_allowed_origin_stores_the_event_like_a_server_key(client):
    response = client.post("/v1/track", json=browser_signup("evt_pk_1"), headers=PAGE)
    assert (response.status_code, response.get_json()) == (
        200, {"success": True, "eventId": "evt_pk_1", "message": "Event recorded successfully"})
    assert response.headers["Access-Control-Allow-Origin"] == SHOP
    assert [(e.site, e.event_id) for e in Event.select()] == [("shop", "evt_pk_1")]


@pytest.mark.parametrize("origin", [None, "https://evil.example"], ids=["no origin", "another origin"])
def test_a_browser_key_without_an_allowed_origin_is_an_invalid_key_and_stores_nothing(client, origin):
    headers = {**BROWSER, **({"Origin": origin} if origin else {})}
    response = client.post("/v1/track", json=browser_signup("evt_pk_2"), headers=headers)
    assert (response.status_code, response.get_json()) == (401, {"error": "Invalid API key", "code": 401})
    assert "Access-Control-Allow-Origin" not in response.headers
    assert Event.select().count() == 0
    assert [r.reason for r in Refusal.select()] == ["Invalid API key"]


def test_an_event_the_browser_key_does_not_list_is_refused_with_403(client):
    response = client.post("/v1/track", json=browser_signup("evt_pk_3", LIMITED, event="purchase_completed"),
                           headers=PAGE)
    assert (response.status_code, response.get_json()) == (403, {
        "error": "Event 'purchase_completed' is not allowed for this browser key (sites[].browser_keys[].events)",
        "code": 403})
    assert Event.select().count() == 0


def test_beyond_its_rate_a_browser_key_is_refused_with_429_until_the_minute_is_over(client, frozen_ingest):
    answers = [client.post("/v1/track", json=browser_signup(f"evt_rate_{i}", LIMITED), headers=PAGE) for i in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[2].get_json() == {
        "error": "Rate limit exceeded: this browser key allows 2 calls a minute (sites[].browser_keys[].rate_per_minute)",
        "code": 429}
    assert answers[2].headers["Retry-After"] == "60"  # received at 12:05:00: the whole minute is left
    assert [e.event_id for e in Event.select().order_by(Event.id)] == ["evt_rate_0", "evt_rate_1"]
    # The other key has a rate of its own.
    assert client.post("/v1/track", json=browser_signup("evt_rate_open"), headers=PAGE).status_code == 200


def test_a_dry_run_with_a_browser_key_counts_nothing(client):
    for i in range(3):
        response = client.post("/v1/track?dry_run=1", json=browser_signup(f"evt_dry_{i}", LIMITED), headers=PAGE)
        assert response.status_code == 200
    assert BrowserKeyMinute.select().count() == 0


def test_the_count_is_kept_per_minute_and_purged_once_the_minute_is_past(client):
    client.post("/v1/track", json=browser_signup("evt_count", LIMITED), headers=PAGE)
    [minute] = BrowserKeyMinute.select()
    assert (minute.calls, minute.key != LIMITED, len(minute.key)) == (1, True, 32)  # a digest, not the key
    assert purge(timedelta(days=90), minute.minute + timedelta(seconds=59)) == 0
    assert purge(timedelta(days=90), minute.minute + timedelta(minutes=2)) == 1


def test_server_keys_keep_working_from_anywhere(client):
    response = client.post("/v1/track", json=signup("evt_server"), headers={**BROWSER, "Origin": "https://evil.example"})
    assert response.status_code == 200


def refused_as_unknown(client, send) -> None:
    """The answer to a browser key is the answer to a key nobody configured (Commanders answers 200 with its
    error body, or silently), the inspector keeps the same refusal for both, and nothing is stored."""
    browser, unknown = send(OPEN), send("key_nobody_has")
    assert (browser.status_code, browser.get_data(as_text=True)) == (unknown.status_code, unknown.get_data(as_text=True))
    [first, second] = [r.reason for r in Refusal.select().order_by(Refusal.id)]
    assert first == second and "key" in first.lower()
    assert Event.select().count() == 0


def test_a_browser_key_is_refused_by_octeth_as_an_unknown_key(client):
    refused_as_unknown(client, lambda key: client.post("/api/v1/event", json={
        "APIKey": key, "ListID": 94, "event": "pageView", "email": "2006@test.com"}, headers=PAGE))


@pytest.mark.parametrize("path", ["/users", "/products", "/events"])
def test_a_browser_key_is_refused_by_commanders_as_an_unknown_key(client, path):
    refused_as_unknown(client, lambda key: client.post(f"{path}?tc_s=shop", json={"id": "user-1"},
                                                       headers={**PAGE, "Authorization": f"Bearer {key}"}))


def test_a_browser_key_is_refused_by_the_adtarget_conversion_api_as_an_unknown_key(client):
    refused_as_unknown(client, lambda key: client.post("/api/v1/events/conversion", json={"telegramUserId": 1},
                                                       headers={**PAGE, "Authorization": f"Bearer {key}"}))


def test_a_browser_key_is_refused_by_the_admin_api(client):
    response = client.get("/admin/api/events", headers={**PAGE, "Authorization": f"Bearer {OPEN}"})
    assert (response.status_code, response.get_json()) == (401, {"error": "Authentication required", "code": 401})


def init(client, key: str | None, headers: dict | None = None):
    body = {"site": "shop", "href": "https://shop.example/vip?utm_source=facebook", **({"key": key} if key else {})}
    return client.post("/track/init", json=body, headers=PAGE if headers is None else headers)


def test_the_tracker_takes_its_sites_browser_key_and_counts_it(client):
    assert init(client, OPEN).status_code == 200
    assert [m.calls for m in BrowserKeyMinute.select()] == [1]


@pytest.mark.parametrize("key", ["key_demo_123", "pk_not_configured_here"], ids=["a server key", "an unknown key"])
def test_the_tracker_refuses_any_other_key(client, key):
    response = init(client, key)
    assert (response.status_code, response.get_json()) == (401, {"error": "UNAUTHORIZED", "message": "Invalid API key"})


def test_the_tracker_refuses_a_browser_key_without_an_origin(client):
    response = init(client, OPEN, headers=BROWSER)
    assert (response.status_code, response.get_json()) == (401, {"error": "UNAUTHORIZED", "message": "Invalid API key"})


def test_the_tracker_answers_a_browser_key_over_its_rate_in_its_own_shape(client, monkeypatch):
    monkeypatch.setattr("routes.tracker.utcnow", lambda: datetime(2026, 3, 1, 12, 5, 45, tzinfo=timezone.utc))
    codes = [init(client, LIMITED).status_code for _ in range(3)]
    response = init(client, LIMITED)
    assert (codes, response.status_code, response.get_json()) == ([200, 200, 429], 429, {
        "error": "RATE_LIMITED",
        "message": "Rate limit exceeded: this browser key allows 2 calls a minute "
                   "(sites[].browser_keys[].rate_per_minute)"})
    assert response.headers["Retry-After"] == "15"


def test_an_invite_link_with_another_sites_key_is_refused(client):
    response = client.get("/track/invite?site=shop&channel=vip&key=key_demo_123", headers={"Accept": "application/json"})
    assert (response.status_code, response.get_json()) == (401, {"error": "UNAUTHORIZED", "message": "Invalid API key"})


def test_browser_keys_are_checked_with_their_yaml_paths(raw_config):
    raw_config["sites"][0]["keys"].append("pk_shared_with_server")
    raw_config["sites"][0]["browser_keys"] = [
        "pk_shared_with_server", "sk_not_publishable", {"key": OPEN, "events": "signed_up", "rate_per_minute": 0},
        {"key": "pk_with_a_typo", "rate": 5}, 42]
    with pytest.raises(ConfigError) as caught:
        build_config(raw_config)
    assert caught.value.problems == [
        "sites[0].browser_keys[1].key: must be pk_ followed by 8-128 letters, digits, _ or - "
        "(`python cli.py generate-key --browser` prints one)",
        "sites[0].browser_keys[2].rate_per_minute: must be at least 1",
        "sites[0].browser_keys[3]: unknown setting(s) rate; a browser key takes key, events, rate_per_minute",
        "sites[0].browser_keys[4]: must be a key (pk_…) or a mapping with key, events, rate_per_minute",
        "sites[0].browser_keys[0]: key pk_sh… is also a key of site 'shop'; every key must be unique",
    ]


def test_a_browser_key_is_unique_across_sites(raw_config):
    other = {**raw_config["sites"][0], "id": "blog", "keys": ["key_blog_1"], "lists": [],
             "browser_keys": [OPEN]}
    raw_config["sites"].append(other)
    with pytest.raises(ConfigError) as caught:
        build_config(raw_config)
    assert "sites[1].browser_keys[0]: key pk_op… is also a key of site 'shop'; every key must be unique" \
        in caught.value.problems


def test_a_plain_key_has_the_default_rate_and_every_event(raw_config):
    site, browser = build_config(raw_config).browser_key(OPEN)
    assert (site.id, browser.events, browser.rate_per_minute) == ("shop", None, 600)

