"""Erasure by email or phone (docs/privacy.md#erasure): `erase --email/--phone` and `POST /admin/api/erase` reach
every store: events and their sends, Commanders profiles, Octeth subscribers, pixel profiles, funnel leads and visits."""
from __future__ import annotations

import base64
import hashlib
import json

import pytest
import yaml
from click.testing import CliRunner

from cli import cli
from dialects.adtarget.funnel import Conversion, Lead, Visit
from dialects.commanders.profiles import Profile
from dialects.octeth.store import OctethSubscriber
from dialects.pixel.profiles import PixelProfile
from models import Event, Send
from tests.helpers import every_table_text
from tests.conftest import BROWSER, RAW_PII

EMAIL, OTHER_EMAIL = "Forget.Me@Example.com", "stay.here@example.com"
PHONE = "+44 20 7946 0111"
RAW_PII.extend([EMAIL, EMAIL.lower(), OTHER_EMAIL, PHONE])
PASSWORD = "erase-test-password"
ADMIN = {"Authorization": f"Bearer {PASSWORD}"}
USER_API = {"Authorization": "Bearer key_demo_123"}
ADTARGET = {"Authorization": "Bearer atk_live_demo", "User-Agent": BROWSER["User-Agent"]}
PIXEL_TOKEN = "52fb5565a7b23ec66fad3988"
EVERY_TABLE_ERASED = {
    "events": 4, "sends": 4, "user_profiles": 1, "octeth_subscribers": 1, "pixel_profiles": 1,
    "funnel_conversions": 1, "funnel_leads": 1, "funnel_visits": 1, "funnel_sessions": 1, "funnel_invite_links": 0,
}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@pytest.fixture
def raw(raw_config):
    raw_config["admin"]["password"] = PASSWORD
    return raw_config


@pytest.fixture
def config(raw):
    from tests.conftest import build_config
    return build_config(raw)


def ok(response) -> None:
    assert response.status_code == 200, response.get_data(as_text=True)


def seed_one_person(client, email: str, telegram_id: int, user: str) -> None:
    """The same person through every dialect and store."""
    ok(client.post("/v1/track", json={"api_key": "key_demo_123", "event": "signup", "email": email,
                                      "source_url": "https://shop.example/"}, headers=BROWSER))
    ok(client.post("/users?tc_s=shop", json={"id": user, "email": email}, headers=USER_API))
    ok(client.post("/api/v1/event", json={"APIKey": "key_demo_123", "ListID": 94, "event": "pageView", "email": email},
                   headers=BROWSER))
    params = base64.b64encode(json.dumps({"email": email, "uuid": f"px-{user}"}).encode()).decode()
    ok(client.get(f"/{PIXEL_TOKEN}/event.gif?event_token=signup&params={params}",
                  headers={**BROWSER, "Referer": "https://shop.example/signup"}))
    ok(client.post("/api/v1/events/visit", json={"href": "https://shop.example/vip", "tempId": f"t-{user}",
                                                "externalUserId": email}, headers=ADTARGET))
    ok(client.post("/api/v1/events/conversion", json={"channelId": "vip", "eventType": "Lead",
                                                     "telegramUserId": telegram_id, "pii": {"email": email}},
                   headers=ADTARGET))


def left() -> dict:
    return {"events": Event.select().where(Event.identity != {}).count(), "profiles": Profile.select().count(),
            "subscribers": OctethSubscriber.select().count(), "pixel": PixelProfile.select().count(),
            "leads": Lead.select().count(), "conversions": Conversion.select().count(), "visits": Visit.select().count()}


ONE_LEFT = {"events": 4, "profiles": 1, "subscribers": 1, "pixel": 1, "leads": 1, "conversions": 1, "visits": 1}


def test_the_admin_api_erases_a_person_by_email_from_every_store_and_says_what_it_touched(client):
    seed_one_person(client, EMAIL, 555, "u-1")
    seed_one_person(client, OTHER_EMAIL, 777, "u-2")

    response = client.post("/admin/api/erase", json={"email": f"  {EMAIL.upper()} ", "site": "shop"}, headers=ADMIN)

    assert (response.status_code, response.get_json()) == (200, {"erased": {"shop": EVERY_TABLE_ERASED}})
    assert left() == ONE_LEFT
    assert not {sha(EMAIL.lower()), "u-1", "t-u-1", "px-u-1"} & set(every_table_text().split("'"))
    assert sha(OTHER_EMAIL) in every_table_text()
    assert {s.status for s in Send.select().join(Event).where(Event.identity == {})} <= {"skipped", "sent", "failed"}


def test_the_erase_command_erases_a_person_by_phone_on_every_site(client, raw, tmp_path):
    ok(client.post("/v1/track", json={"api_key": "key_demo_123", "event": "signup", "phone": PHONE,
                                      "distinct_id": PHONE, "source_url": "https://shop.example/"}, headers=BROWSER))
    ok(client.post("/v1/track", json={"api_key": "key_demo_123", "event": "signup", "email": OTHER_EMAIL,
                                      "source_url": "https://shop.example/"}, headers=BROWSER))
    path = tmp_path / "postback.yaml"
    path.write_text(yaml.safe_dump(raw))

    result = CliRunner().invoke(cli, ["erase", "--phone", "+442079460111"], env={"POSTBACK_CONFIG": str(path)})

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == (
        "site shop: erased events 1, sends 1, funnel_conversions 0, funnel_leads 0, funnel_invite_links 0, "
        "funnel_visits 0, funnel_sessions 0, user_profiles 0, octeth_subscribers 0, pixel_profiles 0")
    assert [e.external_id for e in Event.select().order_by(Event.id)] == [None, None]
    assert sha("442079460111") not in every_table_text()


@pytest.mark.parametrize("args, message", [
    ([], "give one of --email or --phone"),
    (["--email", "a@example.com", "--phone", "+14155552671"], "give one of --email or --phone"),
    (["--email", "not-an-address"], "nothing erased: email: not a valid email address"),
    (["--email", "a@example.com", "--site", "nope"], "no site 'nope' in"),
])
def test_the_erase_command_refuses_what_it_cannot_erase_and_erases_nothing(raw, tmp_path, args, message):
    path = tmp_path / "postback.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(cli, ["erase", *args], env={"POSTBACK_CONFIG": str(path)})
    assert (result.exit_code, result.stderr.startswith(message)) == (1, True), result.output


@pytest.mark.parametrize("body, status, error", [
    ({}, 400, "Give one of email or phone (text), and optionally site"),
    ({"email": 5}, 400, "Give one of email or phone (text), and optionally site"),
    ({"email": "a@example.com", "phone": "+14155552671"}, 400, "Give one of email or phone (text), and optionally site"),
    ({"phone": "12"}, 400, "Nothing erased: phone: not a possible phone number for US"),
    ({"email": "a@example.com", "site": "nope"}, 404, "Unknown site"),
    ([1], 400, "Request body must be a JSON object"),
])
def test_the_admin_erase_refuses_what_it_cannot_erase(client, body, status, error):
    response = client.post("/admin/api/erase", json=body, headers=ADMIN)
    assert (response.status_code, response.get_json()) == (status, {"error": error, "code": status})


def test_the_admin_erase_needs_the_admin_password(client):
    response = client.post("/admin/api/erase", json={"email": "a@example.com"})
    assert response.status_code == 401
