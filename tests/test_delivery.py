"""Delivery end to end: events posted to /v1/track, drained at explicit times, checked at the fake Meta."""
from __future__ import annotations

import ipaddress
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial

import pytest
import yaml
from click.testing import CliRunner
from peewee import fn

from delivery import sends as delivery
from app import create_app
from cli import cli
from console.story import story
from ingest.canonical import utcnow
from config import Config
from delivery.dispatcher import Dispatcher, LeaderLock
from models import DestinationState, Event, Send
from platforms import meta
from ingest.privacy import reduce_ip
from tests import helpers
from tests.conftest import ROOT, build_config, fbtrace_id, meta_destination, with_destinations
from tests.fakes.meta import EXPIRED, FakeMeta
from tests.helpers import received, signup, track

SECOND = timedelta(seconds=1)
UNKNOWN_ERROR = "Meta error 1: An unknown error occurred"

send_of = partial(helpers.send_of, destination="shop/meta")
row = partial(helpers.row, destination="shop/meta")


@pytest.fixture
def config(raw) -> Config:
    return build_config(raw)


@pytest.fixture
def command(tmp_path):
    """Run a CLI command with POSTBACK_CONFIG naming a file written from the given raw config; returns stdout."""

    def run(raw: dict, *args: str) -> str:
        path = tmp_path / "postback.yaml"
        path.write_text(yaml.safe_dump(raw))
        result = CliRunner().invoke(cli, list(args), env={"POSTBACK_CONFIG": str(path)})
        assert result.exit_code == 0, result.output
        return result.stdout

    return run


@pytest.mark.parametrize("dispatch_settings", [{"timeout_seconds": 1, "max_attempts": 1}])
def test_throttles_never_use_up_the_retry_budget(client, fake_meta, dispatcher):
    fake_meta.script("429", "429", "429")
    now = track(client, signup("e1"))

    for second in range(4):
        dispatcher.drain_once(now=now + second * SECOND)

    assert received(fake_meta) == ["e1"]
    assert row("e1")["status"] == "sent"
    assert (row("e1")["attempts"], row("e1")["retries"]) == (4, 0)


def test_an_expired_token_pauses_the_destination_until_an_admin_resumes_it(client, fake_meta, raw, dispatcher, command):
    fake_meta.script("invalid_token")
    now = track(client, signup("e1"))

    dispatcher.drain_once(now=now)

    assert DestinationState.get().paused_reason == f"Meta error 190/463: {EXPIRED}"
    assert (row("e1")["status"], row("e1")["attempts"]) == ("pending", 0)
    assert dispatcher.drain_once(now=now + SECOND) == {"shop/meta": 0}

    assert command(raw, "resume", "shop/meta") == "shop/meta: resumed\n"
    assert dispatcher.drain_once(now=now + SECOND) == {"shop/meta": 1}

    assert received(fake_meta) == ["e1"]
    assert row("e1") == {
        "status": "sent", "reason": None, "attempts": 1, "retries": 0, "last_status": 200,
        "last_error": None, "trace_id": fbtrace_id(fake_meta.requests[1]),
    }
    assert command(raw, "resume", "shop/meta") == "shop/meta: was not paused\n"


def test_resume_destination_says_whether_the_destination_was_paused(client, fake_meta, config, dispatcher):
    fake_meta.script("invalid_token")
    dispatcher.drain_once(now=track(client, signup("e1")))

    assert delivery.paused_reason(config.destination("shop/meta")) == f"Meta error 190/463: {EXPIRED}"
    assert delivery.resume_destination("shop/meta") is True
    assert delivery.paused_reason(config.destination("shop/meta")) is None
    assert delivery.resume_destination("shop/meta") is False


def test_a_send_whose_dispatcher_died_mid_send_is_delivered_once_after_its_lease_expires(client, fake_meta, dispatcher):
    now = track(client, signup("e1"))
    lease = dispatcher.lease
    assert lease == 3 * SECOND  # 3 × timeout_seconds

    [claimed] = delivery.claim("shop/meta", meta.BATCH_LIMIT, now, lease)  # the dispatcher that then died
    assert (claimed.status, claimed.lease_until) == ("sending", now + lease)

    assert dispatcher.drain_once(now=now + lease) == {"shop/meta": 0}  # still its owner's
    assert fake_meta.requests == []

    assert dispatcher.drain_once(now=now + lease + SECOND) == {"shop/meta": 1}

    assert received(fake_meta) == ["e1"]
    assert row("e1") == {  # the lost try counts, as an attempt and as a retry
        "status": "sent", "reason": None, "attempts": 2, "retries": 1, "last_status": 200,
        "last_error": None, "trace_id": fbtrace_id(fake_meta.requests[0]),
    }


def test_a_send_whose_dispatcher_keeps_dying_fails_once_its_retries_are_spent(client, fake_meta):
    now = track(client, signup("e1"))
    lease = 3 * SECOND

    delivery.claim("shop/meta", meta.BATCH_LIMIT, now, lease)  # a dispatcher takes it and dies
    assert delivery.release_expired(now + lease + SECOND, max_attempts=2, ip_policy="truncate") == 1
    assert (row("e1")["status"], row("e1")["retries"]) == ("pending", 1)

    later = now + lease + 2 * SECOND
    delivery.claim("shop/meta", meta.BATCH_LIMIT, later, lease)  # the next one dies too
    assert delivery.release_expired(later + lease + SECOND, max_attempts=2, ip_policy="truncate") == 1

    assert row("e1") == {
        "status": "failed", "reason": "gave up after 2 attempts: lease expired: the dispatcher stopped mid-send",
        "attempts": 2, "retries": 2, "last_status": None,
        "last_error": "lease expired: the dispatcher stopped mid-send", "trace_id": None,
    }
    assert Event.get(Event.event_id == "e1").ip == "203.0.113.0"  # nothing more can go out
    assert fake_meta.requests == []


def test_two_dispatchers_racing_on_the_same_rows_never_send_one_twice(client, fake_meta, live, monkeypatch):
    monkeypatch.setattr(meta, "BATCH_LIMIT", 7)  # many small claims, so the two dispatchers interleave
    ids = [f"e{i:03}" for i in range(200)]
    now = track(client, *(signup(i) for i in ids))
    dispatchers = [Dispatcher(live), Dispatcher(live)]
    start = threading.Barrier(2)

    def drain(dispatcher: Dispatcher) -> int:
        start.wait()
        return dispatcher.drain_once(now=now)["shop/meta"]

    try:
        with ThreadPoolExecutor(2) as pool:
            processed = list(pool.map(drain, dispatchers))
    finally:
        for dispatcher in dispatchers:
            dispatcher.close()

    assert sum(processed) == 200
    assert sorted(received(fake_meta)) == ids  # each exactly once
    assert {(r["status"], r["attempts"], r["retries"]) for r in map(row, ids)} == {("sent", 1, 0)}


@pytest.fixture
def down_meta():
    with FakeMeta(token="meta-token", pixels=("456",)) as fake:
        yield fake


def test_a_hung_meta_destination_does_not_hold_up_another_one(raw, fake_meta, down_meta):
    raw = with_destinations(raw, meta_destination(fake_meta.url),
                            meta_destination(down_meta.url, name="meta_down", pixel_id="456"))
    raw["dispatch"]["timeout_seconds"] = 5  # the hung request stays in flight while the healthy one finishes
    config = build_config(raw)
    client = create_app(config).test_client()
    dispatcher = Dispatcher(lambda: config)
    down_meta.script(("hang", 30))
    track(client, signup("e1"))

    try:
        dispatcher.tick()  # starts both drains and returns
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (down_meta.requests and row("e1")["status"] == "sent"):
            time.sleep(0.01)

        assert (row("e1")["status"], helpers.row("e1", "shop/meta_down")["status"]) == ("sent", "sending")
        assert received(fake_meta) == ["e1"] and len(down_meta.requests) == 1
    finally:
        down_meta.stop()  # the hung request fails now
        dispatcher.close()
    assert (helpers.row("e1", "shop/meta_down")["status"], helpers.row("e1", "shop/meta_down")["retries"]) == ("pending", 1)


@pytest.mark.parametrize("dispatch_settings", [{"timeout_seconds": 1, "max_attempts": 3}])
def test_a_send_that_keeps_failing_gives_up_after_max_attempts(client, fake_meta, dispatcher):
    fake_meta.script("500", "500", "500")
    now = track(client, signup("e1"))

    for at in (now, now + 12 * SECOND, now + 36 * SECOND):  # each backoff's upper bound: 10 s, then 20 s ± 20 %
        dispatcher.drain_once(now=at)

    assert len(fake_meta.requests) == 3 and fake_meta.events == []
    assert row("e1") == {
        "status": "failed", "reason": f"gave up after 3 attempts: {UNKNOWN_ERROR}", "attempts": 3, "retries": 3,
        "last_status": 500, "last_error": UNKNOWN_ERROR, "trace_id": fbtrace_id(fake_meta.requests[2]),
    }
    assert Event.get().ip == "203.0.113.0"


def test_a_rejected_send_replayed_by_id_is_rebuilt_with_the_current_config(client, fake_meta, raw, live, dispatcher, command):
    fake_meta.reject_event("e1")
    now = track(client, signup("e1"))
    dispatcher.drain_once(now=now)
    send_id = send_of("e1").id
    assert row("e1")["status"] == "failed"
    assert row("e1")["reason"] == "Meta error 100/2804019: Invalid parameter"

    fake_meta.accept_event("e1")  # the admin fixed things; the events now go to the other pixel
    raw = with_destinations(raw, meta_destination(fake_meta.url, pixel_id="456"))
    live.config = build_config(raw)
    assert command(raw, "replay", "--send", str(send_id)) == "1 send(s) queued again\n"
    assert dispatcher.drain_once(now=utcnow()) == {"shop/meta": 1}

    request = fake_meta.requests[-1]
    assert request["path"] == "/v25.0/456/events"
    assert request["body"]["data"][0]["user_data"]["client_ip_address"] == "203.0.113.0"  # reduced when it failed
    assert received(fake_meta) == ["e1"]
    assert row("e1") == {
        "status": "sent", "reason": None, "attempts": 2, "retries": 0, "last_status": 200,
        "last_error": None, "trace_id": fbtrace_id(request),
    }


def test_every_failed_send_of_a_destination_can_be_replayed_at_once(client, fake_meta, raw, dispatcher, command):
    for event_id in ("e1", "e2"):
        fake_meta.reject_event(event_id)
    now = track(client, signup("e1"), signup("e2"), signup("e3"))
    dispatcher.drain_once(now=now)
    assert [row(i)["status"] for i in ("e1", "e2", "e3")] == ["failed", "failed", "sent"]

    for event_id in ("e1", "e2"):
        fake_meta.accept_event(event_id)
    assert command(raw, "replay", "--destination", "shop/meta") == "2 send(s) queued again\n"
    assert dispatcher.drain_once(now=utcnow()) == {"shop/meta": 2}

    assert sorted(received(fake_meta)) == ["e1", "e2", "e3"]
    assert [(row(i)["status"], row(i)["reason"]) for i in ("e1", "e2", "e3")] == [("sent", None)] * 3


def test_the_dispatcher_follows_a_changed_timeout(client, fake_meta, raw, live, dispatcher):
    fake_meta.script(("hang", 5))
    now = track(client, signup("e1"))
    raw["dispatch"]["timeout_seconds"] = 0.1
    live.config = build_config(raw)

    dispatcher.drain_once(now=now)

    assert row("e1")["last_error"] == "no answer within 0.1 s"


def test_a_long_batch_split_keeps_its_lease_while_it_lasts(client, fake_meta, dispatcher):
    fake_meta.reject_event("e3")
    ids = [f"e{i}" for i in range(8)]
    now = track(client, *(signup(i) for i in ids))
    clock = [now]
    dispatcher.clock = lambda: clock[0]
    post = dispatcher.http.post

    def slow_post(*args, **kwargs):
        """Each answer takes 1 s (the timeout) while another worker keeps releasing expired leases."""
        response = post(*args, **kwargs)
        clock[0] += SECOND
        delivery.release_expired(clock[0], max_attempts=25, ip_policy="truncate")
        return response

    dispatcher.http.post = slow_post
    dispatcher.drain_once(now=now)

    # 8 → 4 → 2 + 2 → 1 + 1, then the last 4 wait their turn: 7 s, longer than the 3 s lease
    assert len(fake_meta.requests) == 7
    assert sorted(received(fake_meta)) == [i for i in ids if i != "e3"]
    assert {(row(i)["status"], row(i)["attempts"], row(i)["retries"]) for i in ids if i != "e3"} == {("sent", 1, 0)}
    assert (row("e3")["status"], row("e3")["attempts"], row("e3")["retries"]) == ("failed", 1, 0)


def test_an_event_whose_payload_cannot_be_built_fails_alone(client, fake_meta, dispatcher, monkeypatch):
    build = meta.build

    def broken(event, dest):
        if event.event_id == "e1":
            raise KeyError("pixel_id")
        return build(event, dest)

    monkeypatch.setattr(meta, "build", broken)
    now = track(client, signup("e1"), signup("e2"))

    assert dispatcher.drain_once(now=now) == {"shop/meta": 2}

    assert row("e1") == {
        "status": "failed", "reason": "could not build Meta's payload: KeyError: 'pixel_id'", "attempts": 0,
        "retries": 0, "last_status": None, "last_error": None, "trace_id": None,
    }
    assert received(fake_meta) == ["e2"]


def test_only_one_leader_lock_holder_at_a_time_in_one_process(tmp_path):
    path = str(tmp_path / "postback.db.dispatch.lock")
    first, second = LeaderLock(path), LeaderLock(path)

    assert first.acquire() is True
    assert first.acquire() is True  # the holder keeps it
    assert second.acquire() is False  # flock is per open file: a second handle is refused

    first.release()
    assert second.acquire() is True
    assert first.acquire() is False
    second.release()


def test_the_leader_lock_dies_with_the_process_that_holds_it(tmp_path):
    path = str(tmp_path / "postback.db.dispatch.lock")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from delivery.dispatcher import LeaderLock; lock = LeaderLock(sys.argv[1]); "
                               "print(lock.acquire(), flush=True); sys.stdin.read()", path],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "True\n"
        assert LeaderLock(path).acquire() is False
    finally:
        holder.stdin.close()  # the holder exits
        holder.wait(timeout=10)

    lock = LeaderLock(path)
    assert lock.acquire() is True
    lock.release()


def test_without_a_lock_file_every_dispatcher_may_drain():
    assert LeaderLock(None).acquire() is True


@pytest.mark.parametrize("meta_settings", [{"mode": "dry"}])
def test_the_sends_of_a_claim_that_go_nowhere_are_recorded_together_in_one_transaction(client, dispatcher, monkeypatch):
    eight_days_ago = (utcnow() - timedelta(days=8)).isoformat()
    now = track(client, signup("e1"), signup("old", occurred_at=eight_days_ago), signup("e2"))
    calls, record = [], delivery.record

    def counted(changes, ip_policy):
        calls.append(len(changes))
        return record(changes, ip_policy)

    monkeypatch.setattr(delivery, "record", counted)

    assert dispatcher.drain_once(now=now) == {"shop/meta": 3}

    assert calls == [3]
    assert [(row(i)["status"], row(i)["reason"]) for i in ("e1", "old", "e2")] == [
        ("skipped", "dry mode"), ("failed", "older than Meta's 7-day window: not sent"), ("skipped", "dry mode")]
    # the claim's first dry-mode send keeps its payload as the sample; the others are rebuilt when shown
    assert [send_of(i).payload and send_of(i).payload["event_id"] for i in ("e1", "old", "e2")] == ["e1", None, None]
    assert {e.ip for e in Event.select()} == {"203.0.113.0"}


def test_a_send_whose_lease_was_lost_is_left_to_its_new_owner(client, fake_meta):
    now = track(client, signup("e1"))
    lease = 3 * SECOND
    [lost] = delivery.claim("shop/meta", meta.BATCH_LIMIT, now, lease)
    delivery.release_expired(now + lease + SECOND, max_attempts=25, ip_policy="truncate")
    [taken] = delivery.claim("shop/meta", meta.BATCH_LIMIT, now + lease + SECOND, lease)

    assert delivery.record([delivery.finishing(lost, "sent", now, reason=None)], "truncate") == 0

    assert (row("e1")["status"], send_of("e1").lease_owner) == ("sending", taken.lease_owner)
    assert Event.get().ip == "203.0.113.7"  # its send is still out
    assert delivery.record([delivery.finishing(taken, "sent", now, reason=None)], "truncate") == 1
    assert (row("e1")["status"], Event.get().ip) == ("sent", "203.0.113.0")


def test_an_event_keeps_its_full_ip_until_its_last_send_is_final(raw, fake_meta):
    config = build_config(with_destinations(raw, meta_destination(fake_meta.url),
                                            meta_destination(fake_meta.url, name="meta2", pixel_id="456")))
    now = track(create_app(config).test_client(), signup("e1"), signup("e2"))
    first = delivery.claim("shop/meta", meta.BATCH_LIMIT, now, 3 * SECOND)
    second = delivery.claim("shop/meta2", meta.BATCH_LIMIT, now, 3 * SECOND)

    assert delivery.record([delivery.finishing(send, "sent", now) for send in first], "truncate") == 2
    assert {e.ip for e in Event.select()} == {"203.0.113.7"}  # shop/meta2 may still send it
    assert delivery.record([delivery.finishing(second[0], "failed", now, reason="rejected"),
                            delivery.rescheduling(second[1], now + SECOND)], "truncate") == 2

    assert [(e.event_id, e.ip) for e in Event.select().order_by(Event.event_id)] == [
        ("e1", "203.0.113.0"), ("e2", "203.0.113.7")]


def test_an_ip_erased_while_its_send_was_out_is_not_written_back(client, fake_meta):
    now = track(client, signup("e1"))
    [claimed] = delivery.claim("shop/meta", meta.BATCH_LIMIT, now, 3 * SECOND)
    Event.update(ip=None).execute()  # a user's erasure, meanwhile

    assert delivery.finish(claimed, "sent", now, "truncate") is True

    assert Event.get().ip is None


@pytest.mark.parametrize("policy, kept", [("truncate", "203.0.113.0"), ("drop", None)])
def test_a_payload_kept_on_a_send_never_holds_the_full_ip_the_platform_got(raw, request, policy, kept):
    raw["privacy"]["ip"] = policy
    client, dispatcher = request.getfixturevalue("client"), request.getfixturevalue("dispatcher")
    fake_meta = request.getfixturevalue("fake_meta")
    fake_meta.script("500")  # e1's first request fails: its send keeps the payload while it waits to retry
    now = track(client, signup("e1"))
    dispatcher.drain_once(now=now)
    assert row("e1")["status"] == "pending"
    retrying = send_of("e1").payload["user_data"]
    track(client, signup("e2"))
    dispatcher.drain_once(now=now + 12 * SECOND)  # the retry and e2 in one request: its sample is e1's

    got = [event["user_data"] for event in fake_meta.events]
    assert [user["client_ip_address"] for user in got] == ["203.0.113.7", "203.0.113.7"]
    sample = send_of("e1").payload["user_data"]
    assert (retrying.get("client_ip_address"), sample.get("client_ip_address")) == (kept, kept)
    assert {key: value for key, value in sample.items() if key != "client_ip_address"} == {
        key: value for key, value in got[0].items() if key != "client_ip_address"}
    assert ("client_ip_address" in sample) == (kept is not None)
    stored = Send.select(fn.COUNT(Send.id)).where(Send.payload.contains("203.0.113.7")).scalar()
    assert stored == 0


def test_the_console_shows_a_send_rebuilt_for_a_pending_event_with_the_reduced_ip(raw, request):
    client = request.getfixturevalue("client")
    track(client, signup("e1"))  # not drained: the event still has its full IP, for the platform
    shown = story(build_config(raw), Event.get().id)["sends"][0]

    assert (Event.get().ip, shown["rebuilt"]) == ("203.0.113.7", True)
    assert shown["payload"]["user_data"]["client_ip_address"] == "203.0.113.0"


@pytest.mark.parametrize("ip", ["203.0.113.7", "10.0.0.255", "0.0.0.0", "2001:db8:abcd:12:34::1", "2001:db8::",
                                "::ffff:192.0.2.1", "fe80::1%eth0"])
def test_an_ip_is_truncated_to_its_network_address(ip):
    address = ipaddress.ip_address(ip)
    prefix = 24 if address.version == 4 else 48
    assert reduce_ip(ip, "truncate") == str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)
    assert reduce_ip(ip, "drop") is None


# --- the drain overlaps its waits ----------------------------------------------------------------------------

LATENCY = 0.4  # seconds each fake platform takes over its first request


def timed(fake) -> list[dict]:
    """Stamp every request the fake records with when it arrived and when it was answered; the stamped requests."""
    stamped, record, reply = [], fake._record, fake._reply

    def arrived(h, entry):
        entry["arrived"] = time.monotonic()
        stamped.append(entry)
        return record(h, entry)

    def answered(h, entry, *args, **kwargs):
        reply(h, entry, *args, **kwargs)
        entry["answered"] = time.monotonic()

    fake._record, fake._reply = arrived, answered
    return stamped


def test_five_live_platforms_with_latency_wait_for_their_answers_at_once(raw_config, fake_meta):
    from tests.fakes.ga4 import FakeGA4
    from tests.fakes.google_ads import FakeGoogleAds
    from tests.fakes.snapchat import FakeSnapchat
    from tests.fakes.tiktok import FakeTikTok
    from tests.test_all_platforms import BROWSER, PURCHASE, SECRET, live_settings

    fakes = {"meta": fake_meta, "tiktok": FakeTikTok(token=SECRET).start(),
             "snapchat": FakeSnapchat(token=SECRET).start(),
             "google_ads": FakeGoogleAds(refresh_token=SECRET, client_secret=SECRET).start(),
             "ga4": FakeGA4({"G-TEST123": SECRET}).start()}
    fake_meta.set_token(SECRET)
    try:
        destinations = [live_settings(name, fake.url) for name, fake in fakes.items()]
        destinations[3]["token_url"] = fakes["google_ads"].token_url
        config = build_config(with_destinations(raw_config, *destinations))
        client = create_app(config).test_client()
        stamps = {name: timed(fake) for name, fake in fakes.items()}
        for fake in fakes.values():
            fake.script(("hang", LATENCY))  # a platform's latency: the answer comes after it
        assert client.post("/v1/track", json=PURCHASE, headers=BROWSER).status_code == 200

        dispatcher = Dispatcher(lambda: config)
        try:
            assert dispatcher.drain_once(now=utcnow()) == {f"shop/{name}": 1 for name in fakes}
        finally:
            dispatcher.close()
    finally:
        for name, fake in fakes.items():
            if name != "meta":
                fake.stop()

    assert {name: len(requests) for name, requests in stamps.items()} == {name: 1 for name in fakes}
    assert {helpers.row("all-five-1", f"shop/{name}")["status"] for name in fakes} == {"sent"}
    # every platform's request was waiting for its answer at one and the same moment: no wait followed another
    assert max(r["arrived"] for rs in stamps.values() for r in rs) < min(
        r["answered"] for rs in stamps.values() for r in rs)


def test_ga4_requests_of_different_clients_wait_for_their_answers_side_by_side(raw_config):
    from platforms import ga4
    from tests.fakes.ga4 import FakeGA4
    from tests.test_all_platforms import BROWSER, SECRET, live_settings

    fake = FakeGA4({"G-TEST123": SECRET}).start()
    try:
        config = build_config(with_destinations(raw_config, live_settings("ga4", fake.url)))
        client = create_app(config).test_client()
        clients = [f"GA1.1.{1000 + i}.1767225600" for i in range(ga4.IN_FLIGHT + 2)]
        for i, cookie in enumerate(clients):
            body = {**signup(f"e{i}"), "ga_client_id": cookie}
            assert client.post("/v1/track", json=body, headers=BROWSER).status_code == 200
        stamped = timed(fake)
        fake.script(*[("hang", LATENCY)] * len(clients))  # each request waits before its answer
        dispatcher = Dispatcher(lambda: config)
        try:
            assert dispatcher.drain_once(now=utcnow()) == {"shop/ga4": len(clients)}
        finally:
            dispatcher.close()
    finally:
        fake.stop()

    assert sorted(r["body"]["client_id"] for r in stamped) == sorted(c.split(".", 2)[2] for c in clients)
    assert {helpers.row(f"e{i}", "shop/ga4")["status"] for i in range(len(clients))} == {"sent"}
    first = sorted(stamped, key=lambda r: r["arrived"])[:ga4.IN_FLIGHT]
    # the first IN_FLIGHT requests were all out before any answer came; the rest went as answers freed a place
    assert max(r["arrived"] for r in first) < min(r["answered"] for r in stamped)
    assert sorted(r["arrived"] for r in stamped)[ga4.IN_FLIGHT] > min(r["answered"] for r in stamped)


def test_a_drain_builds_its_next_claim_while_a_request_waits_for_its_answer(client, fake_meta, dispatcher, monkeypatch):
    from delivery import dispatcher as dispatching

    monkeypatch.setattr(dispatching, "CLAIM_LIMIT", 1)
    stamped = timed(fake_meta)
    claims, claim = [], delivery.claim

    def timed_claim(*args, **kwargs):
        claims.append(time.monotonic())
        return claim(*args, **kwargs)

    monkeypatch.setattr(delivery, "claim", timed_claim)
    fake_meta.script(("hang", LATENCY))
    now = track(client, signup("e1"), signup("e2"))

    assert dispatcher.drain_once(now=now) == {"shop/meta": 2}

    assert received(fake_meta) == ["e1", "e2"] and [row(e)["status"] for e in ("e1", "e2")] == ["sent", "sent"]
    first, second = stamped
    assert claims[1] < first["answered"] and first["answered"] <= second["arrived"]  # built during the wait, sent after it
