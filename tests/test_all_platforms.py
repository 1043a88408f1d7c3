"""Every platform at once: the registry contract, one purchase reaching all five fakes, the dry run of all five."""
from __future__ import annotations

import json
import socket
from dataclasses import replace
from datetime import timedelta

import pytest

from ingest.canonical import CanonicalEvent, utcnow
from config import Destination
from delivery.dispatcher import Dispatcher
from models import Send
from ingest import clickids
from platforms import REGISTRY
from platforms.base import RETRY, THROTTLE, ClickId, Flavour, Http, Platform, Skip, Verdict
from tests.conftest import BROWSER, SEED_EXAMPLE, base_config, build_config, with_destinations
from tests.fakes.ga4 import FakeGA4
from tests.fakes.google_ads import FakeGoogleAds
from tests.fakes.server import FakeServer, Handler
from tests.fakes.snapchat import FakeSnapchat
from tests.fakes.tiktok import FakeTikTok

SECRET = "SECRET-do-not-show"
GA_COOKIE = "GA1.1.1234567890.1767225600"
FBC = "fb.1.1767225590123.IwAR2F4-dbP0"
CLICKS = {"gclid": "Cj0KCQjwtest-gclid", "fbc": FBC, "ttclid": "E.C.P.test-ttclid", "sccid": "sc-click-1",
          "ga_client_id": GA_COOKIE}
PURCHASE = {**SEED_EXAMPLE, **CLICKS, "event_id": "all-five-1"}


def live_settings(name: str, base: str) -> dict:
    """A complete live destination for each registered platform; a new platform must add itself here."""
    return {
        "meta": {"pixel_id": "123", "access_token": SECRET},
        "tiktok": {"pixel_code": "C123", "access_token": SECRET},
        "snapchat": {"pixel_id": "px-1", "access_token": SECRET},
        "google_ads": {"customer_id": "1234567890", "client_id": "gads-client", "client_secret": SECRET,
                       "refresh_token": SECRET, "token_url": f"{base}/token",
                       "conversion_actions": {"Purchase": "customers/1234567890/conversionActions/42"}},
        "ga4": {"measurement_id": "G-TEST123", "api_secret": SECRET},
    }[name] | {"name": name, "platform": name, "mode": "live", "api_base": base}


def destination(name: str, base: str = "http://127.0.0.1:9", mode: str = "live", **changes) -> Destination:
    settings = {**live_settings(name, base), "mode": mode, **changes}
    return Destination(site_id="shop", name=name, platform=name, mode=mode, enabled=True, events=None,
                       consent_category=None, settings=settings)


def full_event() -> CanonicalEvent:
    now = utcnow()
    return CanonicalEvent(
        site_id="shop", dialect="test", event_name="purchase_completed", standard_name="Purchase",
        event_id="e1", occurred_at=now - timedelta(minutes=5), received_at=now, external_id="user_123",
        identity={"em": "a" * 64, "em_google": "a" * 64, "ph": "b" * 64, "ph_e164": "c" * 64},
        location={"city": "san francisco", "state": "ca", "zip": "94102", "country": "us"},
        click_ids=dict(CLICKS), ip="203.0.113.7", user_agent=BROWSER["User-Agent"],
        page_url="https://shop.example/checkout", value=149.99, currency="USD", order_id="ord_1",
        items=[{"id": "sku-1", "quantity": 1, "price": 149.99}])


class AlwaysAnswer(FakeServer):
    """A loopback server that answers every request (token endpoints included) with one status."""

    def __init__(self, status: int, body: bytes, headers: dict | None = None):
        super().__init__()
        self.answer = (status, body, headers or {})

    def _handle(self, h: Handler) -> None:
        h.read_body()
        status, body, headers = self.answer
        h.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **headers}.items():
            h.send_header(key, value)
        h.end_headers()
        h.wfile.write(body)


def kinds(name: str, server: AlwaysAnswer) -> list[str]:
    """The outcome kinds of sending one complete event to the server as this platform."""
    module = REGISTRY[name]
    with server:
        dest = destination(name, server.url)
        outcomes = module.send([module.build(full_event(), dest)], dest, Http(timeout=2))
    return [o.kind for o in outcomes]


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


# --- the contract every registry entry keeps ------------------------------------------------------

@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_platform_has_the_one_module_shape(name):
    module = REGISTRY[name]
    assert isinstance(module, Platform)
    assert module.NAME == name and isinstance(module.LABEL, str) and module.LABEL
    assert isinstance(module.BATCH_LIMIT, int) and module.BATCH_LIMIT > 0
    assert isinstance(module.MAX_AGE, timedelta) and module.MAX_AGE > timedelta(0)
    assert module.WEIGHTS and all(0 < w <= 10 for w in module.WEIGHTS.values())
    assert module.CLICK_IDS and all(isinstance(click, ClickId) for click in module.CLICK_IDS)
    assert all(isinstance(flavour, Flavour) for flavour in module.FLAVOURS)
    for function in ("check_settings", "url", "build", "identifiers", "request_key", "send"):
        assert callable(getattr(module, function)), function


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_platform_names_its_own_attribution_signals(name):
    keys = clickids.attribution_keys(REGISTRY[name])
    assert keys and set(keys) <= {click.key for click in REGISTRY[name].CLICK_IDS}


def test_every_name_a_field_may_give_a_click_id_belongs_to_one_click_id_only():
    spellings = [(name, click.key) for click in clickids.declared().values()
                 for name in (click.key, *click.params, *click.aliases, *(cookie.name for cookie in click.cookies))]
    spellings += [(click.minted.param, click.key) for click in clickids.declared().values() if click.minted]
    owners: dict[str, set[str]] = {}
    for name, key in spellings:
        owners.setdefault(name.lower(), set()).add(key)
    assert {name: keys for name, keys in owners.items() if len(keys) > 1} == {}


def test_a_click_id_or_flavour_two_platforms_share_is_declared_alike_by_both():
    flavours = [flavour for module in REGISTRY.values() for flavour in module.FLAVOURS]
    assert all(f == g for f in flavours for g in flavours if f.key == g.key)
    assert set(clickids.declared()) == {click.key for module in REGISTRY.values() for click in module.CLICK_IDS}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_complete_live_destination_passes_its_check_and_a_dry_one_needs_no_credentials(name):
    module = REGISTRY[name]
    assert module.check_settings(destination(name)) == []
    dry = destination(name, mode="dry", access_token="", api_secret="", client_secret="", refresh_token="")
    assert module.check_settings(dry) == []


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_live_destination_without_its_secrets_is_refused(name):
    blank = {key: "" for key, value in live_settings(name, "x").items() if value == SECRET}
    problems = REGISTRY[name].check_settings(destination(name, **blank))
    assert problems and all(key in blank for key, _ in problems)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_the_shown_url_never_carries_a_secret(name):
    for mode in ("live", "test", "dry"):
        dest = destination(name, mode=mode, test_event_code="TEST1")
        assert SECRET not in REGISTRY[name].url(dest)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_complete_event_builds_a_json_item_whose_identifiers_the_platform_weighs(name):
    module = REGISTRY[name]
    item = module.build(full_event(), destination(name))
    assert json.loads(json.dumps(item)) == item
    identifiers = module.identifiers(item)
    assert identifiers and set(identifiers) <= set(module.WEIGHTS)
    assert SECRET not in json.dumps(item)
    hash(module.request_key(item))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_an_event_with_nothing_to_match_on_is_skipped_with_a_reason(name):
    now = utcnow()
    bare = CanonicalEvent(site_id="shop", dialect="test", event_name="purchase", standard_name="Purchase",
                          event_id="e2", occurred_at=now, received_at=now, value=1.0, currency="USD")
    with pytest.raises(Skip) as skip:
        REGISTRY[name].build(bare, destination(name))
    assert skip.value.reason


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_an_unreachable_platform_is_a_retry_for_every_item(name):
    module = REGISTRY[name]
    dest = destination(name, closed_port())
    items = [module.build(full_event(), dest)] * 2
    outcomes = module.send(items, dest, Http(timeout=2))
    assert [o.kind for o in outcomes] == [RETRY, RETRY]
    assert all(o.error for o in outcomes)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_gateway_error_page_is_a_retry(name):
    server = AlwaysAnswer(502, b"<html><body>502 Bad Gateway</body></html>", {"Content-Type": "text/html"})
    assert kinds(name, server) == [RETRY]


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_a_429_is_a_throttle(name):
    server = AlwaysAnswer(429, b'{"error": {"code": 429, "message": "Too many requests"}}',
                          {"Content-Type": "application/json", "Retry-After": "7"})
    assert kinds(name, server) == [THROTTLE]


# --- one purchase, five platforms -------------------------------------------------------------------

@pytest.fixture
def fakes(fake_meta):
    started = {"meta": fake_meta, "tiktok": FakeTikTok(token=SECRET).start(),
               "snapchat": FakeSnapchat(token=SECRET).start(),
               "google_ads": FakeGoogleAds(refresh_token=SECRET, client_secret=SECRET).start(),
               "ga4": FakeGA4({"G-TEST123": SECRET}).start()}
    fake_meta.set_token(SECRET)
    yield started
    for name, fake in started.items():
        if name != "meta":
            fake.stop()


@pytest.fixture
def raw_config(raw_config, fakes):
    destinations = [live_settings(name, fake.url) for name, fake in fakes.items()]
    destinations[3]["token_url"] = fakes["google_ads"].token_url
    return with_destinations(raw_config, *destinations)


def test_one_purchase_reaches_all_five_platforms(client, config, fakes):
    assert client.post("/v1/track", json=PURCHASE, headers=BROWSER).status_code == 200

    processed = Dispatcher(lambda: config).drain_once(now=utcnow())

    assert processed == {f"shop/{name}": 1 for name in fakes}
    assert sorted((s.destination, s.status, s.reason) for s in Send.select()) == [
        (f"shop/{name}", "sent", None) for name in sorted(fakes)]
    meta_item, = fakes["meta"].events
    tiktok_item, = fakes["tiktok"].events
    snap_item, = fakes["snapchat"].events
    google_row, = fakes["google_ads"].conversions
    ga4_event, = fakes["ga4"].events
    assert (meta_item["event_name"], meta_item["event_id"], meta_item["user_data"]["fbc"]) == ("Purchase", "all-five-1", FBC)
    assert (tiktok_item["event"], tiktok_item["event_id"], tiktok_item["user"]["ttclid"]) == ("Purchase", "all-five-1", CLICKS["ttclid"])
    assert (snap_item["event_name"], snap_item["event_id"], snap_item["user_data"]["sc_click_id"]) == ("PURCHASE", "all-five-1", "sc-click-1")
    assert (google_row["gclid"], google_row["conversionValue"], google_row["currencyCode"]) == (CLICKS["gclid"], 149.99, "USD")
    assert (ga4_event["name"], ga4_event["params"]["value"], ga4_event["params"]["transaction_id"]) == ("purchase", 149.99, "ord_abc123")
    assert fakes["ga4"].accepted[0]["client_id"] == "1234567890.1767225600"


def test_a_down_platform_delays_none_of_the_others(client, config, fakes):
    fakes["tiktok"].script("500")
    assert client.post("/v1/track", json=PURCHASE, headers=BROWSER).status_code == 200

    Dispatcher(lambda: config).drain_once(now=utcnow())

    statuses = {s.destination: (s.status, s.retries) for s in Send.select()}
    assert statuses == {**{f"shop/{name}": ("sent", 0) for name in fakes}, "shop/tiktok": ("pending", 1)}


def test_a_stale_purchase_goes_only_where_the_window_is_still_open(client, config, fakes):
    occurred = (utcnow() - timedelta(days=10)).isoformat()
    assert client.post("/v1/track", json={**PURCHASE, "occurred_at": occurred}, headers=BROWSER).status_code == 200

    Dispatcher(lambda: config).drain_once(now=utcnow())

    statuses = {s.destination: s.status for s in Send.select()}
    assert statuses == {"shop/meta": "failed", "shop/tiktok": "failed", "shop/ga4": "failed",
                        "shop/snapchat": "sent", "shop/google_ads": "sent"}  # Snapchat 37 days, Google 90
    assert fakes["meta"].events == fakes["tiktok"].events == fakes["ga4"].events == []


# --- the dry run of the example config ------------------------------------------------------------

def test_the_dry_run_shows_every_platforms_payload_and_score(tmp_path):
    from app import create_app

    config = build_config(base_config(tmp_path, all_destinations=True))
    client = create_app(config).test_client()
    body = client.post("/v1/track?dry_run=1", json=PURCHASE, headers=BROWSER).get_json()

    shown = {d["platform"]: d for d in body["destinations"]}
    assert sorted(shown) == sorted(REGISTRY)
    for platform, entry in shown.items():
        assert (entry["status"], entry["mode"]) == ("would_send", "dry"), (platform, entry.get("reason"))
        assert entry["payload"] and entry["url"]
        score, identifiers = entry["match_quality"]["score"], entry["match_quality"]["identifiers"]
        assert 0 < score <= 10 and identifiers == REGISTRY[platform].identifiers(entry["payload"])
    assert "api_secret=***" in shown["ga4"]["url"]


# --- verifying credentials: one harmless call --------------------------------------------------------------------

BAD_CREDENTIALS = {"access_token": "revoked", "refresh_token": "revoked", "api_secret": "revoked"}
REFUSED = {
    "meta": "Meta error 190: Invalid OAuth access token - Cannot parse access token",
    "tiktok": "TikTok error 40105: Access token is incorrect or has been revoked.",
    "snapchat": "Snapchat INVALID (HTTP 401): Unauthorized: the access token is invalid or expired",
    "google_ads": "Google OAuth error invalid_grant: Token has been expired or revoked.",
    "ga4": None,  # its validation server checks the event, not the api_secret
}


def verified(config, name: str, **changes) -> tuple[bool, str]:
    dest = config.destination(f"shop/{name}")
    dest = replace(dest, settings={**dest.settings, "test_event_code": "TEST42", **changes})
    verdict = REGISTRY[name].verify(dest, Http(2))
    return verdict.ok, verdict.message


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_verify_is_ok_with_good_credentials_and_the_platforms_own_error_with_bad_ones(config, fakes, name):
    assert verified(config, name) == (True, "OK")
    refused = REFUSED[name]
    assert verified(config, name, **BAD_CREDENTIALS) == ((False, refused) if refused else (True, "OK"))
    events = {"meta": lambda f: f.events, "tiktok": lambda f: f.events, "snapchat": lambda f: f.events,
              "google_ads": lambda f: f.conversions, "ga4": lambda f: f.events}[name]
    assert events(fakes[name]) == []  # a check, never a conversion


def test_tiktok_without_a_test_event_code_says_how_to_verify(config, fakes):
    dest = config.destination("shop/tiktok")
    assert REGISTRY["tiktok"].verify(dest, Http(2)) == Verdict(
        False, "set test_event_code (Events Manager → Test Events) to verify TikTok credentials")
    assert fakes["tiktok"].requests == []
