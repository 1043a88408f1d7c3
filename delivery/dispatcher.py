"""The dispatcher: claim due sends, batch them per destination, send, record the five outcomes (docs/delivery.md)."""
from __future__ import annotations

import fcntl
import logging
import os
import random
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta
from typing import Callable

from apscheduler.schedulers.background import BackgroundScheduler

from delivery import alerts, sends as delivery
from delivery.states import Health
from ingest.canonical import utcnow
from config import Config, Destination
from console import metrics
from models import FAILED, SENT, SKIPPED, storage_fault
from platforms import REGISTRY
from ingest.fanout import past_window
from outbound import Http
from platforms.base import REJECTED, RETRY, SENT as OK, SETUP, THROTTLE, Outcome, Skip, match_quality

log = logging.getLogger(__name__)

BACKOFF_FIRST = 10.0
BACKOFF_CAP = 3600.0
JITTER = 0.2
MAX_DRAIN_THREADS = 32
# Requests of one destination waiting for their answers at once. The drain claims and builds the next claim while
# one waits, so its Python work overlaps the wait even at one. Two would send a request beside one a throttle or
# setup answer comes back to, which the drain promises not to do; and at a fast Meta they drain no faster than one,
# holding a claim more (docs/delivery.md, "How a drain overlaps its waits"). A platform whose requests carry one
# client each (GA4) may declare an IN_FLIGHT of its own: one at a time, its drain waits out a round trip per event.
IN_FLIGHT = 1
# Sends claimed at once, whatever the platform's batch limit. A claim holds its events, then their payloads, until
# its last outcome is recorded, and each destination holds two (the one whose request waits for its answer, the next
# one built meanwhile): these objects are most of what the process grows by under load. Against 500, 250 take
# 6–9 MiB off the peak for about 5 % more CPU per send to the five fakes together (none measurable to Meta alone);
# and a request carries at most 250 events, so a platform that answers slower than a claim is built gets half as
# many events a second (docs/delivery.md, "What the dispatcher holds").
CLAIM_LIMIT = 250
# For every SQLite connection of a process that dispatches. Each thread that touches the database has one of its
# own (peewee's are per thread): the drains', the senders', the scheduler's, a dozen for five destinations, and at
# the peak each held its full 2 MB page cache. A connection in WAL mode drops its whole cache whenever another one
# wrote since its last transaction, which here is nearly always, so a bigger cache serves little more than the
# transaction that filled it: at 256 KiB each the drain is as fast.
CONNECTION_PRAGMAS = {"cache_size": -256}
RECORD_CHUNK = 256  # outcomes per transaction: a 1,000-event batch holds the write lock four short times, not once


def backoff(retries: int, rng: Callable[[], float] = random.random) -> float:
    """Seconds before retry number `retries`: 10 s doubling to 1 h, ±20 % so retries do not stampede."""
    base = min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** max(0, retries - 1))
    return base * (1 - JITTER + 2 * JITTER * rng())


def split_requests(module, batch: list[tuple]) -> list[list[tuple]]:
    """Group (row, item, quality) by the platform's request key (GA4: one client per request), then cut
    each group at the platform's batch limit; order is kept."""
    groups: dict = {}
    for entry in batch:
        groups.setdefault(module.request_key(entry[1]), []).append(entry)
    limit = module.BATCH_LIMIT
    return [group[i:i + limit] for group in groups.values() for i in range(0, len(group), limit)]


def in_flight(module) -> int:
    """How many requests of one destination of this platform may wait for their answers at once."""
    return getattr(module, "IN_FLIGHT", IN_FLIGHT)


def kept(item: dict, quality: dict, sample: bool) -> dict:
    """What a send keeps of the payload it was built with: all of it when an operator may need it exactly (a
    failure, a retry, one sample per request or dry-mode claim); otherwise nothing, and the console rebuilds it
    from the event, labelled as rebuilt (docs/delivery.md, "What a send keeps")."""
    return {"payload": item, "match_quality": quality} if sample else {}


class Dispatcher:
    """Drains every destination with its own worker, so a slow platform holds no other."""

    def __init__(self, config_source: Callable[[], Config], clock: Callable[[], datetime] = utcnow,
                 rng: Callable[[], float] = random.random, monotonic: Callable[[], float] = time.monotonic):
        self.config_source = config_source
        self.clock = clock
        self.rng = rng
        self.monotonic = monotonic  # the per-destination caches of platforms count their ages in it
        self.http = Http(config_source().timeout_seconds)
        self._caches: dict[tuple[str, str], object] = {}
        self._pool = ThreadPoolExecutor(MAX_DRAIN_THREADS, thread_name_prefix="drain")
        self._senders = ThreadPoolExecutor(MAX_DRAIN_THREADS * max(map(in_flight, REGISTRY.values())),
                                           thread_name_prefix="send")
        self._running: dict[str, Future] = {}
        self._stopping = threading.Event()
        # per destination, the claims whose requests are not all answered: handed back if a stop times out
        self._held: dict[str, list[tuple[list[delivery.Claimed], list[Future]]]] = {}
        self._health = Health()
        # Drains take turns at their Python work (claim, build, record): the GIL runs one at a time anyway, and in
        # parallel every write transaction one of them holds (the box's one write lock) lasts as long as its waits
        # for the GIL. HTTP calls are made outside the turn, so a slow platform still holds no other.
        self._turn = threading.Lock()

    @property
    def config(self) -> Config:
        return self.config_source()

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=3 * self.config.timeout_seconds)

    def drain_once(self, now: datetime | None = None) -> dict[str, int]:
        """One full pass at time `now`, every destination in parallel; returns sends processed per destination."""
        now = now or self.clock()
        delivery.release_expired(now, self.config.max_attempts, self.config.ip_policy)
        futures = {d.key: self._pool.submit(self.drain_destination, d, now) for d in self.config.destinations()}
        return {key: future.result() for key, future in futures.items()}

    def tick(self) -> None:
        """The scheduler's job: start a drain for each destination that is not still busy with the last one."""
        if self._stopping.is_set():
            return
        try:
            delivery.release_expired(self.clock(), self.config.max_attempts, self.config.ip_policy)
            # Upkeep, derived from the database (delivery/alerts.py): a config change's dropped sends, then alerts.
            alerts.tick(self.config, self.clock(), self.http)
        except Exception as exc:
            fault = storage_fault(exc)
            if fault is None:
                raise
            # the database is away (PostgreSQL restarting, a full disk): each tick tries again, one line each
            log.warning("dispatcher waiting for the database", extra={"fault": fault})
            return
        for dest in self.config.destinations():
            running = self._running.get(dest.key)
            if running is None or running.done():
                self._running[dest.key] = self._pool.submit(self._drain_logged, dest)

    def _drain_logged(self, dest: Destination) -> None:
        try:
            self.drain_destination(dest)
        except Exception as exc:  # noqa: BLE001 - the claimed rows come back when their lease expires
            fault = storage_fault(exc)
            if fault is None:
                log.exception("drain failed", extra={"destination": dest.key})
            else:
                log.warning("drain stopped: the database cannot be used",
                            extra={"destination": dest.key, "fault": fault})

    def drain_destination(self, dest: Destination, now: datetime | None = None) -> int:
        """Send everything due for one destination until none is left, it is throttled or it is paused.

        Its requests go out from sender threads, `in_flight(module)` at a time, while this thread claims and builds
        the next claim; the first throttle or setup answer halts the drain, and the requests not sent by then go
        back untried. Returns how many sends it processed: claimed, and not handed back untried."""
        module = REGISTRY[dest.platform]
        at_once = in_flight(module)
        self.http.timeout = self.config.timeout_seconds  # the config may have been reloaded since the last pass
        processed, untried = 0, []  # the drain's claims, and what of them its senders hand back untried
        halt = threading.Event()
        flight: deque[Future] = deque()
        held = self._held[dest.key] = []  # (claim, its requests): what a stop that times out hands back
        try:
            while not (self._stopping.is_set() or halt.is_set()) and delivery.paused_reason(dest) is None:
                moment = now or self.clock()
                held[:] = [(rows, sent) for rows, sent in held if not all(f.done() for f in sent)]
                with self._turn:
                    rows = delivery.claim(dest.key, min(CLAIM_LIMIT, module.BATCH_LIMIT), moment, self.lease)
                    claim: tuple[list, list[Future]] = (rows, [])
                    held.append(claim)
                    requests = split_requests(module, self._prepare(dest, module, rows, moment))
                if not rows:
                    # Another claimer (a node sharing PostgreSQL) may hold the due rows for a moment; while
                    # any are left unclaimed, this drain goes on rather than waiting for the next tick.
                    if delivery.any_due(dest.key, moment):
                        continue
                    break
                processed += len(rows)
                while requests:
                    while len(flight) >= at_once:
                        flight.popleft().result()
                    sending = self._senders.submit(self._request, dest, module, requests.pop(0), moment, halt,
                                                   untried)
                    claim[1].append(sending)
                    flight.append(sending)
        finally:
            wait(flight)  # every request of this drain answered and recorded (or put back) before it returns
            self._held.pop(dest.key, None)
        for sending in flight:
            sending.result()  # a sender's failure is this drain's
        return processed - sum(untried)

    def _request(self, dest: Destination, module, request: list[tuple], now: datetime, halt: threading.Event,
                 untried: list[int]) -> None:
        """One request of a drain, on a sender thread: sent unless the drain was halted or is stopping meanwhile,
        then it goes back untried; a throttle or setup answer halts the drain."""
        if halt.is_set() or self._stopping.is_set():
            delivery.put_back([row for row, _, _ in request], now)
            untried.append(len(request))
        elif self._send(dest, module, request, now):
            halt.set()

    def _prepare(self, dest: Destination, module, rows: list[delivery.Claimed], now: datetime) -> list[tuple]:
        """Build each claimed send's payload and finish the ones that cannot go; (row, item, quality) of the rest.

        Each row's event is let go once its payload is built (`rows` is emptied as it goes): a claim holds
        its payloads, not its events as well."""
        batch, done, previewed = [], [], False
        for i, claimed in enumerate(rows):
            event, row = claimed.event, claimed._replace(event=None)
            rows[i] = row
            too_old = past_window(event, module, now)
            if too_old:
                done.append(delivery.finishing(row, FAILED, now, reason=too_old))
                continue
            try:
                item = module.build(event, dest)
            except Skip as skip:
                done.append(delivery.finishing(row, SKIPPED, now, reason=skip.reason))
                continue
            except Exception as exc:  # noqa: BLE001 - left claimed, it would come back first and block the rest
                log.exception("payload build failed", extra={"destination": dest.key, "send": row.id})
                done.append(delivery.finishing(
                    row, FAILED, now, reason=f"could not build {module.LABEL}'s payload: {type(exc).__name__}: {exc}"))
                continue
            quality = match_quality(module.identifiers(item), module.WEIGHTS)
            if dest.mode == "dry":
                done.append(delivery.finishing(row, SKIPPED, now, reason="dry mode",
                                               **kept(item, quality, sample=not previewed)))
                previewed = True
                continue
            batch.append((row, item, quality))
        if done:  # every send of the claim that goes nowhere, in one transaction
            delivery.record(done, self.config.ip_policy)
            metrics.unsent(dest, done)
        return batch

    def _send(self, dest: Destination, module, batch: list[tuple], now: datetime) -> bool:
        """POST one batch; a batch rejected as a whole for one event is split until that event is found."""
        # From the clock, not `now` (the claim's time): a split's later requests start later.
        delivery.renew([row for row, _, _ in batch], max(now, self.clock()) + self.lease)
        started = self.monotonic()
        with metrics.platform_request(dest):
            outcomes = self._platform_send(dest, module, [item for _, item, _ in batch])
        self._note_slow(dest, self.monotonic() - started)
        if len(batch) > 1 and any(o.kind == REJECTED and o.whole_batch for o in outcomes):
            middle = len(batch) // 2
            if self._send(dest, module, batch[:middle], now) or self._stopping.is_set():
                delivery.put_back([row for row, _, _ in batch[middle:]], now)
                return True
            return self._send(dest, module, batch[middle:], now)
        changes = [self._change(row, item, quality, outcome, now, sample=i == 0)
                   for i, ((row, item, quality), outcome) in enumerate(zip(batch, outcomes))]
        metrics.answered(dest, outcomes, changes)
        setup = [o for o in outcomes if o.kind == SETUP]
        with self._turn:
            for start in range(0, len(changes), RECORD_CHUNK):
                delivery.record(changes[start:start + RECORD_CHUNK], self.config.ip_policy)
            if setup:
                delivery.pause(dest, setup[-1].error or "setup error", now)
            # in turn: two requests of one destination may be answered at once
            self._health.observe(dest.key, outcomes, changes, now)
        return any(o.kind in (THROTTLE, SETUP) for o in outcomes)

    def _note_slow(self, dest: Destination, seconds: float) -> None:
        """Say once per destination that it answers slower than timeout_seconds: what it got may come again."""
        timeout = self.config.timeout_seconds
        if seconds >= timeout and dest.key not in self._health.slow:
            self._health.slow.add(dest.key)
            log.warning("destination slower than timeout_seconds: a request it received after we gave up is sent "
                        "again on retry (duplicates, unless it deduplicates on event_id)",
                        extra={"destination": dest.key, "timeout_seconds": timeout, "took_seconds": round(seconds, 1)})

    def _platform_send(self, dest: Destination, module, items: list[dict]) -> list[Outcome]:
        """The platform's send, given the cache it keeps for this destination between sends if it keeps one."""
        if not hasattr(module, "cache"):
            return module.send(items, dest, self.http)
        key = (dest.key, dest.platform)
        cache = self._caches.get(key) or self._caches.setdefault(key, module.cache(self.monotonic))
        return module.send(items, dest, self.http, cache=cache)

    def _change(self, row: delivery.Claimed, item: dict, quality: dict, outcome: Outcome, now: datetime,
                sample: bool = False) -> delivery.Change:
        """What one platform verdict does to its send (the five outcomes of docs/delivery.md)."""
        seen = {"last_status": outcome.status, "last_error": outcome.error,
                "response_excerpt": outcome.response, "trace_id": outcome.trace_id}
        tried = {**seen, "attempts": row.attempts + 1, **kept(item, quality, sample=True)}
        if outcome.kind == OK:
            if sample:
                return delivery.finishing(row, SENT, now, reason=None, **{**tried, "last_error": None})
            # the request's one answer is kept with its sample; this send keeps its status and trace id
            return delivery.finishing(row, SENT, now, reason=None, last_status=outcome.status,
                                      trace_id=outcome.trace_id, attempts=row.attempts + 1)
        if outcome.kind == REJECTED:
            return delivery.finishing(row, FAILED, now, reason=outcome.error, **tried)
        if outcome.kind == RETRY:
            retries = row.retries + 1
            if retries >= self.config.max_attempts:
                return delivery.finishing(row, FAILED, now, retries=retries,
                                          reason=f"gave up after {retries} attempts: {outcome.error}", **tried)
            # a platform that says when to come back (Google's TOO_RECENT_*: 6 h) is heard
            wait = max(backoff(retries, self.rng), outcome.retry_after or 0)
            return delivery.rescheduling(row, now + timedelta(seconds=wait), retries=retries, **tried)
        if outcome.kind == THROTTLE:
            wait = outcome.retry_after if outcome.retry_after is not None else backoff(row.attempts + 1, self.rng)
            return delivery.rescheduling(row, now + timedelta(seconds=wait), **tried)
        if outcome.kind == SETUP:
            return delivery.rescheduling(row, now, **seen)  # waits for the fix; no attempt counted
        raise ValueError(f"unknown outcome kind {outcome.kind!r}")

    def close(self) -> None:
        """Wait for the drains in flight, then stop the worker threads."""
        self._pool.shutdown(wait=True)
        self._senders.shutdown(wait=True)

    def stop_claiming(self) -> None:
        """From now on no drain claims another batch, nor sends the rest of one whose first request went out."""
        self._stopping.set()

    def stop(self, timeout: float) -> int:
        """Stop claiming; wait up to `timeout` for the requests in flight and their outcomes to be recorded.

        Returns how many claimed sends were handed back untried because a request outlived the wait.
        """
        self.stop_claiming()
        deadline = self.monotonic() + timeout
        for future in list(self._running.values()):
            try:
                future.result(timeout=max(0.0, deadline - self.monotonic()))
            except Exception:  # noqa: BLE001 - a timeout, or a drain that failed (logged by the drain itself)
                pass
        held = [row for claims in list(self._held.values()) for rows, _ in list(claims) for row in rows]
        if held:  # whatever those requests bring back no longer matches a claim, so nothing is recorded twice
            delivery.put_back(held, self.clock())
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._senders.shutdown(wait=False, cancel_futures=True)
        return len(held)

    def schedule(self) -> BackgroundScheduler:
        """Run `tick` every interval_seconds on a scheduler of its own (APScheduler); the caller shuts it down."""
        scheduler = BackgroundScheduler()
        scheduler.add_job(self.tick, "interval", seconds=self.config.interval_seconds, max_instances=1,
                          coalesce=True, next_run_time=utcnow())
        scheduler.start()
        return scheduler


class LeaderLock:
    """A non-blocking flock on a file beside the database; it dies with the process that holds it."""

    def __init__(self, path: str | None):
        self.path = path
        self._handle = None

    def acquire(self) -> bool:
        if self.path is None or self._handle is not None:
            return True  # no shared file (PostgreSQL): claims are safe on their own
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._handle = handle
        return True

    def release(self) -> None:
        """Let another process (or handle) lead; closing the file drops the flock."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def lock_path_for(database_url: str) -> str | None:
    if database_url.startswith("sqlite:///") and not database_url.endswith(":memory:"):
        return os.path.abspath(database_url[len("sqlite:///"):]) + ".dispatch.lock"
    return None
