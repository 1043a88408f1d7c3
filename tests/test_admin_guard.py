"""The admin credentials guarded (docs/operations.md#the-admin-api-and-the-inspector): wrong ones throttled per
client with an exponential delay kept in the database, never a lockout; a logout; session ids stored hashed;
Secure cookies when Postback is served over HTTPS."""
from __future__ import annotations

import base64
import re
from datetime import timedelta

import pytest

from console import throttle
from console.sessions import AdminSession
from console.throttle import AuthFailure
from ingest.canonical import utcnow
from ingest.hashing import sha256
from tests.conftest import BROWSER

PASSWORD = "guard-test-password"
OVERVIEW = "/admin/api/overview"


@pytest.fixture
def raw_config(raw_config):
    raw_config["admin"]["password"] = PASSWORD
    return raw_config


def basic(password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()}


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def login(client, password: str):
    return client.post("/admin/api/login", json={"password": password})


def wait_passes() -> None:
    """As if the client had waited out its delay."""
    AuthFailure.update(blocked_until=utcnow() - timedelta(seconds=1)).execute()


def test_five_wrong_passwords_are_free_then_every_try_waits_and_is_answered_429(client):
    statuses = [login(client, f"guess-{i}").status_code for i in range(6)]
    right_too_soon = login(client, PASSWORD)
    assert statuses == [401] * 6
    assert (right_too_soon.status_code, right_too_soon.headers["Retry-After"], right_too_soon.get_json()) == (
        429, "1", {"error": "Too many failed attempts: retry in 1 s", "code": 429})
    row = AuthFailure.get()
    assert (row.client, row.failures) == ("127.0.0.1", 6)


def test_the_right_password_gets_in_once_the_delay_has_passed_and_clears_the_count(client):
    for i in range(6):
        login(client, f"guess-{i}")
    wait_passes()
    assert (login(client, PASSWORD).status_code, AuthFailure.select().count()) == (200, 0)


def test_each_failure_past_the_free_ones_doubles_the_delay_up_to_five_minutes():
    assert [throttle.delay(n).total_seconds() for n in (6, 7, 8, 9, 14, 15, 100)] == [1, 2, 4, 8, 256, 300, 300]


def test_basic_and_bearer_failures_are_throttled_like_the_login(client):
    statuses = [client.get(OVERVIEW, headers=basic(f"guess-{i}")).status_code for i in range(3)]
    statuses += [client.get(OVERVIEW, headers=bearer(f"guess-{i}")).status_code for i in range(3)]
    throttled = client.get(OVERVIEW, headers=basic(PASSWORD))
    assert (statuses, throttled.status_code, throttled.headers["Retry-After"]) == ([401] * 6, 429, "1")
    wait_passes()
    assert client.get(OVERVIEW, headers=basic(PASSWORD)).status_code == 200


def test_a_request_without_any_credential_is_not_a_failed_try(client):
    assert [client.get(OVERVIEW).status_code for _ in range(10)] == [401] * 10
    assert AuthFailure.select().count() == 0


def test_the_throttle_is_per_client_and_failures_an_hour_old_no_longer_count(client):
    now = utcnow()
    for _ in range(6):
        throttle.failed("198.51.100.1", now)
    throttle.failed("198.51.100.2", now)
    throttle.failed("198.51.100.2", now + timedelta(hours=2))
    assert [throttle.retry_after(ip, now) for ip in ("198.51.100.1", "198.51.100.2", "127.0.0.1")] == [1, 0, 0]
    assert AuthFailure.get(AuthFailure.client == "198.51.100.2").failures == 1


def test_the_client_ip_override_header_does_not_escape_the_throttle(client):
    for i in range(6):
        client.post("/admin/api/login", json={"password": f"g{i}"}, headers={"X-Postback-Client-IP": f"203.0.113.{i}"})
    assert login(client, PASSWORD).status_code == 429


def test_the_console_sign_in_shares_the_throttle(client):
    def sign_in(password: str):
        page = client.get("/dashboard/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)[1]
        return client.post("/dashboard/login", data={"password": password, "csrf_token": token})

    statuses = [sign_in(f"guess-{i}").status_code for i in range(6)]
    throttled = sign_in(PASSWORD)
    assert (statuses, throttled.status_code, throttled.headers["Retry-After"]) == ([401] * 6, 429, "1")
    assert "Too many failed attempts: try again in 1 s." in throttled.get_data(as_text=True)
    wait_passes()
    assert sign_in(PASSWORD).status_code == 302


def test_logout_ends_the_session_and_session_ids_are_stored_hashed(client):
    session_id = login(client, PASSWORD).get_json()["session_id"]
    assert [row.id for row in AdminSession.select()] == [sha256(session_id)]
    assert client.get(OVERVIEW, headers=bearer(session_id)).status_code == 200

    logged_out = client.post("/admin/api/logout", headers=bearer(session_id))
    again = client.post("/admin/api/logout", headers=bearer(session_id))

    assert (logged_out.status_code, logged_out.get_json()) == (200, {"logged_out": True})
    assert (again.status_code, again.get_json()) == (404, {"error": "No such session", "code": 404})
    assert (client.get(OVERVIEW, headers=bearer(session_id)).status_code, AdminSession.select().count()) == (401, 0)


def test_a_session_row_id_itself_signs_no_one_in(client):
    login(client, PASSWORD)
    stored = AdminSession.get().id
    assert client.get(OVERVIEW, headers=bearer(stored)).status_code == 401


@pytest.fixture
def https_client(raw_config, request):
    raw_config["server"]["public_url"] = "https://track.shop.example"
    return request.getfixturevalue("client")


def test_the_pixel_and_tracker_cookies_are_secure_when_postback_is_served_over_https(https_client):
    pixel = https_client.get("/52fb5565a7b23ec66fad3988/event.gif?event_token=signup",
                             headers={**BROWSER, "Referer": "https://shop.example/"})
    cookie = pixel.headers["Set-Cookie"]
    assert ("; Secure" in cookie, "; HttpOnly" in cookie, "SameSite=None" in cookie) == (True, True, True)
