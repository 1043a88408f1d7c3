"""The tracker (docs/dialects/adtarget.md): `POST /track/init` and `GET /track/invite` serve a landing page's browser directly.

The test client keeps cookies like a browser; Telegram is tests/fakes/telegram.py, Meta tests/fakes/meta.py
drained by the dispatcher as in tests/test_delivery.py.
"""
from __future__ import annotations

import json
import re

import pytest
from markupsafe import escape

from ingest import inspector
from ingest.canonical import utcnow
from dialects.adtarget.funnel import InviteLink, TrackingSession, Visit
from models import Event, Send
from tests.conftest import BROWSER, RAW_PII, meta_destination, with_destinations
from tests.fakes.telegram import VIP, chat_member, telegram_section
from tests.helpers import sha

SHOP = "https://shop.example"
ORIGIN = {"Origin": SHOP}
HREF = "https://shop.example/vip?utm_source=facebook&fbclid=IwAR2F4-dbP0_QxYz9"
UA, IP = BROWSER["User-Agent"], BROWSER["X-Postback-Client-IP"]
SECRET = "whsec_Test-Secret_1"
LEAD_ID = 555000222
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
NOTHING = {"visits": 0, "sessions": 0, "links": 0, "events": 0, "sends": 0}
CORS = {"Access-Control-Allow-Origin": SHOP, "Access-Control-Allow-Credentials": "true",
        "Access-Control-Allow-Methods": "POST, OPTIONS", "Access-Control-Allow-Headers": "Content-Type",
        "Access-Control-Max-Age": "600"}
RAW_PII.extend(value for value in ("Tatiana", "Joinova", "tatiana_joins") if value not in RAW_PII)


@pytest.fixture
def bot_token(fake_telegram) -> str | None:
    return fake_telegram.token


@pytest.fixture
def origins() -> list[str]:
    return [SHOP]


@pytest.fixture
def trusted_proxies() -> int:
    return 0


@pytest.fixture
def raw_config(raw_config, fake_telegram, fake_meta, bot_token, origins, trusted_proxies):
    """The example site with the two test channels and a live Meta pointing at the fake."""
    raw = with_destinations(raw_config, meta_destination(fake_meta.url))
    raw["sites"][0]["telegram"] = telegram_section(fake_telegram.url, bot_token, SECRET)
    raw["sites"][0]["allowed_origins"] = origins
    raw["server"]["trusted_proxies"] = trusted_proxies
    raw["dispatch"]["timeout_seconds"] = 2
    return raw


def millis(moment) -> int:
    return int(moment.timestamp()) * 1000 + moment.microsecond // 1000


def init(client, body=None, headers: dict | None = None, query: str = "", **kwargs):
    body = {"site": "shop", "href": HREF} if body is None else body
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(f"/track/init{query}", data=data, content_type="application/json",
                       headers={**BROWSER, **ORIGIN, **(headers or {})}, **kwargs)


def initiated(client, **fields) -> dict:
    response = init(client, {"site": "shop", "href": HREF, **fields})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def invite(client, query: str = "site=shop&channel=vip", headers: dict | None = None, **kwargs):
    return client.get(f"/track/invite?{query}", headers={**BROWSER, **(headers or {})}, **kwargs)


def redirected(response) -> str:
    assert response.status_code == 302, response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    return response.headers["Location"]


def set_cookies(response) -> dict:
    """Each Set-Cookie as {name: {value, attributes…}}; Expires left out (it is now + Max-Age)."""
    cookies = {}
    for header in response.headers.getlist("Set-Cookie"):
        first, *attributes = header.split("; ")
        name, _, value = first.partition("=")
        cookies[name] = {"value": value, **{key: val for key, _, val in (a.partition("=") for a in attributes)
                                            if key != "Expires"}}
    return cookies


def visitor_cookies(temp_id: str, session_id: str, secure: bool = False) -> dict:
    flags = {"HttpOnly": "", "Path": "/", "SameSite": "Lax", **({"Secure": ""} if secure else {})}
    return {"adtarget_temp_id": {"value": temp_id, "Max-Age": "31536000", **flags},
            "adtarget_session_id": {"value": session_id, "Max-Age": "1800", **flags}}


def cors_headers(response) -> dict:
    return {k: v for k, v in response.headers.items() if k.startswith("Access-Control-")}


def counts() -> dict:
    return {"visits": Visit.select().count(), "sessions": TrackingSession.select().count(),
            "links": InviteLink.select().count(), "events": Event.select().count(), "sends": Send.select().count()}


def refusals() -> list[tuple]:
    return [(e["site"], e["dialect"], e["reason"]) for e in inspector.listing()]


def page(title: str, message: str, extra: str = "") -> str:
    """The whole error page /track/invite answers a person with."""
    message = escape(message)
    return ('<!doctype html><html lang="en"><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{title}</title>"
            '<body style="font-family: system-ui, sans-serif; max-width: 34rem; margin: 3rem auto; padding: 0 1rem">'
            f"<h1>{title}</h1><p>{message}</p>{extra}</body></html>\n")


# --- POST /track/init ----------------------------------------------------------------------------------------


def test_init_records_a_visit_like_the_api_and_sets_the_visitors_cookies(client):
    response = init(client, {"site": "shop", "href": HREF, "referrer": "https://l.facebook.com/",
                             "fbp": "fb.1.1767225600000.1116446470"})

    body = response.get_json()
    assert response.status_code == 200
    assert re.fullmatch(r"vis_[0-9a-f]{32}", body["visitId"]) and re.fullmatch(r"ses_[0-9a-f]{32}", body["sessionId"])
    assert UUID.fullmatch(body["tempId"]) and UUID.fullmatch(body["clientSessionId"])
    assert body == {
        "visitId": body["visitId"], "sessionId": body["sessionId"], "tempId": body["tempId"],
        "clientSessionId": body["clientSessionId"],
        "cookies": {"tempId": {"name": "adtarget_temp_id", "value": body["tempId"], "maxAge": 31536000,
                               "sameSite": "Lax"},
                    "session": {"name": "adtarget_session_id", "value": body["clientSessionId"], "maxAge": 1800,
                                "sameSite": "Lax"}},
    }
    assert set_cookies(response) == visitor_cookies(body["tempId"], body["clientSessionId"])
    row = Visit.get()
    assert (row.public_id, row.site, row.session_id, row.temp_id) == \
        (body["visitId"], "shop", body["sessionId"], body["tempId"])
    assert (row.href, row.landing_page, row.referrer, row.ip, row.user_agent) == \
        (HREF, "https://shop.example/vip", "https://l.facebook.com/", IP, UA)
    assert row.click_ids == {"fbp": "fb.1.1767225600000.1116446470",
                             "fbc": f"fb.1.{millis(row.created_at)}.IwAR2F4-dbP0_QxYz9"}
    assert (row.utm, row.properties, row.location) == ({"utm_source": "facebook"}, {}, {})
    assert refusals() == []


def test_the_same_browser_keeps_its_temp_id_and_live_session(client):
    first = initiated(client)
    second = initiated(client, href="https://shop.example/vip/pricing")

    assert (second["tempId"], second["clientSessionId"], second["sessionId"]) == \
        (first["tempId"], first["clientSessionId"], first["sessionId"])
    assert second["visitId"] != first["visitId"]
    assert (Visit.select().count(), TrackingSession.select().count()) == (2, 1)


def test_a_reload_of_the_ads_page_is_the_same_click_with_the_same_fbc(client):
    initiated(client)
    initiated(client)  # the same URL, fbclid and all
    initiated(client, href="https://shop.example/vip?fbclid=SecondClick")

    first, reload, second = Visit.select().order_by(Visit.id)
    assert reload.click_ids == first.click_ids == {"fbc": f"fb.1.{millis(first.created_at)}.IwAR2F4-dbP0_QxYz9"}
    assert second.click_ids == {"fbc": f"fb.1.{millis(second.created_at)}.SecondClick"}


def test_another_browser_is_another_visitor(app, client):
    first = initiated(client)
    other = initiated(app.test_client())

    assert other["tempId"] != first["tempId"] and other["sessionId"] != first["sessionId"]


def test_an_expired_session_cookie_starts_a_new_session_for_the_same_visitor(client):
    first = initiated(client)
    client.delete_cookie("adtarget_session_id")

    second = initiated(client)

    assert second["tempId"] == first["tempId"]
    assert (second["clientSessionId"], second["sessionId"]) != (first["clientSessionId"], first["sessionId"])
    assert TrackingSession.select().count() == 2


def test_the_cookie_names_the_visitor_over_a_temp_id_in_the_body(client):
    first = initiated(client)

    second = initiated(client, tempId="from-local-storage")

    assert second["tempId"] == first["tempId"]


def test_without_cookies_the_bodys_temp_id_names_the_visitor(client):
    body = initiated(client, tempId="t-42", clientSessionId="s-42")

    assert (body["tempId"], body["clientSessionId"]) == ("t-42", "s-42")
    assert set_cookies(init(client))["adtarget_temp_id"]["value"] == "t-42"


def test_a_text_plain_body_is_read_as_json_so_a_page_can_skip_the_preflight(client):
    response = client.post("/track/init", data=json.dumps({"site": "shop", "href": HREF}),
                           content_type="text/plain;charset=UTF-8", headers={**BROWSER, **ORIGIN})

    assert response.status_code == 200
    assert Visit.get().href == HREF


def test_the_request_itself_names_the_browser_not_client_ip_or_user_agent_in_the_body(client):
    initiated(client, clientIp="198.51.100.9", userAgent="Spoofed/1.0")

    row = Visit.get()
    assert (row.ip, row.user_agent) == (IP, UA)


def test_the_site_may_be_named_in_the_query_string(client):
    response = init(client, {"href": HREF}, query="?site=shop")

    assert response.status_code == 200
    assert Visit.get().properties == {}


def test_dropped_fields_of_an_accepted_init_go_to_the_inspector(client):
    initiated(client, fbc="not-a-cookie", email="jane@example.org", campaign_hint="blue")

    assert Visit.get().properties == {"campaign_hint": "blue"}
    assert refusals() == [("shop", "tracker", "init: partly accepted: fbc: dropped, not of the form "
                           "fb.<digit>.<digits>.<value>; email: dropped, a custom property named like personal "
                           "data is never stored")]


def test_a_dry_run_stores_nothing_and_sets_no_cookie(client):
    response = init(client, {"site": "shop", "href": HREF, "fbc": "bad"}, query="?dry_run=1")

    body = response.get_json()
    assert body["dry_run"] is True and UUID.fullmatch(body["tempId"])
    assert response.headers.getlist("Set-Cookie") == []
    assert counts() == NOTHING and refusals() == []


# --- CORS with credentials -------------------------------------------------------------------------------------


def test_an_allowed_origin_gets_cors_with_credentials_and_its_exact_origin(client):
    response = init(client)

    assert cors_headers(response) == CORS
    assert response.headers["Vary"] == "Origin"


def test_the_preflight_of_an_allowed_origin_is_answered_with_credentials(client):
    response = client.options("/track/init?site=shop", headers={
        **ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})

    assert (response.status_code, response.get_data()) == (204, b"")
    assert cors_headers(response) == CORS


@pytest.mark.parametrize("query", ["?site=shop", ""], ids=["for the site", "before the site is known"])
def test_the_preflight_of_another_origin_gets_no_cors(client, query):
    response = client.options(f"/track/init{query}", headers={"Origin": "https://evil.example",
                                                               "Access-Control-Request-Method": "POST"})

    assert response.status_code == 204
    assert cors_headers(response) == {}


def test_a_post_from_another_origin_is_refused_and_stores_nothing(client):
    response = init(client, headers={"Origin": "https://evil.example"})

    assert (response.status_code, response.get_json()) == (403, {
        "error": "ORIGIN_NOT_ALLOWED",
        "message": "Origin https://evil.example is not in the allowed_origins of site 'shop' "
                   "(sites[].allowed_origins)"})
    assert cors_headers(response) == {} and response.headers.getlist("Set-Cookie") == []
    assert counts() == NOTHING
    assert refusals() == [("shop", "tracker", "init: ORIGIN_NOT_ALLOWED: Origin https://evil.example is not in the "
                                              "allowed_origins of site 'shop' (sites[].allowed_origins)")]


def test_a_page_served_from_the_trackers_own_origin_needs_no_listing(client):
    response = init(client, headers={"Origin": "http://localhost"})

    assert response.status_code == 200
    assert cors_headers(response) == {}


@pytest.mark.parametrize("origins", [["*"]])
@pytest.mark.parametrize("origin", ["https://landing.example", "null"])
def test_a_wildcard_site_gives_no_origin_the_visitors_cookies(client, origin):
    response = init(client, headers={"Origin": origin})
    preflight = client.options("/track/init?site=shop", headers={"Origin": origin})

    assert (cors_headers(response), cors_headers(preflight)) == ({}, {})


@pytest.mark.parametrize("origins", [["*", "https://landing.example"]])
def test_an_origin_listed_by_name_gets_the_visitors_cookies_beside_a_wildcard(client):
    response = init(client, headers={"Origin": "https://landing.example"})

    assert cors_headers(response) == {**CORS, "Access-Control-Allow-Origin": "https://landing.example"}


def test_errors_carry_cors_so_the_page_can_read_them(client):
    response = init(client, {"site": "shop"})

    assert (response.status_code, response.get_json()) == \
        (400, {"error": "VALIDATION_ERROR", "message": "Missing required field: href"})
    assert cors_headers(response) == CORS


# --- cookies over HTTPS ----------------------------------------------------------------------------------------


def test_cookies_are_secure_when_the_browser_came_over_https(client):
    response = init(client, base_url="https://track.shop.example")

    body = response.get_json()
    assert set_cookies(response) == visitor_cookies(body["tempId"], body["clientSessionId"], secure=True)


@pytest.mark.parametrize("trusted_proxies, secure", [(1, True), (0, False)], ids=["trusted proxy", "untrusted header"])
def test_x_forwarded_proto_counts_only_behind_a_trusted_proxy(client, trusted_proxies, secure):
    response = init(client, headers={"X-Forwarded-Proto": "https"})

    assert all(("Secure" in cookie) == secure for cookie in set_cookies(response).values())


# --- /track/init refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize("data, status, site, expected", [
    ("{not json", 400, None, ("INVALID_JSON", "Request body is not valid JSON")),
    ('["site", "shop"]', 400, None, ("INVALID_JSON", "Request body must be a JSON object")),
    ('"\\ud800"', 400, None, ("INVALID_JSON", "Request body is not valid JSON")),
    ("[" * 10000 + "]" * 10000, 400, None, ("INVALID_JSON", "Request body is not valid JSON")),
    (json.dumps({"site": "shop", "href": HREF, "pad": "x" * 40000}), 413, None,
     ("PAYLOAD_TOO_LARGE", "Request body is larger than 32768 bytes")),
    (json.dumps({"href": HREF}), 400, None, ("VALIDATION_ERROR", "Missing required field: site")),
    (json.dumps({"site": ["shop"], "href": HREF}), 400, None,
     ("VALIDATION_ERROR", "Invalid field: site (must be a string)")),
    (json.dumps({"site": "nope", "href": HREF}), 404, None, ("SITE_NOT_FOUND", "No site 'nope' (sites[].id)")),
    (json.dumps({"site": "shop"}), 400, "shop", ("VALIDATION_ERROR", "Missing required field: href")),
    (json.dumps({"site": "shop", "href": "javascript:alert(1)"}), 400, "shop",
     ("VALIDATION_ERROR", "Invalid field: href (must be an http(s) URL)")),
    (json.dumps({"site": "shop", "href": {"url": HREF}}), 400, "shop",
     ("VALIDATION_ERROR", "Invalid field: href (must be an http(s) URL)")),
    (json.dumps({"site": "shop", "href": HREF, "tempId": {"a": 1}}), 400, "shop",
     ("VALIDATION_ERROR", "Invalid field: tempId (must be a string or number)")),
    (json.dumps({"site": "shop", "href": HREF, "tempId": "a b;c"}), 400, "shop",
     ("VALIDATION_ERROR", "Invalid field: tempId (must be printable ASCII without spaces, quotes, commas, "
                          "semicolons or backslashes: it is kept in a cookie)")),
    (json.dumps({"site": "shop", "href": HREF, "clientSessionId": "ünï"}), 400, "shop",
     ("VALIDATION_ERROR", "Invalid field: clientSessionId (must be printable ASCII without spaces, quotes, commas, "
                          "semicolons or backslashes: it is kept in a cookie)")),
    (json.dumps({"site": "shop", "href": HREF, "utmSource": ["x"]}), 400, "shop",
     ("VALIDATION_ERROR", "Invalid field: utmSource (must be a string)")),
], ids=["invalid json", "array", "lone surrogate", "deep nesting", "oversize", "no site", "site not text",
        "unknown site", "no href", "href not http", "href not text", "tempId object", "tempId not cookie-safe",
        "session id unicode", "utm not text"])
def test_a_refused_init_answers_the_error_body_and_stores_nothing(client, data, status, site, expected):
    response = init(client, data)

    assert (response.status_code, response.get_json()) == (status, {"error": expected[0], "message": expected[1]})
    assert response.headers.getlist("Set-Cookie") == []
    assert counts() == NOTHING
    assert refusals() == [(site, "tracker", f"init: {expected[0]}: {expected[1]}")]


def test_the_query_and_the_body_must_not_name_different_sites(client):
    response = init(client, {"site": "other", "href": HREF}, query="?site=shop")

    assert (response.status_code, response.get_json()) == (400, {
        "error": "VALIDATION_ERROR",
        "message": "Invalid field: site (the query string and the body name different sites)"})
    assert counts() == NOTHING


# --- GET /track/invite -----------------------------------------------------------------------------------------


def test_invite_redirects_to_the_visitors_own_link_made_by_telegram(client, fake_telegram):
    seen = initiated(client)

    response = invite(client)

    [link] = fake_telegram.links
    assert redirected(response) == link["invite_link"]
    assert set_cookies(response) == visitor_cookies(seen["tempId"], seen["clientSessionId"])
    [call] = fake_telegram.calls("createChatInviteLink")
    assert call["params"] == {"chat_id": VIP, "name": "pb-" + sha(f"shop\0{seen['tempId']}")[:16]}
    stored = InviteLink.get()
    assert (stored.site, stored.channel, stored.temp_id, stored.visit.public_id) == \
        ("shop", "vip", seen["tempId"], seen["visitId"])
    assert counts() == {**NOTHING, "visits": 1, "sessions": 1, "links": 1}


def test_the_same_visitor_gets_the_same_link_twice_from_one_telegram_call(client, fake_telegram):
    initiated(client)

    first = redirected(invite(client))
    again = redirected(invite(client, f"site=shop&channel={VIP}"))  # by its Telegram id

    assert again == first
    assert len(fake_telegram.calls("createChatInviteLink")) == 1
    assert redirected(invite(client, "site=shop&channel=free")) != first
    assert len(fake_telegram.calls("createChatInviteLink")) == 2


@pytest.mark.parametrize("channel", ["vipchan", "VipChan", "@vipchan"])
def test_a_channel_may_be_named_by_its_public_username_as_in_a_t_me_link(client, fake_telegram, channel):
    initiated(client)

    link = redirected(invite(client, f"site=shop&channel={channel}"))

    assert link == redirected(invite(client)) and InviteLink.get().channel == "vip"
    assert len(fake_telegram.calls("createChatInviteLink")) == 1


def test_a_head_request_checks_the_link_but_records_nothing_and_asks_telegram_nothing(client, fake_telegram):
    found = client.head("/track/invite?site=shop&channel=vip", headers={**BROWSER, "Referer": HREF})
    missing = client.head("/track/invite?site=shop&channel=nope", headers=BROWSER)

    assert (found.status_code, found.headers["Cache-Control"], found.headers.getlist("Set-Cookie")) == \
        (200, "no-store", [])
    assert missing.status_code == 404
    assert counts() == NOTHING and fake_telegram.requests == []


def test_a_visitor_without_init_gets_a_visit_from_the_referer_then_a_link(client, fake_telegram):
    response = invite(client, headers={"Referer": HREF})

    link = redirected(response)
    row = Visit.get()
    assert (row.href, row.referrer, row.ip, row.user_agent, row.utm) == (HREF, None, IP, UA, {"utm_source": "facebook"})
    assert row.click_ids == {"fbc": f"fb.1.{millis(row.created_at)}.IwAR2F4-dbP0_QxYz9"}
    assert set_cookies(response) == visitor_cookies(row.temp_id, row.session.client_session_id)
    assert InviteLink.get().visit_id == row.id
    # The cookie it got makes it the same visitor afterwards: same tempId at init, same link again.
    assert initiated(client)["tempId"] == row.temp_id
    assert redirected(invite(client)) == link
    assert len(fake_telegram.calls("createChatInviteLink")) == 1


def test_without_a_referer_the_invite_url_itself_is_the_visits_page(client):
    redirected(invite(client))

    row = Visit.get()
    assert (row.href, row.referrer, row.click_ids) == ("http://localhost/track/invite?site=shop&channel=vip", None, {})


def test_an_ad_pointing_straight_at_the_invite_url_is_a_click(client, fake_telegram):
    initiated(client, href="https://shop.example/organic")
    link = redirected(invite(client))
    url = "site=shop&channel=vip&fbclid=AdClick_9"

    again = redirected(invite(client, url, headers={"Referer": "https://l.facebook.com/"}))

    assert again == link and len(fake_telegram.calls("createChatInviteLink")) == 1
    newest = Visit.select().order_by(Visit.id.desc()).first()
    assert (newest.href, newest.referrer) == (f"http://localhost/track/invite?{url}", "https://l.facebook.com/")
    assert newest.click_ids == {"fbc": f"fb.1.{millis(newest.created_at)}.AdClick_9"}
    assert InviteLink.get().visit_id == newest.id  # the new click takes over the link's attribution


def test_a_temp_id_in_the_query_names_the_visitor_when_no_cookie_came(app, client, fake_telegram):
    seen = initiated(client)
    cookieless = app.test_client()

    link = redirected(invite(cookieless, f"site=shop&channel=vip&tempId={seen['tempId']}"))

    assert InviteLink.get().visit.public_id == seen["visitId"]
    assert redirected(invite(client)) == link
    assert Visit.select().count() == 1


def test_the_cookie_wins_over_a_temp_id_in_a_shared_url(client):
    seen = initiated(client)

    redirected(invite(client, "site=shop&channel=vip&tempId=someone-else"))

    assert InviteLink.get().temp_id == seen["tempId"]


@pytest.mark.parametrize("query, status, site, code, title, message", [
    ("channel=vip", 400, None, "VALIDATION_ERROR", "This link is incomplete", "Missing required field: site"),
    ("site=nope&channel=vip", 404, None, "SITE_NOT_FOUND", "Unknown site", "No site 'nope' (sites[].id)"),
    ("site=shop", 400, "shop", "VALIDATION_ERROR", "This link is incomplete", "Missing required field: channel"),
    ("site=shop&channel=nope", 404, "shop", "CHANNEL_NOT_FOUND", "Unknown channel",
     "No channel nope on this site (sites[].telegram.channels)"),
    ("site=shop&channel=-1000000000000", 404, "shop", "CHANNEL_NOT_FOUND", "Unknown channel",
     "No channel -1000000000000 on this site (sites[].telegram.channels)"),
], ids=["no site", "unknown site", "no channel", "unknown channel", "unknown telegram id"])
def test_a_bad_invite_link_is_a_small_page_or_json_and_creates_nothing(client, fake_telegram, query, status, site,
                                                                       code, title, message):
    as_page = invite(client, query, headers={"Referer": HREF})
    as_json = invite(client, query, headers={"Accept": "application/json"})

    assert (as_page.status_code, as_page.mimetype, as_page.get_data(as_text=True)) == \
        (status, "text/html", page(title, message))
    assert as_page.headers["Cache-Control"] == "no-store"
    assert (as_json.status_code, as_json.get_json()) == (status, {"error": code, "message": message})
    assert counts() == NOTHING and fake_telegram.requests == []
    assert refusals() == [(site, "tracker", f"invite: {code}: {message}")] * 2


def test_a_channel_name_is_escaped_on_the_page(client):
    response = invite(client, "site=shop&channel=%3Cscript%3Ealert(1)%3C/script%3E")

    assert response.status_code == 404
    assert "<script>" not in response.get_data(as_text=True)
    assert "No channel &lt;script&gt;alert(1)&lt;/script&gt; on this site" in response.get_data(as_text=True)


TELEGRAM_REFUSED = ("Telegram refused to create an invite link for channel vip (-1001234567890): Bad Request: not "
                    "enough rights to manage chat invite links; the bot must be an administrator of the channel with "
                    "the can_invite_users right")
WAY_IN = '<p>You can still <a href="https://t.me/vipchan">open VIP on Telegram</a>.</p>'


@pytest.mark.parametrize("script, status, code, title, message, retry_after", [
    ("not_admin", 502, "TELEGRAM_ERROR", "Could not open the Telegram channel", TELEGRAM_REFUSED, None),
    ("500", 502, "TELEGRAM_ERROR", "Could not open the Telegram channel",
     "Telegram refused to create an invite link for channel vip (-1001234567890): HTTP 500 with a body that is not "
     "Telegram's JSON", None),
    (("429", 7), 429, "TELEGRAM_RATE_LIMITED", "Telegram is busy",
     "Telegram refused to create an invite link for channel vip (-1001234567890): Too Many Requests: retry after 7",
     "7"),
], ids=["no rights", "telegram down", "rate limited"])
def test_a_telegram_failure_is_a_clear_page_never_a_500(client, fake_telegram, script, status, code, title, message,
                                                        retry_after):
    fake_telegram.script(script)

    response = invite(client, headers={"Referer": HREF})

    assert (response.status_code, response.get_data(as_text=True)) == (status, page(title, message, WAY_IN))
    assert response.headers.get("Retry-After") == retry_after
    assert InviteLink.select().count() == 0
    row = Visit.get()
    assert set_cookies(response) == visitor_cookies(row.temp_id, row.session.client_session_id)
    assert refusals() == [("shop", "tracker", f"invite: {code}: {message}")]
    # Asking again works, for the same visitor, without a second visit.
    assert redirected(invite(client)) == fake_telegram.links[0]["invite_link"]
    assert (Visit.select().count(), InviteLink.get().temp_id) == (1, row.temp_id)


@pytest.mark.parametrize("bot_token", [None])
def test_a_site_without_a_bot_token_says_so(client, bot_token):
    response = invite(client, "site=shop&channel=free", headers={"Accept": "application/json"})

    assert (response.status_code, response.get_json()) == (503, {
        "error": "TELEGRAM_NOT_CONFIGURED",
        "message": "Site 'shop' has no Telegram bot_token (sites[].telegram.bot_token)"})


# --- end to end ------------------------------------------------------------------------------------------------


def test_a_tracked_visit_reaches_meta_when_the_visitor_joins_through_its_link(client, fake_meta, dispatcher):
    seen = initiated(client)
    link = redirected(invite(client))
    date = int(utcnow().timestamp())

    joined = client.post("/telegram/webhook/shop", json=chat_member(9101, VIP, LEAD_ID, link, date),
                         headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})

    assert (joined.status_code, joined.get_json()) == (200, {"ok": True})
    assert dispatcher.drain_once(now=utcnow()) == {"shop/meta": 1}
    visit = Visit.get(Visit.public_id == seen["visitId"])
    event = Event.get()
    assert fake_meta.events == [{
        "event_name": "Lead",
        "event_time": date,
        "event_id": event.event_id,
        "action_source": "chat",
        "event_source_url": HREF,
        "user_data": {"country": [sha("us")], "external_id": [sha(str(LEAD_ID))], "client_ip_address": IP,
                      "client_user_agent": UA, "fbc": f"fb.1.{millis(visit.created_at)}.IwAR2F4-dbP0_QxYz9"},
    }]
    assert [(s.status, s.destination) for s in Send.select()] == [("sent", "shop/meta")]
