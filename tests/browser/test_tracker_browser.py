"""static/postback.js in Chromium (docs/tracker.md): a landing page on another origin than Postback keeps the ad
click ids in first-party cookies, `postback.track()` reaches the fake Meta, Google Ads and TikTok, a Telegram link
leads to the visitor's own invite link and the join reaches the fake Meta; browser keys stay where they belong."""
from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import pytest

from tests.browser.conftest import missing

if missing() and os.environ.get("CI") == "true":
    pytest.fail(f"browser tests cannot run under CI: {missing()}", pytrace=False)
if missing():
    pytest.skip(missing(), allow_module_level=True)

import requests  # noqa: E402 - only once the browser tests can run
from playwright.sync_api import Page, expect  # noqa: E402

from delivery.dispatcher import Dispatcher  # noqa: E402
from ingest.canonical import utcnow  # noqa: E402
from ingest.inspector import Refusal  # noqa: E402
from models import Event  # noqa: E402
from tests.fakes.google_ads import FakeGoogleAds  # noqa: E402
from tests.fakes.telegram import FakeTelegram, chat_member, telegram_section  # noqa: E402
from tests.fakes.tiktok import FakeTikTok  # noqa: E402

KEY = "pk_browser_test_shop"
SECRET = "whsec_Test-Secret_1"
VIP = "-1001234567890"
EMAIL = "john.doe@example.com"
AD_URL = "landing.html?fbclid=AbC&gclid=XyZ&ttclid=T1&utm_source=fb"
FBC = re.compile(r"fb\.1\.(\d{13})\.AbC")
PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>
<body style="font-family: sans-serif"><h1>{title}</h1><p>A landing page on {origin}, tracked by {base}.</p>
<p><a id="vip" href="https://t.me/+PrivateVipLink" data-postback-channel="vip">Join our VIP channel</a></p>
<pre id="state"></pre>{before}
<script src="{base}/static/postback.js" data-site="shop" data-key="{key}" {extra} async></script></body></html>"""
QUEUED = """<script>window.postback = window.postback || [];
postback.push(["track", "signed_up", {event_id: "evt_queued_before_load"}]);</script>"""
PAGES = {"/landing.html": ("Summer sale", "", ""), "/second.html": ("Checkout", "", ""),
         "/denied.html": ("No consent", 'data-consent="denied"', ""), "/queued.html": ("Early call", "", QUEUED)}


class Landing:
    """A second werkzeug server: the shop's landing pages, on an origin of their own."""

    def __init__(self, base: str):
        from werkzeug.serving import make_server

        self.base = base
        self.server = make_server("127.0.0.1", 0, self.wsgi, threaded=True)
        self.origin = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wsgi(self, environ, start_response):
        title, extra, before = PAGES.get(environ["PATH_INFO"], ("Not found", "", ""))
        page = PAGE.format(title=title, origin=self.origin, base=self.base, key=KEY, extra=extra, before=before)
        start_response("200 OK" if title != "Not found" else "404 Not Found",
                       [("Content-Type", "text/html; charset=utf-8")])
        return [page.encode()]

    def start(self) -> Landing:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join()

    def url(self, path: str) -> str:
        return f"{self.origin}/{path}"


@pytest.fixture(scope="module")
def platforms():
    from tests.fakes.meta import FakeMeta

    started = {"meta": FakeMeta(token="meta-token", pixels=("123",)).start(),
               "google_ads": FakeGoogleAds(refresh_token="gads-refresh", client_secret="gads-secret").start(),
               "tiktok": FakeTikTok(token="tiktok-token").start(), "telegram": FakeTelegram(chats=(VIP,)).start()}
    yield started
    for fake in started.values():
        fake.stop()


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, platforms):
    """Postback with live Meta, Google Ads and TikTok toward the fakes, and two landing servers: one in the site's
    allowed_origins, one not."""
    from werkzeug.serving import make_server

    from app import create_app
    from models import database
    from tests.conftest import base_config, build_config, meta_destination, remember_database, with_destinations

    server = make_server("127.0.0.1", 0, lambda environ, start: app(environ, start), threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    allowed, other = Landing(base).start(), Landing(base).start()
    ads = platforms["google_ads"]
    raw = with_destinations(
        base_config(tmp_path_factory.mktemp("tracker")), meta_destination(platforms["meta"].url),
        {"name": "google_ads", "platform": "google_ads", "mode": "live", "customer_id": "1234567890",
         "client_id": "gads-client", "client_secret": "gads-secret", "refresh_token": "gads-refresh",
         "api_base": ads.url, "token_url": ads.token_url,
         "conversion_actions": {"Purchase": "customers/1234567890/conversionActions/42"}},
        {"name": "tiktok", "platform": "tiktok", "mode": "live", "pixel_code": "C123", "access_token": "tiktok-token",
         "api_base": platforms["tiktok"].url})
    site = raw["sites"][0]
    site.update(allowed_origins=[allowed.origin], browser_keys=[KEY],
                telegram=telegram_section(platforms["telegram"].url, platforms["telegram"].token, SECRET))
    config = build_config(raw)
    remember_database(config.database)
    app = create_app(config)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield base, config, allowed, other
    server.shutdown()
    thread.join()
    allowed.stop()
    other.stop()
    database.close()


def ready(page: Page) -> None:
    page.wait_for_function("window.postback && typeof window.postback.track === 'function'")


def cookies(page: Page) -> dict[str, str]:
    """The cookies script set: the tracker's HttpOnly visitor cookies on Postback's host are not the page's."""
    return {c["name"]: c["value"] for c in page.context.cookies() if not c["httpOnly"]}


def shoot(page: Page, path: Path) -> None:
    """A screenshot that also shows what the script did: the page's cookies and the Telegram link."""
    page.evaluate("""document.getElementById('state').textContent =
        'document.cookie: ' + document.cookie.split('; ').join('\\n                 ')
        + '\\nVIP link: ' + document.getElementById('vip').href""")
    page.screenshot(path=path, full_page=True)


def drain(config) -> None:
    dispatcher = Dispatcher(lambda: config)
    try:
        dispatcher.drain_once(now=utcnow())
    finally:
        dispatcher.close()


def millis() -> int:
    return int(time.time() * 1000)


def test_an_ad_click_is_kept_in_first_party_cookies_across_pages_and_reloads(page: Page, tracked, shots):
    _, _, landing, _ = tracked
    before = millis()
    page.goto(landing.url(AD_URL))
    ready(page)
    after = millis()
    kept = cookies(page)
    fbc = FBC.fullmatch(kept["_fbc"])
    assert fbc and before <= int(fbc[1]) <= after  # Meta's format, with the click's time
    assert re.fullmatch(r"fb\.1\.\d{13}\.\d{10}", kept["_fbp"])
    assert {name: kept[name] for name in ("_pb_gclid", "_pb_ttclid", "_pb_utm")} == {
        "_pb_gclid": "XyZ", "_pb_ttclid": "T1", "_pb_utm": "utm_source%3Dfb"}
    shoot(page, shots / "tracker-landing.png")

    page.goto(landing.url("second.html"))
    ready(page)
    assert cookies(page)["_fbc"] == kept["_fbc"]  # kept on a page without the parameter
    page.goto(landing.url(AD_URL))
    ready(page)
    assert (cookies(page)["_fbc"], cookies(page)["_fbp"]) == (kept["_fbc"], kept["_fbp"])  # a reload: the same click
    shoot(page, shots / "tracker-second-page.png")


def test_track_resolves_with_the_event_id_that_meta_google_ads_and_tiktok_receive(page: Page, tracked, platforms):
    _, config, landing, _ = tracked
    page.goto(landing.url(AD_URL))
    ready(page)
    sent = page.evaluate("postback.track('purchase_completed', {value: 10, currency: 'USD', email: %r})" % EMAIL)
    assert (sent["ok"], sent["status"]) == (True, 200)
    event_id = sent["eventId"]
    assert re.fullmatch(r"[0-9a-f-]{36}", event_id)

    drain(config)
    [meta] = [e for e in platforms["meta"].events if e["event_id"] == event_id]
    assert (meta["event_name"], meta["user_data"]["fbc"], meta["user_data"]["fbp"]) == (
        "Purchase", cookies(page)["_fbc"], cookies(page)["_fbp"])
    assert meta["event_source_url"] == landing.url(AD_URL)
    [google] = [c for c in platforms["google_ads"].conversions if c["gclid"] == "XyZ"]
    assert (google["conversionValue"], google["currencyCode"]) == (10.0, "USD")
    [tiktok] = [e for e in platforms["tiktok"].events if e["event_id"] == event_id]
    assert (tiktok["event"], tiktok["user"]["ttclid"]) == ("Purchase", "T1")
    event = Event.get(Event.event_id == event_id)
    assert (event.consent, event.properties) == (True, {"utm_source": "fb"})


def test_a_browser_key_on_a_page_whose_origin_is_not_allowed_stores_nothing(page: Page, tracked):
    _, _, _, other = tracked
    page.goto(other.url("landing.html?gclid=Elsewhere"))
    ready(page)
    before = Refusal.select().count()
    sent = page.evaluate("postback.track('purchase_completed', {value: 10, currency: 'USD'})")
    assert Event.select().where(Event.event_id == sent["eventId"]).count() == 0
    assert {r.reason for r in Refusal.select().offset(before)} == {"Invalid API key"}


def test_a_browser_key_is_refused_by_the_admin_api(page: Page, tracked):
    base, _, landing, _ = tracked
    page.goto(landing.url("second.html"))
    answer = page.request.get(f"{base}/admin/api/events",
                              headers={"Authorization": f"Bearer {KEY}", "Origin": landing.origin})
    assert (answer.status, answer.json()) == (401, {"error": "Authentication required", "code": 401})


def test_a_telegram_link_leads_to_the_visitors_invite_link_and_the_join_reaches_meta_as_a_lead(
        page: Page, tracked, platforms, shots):
    base, config, landing, _ = tracked
    page.route("https://t.me/**", lambda route: route.fulfill(body="<h1>Telegram</h1>", content_type="text/html"))
    page.goto(landing.url("landing.html?fbclid=TgClick"))
    link = page.locator("#vip")
    expect(link).to_have_attribute("href", re.compile(re.escape(f"{base}/track/invite?site=shop&channel=vip&key={KEY}")
                                                      + r"&tempId=[^&]+$"))
    shoot(page, shots / "tracker-telegram-link.png")
    link.click()
    invite = platforms["telegram"].links[-1]["invite_link"]
    expect(page).to_have_url(invite)
    page.screenshot(path=shots / "tracker-telegram-invite.png", full_page=True)
    fbc = cookies(page)["_fbc"]

    joined = requests.post(f"{base}/telegram/webhook/shop", json=chat_member(9201, VIP, 555000333, invite,
                                                                             int(time.time())),
                           headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}, timeout=10)
    assert (joined.status_code, joined.json()) == (200, {"ok": True})
    drain(config)
    [lead] = [e for e in platforms["meta"].events if e["event_name"] == "Lead"]
    assert (lead["action_source"], lead["user_data"]["fbc"]) == ("chat", fbc)
    assert fbc.endswith(".TgClick")


def test_with_consent_denied_no_cookie_is_set_and_the_event_is_stored_without_consent(page: Page, tracked, shots):
    _, _, landing, _ = tracked
    page.goto(landing.url("denied.html?fbclid=AbC&gclid=XyZ&utm_source=fb"))
    ready(page)
    sent = page.evaluate("postback.track('signed_up', {event_id: 'evt_no_consent'})")
    assert sent == {"eventId": "evt_no_consent", "ok": True, "status": 200}
    assert page.context.cookies() == []
    assert page.locator("#vip").get_attribute("href") == "https://t.me/+PrivateVipLink"  # not tracked either
    event = Event.get(Event.event_id == "evt_no_consent")
    assert (event.consent, event.click_ids, event.properties) == (False, {}, {})
    shoot(page, shots / "tracker-no-consent.png")


def test_consent_withdrawn_on_the_page_drops_the_trackers_cookies(page: Page, tracked):
    _, _, landing, _ = tracked
    page.goto(landing.url(AD_URL))
    ready(page)
    page.evaluate("postback.consent(false)")
    assert sorted(cookies(page)) == ["_fbc", "_fbp"]  # Meta's own names: its pixel may own them
    sent = page.evaluate("postback.track('signed_up', {event_id: 'evt_withdrawn'})")
    assert sent["status"] == 200
    event = Event.get(Event.event_id == "evt_withdrawn")
    assert (event.consent, event.click_ids) == (False, {})


def test_a_call_queued_before_the_script_loaded_is_sent_once_it_has(page: Page, tracked):
    _, _, landing, _ = tracked
    with page.expect_response(lambda response: response.url.endswith("/v1/track")) as answered:
        page.goto(landing.url("queued.html?gclid=Queued"))
    assert answered.value.json() == {"success": True, "eventId": "evt_queued_before_load",
                                     "message": "Event recorded successfully"}
    event = Event.get(Event.event_id == "evt_queued_before_load")
    assert (event.event_name, event.click_ids, event.page_url) == (  # the click ids kept before it was sent
        "signed_up", {"gclid": "Queued", "fbp": cookies(page)["_fbp"]}, landing.url("queued.html?gclid=Queued"))
