"""`GET /metrics`: the admin credentials guard it, and after known traffic it counts exactly that traffic,
in one process and summed over every gunicorn worker whichever answers."""
from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from models import Event
from tests.conftest import base_config, meta_destination, with_destinations
from tests.helpers import signup, track
from tests.test_concurrency import gunicorn

PASSWORD = "metrics-admin-password"
ADMIN = {"Authorization": f"Bearer {PASSWORD}"}


def samples(text: str) -> dict[tuple, float]:
    """Every sample as (name, sorted labels) -> value, read by prometheus_client's own parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(client) -> dict[tuple, float]:
    response = client.get("/metrics", headers=ADMIN)
    assert response.status_code == 200, response.data
    assert response.mimetype == "text/plain"
    return samples(response.get_data(as_text=True))


def counted(before: dict, after: dict, name: str) -> dict[tuple, float]:
    """What `name`'s samples rose by between two scrapes (each label set as a dict's items)."""
    return {labels: value - before.get((name, labels), 0) for (metric, labels), value in after.items()
            if metric == name and value != before.get((name, labels), 0)}


@pytest.fixture
def raw_config(tmp_path, fake_meta):
    raw = with_destinations(base_config(tmp_path), meta_destination(fake_meta.url),
                            meta_destination(fake_meta.url, name="meta_dry", mode="dry"))
    raw["admin"]["password"] = PASSWORD
    return raw


def site(destination: str, **labels: str) -> tuple:
    return tuple(sorted({"site": "shop", "destination": destination, **labels}.items()))


def test_metrics_answer_401_without_the_admin_password_and_200_with_basic_or_bearer(client):
    refused = client.get("/metrics", headers={"Authorization": "Bearer wrong"})
    assert (refused.status_code, refused.get_json()) == (401, {"error": "Authentication required", "code": 401})
    assert refused.headers["WWW-Authenticate"] == 'Basic realm="Postback admin"'
    assert client.get("/metrics", auth=("prometheus", PASSWORD)).status_code == 200
    assert client.get("/metrics", headers=ADMIN).status_code == 200


def test_a_scrape_after_known_traffic_counts_events_by_result_and_sends_by_outcome(
        client, fake_meta, dispatcher):
    before = scrape(client)
    now = track(client, signup("e1"), signup("e2"), signup("e1"))
    assert client.post("/v1/track", json={**signup("e3"), "api_key": "wrong"}).status_code == 401
    fake_meta.script("500")
    dispatcher.drain_once(now=now)  # the live destination's batch gets a 500; the dry one skips both
    fake_meta.reject_event("e2")
    dispatcher.drain_once(now=now + timedelta(hours=1))
    after = scrape(client)

    assert counted(before, after, "postback_events_received_total") == {
        (("dialect", "channelstack"), ("result", "stored"), ("site", "shop")): 2,
        (("dialect", "channelstack"), ("result", "duplicate"), ("site", "shop")): 1,
        (("dialect", "channelstack"), ("result", "refused"), ("site", "")): 1,
    }
    assert counted(before, after, "postback_sends_total") == {
        site("meta", outcome="retry"): 2, site("meta", outcome="sent"): 1, site("meta", outcome="rejected"): 1,
        site("meta_dry", outcome="skipped"): 2,
    }
    requests_timed = counted(before, after, "postback_dispatch_request_seconds_count")
    assert sum(requests_timed.values()) == len(fake_meta.requests) and set(requests_timed) == {site("meta")}
    assert counted(before, after, "postback_config_reloads_total") == {}  # nothing re-read the config meanwhile
    assert {k: v for k, v in after.items() if k[0].startswith(("postback_queue", "postback_destination", "postback_oldest"))} == {
        ("postback_queue_depth", site("meta", status="pending")): 0, ("postback_queue_depth", site("meta", status="sending")): 0,
        ("postback_queue_depth", site("meta_dry", status="pending")): 0,
        ("postback_queue_depth", site("meta_dry", status="sending")): 0,
        ("postback_oldest_pending_seconds", site("meta")): 0, ("postback_oldest_pending_seconds", site("meta_dry")): 0,
        ("postback_destination_paused", site("meta")): 0, ("postback_destination_paused", site("meta_dry")): 0,
    }


def test_a_setup_error_shows_as_a_paused_destination_with_its_waiting_sends_and_their_age(
        client, fake_meta, dispatcher, monkeypatch):
    before = scrape(client)
    now = track(client, signup("e1"), signup("e2"))
    fake_meta.script("invalid_token")
    dispatcher.drain_once(now=now)
    first = Event.select().order_by(Event.received_at).first().received_at
    monkeypatch.setattr("routes.metrics.utcnow", lambda: first + timedelta(hours=1))
    after = scrape(client)

    assert counted(before, after, "postback_sends_total") == {
        site("meta", outcome="setup_error"): 2, site("meta_dry", outcome="skipped"): 2}
    assert after[("postback_destination_paused", site("meta"))] == 1
    assert after[("postback_destination_paused", site("meta_dry"))] == 0
    assert after[("postback_queue_depth", site("meta", status="pending"))] == 2
    assert after[("postback_oldest_pending_seconds", site("meta"))] == 3600


@pytest.fixture
def two_workers(tmp_path, monkeypatch):
    """gunicorn with gunicorn.conf.py and two workers; every process counts into the folder it sets up."""
    raw = base_config(tmp_path)
    raw["admin"] = {"password": PASSWORD}
    monkeypatch.setenv("WEB_CONCURRENCY", "2")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with gunicorn(tmp_path, raw) as (base, _log):
        yield base


def test_every_scrape_of_two_gunicorn_workers_gives_the_same_counts_whichever_answers(two_workers):
    for body in (signup("e1"), signup("e2"), signup("e3"), signup("e1"), {**signup("e4"), "api_key": "wrong"}):
        requests.post(f"{two_workers}/v1/track", json=body, headers={"Connection": "close"}, timeout=10)
    scrapes = [samples(requests.get(f"{two_workers}/metrics", auth=("prometheus", PASSWORD),
                                    headers={"Connection": "close"}, timeout=10).text) for _ in range(8)]

    received = [{labels: v for (name, labels), v in s.items() if name == "postback_events_received_total"}
                for s in scrapes]
    assert received == [{
        (("dialect", "channelstack"), ("result", "stored"), ("site", "shop")): 3,
        (("dialect", "channelstack"), ("result", "duplicate"), ("site", "shop")): 1,
        (("dialect", "channelstack"), ("result", "refused"), ("site", "")): 1,
    }] * 8
    assert all(s[("postback_config_reloads_total", (("result", "ok"),))] == 0 for s in scrapes)
