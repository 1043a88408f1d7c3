"""The console's actions (docs/console.md): destinations resumed, retried now, replayed and verified; a Telegram
lead's awaiting Purchase given its value; the accuracy report. Each through the admin API and through the page."""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest

from config import Config
from console import accuracy
from delivery.backlog import retry_now
from dialects.adtarget.funnel import Conversion
from models import DestinationState, Event, Send
from tests.conftest import SEED_EXAMPLE, build_config
from tests.fakes.meta import EXPIRED
from tests.fakes.telegram import telegram_section
from tests.helpers import received, signup, track

PASSWORD = "console-pass"
ADMIN = {"Authorization": f"Bearer {PASSWORD}"}
SECOND = timedelta(seconds=1)
PAUSED = f"Meta error 190/463: {EXPIRED}"
ADTARGET = {"Authorization": "Bearer atk_live_demo", "User-Agent": "python-requests/2.32.3"}
FBC = "fb.1.1700000000000.AbCd"
NO_VALUE = "Purchase without value and currency: Meta rejects it (subcode 2804009)"


@pytest.fixture
def raw(raw, fake_telegram) -> dict:
    """The live Meta at its fake, the admin password, and a Telegram funnel whose Bot API is a fake too."""
    raw["admin"]["password"] = PASSWORD
    raw["sites"][0]["telegram"] = telegram_section(fake_telegram.url, fake_telegram.token)
    return raw


@pytest.fixture
def config(raw) -> Config:
    return build_config(raw)


def counts(**given) -> dict:
    return {"pending": 0, "sending": 0, "sent": 0, "skipped": 0, "failed": 0, **given}


def meta_state(client) -> dict:
    body = client.get("/admin/api/destinations", headers=ADMIN).get_json()
    [site] = body["sites"]
    [dest] = site["destinations"]
    return dest


def act(client, action: str, key: str = "shop/meta"):
    return client.post(f"/admin/api/destinations/{key}/{action}", headers=ADMIN)


def csrf_token(client, path: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True))[1]


def sign_in(client) -> None:
    client.post("/dashboard/login", data={"password": PASSWORD, "csrf_token": csrf_token(client, "/dashboard/login")})


def press(client, path: str, **form):
    """A button of the console: the form posted with the page's CSRF token, the redirect followed."""
    token = csrf_token(client, "/dashboard/destinations")
    return client.post(path, data={"csrf_token": token, **form}, follow_redirects=True)


# --- destinations -----------------------------------------------------------------------------------------------

def test_a_paused_destination_shows_the_platforms_error_and_resuming_it_delivers_what_waited(
        client, fake_meta, dispatcher):
    fake_meta.script("invalid_token")
    now = track(client, signup("e1"))
    dispatcher.drain_once(now=now)
    paused_at = DestinationState.get().paused_at.isoformat()

    assert meta_state(client) == {
        "key": "shop/meta", "site": "shop", "name": "meta", "platform": "meta", "mode": "live", "state": "paused",
        "paused": {"reason": PAUSED, "since": paused_at}, "backing_off": 0, "counts": counts(pending=1)}
    assert act(client, "resume").get_json() == {"destination": "shop/meta", "resumed": True}
    assert act(client, "resume").get_json() == {"destination": "shop/meta", "resumed": False}
    dispatcher.drain_once(now=now + SECOND)

    assert received(fake_meta) == ["e1"]
    assert meta_state(client)["state"] == "active"
    assert meta_state(client)["counts"] == counts(sent=1)


def test_retry_now_makes_backing_off_sends_due_at_once(client, fake_meta, dispatcher):
    fake_meta.script("500")
    now = track(client, signup("e1"))
    dispatcher.drain_once(now=now)
    assert (meta_state(client)["state"], meta_state(client)["backing_off"]) == ("backing off", 1)
    assert dispatcher.drain_once(now=now + SECOND) == {"shop/meta": 0}  # its backoff has not run out

    assert act(client, "retry-now").get_json() == {"destination": "shop/meta", "due_now": 1}
    assert dispatcher.drain_once() == {"shop/meta": 1}

    assert received(fake_meta) == ["e1"]
    assert meta_state(client)["state"] == "active"


def test_retry_now_leaves_due_and_final_sends_and_other_destinations_alone(client, fake_meta):
    now = track(client, signup("e1"), signup("e2"))
    later = now + timedelta(hours=1)
    Send.update(next_attempt_at=later).where(Send.id == Send.select(Send.id).order_by(Send.id).limit(1)).execute()

    assert retry_now("shop/other", now) == 0
    assert retry_now("shop/meta", now) == 1
    assert retry_now("shop/meta", now) == 0
    assert [s.next_attempt_at <= now for s in Send.select().order_by(Send.id)] == [True, True]


def test_replay_failed_queues_the_destinations_failed_sends_again(client, fake_meta, dispatcher):
    fake_meta.reject_event("e1", "Invalid parameter")
    now = track(client, signup("e1"))
    dispatcher.drain_once(now=now)
    assert meta_state(client)["counts"] == counts(failed=1)
    fake_meta.accept_event("e1")

    assert act(client, "replay-failed").get_json() == {"destination": "shop/meta", "queued": 1}
    dispatcher.drain_once()

    assert received(fake_meta) == ["e1"]
    assert meta_state(client)["counts"] == counts(sent=1)


def test_verify_reads_the_pixel_with_a_good_token_and_shows_metas_error_for_a_bad_one(client, fake_meta):
    assert act(client, "verify").get_json() == {"destination": "shop/meta", "ok": True, "message": "OK"}
    fake_meta.set_token("a-newer-token")

    assert act(client, "verify").get_json() == {
        "destination": "shop/meta", "ok": False,
        "message": "Meta error 190: Invalid OAuth access token - Cannot parse access token"}
    [good, bad] = fake_meta.requests
    assert (good["method"], good["path"], good["query"], good["headers"]["Authorization"]) == \
        ("GET", "/v25.0/123", {"fields": "id,name"}, "Bearer meta-token")
    assert (fake_meta.events, fake_meta.test_events) == ([], [])


@pytest.mark.parametrize("meta_settings", [{"test_event_code": "TEST42"}])
def test_verify_sends_a_test_event_when_the_destination_has_a_test_event_code(client, fake_meta):
    assert act(client, "verify").get_json() == {"destination": "shop/meta", "ok": True, "message": "OK"}

    [request] = fake_meta.requests
    assert (request["body"]["test_event_code"], fake_meta.events) == ("TEST42", [])
    assert [e["event_name"] for e in fake_meta.test_events] == ["Lead"]


@pytest.mark.parametrize("meta_settings", [{"mode": "dry", "access_token": ""}])
def test_verify_of_a_dry_destination_names_the_missing_credential_without_calling_the_platform(client, fake_meta):
    assert act(client, "verify").get_json() == {
        "destination": "shop/meta", "ok": False, "message": "access_token: required in live mode"}
    assert fake_meta.requests == []


def test_an_action_on_an_unknown_destination_or_an_unknown_action_is_404(client):
    assert (act(client, "resume", "shop/nope").status_code, act(client, "resume", "shop/nope").get_json()) == \
        (404, {"error": "No enabled destination shop/nope", "code": 404})
    assert act(client, "explode").get_json() == {
        "error": "No action explode: resume, retry-now, replay-failed or verify", "code": 404}


@pytest.mark.parametrize("path", ["/dashboard/destinations", "/dashboard/leads", "/dashboard/accuracy"])
def test_the_new_pages_send_a_stranger_to_the_login_page(client, path):
    response = client.get(path)
    assert (response.status_code, response.location) == (302, "/dashboard/login")


@pytest.mark.parametrize("path", ["/admin/api/destinations", "/admin/api/leads", "/admin/api/accuracy"])
def test_the_new_lookups_need_the_admin_password(client, path):
    assert client.get(path).status_code == 401
    assert client.post("/admin/api/destinations/shop/meta/resume").status_code == 401


def test_the_destinations_page_resumes_a_paused_destination_and_tells_the_verdict(client, fake_meta, dispatcher):
    fake_meta.script("invalid_token")
    dispatcher.drain_once(now=track(client, signup("e1")))
    sign_in(client)

    page = client.get("/dashboard/destinations").get_data(as_text=True)
    assert "paused" in page and "Invalid OAuth" not in page and "Session has expired" in page
    assert ">Resume</button>" in page and ">Verify credentials</button>" in page

    resumed = press(client, "/dashboard/destinations/shop/meta/resume").get_data(as_text=True)
    assert "shop/meta resumed: its waiting sends go on the dispatcher&#39;s next pass." in resumed
    fake_meta.set_token("another")
    verified = press(client, "/dashboard/destinations/shop/meta/verify").get_data(as_text=True)
    assert "shop/meta credentials: Meta error 190: Invalid OAuth access token - Cannot parse access token" in verified


def test_the_overviews_resume_button_comes_back_to_the_overview(client, fake_meta, dispatcher):
    fake_meta.script("invalid_token")
    dispatcher.drain_once(now=track(client, signup("e1")))
    sign_in(client)
    assert ">Resume</button>" in client.get("/dashboard/").get_data(as_text=True)

    response = press(client, "/dashboard/destinations/shop/meta/resume", back="overview")

    assert response.request.path == "/dashboard/"
    assert ">Resume</button>" not in response.get_data(as_text=True)
    assert DestinationState.select().count() == 0


def test_a_console_action_without_the_csrf_token_is_refused(client, fake_meta, dispatcher):
    fake_meta.script("invalid_token")
    dispatcher.drain_once(now=track(client, signup("e1")))
    sign_in(client)

    assert client.post("/dashboard/destinations/shop/meta/resume").status_code == 400
    assert DestinationState.select().count() == 1


# --- leads ------------------------------------------------------------------------------------------------------

def awaiting_purchase(client) -> str:
    body = {"telegramUserId": 555000111, "channelId": "vip", "eventType": "Purchase", "fbc": FBC}
    response = client.post("/api/v1/events/conversion", data=json.dumps(body), content_type="application/json",
                           headers=ADTARGET)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["conversionId"]


def test_the_leads_lookup_shows_a_lead_and_its_conversion_awaiting_its_value(client):
    conversion_id = awaiting_purchase(client)
    stored = Conversion.get()

    body = client.get("/admin/api/leads", headers=ADMIN).get_json()

    [site] = body["sites"]
    [lead] = site["leads"]
    assert (body["pii_fields"], site["id"], site["currency"]) == (["email", "phone", "firstName", "lastName"], "shop", "USD")
    assert lead == {"telegram_user_id": "555000111", "external_user_id": None,
                    "first_seen_at": lead["first_seen_at"], "last_seen_at": lead["last_seen_at"],
                    "conversions": [{"id": conversion_id, "channel": "vip", "event_type": "Purchase",
                                     "event_name": "Purchase", "source": "api", "cold_lead": True,
                                     "awaiting_value": True, "delivery": "awaiting_value", "value": None,
                                     "currency": None, "attributed_at": stored.attributed_at.isoformat()}]}
    assert client.get("/admin/api/leads?user=42", headers=ADMIN).get_json()["sites"][0]["leads"] == []


def test_submitting_a_value_through_the_admin_api_makes_the_fake_meta_receive_the_purchase(
        client, fake_meta, dispatcher):
    conversion_id = awaiting_purchase(client)

    response = client.post(f"/admin/api/leads/shop/555000111/conversions/{conversion_id}/value", headers=ADMIN,
                           json={"value": "129.90", "currency": "eur", "pii": {"email": "Lead.Buyer@example.com"}})
    dispatcher.drain_once()

    [send] = Send.select()
    assert response.get_json() == {"conversion": conversion_id, "value": 129.9, "currency": "EUR", "dispatched": True,
                                   "sends": [{"id": send.id, "platform": "meta"}], "dropped": []}
    [event] = fake_meta.events
    assert (event["event_name"], event["custom_data"]["value"], event["custom_data"]["currency"]) == \
        ("Purchase", 129.9, "EUR")
    assert event["user_data"]["em"] == [Event.get().identity["em"]]


@pytest.mark.parametrize("form, status, error", [
    ({"value": 0, "currency": "EUR"}, 400, "Invalid field: value (must be greater than 0)"),
    ({"value": 10, "currency": "EURO"}, 400, "Invalid field: currency (must be an ISO 4217 currency code such as USD)"),
])
def test_a_bad_value_is_refused_and_the_conversion_keeps_waiting(client, form, status, error):
    conversion_id = awaiting_purchase(client)

    response = client.post(f"/admin/api/leads/shop/555000111/conversions/{conversion_id}/value", headers=ADMIN,
                           json=form)

    assert (response.status_code, response.get_json()) == (status, {"error": error, "code": status})
    assert (Conversion.get().status, Event.select().count()) == ("awaiting_value", 0)


def test_a_value_for_a_conversion_not_awaiting_one_is_a_409(client, fake_meta):
    conversion_id = awaiting_purchase(client)
    path = f"/admin/api/leads/shop/555000111/conversions/{conversion_id}/value"
    client.post(path, headers=ADMIN, json={"value": 5, "currency": "USD"})

    again = client.post(path, headers=ADMIN, json={"value": 5, "currency": "USD"})

    assert (again.status_code, again.get_json()) == (409, {
        "error": f"Conversion {conversion_id} is not awaiting a value (it is dispatched)", "code": 409})


def test_the_leads_page_submits_a_value_from_its_form(client, fake_meta, dispatcher):
    conversion_id = awaiting_purchase(client)
    sign_in(client)
    page = client.get("/dashboard/leads").get_data(as_text=True)
    assert ">Submit value</button>" in page and 'name="currency" value="USD"' in page

    done = press(client, f"/dashboard/leads/shop/555000111/conversions/{conversion_id}/value",
                 value="49.5", currency="USD", email="", phone="+1 415 555 0123")
    dispatcher.drain_once()

    text = done.get_data(as_text=True)
    assert f"Conversion {conversion_id}: 49.5 USD submitted; 1 send(s) scheduled." in text
    assert ">Submit value</button>" not in text
    assert [(e["event_name"], e["custom_data"]["value"]) for e in fake_meta.events] == [("Purchase", 49.5)]
    assert "ph" in fake_meta.events[0]["user_data"] and "em" not in fake_meta.events[0]["user_data"]


# --- accuracy ---------------------------------------------------------------------------------------------------

def test_accuracy_counts_a_delivered_and_a_skipped_purchase_on_the_sites_day(client, fake_meta, dispatcher, config):
    purchase = {**SEED_EXAMPLE, "fbc": FBC, "fbp": "fb.1.1700000000000.123"}
    track(client, {**purchase, "event_id": "p1"}, {**purchase, "event_id": "p2", "value": None, "currency": None})
    dispatcher.drain_once()
    today = datetime.now(timezone.utc).date().isoformat()

    [site] = client.get("/admin/api/accuracy", headers=ADMIN).get_json()["sites"]

    assert (site["id"], site["timezone"], site["alert_below"]) == ("shop", "UTC", None)
    [dest] = site["destinations"]
    assert dest == {"key": "shop/meta", "name": "meta", "platform": "meta", "days": [{
        "day": today, "received": {"count": 2, "value": {"USD": 149.99}},
        "delivered": {"count": 1, "value": {"USD": 149.99}},
        "skipped": {"count": 1, "value": {}, "reasons": [{"reason": NO_VALUE, "count": 1}]},
        "failed": {"count": 0, "value": {}, "reasons": []}, "waiting": {"count": 0, "value": {}},
        "coverage": 0.5, "below": False}]}


@pytest.mark.parametrize("zone, day", [("America/Los_Angeles", "2026-02-28"), ("Asia/Tokyo", "2026-03-01")])
def test_a_purchase_counts_on_the_day_of_the_sites_time_zone_and_a_low_day_is_marked(raw, zone, day, app):
    raw["sites"][0].update(timezone=zone, coverage_alert_below=0.9)
    config = build_config(raw)
    received_at = datetime(2026, 3, 1, 3, 0, tzinfo=timezone.utc)  # 19:00 the day before in Los Angeles
    Event.create(site="shop", dialect="channelstack", event_name="purchase_completed", standard_name="Purchase",
                 event_id="p1", occurred_at=received_at, received_at=received_at, value=10.0, currency="USD")
    Send.create(event=1, site="shop", destination="shop/meta", platform="meta", status="failed",
                reason="gave up after 5 attempts", next_attempt_at=received_at)

    [dest] = accuracy.site_report(config.sites[0], received_at + timedelta(hours=1))["destinations"]

    assert [(d["day"], d["failed"]["reasons"], d["coverage"], d["below"]) for d in dest["days"]] == \
        [(day, [{"reason": "gave up after 5 attempts", "count": 1}], 0.0, True)]


def test_the_accuracy_page_marks_a_day_below_the_sites_threshold(client, fake_meta, dispatcher, raw):
    raw["sites"][0]["coverage_alert_below"] = 0.9
    client.application.config["POSTBACK"] = build_config(raw)
    purchase = {**SEED_EXAMPLE, "fbc": FBC}
    track(client, {**purchase, "event_id": "p1"}, {**purchase, "event_id": "p2", "value": None, "currency": None})
    dispatcher.drain_once()
    sign_in(client)

    page = client.get("/dashboard/accuracy").get_data(as_text=True)

    assert '<tr class="below" title="coverage below 90 %">' in page
    assert NO_VALUE in page and "50.0 %" in page
