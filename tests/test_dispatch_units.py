"""Tables for the pure parts of delivery: the backoff schedule, Retry-After, what each verdict does."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from requests.structures import CaseInsensitiveDict

from delivery.dispatcher import Dispatcher, backoff
from models import Send
from platforms.base import REJECTED, RETRY, SENT, SETUP, THROTTLE, Outcome, retry_after_seconds
from tests.conftest import base_config, build_config


@pytest.mark.parametrize("retries, seconds", [
    (0, 10), (1, 10), (2, 20), (3, 40), (4, 80), (9, 2560), (10, 3600), (11, 3600), (25, 3600), (100, 3600),
])
def test_backoff_starts_at_10_seconds_and_doubles_up_to_an_hour(retries, seconds):
    assert backoff(retries, rng=lambda: 0.5) == pytest.approx(seconds)


@pytest.mark.parametrize("draw, factor", [(0.0, 0.8), (0.25, 0.9), (0.5, 1.0), (0.999999, 1.2)])
def test_backoff_jitters_by_up_to_20_percent_either_way(draw, factor):
    assert backoff(3, rng=lambda: draw) == pytest.approx(40 * factor, rel=1e-5)
    assert backoff(30, rng=lambda: draw) == pytest.approx(3600 * factor, rel=1e-5)


@pytest.mark.parametrize("headers, seconds", [
    ({"Retry-After": "17"}, 17.0), ({"Retry-After": "1.5"}, 1.5), ({"Retry-After": "-3"}, 0.0),
    ({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, None), ({}, None),
])
def test_retry_after_is_read_in_seconds_and_a_date_falls_back_to_the_backoff(headers, seconds):
    assert retry_after_seconds(CaseInsensitiveDict(headers)) == seconds


NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
ITEM, QUALITY = {"event_id": "e1"}, {"score": 2.8, "identifiers": ["external_id"]}
SEEN = {"last_status": 500, "last_error": "boom", "response_excerpt": "{}", "trace_id": "T1"}
TRIED = {**SEEN, "attempts": 3, "payload": ITEM, "match_quality": QUALITY}


@pytest.mark.parametrize("outcome, status, fields", [
    # a sent send that is not its request's sample keeps no payload nor the request's answer: both are rebuilt
    (Outcome(SENT, 200, None, "T1", "{}"), "sent",
     {"finished_at": NOW, "reason": None, "last_status": 200, "trace_id": "T1", "attempts": 3}),
    (Outcome(REJECTED, 500, "boom", "T1", "{}"), "failed", {"finished_at": NOW, "reason": "boom", **TRIED}),
    (Outcome(RETRY, 500, "boom", "T1", "{}"), "pending",
     {"next_attempt_at": NOW + timedelta(seconds=20), "retries": 2, **TRIED}),  # the 2nd retry: 20 s
    (Outcome(RETRY, 500, "boom", "T1", "{}", retry_after=6 * 3600), "pending",
     {"next_attempt_at": NOW + timedelta(hours=6), "retries": 2, **TRIED}),
    (Outcome(THROTTLE, 429, "boom", "T1", "{}", retry_after=7), "pending",
     {"next_attempt_at": NOW + timedelta(seconds=7), **TRIED, "last_status": 429}),
    (Outcome(SETUP, 500, "boom", "T1", "{}"), "pending", {"next_attempt_at": NOW, **SEEN}),
])
def test_each_platform_verdict_becomes_one_change_of_its_send(tmp_path, outcome, status, fields):
    dispatcher = Dispatcher(lambda: build_config(base_config(tmp_path)), rng=lambda: 0.5)
    send = Send(id=7, attempts=2, retries=1, lease_owner="owner")

    assert dispatcher._change(send, ITEM, QUALITY, outcome, NOW) == (send, {"status": status, **fields})
    dispatcher.close()


def test_the_first_send_of_a_request_is_its_sample_and_keeps_the_payload_and_answer(tmp_path):
    dispatcher = Dispatcher(lambda: build_config(base_config(tmp_path)), rng=lambda: 0.5)
    send = Send(id=7, attempts=2, retries=1, lease_owner="owner")

    change = dispatcher._change(send, ITEM, QUALITY, Outcome(SENT, 200, None, "T1", "{}"), NOW, sample=True)

    assert change == (send, {"status": "sent", "finished_at": NOW, "reason": None, **TRIED, "last_status": 200,
                             "last_error": None})
    dispatcher.close()


def test_a_retry_that_spends_the_last_attempt_fails_the_send(tmp_path):
    dispatcher = Dispatcher(lambda: build_config(base_config(tmp_path)), rng=lambda: 0.5)
    send = Send(id=7, attempts=30, retries=24, lease_owner="owner")

    change = dispatcher._change(send, ITEM, QUALITY, Outcome(RETRY, 500, "boom", "T1", "{}"), NOW)

    assert change == (send, {"status": "failed", "finished_at": NOW, "retries": 25,
                             "reason": "gave up after 25 attempts: boom", **TRIED, "attempts": 31})
    dispatcher.close()
