"""Tables for the pure parts of delivery: the backoff schedule, Meta's answer classification, what each verdict does."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from requests.structures import CaseInsensitiveDict

from delivery.dispatcher import Dispatcher, backoff
from models import Send
from platforms import meta
from platforms.base import REJECTED, RETRY, SENT, SETUP, THROTTLE, Outcome, retry_after_seconds
from tests.conftest import base_config, build_config
from tests.helpers import answer


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


def graph(code: int, message: str = "Something", subcode: int | None = None, transient: bool = False, **extra) -> dict:
    error = {"message": message, "type": "OAuthException", "code": code, "is_transient": transient,
             "fbtrace_id": "AbCdEfGhIjK", **extra}
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


OK = {"events_received": 2, "messages": [], "fbtrace_id": "AbCdEfGhIjK"}


@pytest.mark.parametrize("status, body, headers, kind, error, retry_after", [
    # sent
    (200, OK, {}, SENT, None, None),
    # retry: Meta's transient codes, is_transient, 5xx whatever the body
    (500, graph(1, "An unknown error occurred", transient=True), {}, RETRY, "Meta error 1: An unknown error occurred", None),
    (400, graph(2, "Service temporarily unavailable"), {}, RETRY, "Meta error 2: Service temporarily unavailable", None),
    (400, graph(100, "Try again", transient=True), {}, RETRY, "Meta error 100: Try again", None),
    (503, graph(99, "Down"), {}, RETRY, "Meta error 99: Down", None),
    (502, "<html>Bad Gateway</html>", {}, RETRY, "HTTP 502 with a body that is not Meta's JSON", None),
    # throttle: Meta's rate-limit codes arrive as HTTP 400; 429 always is one
    (429, graph(4, "(#4) Application request limit reached"), {"Retry-After": "7"}, THROTTLE,
     "Meta error 4: (#4) Application request limit reached", 7.0),
    (400, graph(17, "(#17) User request limit reached", 2446079), {}, THROTTLE,
     "Meta error 17/2446079: (#17) User request limit reached", None),
    (400, graph(341, "(#341) Application limit reached"), {}, THROTTLE, "Meta error 341: (#341) Application limit reached", None),
    (400, graph(613, "(#613) Rate limit", 1487742), {}, THROTTLE, "Meta error 613/1487742: (#613) Rate limit", None),
    (400, graph(80000, "Too many calls"), {}, THROTTLE, "Meta error 80000: Too many calls", None),
    (400, graph(80004, "Too many calls"), {}, THROTTLE, "Meta error 80004: Too many calls", None),
    (400, graph(80014, "Too many calls"), {}, THROTTLE, "Meta error 80014: Too many calls", None),
    (400, graph(368, "Blocked for policy"), {}, THROTTLE, "Meta error 368: Blocked for policy", 3600.0),
    (429, "Too Many Requests", {"Retry-After": "30"}, THROTTLE, "HTTP 429 with a body that is not Meta's JSON", 30.0),
    # setup error: token, permission, unknown pixel or path
    (400, graph(190, "Session has expired", 463), {}, SETUP, "Meta error 190/463: Session has expired", None),
    (403, graph(10, "Permission denied"), {}, SETUP, "Meta error 10: Permission denied", None),
    (400, graph(200, "Permissions error"), {}, SETUP, "Meta error 200: Permissions error", None),
    (400, graph(299, "Permissions error"), {}, SETUP, "Meta error 299: Permissions error", None),
    (400, graph(100, "Object with ID '123' does not exist", 33), {}, SETUP,
     "Meta error 100/33: Object with ID '123' does not exist", None),
    (404, graph(803, "Some of the aliases you requested do not exist"), {}, SETUP,
     "Meta error 803: Some of the aliases you requested do not exist", None),
    (404, "<html>Not Found</html>", {}, SETUP, "HTTP 404 with a body that is not Meta's JSON", None),
    # rejected: this payload
    (400, graph(100, "Invalid parameter", 2804003, error_user_title="Event Timestamp Too Old",
                error_user_msg="Events need to be sent within 7 days."), {}, REJECTED,
     "Meta error 100/2804003: Invalid parameter: Event Timestamp Too Old — Events need to be sent within 7 days.", None),
    (400, graph(100, "Invalid parameter", 2804009, error_user_title="Missing Value for Purchase Event"), {}, REJECTED,
     "Meta error 100/2804009: Invalid parameter: Missing Value for Purchase Event", None),
    (400, graph(100, "Bad event", 2804019, error_user_title="Invalid Parameter", error_user_msg="Bad event"), {}, REJECTED,
     "Meta error 100/2804019: Bad event: Invalid Parameter", None),
    (400, graph(100, "Invalid parameter", 2804019, error_user_title="Invalid Parameter", error_user_msg="Invalid parameter"),
     {}, REJECTED, "Meta error 100/2804019: Invalid parameter", None),
    (400, {"error": {}}, {}, REJECTED, "HTTP 400: no message", None),
])
def test_meta_answers_are_classified_by_their_error_code(status, body, headers, kind, error, retry_after):
    outcomes = meta.classify(answer(status, body, headers), 2)

    text = body if isinstance(body, str) else json.dumps(body)
    trace_id = "AbCdEfGhIjK" if isinstance(body, dict) and (body.get("error") or body.get("fbtrace_id")) else None
    expected = Outcome(kind, status, error, trace_id, text, retry_after, whole_batch=kind == REJECTED)
    assert outcomes == [expected, expected]


def test_a_rejection_of_a_single_event_is_not_split_further():
    [outcome] = meta.classify(answer(400, graph(100, "Invalid parameter", 2804003)), 1)
    assert (outcome.kind, outcome.whole_batch) == (REJECTED, False)


def test_a_long_answer_is_kept_as_an_excerpt():
    body = {**OK, "messages": ["x" * 5000]}
    [outcome] = meta.classify(answer(200, body), 1)
    assert outcome.response == json.dumps(body)[:2000]


NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
ITEM, QUALITY = {"event_id": "e1"}, {"score": 2.8, "identifiers": ["external_id"]}
SEEN = {"last_status": 500, "last_error": "boom", "response_excerpt": "{}", "trace_id": "T1"}
TRIED = {**SEEN, "attempts": 3, "payload": ITEM, "match_quality": QUALITY}


@pytest.mark.parametrize("outcome, status, fields", [
    (Outcome(SENT, 200, None, "T1", "{}"), "sent",
     {"finished_at": NOW, "reason": None, **TRIED, "last_status": 200, "last_error": None}),
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


def test_a_retry_that_spends_the_last_attempt_fails_the_send(tmp_path):
    dispatcher = Dispatcher(lambda: build_config(base_config(tmp_path)), rng=lambda: 0.5)
    send = Send(id=7, attempts=30, retries=24, lease_owner="owner")

    change = dispatcher._change(send, ITEM, QUALITY, Outcome(RETRY, 500, "boom", "T1", "{}"), NOW)

    assert change == (send, {"status": "failed", "finished_at": NOW, "retries": 25,
                             "reason": "gave up after 25 attempts: boom", **TRIED, "attempts": 31})
    dispatcher.close()
