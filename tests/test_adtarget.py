"""AdTarget's API through the Flask test client (docs/dialects/adtarget.md): visits, invites, conversions, leads, channels."""
from __future__ import annotations

import json
import re

import pytest

from ingest import inspector
from dialects.adtarget.funnel import Conversion, InviteLink, Lead, TrackingSession, Visit
from models import Event, Send
from tests.conftest import RAW_PII
from tests.fakes.telegram import FREE, NOT_ENOUGH_RIGHTS, VIP, telegram_section
from tests.helpers import sha

KEY = {"Authorization": "Bearer atk_live_demo"}
UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
      "Version/17.5 Mobile/15E148 Safari/604.1")
SERVER_UA = "python-requests/2.32.3"
COOKIES = {"name": "adtarget_temp_id", "maxAge": 31536000, "sameSite": "Lax"}, \
    {"name": "adtarget_session_id", "maxAge": 1800, "sameSite": "Lax"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
META_ATTRIBUTION = "no Meta attribution signal (fbc or fbp) on this Telegram conversion"
NO_SEND_WARNING = f"No CAPI event was scheduled: meta: {META_ATTRIBUTION}"

EMAIL, PHONE = "lead.buyer@example.com", "+1 415 555 0123"
RAW_PII.extend([EMAIL, PHONE, "4155550123", "Lena", "Buyerova"])


def millis(moment) -> int:
    return int(moment.timestamp()) * 1000 + moment.microsecond // 1000


@pytest.fixture
def bot_token(fake_telegram) -> str | None:
    return fake_telegram.token


@pytest.fixture
def raw_config(raw_config, fake_telegram, bot_token):
    raw_config["sites"][0]["telegram"] = telegram_section(fake_telegram.url, bot_token)
    return raw_config


def post(client, path: str, body, headers: dict | None = None, query: str = ""):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(f"/api/v1{path}{query}", data=data, content_type="application/json",
                       headers={**KEY, "User-Agent": SERVER_UA, **(headers or {})})


def ok(response, status: int = 200) -> dict:
    assert response.status_code == status, response.get_json()
    return response.get_json()


def error(code: str, message: str) -> dict:
    return {"error": code, "message": message}


def visit(client, href: str = "https://shop.example/vip?fbclid=AbCd", **fields) -> dict:
    return ok(post(client, "/events/visit", {"href": href, "clientIp": "203.0.113.42", "userAgent": UA, **fields}))


def convert(client, **fields):
    body = {"telegramUserId": 555000111, "channelId": "vip", "eventType": "Lead", **fields}
    return post(client, "/events/conversion", body)


def counts() -> dict:
    return {"events": Event.select().count(), "sends": Send.select().count(), "visits": Visit.select().count(),
            "sessions": TrackingSession.select().count(), "links": InviteLink.select().count(),
            "conversions": Conversion.select().count(), "leads": Lead.select().count()}


NOTHING = {"events": 0, "sends": 0, "visits": 0, "sessions": 0, "links": 0, "conversions": 0, "leads": 0}


def sends() -> list[tuple]:
    return [(s.destination, s.platform, s.status, s.reason) for s in Send.select().order_by(Send.id)]


def refusals() -> list[tuple]:
    return [(e["site"], e["dialect"], e["reason"]) for e in inspector.listing()]


# --- POST /api/v1/events/visit -------------------------------------------------------------------------------


def test_the_seeds_visit_curl_example_creates_a_session_and_a_visit(client):
    # curl -X POST …/api/v1/events/visit -H "Authorization: Bearer atk_live_…" -H "Content-Type: application/json" -d '…'
    data = ('{ "href": "https://yoursite.com/landing?fbclid=AbCd", "fbc": "fb.1.1700000000.AbCd", '
            '"clientIp": "203.0.113.42", "userAgent": "Mozilla/5.0 ..." }')
    response = client.post("/api/v1/events/visit", data=data,
                           headers={"Authorization": "Bearer atk_live_demo", "Content-Type": "application/json"})

    body = ok(response)
    assert re.fullmatch(r"vis_[0-9a-f]{32}", body["visitId"]) and re.fullmatch(r"ses_[0-9a-f]{32}", body["sessionId"])
    assert UUID.fullmatch(body["tempId"]) and UUID.fullmatch(body["clientSessionId"])
    assert body == {
        "visitId": body["visitId"], "sessionId": body["sessionId"], "tempId": body["tempId"],
        "clientSessionId": body["clientSessionId"],
        "cookies": {"tempId": {**COOKIES[0], "value": body["tempId"]},
                    "session": {**COOKIES[1], "value": body["clientSessionId"]}},
    }
    row = Visit.get()
    assert (row.public_id, row.site, row.session_id, row.temp_id) == \
        (body["visitId"], "shop", body["sessionId"], body["tempId"])
    assert (row.href, row.landing_page, row.referrer) == \
        ("https://yoursite.com/landing?fbclid=AbCd", "https://yoursite.com/landing", None)
    assert (row.click_ids, row.ip, row.user_agent, row.location, row.utm, row.properties) == \
        ({"fbc": "fb.1.1700000000.AbCd"}, "203.0.113.42", "Mozilla/5.0 ...", {}, {}, {})
    session = TrackingSession.get()
    assert (session.id, session.temp_id, session.client_session_id) == \
        (body["sessionId"], body["tempId"], body["clientSessionId"])
    assert refusals() == []


@pytest.mark.parametrize("fbclid, kept", [
    ("AbCd", "AbCd"),
    ("IwAR2F4-dbP0_QxYz9", "IwAR2F4-dbP0_QxYz9"),
    ("IwY2xjawE+x", "IwY2xjawE+x"),    # '+' is not a space in a click id: copied as it is
    ("Ab%2DCd%5F", "Ab-Cd_"),            # percent-decoded once, and only once
])
def test_an_fbclid_in_href_yields_an_fbc_minted_at_the_visits_time(client, fbclid, kept):
    visit(client, f"https://shop.example/vip?utm_source=fb&fbclid={fbclid}")

    row = Visit.get()
    assert row.click_ids == {"fbc": f"fb.1.{millis(row.created_at)}.{kept}"}


def test_a_sent_fbc_of_an_older_click_gives_way_to_the_newer_fbclid_in_href(client):
    visit(client, "https://shop.example/vip?fbclid=NewClick", fbc="fb.1.1700000000.OldClick")

    row = Visit.get()
    assert row.click_ids == {"fbc": f"fb.1.{millis(row.created_at)}.NewClick"}


def test_click_ids_and_utm_come_from_href_and_the_body_wins_over_it(client):
    href = ("https://shop.example/vip/?gclid=Cj0KCQ_url&ttclid=E.C.P.tt1&ScCid=sc-9f8e&utm_source=facebook"
            "&utm_medium=paid&utm_campaign=spring&utm_content=ad1&utm_term=vip#top")
    visit(client, href, gclid="Cj0KCQ_body", utmCampaign="summer", referrer="https://l.facebook.com/",
          country="de", city="Berlin", region="BE", tempId="t-1", externalUserId="shop-user-7", fbp="fb.1.1700000000000.99")

    row = Visit.get()
    assert row.click_ids == \
        {"fbp": "fb.1.1700000000000.99", "gclid": "Cj0KCQ_body", "ttclid": "E.C.P.tt1", "sccid": "sc-9f8e"}
    assert row.utm == {"utm_source": "facebook", "utm_medium": "paid", "utm_campaign": "summer", "utm_content": "ad1",
                       "utm_term": "vip"}
    assert (row.landing_page, row.referrer, row.temp_id, row.external_user_id) == \
        ("https://shop.example/vip/", "https://l.facebook.com/", "t-1", "shop-user-7")
    assert row.location == {"country": "de", "city": "berlin", "state": "be"}


@pytest.mark.parametrize("headers, fields, ip, user_agent", [
    ({"X-Adtarget-Client-IP": "198.51.100.1", "X-Adtarget-Client-User-Agent": UA},
     {"clientIp": "203.0.113.42", "userAgent": "Body/1.0"}, "198.51.100.1", UA),
    ({}, {"clientIp": "203.0.113.42", "userAgent": "Body/1.0"}, "203.0.113.42", "Body/1.0"),
    ({}, {}, "127.0.0.1", SERVER_UA),
    ({"X-Adtarget-Client-IP": "not-an-ip"}, {"clientIp": "203.0.113.42"}, "203.0.113.42", SERVER_UA),
    ({"X-Adtarget-Client-User-Agent": UA}, {"clientIp": "2001:db8::1"}, "2001:db8::1", UA),
], ids=["headers win", "body next", "the request itself last", "a bad header IP is ignored", "mixed"])
def test_the_client_ip_and_user_agent_come_from_headers_then_body_then_the_request(client, headers, fields, ip, user_agent):
    ok(post(client, "/events/visit", {"href": "https://shop.example/", **fields}, headers))

    row = Visit.get()
    assert (row.ip, row.user_agent) == (ip, user_agent)


def test_a_returning_visitor_keeps_its_session_and_gets_a_new_visit(client):
    first = visit(client)
    second = visit(client, "https://shop.example/vip/pricing", tempId=first["tempId"],
                   clientSessionId=first["clientSessionId"])
    other_session = visit(client, tempId=first["tempId"])

    assert (second["tempId"], second["clientSessionId"], second["sessionId"]) == \
        (first["tempId"], first["clientSessionId"], first["sessionId"])
    assert second["visitId"] != first["visitId"]
    assert other_session["tempId"] == first["tempId"] and other_session["sessionId"] != first["sessionId"]
    assert (Visit.select().count(), TrackingSession.select().count()) == (3, 2)


def test_dropped_visit_fields_are_listed_in_the_inspector(client):
    visit(client, clientIp="999.1.1.1", fbc="not-a-cookie", landingPage="ftp://x", email=EMAIL, campaign_hint="blue")

    row = Visit.get()
    # The dropped clientIp leaves the next in line: the request's own address.
    assert (row.ip, row.landing_page, row.properties) == ("127.0.0.1", "https://shop.example/vip", {"campaign_hint": "blue"})
    assert refusals() == [("shop", "adtarget", "partly accepted: landingPage: dropped, not an http(s) URL; "
                           "fbc: dropped, not of the form fb.<digit>.<digits>.<value>; "
                           "clientIp: dropped, not an IP address; "
                           "email: dropped, a custom property named like personal data is never stored")]


# --- POST /api/v1/events/update-fbp --------------------------------------------------------------------------


def test_update_fbp_patches_the_visitors_latest_visit(client):
    first = visit(client, "https://shop.example/a")
    visit(client, "https://shop.example/b?fbclid=AbCd", tempId=first["tempId"])

    body = ok(post(client, "/events/update-fbp", {"tempId": first["tempId"], "fbp": "fb.1.1700000000123.42424242"}))

    assert body == {"success": True}
    assert [(v.href, v.click_ids.get("fbp")) for v in Visit.select().order_by(Visit.id)] == \
        [("https://shop.example/a", None), ("https://shop.example/b?fbclid=AbCd", "fb.1.1700000000123.42424242")]


def test_update_fbp_for_an_unknown_visitor_answers_success_false(client):
    body = ok(post(client, "/events/update-fbp", {"tempId": "never-seen", "fbp": "fb.1.1700000000123.42"}))

    assert body == {"success": False}
    assert refusals() == [("shop", "adtarget", "update-fbp: no visit recorded for this tempId")]


# --- POST /api/v1/events/invite ------------------------------------------------------------------------------


def test_invite_creates_a_named_telegram_link_for_the_visitor(client, fake_telegram):
    seen = visit(client)

    body = ok(post(client, "/events/invite", {"tempId": seen["tempId"], "channelId": "vip"}))

    [link] = fake_telegram.links
    assert body == {"inviteLink": link["invite_link"]}
    [call] = fake_telegram.calls("createChatInviteLink")
    name = "pb-" + sha(f"shop\0{seen['tempId']}")[:16]
    assert call["params"] == {"chat_id": VIP, "name": name} and call["token_ok"]
    stored = InviteLink.get()
    assert (stored.site, stored.channel, stored.temp_id, stored.visit.public_id, stored.invite_link, stored.name) == \
        ("shop", "vip", seen["tempId"], seen["visitId"], link["invite_link"], name)


def test_the_same_visitor_gets_the_same_link_again_from_one_telegram_call(client, fake_telegram):
    seen = visit(client)

    first = ok(post(client, "/events/invite", {"tempId": seen["tempId"], "channelId": "vip"}))
    again = ok(post(client, "/events/invite", {"tempId": seen["tempId"], "channelId": VIP}))  # by its Telegram id
    other_channel = ok(post(client, "/events/invite", {"tempId": seen["tempId"], "channelId": FREE}))
    other_visitor = ok(post(client, "/events/invite", {"tempId": visit(client)["tempId"], "channelId": "vip"}))

    assert again == first
    assert len({first["inviteLink"], other_channel["inviteLink"], other_visitor["inviteLink"]}) == 3
    assert len(fake_telegram.calls("createChatInviteLink")) == 3


def test_a_newer_visit_from_an_ad_click_takes_over_the_links_attribution(client):
    first = visit(client, "https://shop.example/")
    link = ok(post(client, "/events/invite", {"tempId": first["tempId"], "channelId": "vip"}))
    organic = visit(client, "https://shop.example/again", tempId=first["tempId"])
    ok(post(client, "/events/invite", {"tempId": first["tempId"], "channelId": "vip"}))
    assert InviteLink.get().visit.public_id == first["visitId"] != organic["visitId"]

    clicked = visit(client, "https://shop.example/?fbclid=Later", tempId=first["tempId"])
    again = ok(post(client, "/events/invite", {"tempId": first["tempId"], "channelId": "vip"}))

    assert again == link
    assert InviteLink.get().visit.public_id == clicked["visitId"]


@pytest.mark.parametrize("script, status, expected", [
    ("not_admin", 502, error("TELEGRAM_ERROR", f"Telegram refused to create an invite link for channel vip ({VIP}): "
                                               f"{NOT_ENOUGH_RIGHTS}; the bot must be an administrator of the channel "
                                               "with the can_invite_users right")),
    ("forbidden", 502, error("TELEGRAM_ERROR", f"Telegram refused to create an invite link for channel vip ({VIP}): "
                                               "Forbidden: bot is not a member of the channel chat; the bot must be an "
                                               "administrator of the channel with the can_invite_users right")),
    ("500", 502, error("TELEGRAM_ERROR", f"Telegram refused to create an invite link for channel vip ({VIP}): "
                                         "HTTP 500 with a body that is not Telegram's JSON")),
    (("429", 7), 429, error("TELEGRAM_RATE_LIMITED", f"Telegram refused to create an invite link for channel vip ({VIP}): "
                                                      "Too Many Requests: retry after 7")),
])
def test_a_telegram_error_comes_back_as_a_clear_error_and_stores_no_link(client, fake_telegram, script, status, expected):
    seen = visit(client)
    fake_telegram.script(script)

    response = post(client, "/events/invite", {"tempId": seen["tempId"], "channelId": "vip"})

    assert (response.status_code, response.get_json()) == (status, expected)
    assert response.headers.get("Retry-After") == ("7" if status == 429 else None)
    assert InviteLink.select().count() == 0
    assert refusals() == [("shop", "adtarget", f"{expected['error']}: {expected['message']}")]
    assert ok(post(client, "/events/invite", {"tempId": seen["tempId"], "channelId": "vip"})) == \
        {"inviteLink": fake_telegram.links[0]["invite_link"]}  # the next try works


def test_a_bot_without_the_invite_right_is_refused_by_the_fake_itself(client, fake_telegram):
    seen = visit(client)
    fake_telegram.demote(VIP)

    response = post(client, "/events/invite", {"tempId": seen["tempId"], "channelId": "vip"})

    assert (response.status_code, response.get_json()["error"]) == (502, "TELEGRAM_ERROR")
    assert NOT_ENOUGH_RIGHTS in response.get_json()["message"]
    assert fake_telegram.calls("createChatInviteLink")[0]["status"] == 400


@pytest.mark.parametrize("bot_token", [None])
def test_invite_without_a_bot_token_is_a_clear_error(client, fake_telegram):
    seen = visit(client)

    response = post(client, "/events/invite", {"tempId": seen["tempId"], "channelId": "vip"})

    assert (response.status_code, response.get_json()) == (503, error(
        "TELEGRAM_NOT_CONFIGURED", "Site 'shop' has no Telegram bot_token (sites[].telegram.bot_token)"))
    assert fake_telegram.requests == []


def test_the_telegram_token_never_appears_in_an_answer_or_the_inspector(client, fake_telegram):
    seen = visit(client)
    fake_telegram.script("not_admin")
    response = post(client, "/events/invite", {"tempId": seen["tempId"], "channelId": "vip"})

    assert fake_telegram.token not in response.get_data(as_text=True)
    assert fake_telegram.token not in json.dumps(inspector.listing())


# --- POST /api/v1/events/conversion --------------------------------------------------------------------------


def test_a_cold_lead_without_click_ids_is_stored_but_not_dispatched(client):
    body = ok(convert(client, clientIp="203.0.113.9", userAgent=UA, eventSourceUrl="https://shop.example/vip"))

    conversion = Conversion.get()
    assert body == {"conversionId": conversion.public_id, "capiStatus": "skipped", "coldLead": True, "dispatched": False,
                    "warning": NO_SEND_WARNING, "sends": []}
    assert re.fullmatch(r"conv_[0-9a-f]{32}", conversion.public_id)
    assert (conversion.status, conversion.source, conversion.cold_lead, conversion.visit_id, conversion.override) == \
        ("skipped", "api", True, None, {"ip": "203.0.113.9", "user_agent": UA, "page_url": "https://shop.example/vip"})
    assert sends() == [("shop/meta", "meta", "skipped", META_ATTRIBUTION)]
    event = Event.get()
    assert (event.event_id, event.dialect, event.channel, event.event_name, event.standard_name) == \
        (conversion.public_id, "adtarget", "chat", "Lead", "Lead")
    assert (event.external_id, event.ip, event.user_agent, event.page_url, event.click_ids) == \
        ("555000111", "203.0.113.0", UA, "https://shop.example/vip", {})  # IP reduced: no send can go out


def test_a_cold_lead_with_click_ids_is_dispatched_to_the_platform_they_belong_to(client):
    body = ok(convert(client, fbc="fb.1.1700000000000.AbCd", fbp="fb.1.1700000000000.42", gclid="Cj0", ttclid="tt1",
                      sccid="sc1", clientIp="203.0.113.9", userAgent=UA))

    [send] = Send.select()
    assert body == {"conversionId": Conversion.get().public_id, "capiStatus": "pending", "coldLead": True,
                    "dispatched": True, "sends": [{"sendId": str(send.id), "platform": "meta"}]}
    assert sends() == [("shop/meta", "meta", "pending", None)]
    assert Event.get().click_ids == {"fbc": "fb.1.1700000000000.AbCd", "fbp": "fb.1.1700000000000.42", "gclid": "Cj0",
                                     "ttclid": "tt1", "sccid": "sc1"}


def test_a_second_conversion_on_the_same_channel_is_warm_and_inherits_the_attribution(client):
    cold = ok(convert(client, fbc="fb.1.1700000000000.AbCd", clientIp="203.0.113.9", userAgent=UA,
                      eventSourceUrl="https://shop.example/vip"))

    warm = ok(convert(client, eventType="Subscribe", fbc="fb.1.1800000000000.Other", fbp="fb.1.1700000000000.42"))
    other_channel = ok(convert(client, channelId="free"))

    assert (cold["coldLead"], warm["coldLead"], other_channel["coldLead"]) == (True, False, True)
    assert warm["dispatched"] is True and other_channel["dispatched"] is False
    event = Event.get(Event.event_id == warm["conversionId"])
    # The original attribution wins; what it lacked (fbp) comes from the new request.
    assert (event.click_ids, event.ip, event.user_agent, event.page_url) == \
        ({"fbc": "fb.1.1700000000000.AbCd", "fbp": "fb.1.1700000000000.42"}, "203.0.113.9", UA, "https://shop.example/vip")


def test_a_conversion_carries_hashed_pii_its_time_value_and_external_user_id(client):
    ok(convert(client, eventType="Purchase", value="49.90", currency="eur", contentName="VIP month", eventTime=1767225600123,
               externalUserId="shop-user-7", pii={"email": " Lead.Buyer@Example.com ", "phone": PHONE,
                                                  "firstName": "Lena", "lastName": "Buyerova"},
               fbc="fb.1.1700000000000.AbCd", coupon="SPRING"))

    event = Event.get()
    assert (event.event_name, event.standard_name, event.value, event.currency, event.external_id) == \
        ("Purchase", "Purchase", 49.9, "EUR", "shop-user-7")
    assert event.occurred_at.isoformat() == "2026-01-01T00:00:00.123000+00:00"
    assert (event.identity["em"], event.identity["ph"], event.identity["fn"], event.identity["ln"]) == \
        (sha(EMAIL), sha("14155550123"), sha("lena"), sha("buyerova"))
    assert event.properties == {"content_name": "VIP month", "coupon": "SPRING"}
    assert event.location == {"country": "us"}
    assert (Lead.get().telegram_user_id, Lead.get().external_user_id) == ("555000111", "shop-user-7")


def test_a_custom_conversion_is_named_by_custom_event_name(client):
    ok(convert(client, eventType="Custom", customEventName="JoinedWebinar", fbc="fb.1.1700000000000.AbCd"))

    event = Event.get()
    assert (event.event_name, event.standard_name, Conversion.get().event_type) == ("JoinedWebinar", "Custom", "Custom")


def test_a_purchase_without_value_waits_and_sends_nothing(client):
    body = ok(convert(client, eventType="Purchase", fbc="fb.1.1700000000000.AbCd"))

    conversion = Conversion.get()
    assert body == {
        "conversionId": conversion.public_id, "capiStatus": "pending", "coldLead": True, "dispatched": False,
        "warning": "Purchase without value: stored and awaiting a value; nothing is sent until POST "
                   f"/api/v1/leads/555000111/conversions/{conversion.public_id}/value supplies one",
        "sends": [],
    }
    assert (conversion.status, conversion.value) == ("awaiting_value", None)
    assert (Event.select().count(), Send.select().count()) == (0, 0)


def test_submitting_the_value_accepts_and_dispatches_the_waiting_purchase(client):
    waiting = ok(convert(client, eventType="Purchase", fbc="fb.1.1700000000000.AbCd", pii={"email": EMAIL}))
    path = f"/leads/555000111/conversions/{waiting['conversionId']}/value"

    body = ok(post(client, path, {"value": 99.5, "currency": "USD", "pii": {"phone": PHONE}}))

    assert body == {"success": True}
    event = Event.get()
    assert (event.event_id, event.value, event.currency) == (waiting["conversionId"], 99.5, "USD")
    assert (event.identity["em"], event.identity["ph"]) == (sha(EMAIL), sha("14155550123"))
    assert sends() == [("shop/meta", "meta", "pending", None)]
    conversion = Conversion.get()
    assert (conversion.status, conversion.value, conversion.currency, conversion.pending_event) == \
        ("dispatched", 99.5, "USD", None)
    again = post(client, path, {"value": 99.5, "currency": "USD"})
    assert (again.status_code, again.get_json()) == (409, error(
        "CONVERSION_NOT_AWAITING_VALUE", f"Conversion {waiting['conversionId']} is not awaiting a value (it is dispatched)"))
    assert (Event.select().count(), Send.select().count()) == (1, 1)


@pytest.mark.parametrize("path_user, conversion_id", [("555000111", "conv_nope"), ("42", None)])
def test_a_value_for_an_unknown_conversion_is_404(client, path_user, conversion_id):
    waiting = ok(convert(client, eventType="Purchase"))
    conversion_id = conversion_id or waiting["conversionId"]

    response = post(client, f"/leads/{path_user}/conversions/{conversion_id}/value", {"value": 5, "currency": "USD"})

    assert (response.status_code, response.get_json()) == (404, error(
        "CONVERSION_NOT_FOUND", f"No conversion {conversion_id} for Telegram user {path_user} on this site"))


# --- the attribution rule (routing.missing_attribution) ----------------------------------------------------------

SIGNALS = {"meta": ("fbc", "fbp"), "tiktok": ("ttclid", "ttp"), "snapchat": ("sccid", "scid"),
           "google_ads": ("gclid", "gbraid", "wbraid"), "ga4": ("ga_client_id",)}
DRY_DESTINATIONS = [
    {"name": "meta", "platform": "meta", "mode": "dry", "pixel_id": "123"},
    {"name": "tiktok", "platform": "tiktok", "mode": "dry", "pixel_code": "C123"},
    {"name": "snap", "platform": "snapchat", "mode": "dry", "pixel_id": "abc"},
    {"name": "gads", "platform": "google_ads", "mode": "dry", "customer_id": "1234567890",
     "conversion_actions": {"Lead": "customers/1234567890/conversionActions/42"}},
    {"name": "ga4", "platform": "ga4", "mode": "dry", "measurement_id": "G-XXXX"},
]


@pytest.fixture
def every_platform(raw_config, monkeypatch):
    """All five platforms, each with the signal keys its module declares."""
    from ingest.clickids import attribution_keys
    from platforms import REGISTRY

    raw_config["sites"][0]["destinations"] = DRY_DESTINATIONS
    assert {name: attribution_keys(REGISTRY[name]) for name in SIGNALS} == SIGNALS
    return REGISTRY


@pytest.mark.parametrize("signals, planned", [
    ({"ttclid": "E.C.P.tt1"}, ["tiktok"]),
    ({"gclid": "Cj0KCQ", "fbp": "fb.1.1700000000000.42"}, ["meta", "google_ads"]),
    ({"sccid": "sc-1", "ga_client_id": "GA1.1.123.456"}, ["snapchat", "ga4"]),
])
def test_a_chat_event_is_planned_only_for_the_platforms_whose_signal_it_carries(every_platform, client, signals, planned):
    body = ok(convert(client, clientIp="203.0.113.9", userAgent=UA, eventSourceUrl="https://shop.example/vip", **signals))

    pending = Send.select().where(Send.status == "pending").order_by(Send.id)
    assert body["sends"] == [{"sendId": str(s.id), "platform": s.platform} for s in pending]
    assert [s["platform"] for s in body["sends"]] == planned
    assert body["dispatched"] is True and "warning" not in body
    label = {name: every_platform[name].LABEL for name in SIGNALS}
    assert {(s.platform, s.status, s.reason) for s in Send.select()} == {
        (name, "pending", None) if name in planned else
        (name, "skipped", f"no {label[name]} attribution signal ({' or '.join(keys)}) on this Telegram conversion")
        for name, keys in SIGNALS.items()}


def test_without_any_signal_the_warning_names_every_platforms_reason(every_platform, client):
    body = ok(convert(client))

    assert body["dispatched"] is False and body["capiStatus"] == "skipped"
    assert body["warning"] == "No CAPI event was scheduled: " + "; ".join(
        f"{dest['name']}: no {every_platform[dest['platform']].LABEL} attribution signal "
        f"({' or '.join(SIGNALS[dest['platform']])}) on this Telegram conversion" for dest in DRY_DESTINATIONS)


def test_website_events_are_untouched_by_the_attribution_rule(every_platform, client):
    response = client.post("/v1/track", json={"api_key": "key_demo_123", "event": "signed_up", "distinct_id": "u1",
                                              "source_url": "https://shop.example/"}, headers={"User-Agent": UA})

    assert response.status_code == 200
    assert {(s.platform, s.status) for s in Send.select()} == {(name, "pending") for name in SIGNALS}


@pytest.fixture
def no_destinations(raw_config):
    raw_config["sites"][0]["destinations"] = []


def test_a_site_without_destinations_warns_that_no_pixel_is_configured(no_destinations, client):
    body = ok(convert(client, fbc="fb.1.1700000000000.AbCd"))

    assert (body["dispatched"], body["warning"]) == \
        (False, "No CAPI event was scheduled: no pixel is configured for this site")


# --- the leads API and channels -------------------------------------------------------------------------------


def test_a_leads_event_resolves_the_channel_from_its_latest_conversion(client):
    ok(convert(client, channelId="free", fbc="fb.1.1700000000000.AbCd"))

    body = ok(post(client, "/leads/555000111/events", {"eventType": "CompleteRegistration"}))

    latest = Conversion.select().order_by(Conversion.id.desc()).get()
    assert (latest.channel, latest.event_type, body["coldLead"], body["dispatched"]) == \
        ("free", "CompleteRegistration", False, True)


def test_a_leads_event_for_an_unknown_lead_is_lead_not_found(client):
    response = post(client, "/leads/42/events", {"eventType": "Lead"})

    assert (response.status_code, response.get_json()) == \
        (404, error("LEAD_NOT_FOUND", "No conversion for Telegram user 42 on this site"))


def test_get_lead_lists_everything_known_about_it(client):
    first = ok(convert(client, fbc="fb.1.1700000000000.AbCd", eventTime=1767225600000))
    waiting = ok(convert(client, eventType="Purchase", eventTime=1767225660000, externalUserId="shop-user-7"))
    cold = ok(convert(client, channelId="free", eventType="Subscribe", value=5, eventTime=1767225720000))

    body = ok(client.get("/api/v1/leads/555000111", headers=KEY))

    lead = Lead.get()
    assert body == {
        "telegramUserId": 555000111,
        "firstSeenAt": millis(lead.first_seen_at),
        "lastSeenAt": millis(lead.last_seen_at),
        "externalUserId": "shop-user-7",
        "conversions": [
            {"conversionId": first["conversionId"], "channelId": "vip", "eventType": "Lead", "capiStatus": "pending",
             "attributedAt": 1767225600000, "source": "api"},
            {"conversionId": waiting["conversionId"], "channelId": "vip", "eventType": "Purchase",
             "capiStatus": "awaiting_value", "attributedAt": 1767225660000, "source": "api"},
            {"conversionId": cold["conversionId"], "channelId": "free", "eventType": "Subscribe", "capiStatus": "skipped",
             "attributedAt": 1767225720000, "eventValue": 5.0, "eventCurrency": "USD", "source": "api"},
        ],
    }


def test_get_lead_of_an_unknown_user_is_lead_not_found(client):
    response = client.get("/api/v1/leads/42", headers=KEY)

    assert (response.status_code, response.get_json()) == \
        (404, error("LEAD_NOT_FOUND", "No conversion for Telegram user 42 on this site"))


def test_channels_lists_the_sites_channels_in_funnel_order(client):
    body = ok(client.get("/api/v1/channels", headers=KEY))

    assert body == {"channels": [
        {"channelId": "free", "telegramChannelId": FREE, "title": "Free", "funnelOrder": 0, "eventType": "Subscribe"},
        {"channelId": "vip", "telegramChannelId": VIP, "title": "VIP", "username": "vipchan", "funnelOrder": 1,
         "eventType": "Lead"},
    ]}


# --- errors -----------------------------------------------------------------------------------------------------

ENDPOINTS = [
    ("POST", "/events/visit"), ("POST", "/events/update-fbp"), ("POST", "/events/invite"),
    ("POST", "/events/conversion"), ("POST", "/leads/42/events"), ("POST", "/leads/42/conversions/conv_x/value"),
    ("GET", "/leads/42"), ("GET", "/channels"),
]


@pytest.mark.parametrize("method, path", ENDPOINTS)
@pytest.mark.parametrize("headers, message", [
    ({}, "Missing Authorization header: send Authorization: Bearer <API key>"),
    ({"Authorization": "Bearer atk_live_wrong"}, "Invalid API key"),
    ({"Authorization": "Basic atk_live_demo"}, "Invalid API key"),
    ({"Authorization": "Bearer"}, "Invalid API key"),
])
def test_every_endpoint_refuses_a_missing_or_wrong_key(client, method, path, headers, message):
    response = client.open(f"/api/v1{path}", method=method, json={}, headers=headers)

    assert (response.status_code, response.get_json()) == (401, error("UNAUTHORIZED", message))
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="Postback"'
    assert refusals() == [(None, "adtarget", f"UNAUTHORIZED: {message}")]


@pytest.mark.parametrize("path", [p for m, p in ENDPOINTS if m == "POST"])
@pytest.mark.parametrize("data, status, expected", [
    ("{not json", 400, error("INVALID_JSON", "Request body is not valid JSON")),
    ('"\\ud800"', 400, error("INVALID_JSON", "Request body is not valid JSON")),
    ("[1, 2]", 400, error("INVALID_JSON", "Request body must be a JSON object")),
    ('{"href": "' + "x" * 40000 + '"}', 413, error("PAYLOAD_TOO_LARGE", "Request body is larger than 32768 bytes")),
])
def test_every_post_refuses_bodies_that_are_not_a_json_object_of_allowed_size(client, path, data, status, expected):
    response = post(client, path, data)

    assert (response.status_code, response.get_json()) == (status, expected)
    assert counts() == NOTHING


def invalid(field: str, why: str | None = None) -> dict:
    return error("VALIDATION_ERROR", f"Invalid field: {field} ({why})" if why else f"Missing required field: {field}")


NOT_A_TELEGRAM_ID = invalid("telegramUserId", "must be a positive integer (the Telegram user id)")
VALID = {
    "/events/visit": {"href": "https://shop.example/"},
    "/events/update-fbp": {"tempId": "t-1", "fbp": "fb.1.1700000000000.42"},
    "/events/invite": {"tempId": "t-1", "channelId": "vip"},
    "/events/conversion": {"telegramUserId": 555000111, "channelId": "vip", "eventType": "Lead"},
    "/leads/555000111/conversions/conv_x/value": {"value": 10, "currency": "USD"},
}


@pytest.mark.parametrize("path, change, expected", [
    ("/events/visit", {"href": None}, invalid("href")),
    ("/events/visit", {"href": "   "}, invalid("href")),
    ("/events/visit", {"href": "/relative/page"}, invalid("href", "must be an http(s) URL")),
    ("/events/visit", {"href": ["https://shop.example/"]}, invalid("href", "must be an http(s) URL")),
    ("/events/visit", {"tempId": {"a": 1}}, invalid("tempId", "must be a string or number")),
    ("/events/visit", {"tempId": "t" * 256}, invalid("tempId", "must be at most 255 characters")),
    ("/events/visit", {"clientSessionId": True}, invalid("clientSessionId", "must be a string or number")),
    ("/events/visit", {"userAgent": ["Mozilla"]}, invalid("userAgent", "must be a string")),
    ("/events/visit", {"utmSource": {"x": 1}}, invalid("utmSource", "must be a string")),
    ("/events/visit", {"referrer": "r" * 5000}, invalid("referrer", "must be at most 4096 characters")),
    ("/events/update-fbp", {"tempId": None}, invalid("tempId")),
    ("/events/update-fbp", {"fbp": None}, invalid("fbp")),
    ("/events/update-fbp", {"fbp": "_fbp.1.1554"}, invalid("fbp", "must be of the form fb.<digit>.<digits>.<value>")),
    ("/events/update-fbp", {"fbp": 42}, invalid("fbp", "must be of the form fb.<digit>.<digits>.<value>")),
    ("/events/invite", {"tempId": None}, invalid("tempId")),
    ("/events/invite", {"channelId": None}, invalid("channelId")),
    ("/events/invite", {"channelId": [VIP]}, invalid("channelId", "must be a string or number")),
    ("/events/conversion", {"telegramUserId": None}, invalid("telegramUserId")),
    *[("/events/conversion", {"telegramUserId": bad}, NOT_A_TELEGRAM_ID) for bad in ("abc", -5, 0, 1.5, True, 10 ** 30)],
    ("/events/conversion", {"channelId": None}, invalid("channelId")),
    ("/events/conversion", {"eventType": None}, invalid("eventType")),
    ("/events/conversion", {"eventType": "lead"},
     invalid("eventType", "must be one of Lead, Purchase, CompleteRegistration, Subscribe, Custom")),
    ("/events/conversion", {"eventType": "Custom"}, invalid("customEventName")),
    ("/events/conversion", {"eventType": "Custom", "customEventName": 12345}, None),
    ("/events/conversion", {"value": "lots"}, invalid("value", "must be a number")),
    ("/events/conversion", {"value": -1}, invalid("value", "must not be negative")),
    ("/events/conversion", {"value": 1e400}, invalid("value", "must be a number")),
    ("/events/conversion", {"currency": "ZZZ"}, invalid("currency", "must be an ISO 4217 currency code such as USD")),
    ("/events/conversion", {"currency": 840}, invalid("currency", "must be an ISO 4217 currency code such as USD")),
    ("/events/conversion", {"eventTime": "yesterday"}, invalid("eventTime", "must be a number")),
    ("/events/conversion", {"eventTime": 10 ** 20}, invalid("eventTime", "must be Unix milliseconds")),
    ("/events/conversion", {"externalUserId": {"id": 1}}, invalid("externalUserId", "must be a string or number")),
    ("/events/conversion", {"pii": "lead.buyer@example.com"}, invalid("pii", "must be an object")),
    ("/events/conversion", {"contentName": ["a"]}, invalid("contentName", "must be a string")),
    ("/events/conversion", {"eventSourceUrl": {"u": 1}}, invalid("eventSourceUrl", "must be a string")),
    ("/leads/555000111/conversions/conv_x/value", {"value": None}, invalid("value")),
    ("/leads/555000111/conversions/conv_x/value", {"value": 0}, invalid("value", "must be greater than 0")),
    ("/leads/555000111/conversions/conv_x/value", {"value": "1e999"}, invalid("value", "must be a number")),
    ("/leads/555000111/conversions/conv_x/value", {"currency": None}, invalid("currency")),
    ("/leads/555000111/conversions/conv_x/value", {"currency": "Dollars"},
     invalid("currency", "must be an ISO 4217 currency code such as USD")),
    ("/leads/555000111/conversions/conv_x/value", {"pii": [EMAIL]}, invalid("pii", "must be an object")),
])
def test_a_bad_field_is_refused_naming_it_and_stores_nothing(client, path, change, expected):
    body = {k: v for k, v in {**VALID[path], **change}.items() if v is not None}

    response = post(client, path, body)

    if expected is None:  # a number where text is expected is coerced, not refused
        assert response.status_code == 200
        return
    assert (response.status_code, response.get_json()) == (400, expected)
    assert counts() == NOTHING
    assert refusals() == [("shop", "adtarget", f"VALIDATION_ERROR: {expected['message']}")]


@pytest.mark.parametrize("path", ["/leads/abc/events", "/leads/0/conversions/conv_x/value", "/leads/-1"])
def test_a_bad_telegram_user_id_in_the_path_is_refused(client, path):
    method = "GET" if path == "/leads/-1" else "POST"
    response = client.open(f"/api/v1{path}", method=method, json={"eventType": "Lead", "value": 1, "currency": "USD"},
                           headers=KEY)

    assert (response.status_code, response.get_json()) == \
        (400, invalid("telegramUserId", "must be a positive integer (the Telegram user id)"))


@pytest.mark.parametrize("path, body, expected", [
    ("/events/invite", {"tempId": "t-1", "channelId": "nope"},
     error("CHANNEL_NOT_FOUND", "No channel nope on this site (sites[].telegram.channels)")),
    ("/events/invite", {"tempId": "t-1", "channelId": -1005555555555},
     error("CHANNEL_NOT_FOUND", "No channel -1005555555555 on this site (sites[].telegram.channels)")),
    ("/events/invite", {"tempId": "never-seen", "channelId": "vip"},
     error("VISIT_NOT_FOUND", "No visit recorded for tempId never-seen: call POST /api/v1/events/visit first")),
    ("/events/conversion", {"telegramUserId": 1, "channelId": "nope", "eventType": "Lead"},
     error("CHANNEL_NOT_FOUND", "No channel nope on this site (sites[].telegram.channels)")),
])
def test_unknown_channels_and_visitors_are_404(client, path, body, expected):
    response = post(client, path, body)

    assert (response.status_code, response.get_json()) == (404, expected)
    assert counts() == NOTHING


@pytest.mark.parametrize("body", [
    {"telegramUserId": 555000111, "channelId": "vip", "eventType": "Lead", "pii": {"email": {"deep": [1, {"x": None}]}}},
    {"telegramUserId": "555000111", "channelId": -1001234567890, "eventType": "Lead", "fbc": ["nested"], "fbp": 12},
    {"telegramUserId": 555000111, "channelId": "vip", "eventType": "Lead", "clientIp": 12345, "userAgent": 7,
     "nested": {"a": [{"b": {"email": EMAIL}}]}, "ünïcødé": "✓ 日本語"},
    {"telegramUserId": 555000111, "channelId": "vip", "eventType": "Purchase", "value": "0", "currency": "jpy",
     "pii": {"email": "not-an-email", "phone": "12", "firstName": "!!!", "address": "1 Main St"}},
])
def test_odd_but_valid_conversions_are_accepted_without_a_500_or_raw_pii(client, body):
    response = post(client, "/events/conversion", body)

    assert response.status_code == 200, response.get_json()
    assert (Event.select().count(), Conversion.select().count()) == (1, 1)
    stored = json.dumps([Event.get().properties, Event.get().identity, Event.get().notes])
    assert EMAIL not in stored and "1 Main St" not in stored


# --- dry runs -----------------------------------------------------------------------------------------------------


def test_a_dry_run_stores_nothing_and_asks_telegram_nothing(client, fake_telegram):
    seen = visit(client)
    waiting = ok(convert(client, eventType="Purchase", fbc="fb.1.1700000000000.AbCd"))
    before = counts()

    visit_run = ok(post(client, "/events/visit", {"href": "https://shop.example/?fbclid=x"}, query="?dry_run=1"))
    invite_run = ok(post(client, "/events/invite", {"tempId": seen["tempId"], "channelId": "vip"}, query="?dry_run=1"))
    conversion_run = ok(post(client, "/events/conversion", {"telegramUserId": 7, "channelId": "vip", "eventType": "Lead",
                                                            "fbc": "fb.1.1700000000000.x"}, query="?dry_run=1"))
    refused = post(client, "/events/conversion", {"channelId": "vip"}, query="?dry_run=1")
    value_run = ok(post(client, f"/leads/555000111/conversions/{waiting['conversionId']}/value",
                        {"value": 10, "currency": "USD"}, query="?dry_run=1"))
    fbp_run = ok(post(client, "/events/update-fbp", {"tempId": seen["tempId"], "fbp": "fb.1.1.2"}, query="?dry_run=1"))

    assert visit_run["dry_run"] is True and invite_run == {"inviteLink": None, "dry_run": True}
    assert {k: v for k, v in conversion_run.items() if k not in ("conversionId", "destinations")} == \
        {"capiStatus": "pending", "coldLead": True, "dispatched": True, "sends": [], "dry_run": True}
    [destination] = conversion_run["destinations"]
    assert (destination["name"], destination["status"], destination["payload"]["action_source"]) == \
        ("meta", "would_send", "chat")
    assert refused.status_code == 400
    assert (value_run["success"], value_run["destinations"][0]["payload"]["custom_data"]) == \
        (True, {"value": 10.0, "currency": "USD"})
    assert fbp_run == {"success": True, "dry_run": True} and Visit.get().click_ids.get("fbp") is None
    assert Conversion.get().status == "awaiting_value"
    assert counts() == before and refusals() == [] and fake_telegram.requests == []
