"""The fake Meta Conversions API answers like Graph and fails on cue."""
import json
import time

import pytest
import requests

from tests.fakes.meta import FakeMeta
from tests.helpers import sha


@pytest.fixture
def meta():
    with FakeMeta() as fake:
        yield fake


def event(**overrides) -> dict:
    item = {
        "event_name": "Lead", "event_time": int(time.time()) - 60, "event_id": "e1",
        "action_source": "website", "event_source_url": "https://shop.example/thanks",
        "user_data": {"em": [sha("a@example.com")], "client_user_agent": "Mozilla/5.0", "fbc": "fb.1.1767225590123.IwAR2F4"},
    }
    return {**item, **overrides}


def post(meta, data, token="meta-token", pixel="123", timeout=5, **fields):
    body = {"data": data, "access_token": token, **fields}
    return requests.post(f"{meta.url}/v25.0/{pixel}/events", json=body, timeout=timeout)


def error(response) -> dict:
    return response.json()["error"]


def test_a_valid_batch_is_accepted_and_recorded(meta):
    items = [event(), event(event_id="e2", event_name="Purchase", custom_data={"value": 49.0, "currency": "USD"})]
    response = post(meta, items)
    assert response.status_code == 200
    assert response.json()["events_received"] == 2
    assert len(response.json()["fbtrace_id"]) == 11
    assert meta.events == items
    assert meta.requests[0]["pixel_id"] == "123" and meta.requests[0]["status"] == 200
    assert meta.requests[0]["token_in_query"] is False


def test_a_wrong_token_is_rejected_with_code_190(meta):
    response = post(meta, [event()], token="nope")
    assert response.status_code == 400
    assert error(response)["code"] == 190 and error(response)["type"] == "OAuthException"
    assert meta.events == []


def test_an_unhashed_email_fails_naming_the_field(meta):
    response = post(meta, [event(user_data={"em": "a@example.com", "client_user_agent": "UA"})])
    assert error(response)["code"] == 100
    assert "user_data.em" in error(response)["message"]


def test_one_event_older_than_seven_days_fails_the_whole_batch(meta):
    old = event(event_id="old", event_time=int(time.time()) - 8 * 86400)
    response = post(meta, [event(), old])
    assert response.status_code == 400
    assert error(response)["error_subcode"] == 2804003
    assert error(response)["error_user_title"] == "Event Timestamp Too Old"
    assert meta.events == []


def test_a_purchase_without_value_is_rejected(meta):
    response = post(meta, [event(event_name="Purchase")])
    assert error(response)["error_subcode"] == 2804009


def test_a_rejected_event_id_fails_its_batch(meta):
    meta.reject_event("e2", "bad event")
    response = post(meta, [event(), event(event_id="e2")])
    assert (error(response)["code"], error(response)["error_subcode"]) == (100, 2804019)
    assert error(response)["message"] == "bad event"
    assert meta.events == []


def test_an_unknown_pixel_is_code_100_subcode_33(meta):
    response = post(meta, [event()], pixel="999")
    assert (error(response)["code"], error(response)["error_subcode"]) == (100, 33)


def test_a_scripted_500_is_answered_once_then_validation_resumes(meta):
    meta.script("500")
    first, second = post(meta, [event()]), post(meta, [event(event_id="e2")])
    assert first.status_code == 500 and error(first)["is_transient"] is True
    assert second.status_code == 200
    assert [e["event_id"] for e in meta.events] == ["e2"]
    assert [r["status"] for r in meta.requests] == [500, 200]


def test_a_scripted_429_carries_retry_after_and_code_4(meta):
    meta.script("429", ("throttle", 80004))
    first, second = post(meta, [event()]), post(meta, [event()])
    assert first.status_code == 429 and first.headers["Retry-After"] == "1" and error(first)["code"] == 4
    assert second.status_code == 400 and error(second)["code"] == 80004


def test_a_hang_longer_than_the_client_timeout_times_out_the_client(meta):
    meta.script(("hang", 5))
    with pytest.raises(requests.Timeout):
        post(meta, [event()], timeout=0.3)
    started = time.monotonic()
    meta.stop()
    assert time.monotonic() - started < 1


def test_a_token_in_the_query_is_flagged(meta):
    response = requests.post(f"{meta.url}/v25.0/123/events", params={"access_token": "meta-token"},
                             json={"data": [event()]}, timeout=5)
    assert response.status_code == 200
    assert meta.requests[0]["token_in_query"] is True


def test_a_form_encoded_body_is_accepted_like_graph(meta):
    response = requests.post(f"{meta.url}/v25.0/123/events", timeout=5,
                             data={"access_token": "meta-token", "data": json.dumps([event()])})
    assert response.status_code == 200 and len(meta.events) == 1


def test_test_events_are_kept_apart_from_production_events(meta):
    post(meta, [event()], test_event_code="TEST123")
    assert meta.events == [] and len(meta.test_events) == 1


def test_a_batch_of_1001_events_is_rejected(meta):
    response = post(meta, [event(event_id=f"e{i}") for i in range(1001)])
    assert response.status_code == 400 and error(response)["code"] == 100
    assert "1000" in error(response)["message"]
    assert meta.events == []


def test_other_paths_get_a_graph_404(meta):
    response = requests.get(f"{meta.url}/v25.0/123/events", timeout=5)
    assert response.status_code == 404 and error(response)["code"] == 803
