"""Each hostile request that once answered 500 or let a non-number through, answered in its dialect's shape."""
from __future__ import annotations

import json

import pytest

from dialects.adtarget.funnel import Visit
from ingest import inspector
from models import Event, Send
from tests.conftest import BROWSER
from tests.fakes.telegram import telegram_section

SECRET = "whsec_Test-Secret_1"
PASSWORD = "s3cret-admin"
ADTARGET = {"Authorization": "Bearer atk_live_demo"}
COMMANDERS = {"Authorization": "Bearer key_demo_123"}
UNCLOSED = "http://[::1"
PIXEL = "/52fb5565a7b23ec66fad3988/event.gif"


@pytest.fixture
def raw_config(raw_config, fake_telegram):
    raw_config["sites"][0]["telegram"] = telegram_section(fake_telegram.url, fake_telegram.token, SECRET)
    raw_config["admin"]["password"] = PASSWORD
    return raw_config


def stored() -> tuple[int, int]:
    return Event.select().count(), Send.select().count()


def only_event() -> Event:
    [event] = Event.select()
    return event


def test_an_unclosed_ipv6_source_url_is_dropped_with_a_note(client):
    response = client.post("/v1/track", json={"api_key": "key_demo_123", "event": "x", "event_id": "e1",
                                              "source_url": UNCLOSED}, headers=BROWSER)
    assert (response.status_code, response.get_json()) == (
        200, {"success": True, "eventId": "e1", "message": "Event recorded successfully"})
    assert (only_event().page_url, only_event().notes) == (None, ["source_url: dropped, not an http(s) URL"])


def test_an_unclosed_ipv6_referer_on_octeth_names_no_page(client):
    response = client.post("/api/v1/event", json={"APIKey": "key_demo_123", "ListID": 94, "Event": "x",
                                                  "Email": "2006@test.com"}, headers={"Referer": "http://["})
    assert (response.status_code, response.get_json()["status"]) == (200, "success")
    properties = only_event().properties
    assert ("$current_url" in properties, "$host" in properties, properties["$referrer"]) == (False, False, "http://[")


def test_an_unclosed_ipv6_current_url_on_octeth_names_no_page(client):
    response = client.post("/api/v1/event", json={"APIKey": "key_demo_123", "ListID": 94, "Event": "x",
                                                  "Email": "2006@test.com", "Properties": {"$current_url": UNCLOSED}})
    assert (response.status_code, response.get_json()["status"]) == (200, "success")
    assert (only_event().page_url, only_event().properties["$current_url"]) == (None, UNCLOSED)


def test_an_unclosed_ipv6_page_url_on_commanders_is_dropped(client):
    response = client.post("/events?tc_s=shop", json={"event_name": "page_view", "context": {"page": {"url": UNCLOSED}}},
                           headers=COMMANDERS)
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})
    assert only_event().page_url is None


def test_an_unclosed_ipv6_product_url_refuses_that_product(client):
    response = client.post("/products?tc_s=shop", json={"id": "p1", "url": UNCLOSED}, headers=COMMANDERS)
    assert (response.status_code, response.get_json()) == (200, {
        "status": "error", "message": "1 of 1 products refused", "upserted": 0,
        "rejected": [{"index": 0, "message": "Invalid field: url (must be an http(s) URL)"}]})


def test_the_pixel_answers_its_gif_to_an_unclosed_ipv6_referer(client):
    response = client.get(f"{PIXEL}?event_token=x", headers={"Referer": "http://["})
    assert (response.status_code, response.mimetype) == (200, "image/gif")
    assert only_event().page_url is None


@pytest.mark.parametrize("field", ["href", "referrer", "landingPage"])
def test_an_unclosed_ipv6_url_on_an_adtarget_visit_is_refused_or_dropped(client, field):
    body = {"href": "https://shop.example/", field: UNCLOSED}
    response = client.post("/api/v1/events/visit", json=body, headers=ADTARGET)
    if field == "href":
        assert (response.status_code, response.get_json(), stored()) == (400, {
            "error": "VALIDATION_ERROR", "message": "Invalid field: href (must be an http(s) URL)"}, (0, 0))
    else:
        assert (response.status_code, response.get_json()["visitId"] is not None) == (200, True)


def test_an_unclosed_ipv6_event_source_url_on_a_conversion_is_dropped(client):
    body = {"telegramUserId": 777, "channelId": "vip", "eventType": "Lead", "eventSourceUrl": UNCLOSED}
    response = client.post("/api/v1/events/conversion", json=body, headers=ADTARGET)
    assert response.status_code == 200, response.get_json()
    assert (only_event().page_url, only_event().notes) == (None, ["eventSourceUrl: dropped, not an http(s) URL"])


def test_an_unclosed_ipv6_href_on_track_init_is_refused(client):
    response = client.post("/track/init", json={"site": "shop", "href": UNCLOSED})
    assert (response.status_code, response.get_json(), stored()) == (
        400, {"error": "VALIDATION_ERROR", "message": "Invalid field: href (must be an http(s) URL)"}, (0, 0))


def test_an_unclosed_ipv6_origin_on_track_init_is_not_an_allowed_origin(client):
    response = client.post("/track/init", json={"site": "shop", "href": "https://shop.example/"},
                           headers={"Origin": "http://["})
    assert (response.status_code, response.get_json()) == (403, {
        "error": "ORIGIN_NOT_ALLOWED",
        "message": "Origin http://[ is not in the allowed_origins of site 'shop' (sites[].allowed_origins)"})


def test_an_invite_with_an_unclosed_ipv6_referer_lands_on_the_invite_url_itself(client):
    response = client.get("/track/invite?site=shop&channel=vip", headers={**BROWSER, "Referer": "http://["})
    assert response.status_code == 302
    assert [visit.href for visit in Visit.select()] == ["http://localhost/track/invite?site=shop&channel=vip"]


def test_a_telegram_update_with_a_string_where_an_object_belongs_is_acknowledged(client):
    update = {"update_id": 1, "my_chat_member": {"chat": {"id": 1}, "new_chat_member": "x"}}
    response = client.post("/telegram/webhook/shop", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
    assert (response.status_code, response.get_json()) == (200, {"ok": True})
    assert [entry["reason"] for entry in inspector.listing(site="shop", dialect=None, limit=1)] == [
        "webhook: the bot's own membership in chat 1 changed to None (it needs to be an administrator with can_invite_users)"]


@pytest.mark.parametrize("body", ['{"password":"\\ud800"}', "[" * 5000], ids=["lone surrogate", "deep nesting"])
def test_an_admin_login_body_that_cannot_be_read_is_refused_as_invalid_json(client, body):
    response = client.post("/admin/api/login", data=body)
    assert (response.status_code, response.get_json()) == (400, {"error": "Invalid JSON body", "code": 400})


def test_an_admin_login_body_over_the_limit_is_refused_unread(client, config):
    response = client.post("/admin/api/login", data=b" " * (config.max_body_bytes + 1))
    assert (response.status_code, response.get_json()) == (413, {"error": "Request body too large", "code": 413})


@pytest.mark.parametrize("field,token", [("event_id", "NaN"), ("order_id", "-Infinity"), ("event_id", "Infinity")])
def test_a_non_finite_number_token_is_refused_as_an_id(client, field, token):
    body = '{"api_key": "key_demo_123", "event": "x", "%s": %s}' % (field, token)
    response = client.post("/v1/track", data=body, headers=BROWSER)
    assert (response.status_code, response.get_json(), stored()) == (
        400, {"error": f"Invalid field: {field} (must be a string or number)", "code": 400}, (0, 0))


@pytest.mark.parametrize("value", ["1e308", '"Infinity"', "NaN"])
def test_a_value_beyond_any_amount_is_refused(client, value):
    body = '{"api_key": "key_demo_123", "event": "x", "value": %s}' % value
    response = client.post("/v1/track", data=body, headers=BROWSER)
    reason = "must be at most 10000000000000" if value == "1e308" else "must be a number"
    assert (response.status_code, response.get_json(), stored()) == (
        400, {"error": f"Invalid field: value ({reason})", "code": 400}, (0, 0))


def test_a_dry_run_of_a_stored_event_id_gives_the_duplicate_answer(client):
    body = {"api_key": "key_demo_123", "event": "x", "event_id": "evt_once"}
    assert client.post("/v1/track", json=body, headers=BROWSER).status_code == 200
    response = client.post("/v1/track?dry_run=1", json=body, headers=BROWSER)
    assert (response.get_json()["message"], stored()) == ("Duplicate event ignored", (1, 1))


def test_octeths_catalogue_answers_code_2_to_a_list_id_that_is_not_a_number(client):
    """Octeth's error table for website_events.properties: 422, Code 2 "Invalid ListID parameter"."""
    response = client.post("/api/v1/website_events.properties", data=json.dumps({"APIKey": "key_demo_123", "ListID": "abc"}))
    assert (response.status_code, response.get_json()) == (422, {"Errors": [{"Code": 2, "Message": "Invalid ListID parameter"}]})
