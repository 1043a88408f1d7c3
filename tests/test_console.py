"""The console and its admin API lookups, through Flask's test client (tests/browser/ drives a real browser)."""
from __future__ import annotations

import os
import re
import threading
from datetime import datetime, timezone

import pytest

from console import kept
from console.masking import HIDDEN, masked, masked_url
from models import Send
from tests.conftest import BROWSER, SEED_EXAMPLE, base_config, build_config
from tests.helpers import signup, track

PASSWORD = "console-pass"
ADMIN = {"Authorization": f"Bearer {PASSWORD}"}
RECEIVED = "2026-03-01T12:05:00+00:00"


@pytest.fixture
def raw_config(raw_config):
    raw_config["admin"]["password"] = PASSWORD
    return raw_config


def csrf_token(client, path: str = "/dashboard/login") -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True))[1]


def sign_in(client, password: str = PASSWORD):
    return client.post("/dashboard/login", data={"password": password, "csrf_token": csrf_token(client)})


def test_the_root_leads_to_the_console(client):
    response = client.get("/")
    assert (response.status_code, response.location) == (302, "/dashboard/")


@pytest.mark.parametrize("path", ["/dashboard/", "/dashboard/events", "/dashboard/events/1", "/dashboard/inspector",
                                  "/dashboard/config"])
def test_every_page_sends_a_stranger_to_the_login_page(client, path):
    response = client.get(path)
    assert (response.status_code, response.location) == (302, "/dashboard/login")


def test_a_wrong_password_is_refused_and_the_right_one_signs_in(client):
    refused = sign_in(client, "nope")
    assert (refused.status_code, "Wrong password." in refused.get_data(as_text=True)) == (401, True)
    assert client.get("/dashboard/").status_code == 302
    accepted = sign_in(client)
    assert (accepted.status_code, accepted.location) == (302, "/dashboard/")
    assert client.get("/dashboard/").status_code == 200


def test_the_cookie_is_http_only_and_same_site_lax(client):
    cookie = sign_in(client).headers["Set-Cookie"]
    assert cookie.startswith("postback_console=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie


def test_the_cookie_is_secure_when_postback_is_served_over_https(raw_config, request):
    raw_config["server"]["public_url"] = "https://track.shop.example"
    client = request.getfixturevalue("client")
    assert "; Secure" in sign_in(client).headers["Set-Cookie"]


def test_a_form_posted_without_its_csrf_token_is_refused(client):
    sign_in(client)
    response = client.post("/dashboard/logout")
    assert response.status_code == 400
    assert "The CSRF token is missing." in response.get_data(as_text=True)
    assert client.get("/dashboard/").status_code == 200  # still signed in


def test_signing_out_ends_the_session(client):
    sign_in(client)
    response = client.post("/dashboard/logout", data={"csrf_token": csrf_token(client, "/dashboard/")})
    assert (response.status_code, response.location) == (302, "/dashboard/login")
    assert client.get("/dashboard/").status_code == 302


@pytest.mark.sqlite_only(reason="the generated password is kept beside the SQLite file; on PostgreSQL in data/")
def test_without_a_password_one_is_generated_kept_private_and_printed_once(raw_config, tmp_path, capsys):
    raw_config["admin"]["password"] = ""
    from app import create_app

    create_app(build_config(raw_config))
    create_app(build_config(raw_config))  # a second worker, or the next start
    path = tmp_path / "db" / "admin-password"
    password = path.read_text().strip()
    assert (len(password), oct(path.stat().st_mode & 0o777)) == (24, "0o600")
    assert capsys.readouterr().err == (
        f"Postback: admin.password is empty, so one was generated: {password}\n"
        f"  It is kept in {path}. To choose your own, set admin.password (or POSTBACK_ADMIN_PASSWORD).\n")


@pytest.mark.postgres_only(reason="nodes share a PostgreSQL database, not a folder; on SQLite the file is the value")
def test_nodes_sharing_a_database_share_the_generated_password_and_the_console_cookie_key(raw_config, tmp_path,
                                                                                         monkeypatch, capsys):
    from app import create_app

    raw_config["admin"]["password"] = ""
    nodes = {}
    for name in ("a", "b"):  # two machines: each has a data/ folder of its own
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        nodes[name] = create_app(build_config(raw_config)).test_client()
    password = (tmp_path / "a" / "data" / "admin-password").read_text().strip()
    said = capsys.readouterr().err
    assert (said.count("so one was generated"), said.count(password)) == (1, 1)  # by the first node only
    assert [(tmp_path / "b" / "data" / name).read_text() for name in ("admin-password", "console-secret-key")] == [
        (tmp_path / "a" / "data" / name).read_text() for name in ("admin-password", "console-secret-key")]

    signed_in = sign_in(nodes["a"], password)
    assert (signed_in.status_code, signed_in.location) == (302, "/dashboard/")
    nodes["b"].set_cookie("postback_console", nodes["a"].get_cookie("postback_console").value)
    assert nodes["b"].get("/dashboard/").status_code == 200  # the next request, sent to the other node


def test_workers_starting_together_generate_one_password(tmp_path):
    made, results = iter(range(100)), []
    url = f"sqlite:///{tmp_path}/postback.db"
    threads = [threading.Thread(target=lambda: results.append(kept.keep(url, "p", lambda: str(next(made)))))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [("0", False)] * 7 + [("0", True)]


@pytest.mark.sqlite_only(reason="the generated password is kept beside the SQLite file; on PostgreSQL in data/")
def test_the_login_page_says_where_the_generated_password_is(raw_config, tmp_path, request):
    raw_config["admin"]["password"] = ""
    page = request.getfixturevalue("client").get("/dashboard/login").get_data(as_text=True)
    assert f"It is kept in <code>{tmp_path / 'db' / 'admin-password'}</code>" in " ".join(page.split())
    assert "POSTBACK_ADMIN_PASSWORD" in page


def test_the_event_listing_finds_an_event_by_event_id_or_order_id(client, frozen_ingest):
    track(client, {**SEED_EXAMPLE, "event_id": "evt_1", "order_id": "ord_1"}, signup("evt_2"))
    listed = {"id": 1, "site": "shop", "dialect": "channelstack", "event_name": "purchase_completed",
              "standard_name": "Purchase", "event_id": "evt_1", "order_id": "ord_1", "value": 149.99,
              "currency": "USD", "received_at": RECEIVED, "sends": [{"destination": "shop/meta", "status": "pending"}]}
    page = {"page": 1, "has_next": False, "sites": ["shop"],
            "statuses": ["pending", "sending", "sent", "failed", "skipped"]}
    filters = {"site": "", "dialect": "", "event": "", "status": ""}
    for q in ("evt_1", "ord_1"):
        found = client.get(f"/admin/api/events?q={q}", headers=ADMIN).get_json()
        assert found == {**page, "events": [listed], "filters": {**filters, "q": q}, "query": {"q": q}}
    everything = client.get("/admin/api/events", headers=ADMIN).get_json()
    assert [e["event_id"] for e in everything["events"]] == ["evt_2", "evt_1"]
    only = client.get("/admin/api/events?event=Purchase&status=pending", headers=ADMIN).get_json()
    assert [e["event_id"] for e in only["events"]] == ["evt_1"]


def test_an_events_page_past_the_last_is_empty_and_says_so(client):
    track(client, signup("evt_1"))
    sign_in(client)
    for query, newest in (("", "/dashboard/events"), ("&site=shop", "/dashboard/events?site=shop")):
        page = client.get(f"/dashboard/events?page=2{query}").get_data(as_text=True)
        assert (f'No event on page 2: the events end before it. <a href="{newest}">Newest events</a>.' in page,
                "No events yet" in page) == (True, False)


def test_no_events_yet_shows_the_curl_of_a_first_event(client):
    sign_in(client)
    for path in ("/dashboard/", "/dashboard/events"):
        assert "/v1/track -H 'Content-Type: application/json'" in client.get(path).get_data(as_text=True)


def test_a_pending_send_shows_its_payload_rebuilt_and_a_dry_one_as_recorded(client, frozen_ingest, dispatcher):
    track(client, {**SEED_EXAMPLE, "event_id": "evt_1"})
    [send] = client.get("/admin/api/events/1", headers=ADMIN).get_json()["sends"]
    assert (send["status"], send["rebuilt"], send["payload"]["event_id"]) == ("pending", True, "evt_1")
    sign_in(client)
    assert "Payload <strong>rebuilt</strong> from the stored event" in client.get("/dashboard/events/1").get_data(as_text=True)
    dispatcher.drain_once(datetime(2026, 3, 1, 12, 6, tzinfo=timezone.utc))
    [send] = client.get("/admin/api/events/1", headers=ADMIN).get_json()["sends"]
    assert send["payload"] == Send.get().payload
    assert {k: send[k] for k in ("status", "reason", "rebuilt", "attempts", "replayable", "next_attempt_at")} == {
        "status": "skipped", "reason": "dry mode", "rebuilt": False, "attempts": 0, "replayable": False,
        "next_attempt_at": None}
    assert send["match_quality"] == {
        "score": 10.0, "identifiers": Send.get().match_quality["identifiers"], "raise_with": []}


def test_an_events_story_says_how_it_arrived_and_names_its_identity_fields_only(client, frozen_ingest):
    track(client, {**SEED_EXAMPLE, "event_id": "evt_1"})
    story = client.get("/admin/api/events/1", headers=ADMIN).get_json()
    assert {k: story[k] for k in ("received", "decisions", "identity")} == {
        "received": {"dialect": "channelstack", "received_at": RECEIVED, "occurred_at": RECEIVED,
                     "page_url": "https://example.com/checkout", "ip": "203.0.113.0",
                     "location": {"country": "us", "state": "ca", "city": "san francisco"}},
        "decisions": {"consent": True, "consent_categories": None, "mapped_to": "Purchase", "bot": False,
                      "notes": ["fbc: dropped, not of the form fb.<digit>.<digits>.<value>",
                                "fbp: dropped, not of the form fb.<digit>.<digits>.<value>"]},
        "identity": {"fields": ["em", "fn", "ln", "ph"], "click_ids": ["gclid"],
                     "external_id": True, "anonymous_id": False},
    }
    assert client.get("/admin/api/events/2", headers=ADMIN).get_json() == {"error": "No event #2", "code": 404}


def test_an_id_or_a_page_past_the_databases_integer_is_not_found_rather_than_a_500(client):
    track(client, signup("evt_1"))
    sign_in(client)
    past, last_id = 2 ** 63, 2 ** 63 - 1
    assert client.get(f"/dashboard/events/{past}").status_code == 404
    assert "No event #9223372036854775807" in client.get(f"/dashboard/events/{last_id}").get_data(as_text=True)
    assert client.post(f"/dashboard/sends/{past}/replay",
                       data={"csrf_token": csrf_token(client, "/dashboard/")}).status_code == 404
    assert client.get(f"/admin/api/events/{past}", headers=ADMIN).status_code == 404
    assert client.post(f"/admin/api/sends/{past}/replay", headers=ADMIN).status_code == 404
    listed = client.get(f"/admin/api/events?page={past}", headers=ADMIN).get_json()
    assert (listed["events"], listed["page"], listed["has_next"]) == ([], last_id // 50, False)
    assert (f"No event on page {last_id // 50}: the events end before it."
            in client.get(f"/dashboard/events?page={past}").get_data(as_text=True))


def test_a_failed_send_is_replayed_through_the_api(client):
    track(client, signup("evt_1"))
    Send.update(status="failed", reason="Meta error 100: Invalid parameter").execute()
    assert client.post("/admin/api/sends/1/replay", headers=ADMIN).get_json() == {"queued": 1}
    assert (Send.get().status, Send.get().reason) == ("pending", None)
    assert client.post("/admin/api/sends/1/replay", headers=ADMIN).get_json() == {"queued": 0}


def test_the_config_shows_no_secret(raw_config, request):
    raw_config["sites"][0]["destinations"][0]["access_token"] = "meta-token-123"
    client = request.getfixturevalue("client")
    sign_in(client)
    secrets = [PASSWORD, "meta-token-123", "key_demo_123", "atk_live_demo", "52fb5565a7b23ec66fad3988"]
    for text in (client.get("/dashboard/config").get_data(as_text=True),
                 client.get("/admin/api/config", headers=ADMIN).get_data(as_text=True)):
        assert [secret for secret in secrets if secret in text] == []
    shown = client.get("/admin/api/config", headers=ADMIN).get_json()
    assert (shown["admin"], shown["sites"][0]["keys"]) == ({"password": HIDDEN}, [HIDDEN, HIDDEN])


def test_the_config_page_shows_each_sites_tracker_snippet_with_its_browser_key(raw_config, request):
    raw_config["server"]["public_url"] = "https://track.shop.example"
    client = request.getfixturevalue("client")
    sign_in(client)
    page = client.get("/dashboard/config").get_data(as_text=True)
    assert ('&lt;script src=&#34;https://track.shop.example/static/postback.js&#34; data-site=&#34;shop&#34; '
            'data-key=&#34;pk_demo_shop_browser&#34; async&gt;&lt;/script&gt;') in page


def test_the_console_lookups_need_the_admin_password(client):
    for path in ("/admin/api/overview", "/admin/api/events", "/admin/api/events/1", "/admin/api/config"):
        assert client.get(path).status_code == 401
    assert client.post("/admin/api/sends/1/replay").status_code == 401


@pytest.mark.parametrize("value, shown", [
    ({"access_token": "t", "pixel_id": "1", "nested": [{"api_secret": "s", "apiKey": "k"}]},
     {"access_token": HIDDEN, "pixel_id": "1", "nested": [{"api_secret": HIDDEN, "apiKey": HIDDEN}]}),
    ({"keys": ["a", "b"], "webhook_secret": "", "bot_token": None}, {"keys": [HIDDEN, HIDDEN], "webhook_secret": "", "bot_token": None}),
    ({"test_event_code": "TEST1", "monkey": "x", "customer_id": "1"}, {"test_event_code": "TEST1", "monkey": HIDDEN, "customer_id": "1"}),
])
def test_secrets_are_masked_by_their_key_names(value, shown):
    assert masked(value) == shown


def test_a_database_url_loses_its_password():
    assert masked_url("postgresql://pb:hunter2@db:5432/postback") == f"postgresql://pb:{HIDDEN}@db:5432/postback"
    assert masked_url("sqlite:///data/postback.db") == "sqlite:///data/postback.db"


def test_the_overview_counts_each_destinations_sends_today_and_over_a_week(client, dispatcher):
    track(client, signup("evt_1"), {**signup("evt_2"), "consent": False})
    data = client.get("/admin/api/overview", headers=ADMIN).get_json()
    [site] = data["sites"]
    [meta] = site["destinations"]
    window = {"sent": 0, "skipped": 1, "failed": 0, "waiting": 1, "total": 2,
              "percent": {"sent": 0, "skipped": 50.0, "failed": 0, "waiting": 50.0},
              "skipped_by_reason": [{"reason": "no consent", "count": 1}]}
    assert {k: meta[k] for k in ("key", "name", "platform", "mode", "paused", "today", "week", "backlog")} == {
        "key": "shop/meta", "name": "meta", "platform": "meta", "mode": "dry", "paused": None,
        "today": window, "week": window, "backlog": 1}
    assert (site["events"], site["days"][-1]["count"], len(site["days"]), data["backlog"]) == (2, 2, 30, 1)


def test_a_paused_destination_comes_first_with_the_platforms_error(raw_config, request):
    raw_config["sites"][0]["destinations"].append({**raw_config["sites"][0]["destinations"][0], "name": "meta2"})
    client = request.getfixturevalue("client")
    config = client.application.config["POSTBACK"]
    from delivery.sends import pause

    pause(config.destination("shop/meta2"), "Meta error 190: Invalid OAuth access token", datetime(2026, 3, 1, tzinfo=timezone.utc))
    [site] = client.get("/admin/api/overview", headers=ADMIN).get_json()["sites"]
    assert [(d["key"], d["paused"]) for d in site["destinations"]] == [
        ("shop/meta2", {"reason": "Meta error 190: Invalid OAuth access token", "since": "2026-03-01T00:00:00+00:00"}),
        ("shop/meta", None)]
    sign_in(client)
    assert "Meta error 190: Invalid OAuth access token" in client.get("/dashboard/").get_data(as_text=True)


def test_the_event_listing_is_paginated_newest_first(client, monkeypatch):
    monkeypatch.setattr("console.events.PAGE_SIZE", 2)
    track(client, signup("evt_1"), signup("evt_2"), signup("evt_3"))
    pages = [client.get(f"/admin/api/events?page={n}", headers=ADMIN).get_json() for n in (1, 2)]
    assert [([e["event_id"] for e in p["events"]], p["has_next"]) for p in pages] == [
        (["evt_3", "evt_2"], True), (["evt_1"], False)]
    sign_in(client)
    assert 'href="/dashboard/events?page=2&amp;site=shop">older' in client.get("/dashboard/events?site=shop").get_data(as_text=True)
