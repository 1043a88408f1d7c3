"""The console in Chromium: sign-in, the overview's chart, finding an event, its story, replay, config, CSRF, sign-out."""
from __future__ import annotations

import os

import pytest

from tests.browser.conftest import missing

if missing() and os.environ.get("CI") == "true":
    pytest.fail(f"browser tests cannot run under CI: {missing()}", pytrace=False)
if missing():
    pytest.skip(missing(), allow_module_level=True)

import requests  # noqa: E402 - only once the browser tests can run
from playwright.sync_api import Page, expect  # noqa: E402

from delivery.dispatcher import Dispatcher  # noqa: E402
from tests.conftest import BROWSER  # noqa: E402
from tests.helpers import received, signup  # noqa: E402

PASSWORD = "browser-pass"


def send(base: str, body: dict) -> None:
    response = requests.post(f"{base}/v1/track", json=body, headers=BROWSER, timeout=10)
    assert response.status_code == 200, response.text


def drain(config) -> None:
    dispatcher = Dispatcher(lambda: config)
    try:
        dispatcher.drain_once()
    finally:
        dispatcher.close()


def sign_in(page: Page, base: str, password: str = PASSWORD) -> None:
    page.goto(f"{base}/dashboard/")
    page.fill("#password", password)
    page.get_by_role("button", name="Sign in").click()


def test_a_wrong_password_is_refused_and_the_right_one_is_accepted(page: Page, service, shots):
    base, _ = service
    page.goto(f"{base}/")
    expect(page).to_have_url(f"{base}/dashboard/login")
    page.screenshot(path=shots / "login.png", full_page=True)
    sign_in(page, base, "not-the-password")
    expect(page.get_by_role("alert")).to_have_text("Wrong password.")
    page.screenshot(path=shots / "login-refused.png", full_page=True)
    sign_in(page, base)
    expect(page).to_have_url(f"{base}/dashboard/")
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()


def test_the_overview_chart_renders_with_data(page: Page, service, shots):
    base, config = service
    send(base, signup("evt_chart_1"))
    send(base, {**signup("evt_chart_2"), "consent": False})
    drain(config)
    sign_in(page, base)
    bars = page.locator("#site-shop svg rect.bar")
    expect(bars).to_have_count(30)
    assert float(bars.last.get_attribute("height")) == 150.0  # today holds the busiest day's bar
    expect(page.locator("#site-shop figcaption")).to_contain_text("event(s) in the last 30 days")
    page.screenshot(path=shots / "overview.png", full_page=True)


def test_q_finds_an_event_sent_a_moment_before_and_its_page_shows_the_fake_metas_answer(
        page: Page, service, shots, fake_meta_server):
    base, config = service
    send(base, {**signup("evt_found"), "order_id": "ord_found"})
    drain(config)
    sign_in(page, base)
    page.goto(f"{base}/dashboard/events")
    page.screenshot(path=shots / "events.png", full_page=True)
    page.fill("#q", "ord_found")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("table tr")).to_have_count(2)  # the header and the one event
    page.screenshot(path=shots / "events-found.png", full_page=True)
    page.get_by_role("link", name="evt_found").click()
    send_card = page.locator("article.send")
    expect(send_card).to_contain_text("HTTP 200")
    expect(send_card.locator("pre.answer")).to_contain_text('"events_received": 1')
    expect(send_card).to_contain_text("Payload as sent, secrets masked, the client IP cut as the event's")
    expect(send_card).to_contain_text('"client_ip_address": "203.0.113.0"')
    expect(send_card.locator(".status")).to_have_text("sent")
    assert "evt_found" in received(fake_meta_server)
    page.screenshot(path=shots / "event.png", full_page=True)


def test_a_send_rejected_by_the_fake_is_replayed_from_its_page(page: Page, service, shots, fake_meta_server):
    base, config = service
    fake_meta_server.reject_event("evt_rejected", "Invalid parameter")
    send(base, signup("evt_rejected"))
    drain(config)
    sign_in(page, base)
    page.goto(f"{base}/dashboard/events?q=evt_rejected")
    page.get_by_role("link", name="evt_rejected").click()
    expect(page.locator("article.send .status")).to_have_text("failed")
    page.screenshot(path=shots / "event-rejected.png", full_page=True)
    assert "evt_rejected" not in received(fake_meta_server)

    fake_meta_server.accept_event("evt_rejected")
    page.get_by_role("button", name="Replay").click()
    expect(page.get_by_role("status")).to_contain_text("queued again")
    expect(page.locator("article.send .status")).to_have_text("pending")
    drain(config)
    assert "evt_rejected" in received(fake_meta_server)
    page.reload()
    expect(page.locator("article.send .status")).to_have_text("sent")
    expect(page.get_by_role("button", name="Replay")).to_have_count(0)
    page.screenshot(path=shots / "event-replayed.png", full_page=True)


def test_the_inspector_lists_a_refused_request(page: Page, service, shots):
    base, _ = service
    requests.post(f"{base}/v1/track", json={"api_key": "key_demo_123"}, headers=BROWSER, timeout=10)
    sign_in(page, base)
    page.get_by_role("link", name="Inspector").click()
    expect(page.locator("table")).to_contain_text("Missing required field: event")
    page.screenshot(path=shots / "inspector.png", full_page=True)


def test_the_config_page_contains_no_secret_of_the_config(page: Page, service, shots):
    base, config = service
    sign_in(page, base)
    page.get_by_role("link", name="Config").click()
    expect(page.get_by_role("heading", name="Config in force")).to_be_visible()
    html = page.content()
    secrets = [PASSWORD, "meta-token", *config.sites[0].keys, config.sites[0].pixel_token]
    assert [secret for secret in secrets if secret in html] == []
    page.screenshot(path=shots / "config.png", full_page=True)


def test_a_post_without_the_csrf_token_is_refused(page: Page, service, shots):
    base, _ = service
    sign_in(page, base)
    page.locator("form.signout input[name=csrf_token]").evaluate("input => input.remove()")
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("main")).to_contain_text("The CSRF token is missing.")
    page.screenshot(path=shots / "csrf-refused.png", full_page=True)
    page.goto(f"{base}/dashboard/")
    expect(page).to_have_url(f"{base}/dashboard/")  # the refused sign-out left the session alone


def test_signing_out_works(page: Page, service):
    base, _ = service
    sign_in(page, base)
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{base}/dashboard/login")
    page.goto(f"{base}/dashboard/events")
    expect(page).to_have_url(f"{base}/dashboard/login")
