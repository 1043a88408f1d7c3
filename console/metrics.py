"""Postback's Prometheus metrics (docs/operations.md#metrics), right whichever process a scrape reaches.

Two kinds, each where it stays correct when a process restarts:

- What the database holds now (queue depth, the oldest waiting send, paused destinations) is read from it
  on every scrape: no process keeps it, so none can hold a stale or a lost copy.
- What happens and leaves no row to count (a refusal's row is bounded and purged, a duplicate is never
  stored, a retry overwrites its send's row, a request's duration) is counted as it happens, in
  prometheus_client's counters and histogram. Under gunicorn, `PROMETHEUS_MULTIPROC_DIR` (set up by
  gunicorn.conf.py) has every process, each worker and the dispatcher, write its counts to its own file
  there and a scrape sums every file: counts survive a worker's restart, and only a restart of the whole
  service, which empties the folder, starts them from zero (Prometheus' `rate()` reads that as a reset).
  Without it (one process, the tests) they live in that process's memory.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from datetime import datetime
from collections import Counter as Counter_
from typing import Iterator

from peewee import fn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from config import Config, Destination
from console.overview import paused
from delivery.sends import Change
from models import FAILED, PENDING, SENDING, Event, Send
from platforms.base import REJECTED, RETRY, SENT, SETUP, THROTTLE, Outcome

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
RESULTS = ("stored", "duplicate", "refused")
OUTCOMES = ("sent", "retry", "throttle", "setup_error", "rejected", "skipped", "failed")
WAITING = (PENDING, SENDING)
VERDICTS = {SENT: "sent", RETRY: "retry", THROTTLE: "throttle", SETUP: "setup_error", REJECTED: "rejected"}
FAILED_OUTCOME = "failed"

# prometheus_client's metrics are process-wide by design: one per name, registered in no registry of
# their own, and added to each scrape's registry (or, under gunicorn, read back from every process's file).
EVENTS_RECEIVED = Counter("postback_events_received", "Requests to the ingest endpoints: stored, duplicate or refused.",
                          ("site", "dialect", "result"), registry=None)
SENDS = Counter("postback_sends", "What became of each send the dispatcher handled, by outcome.",
                ("site", "destination", "outcome"), registry=None)
DISPATCH_SECONDS = Histogram("postback_dispatch_request_seconds", "One request to a platform, in seconds.",
                             ("site", "destination"), registry=None,
                             buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
CONFIG_RELOADS = Counter("postback_config_reloads", "Config reloads, by result.", ("result",), registry=None)
COUNTED = (EVENTS_RECEIVED, SENDS, DISPATCH_SECONDS, CONFIG_RELOADS)
for _result in ("ok", "error"):
    CONFIG_RELOADS.labels(_result)  # shown at 0 until something reloads the config


def config_reloaded(result: str) -> None:
    """Count one re-read of the config file: `ok` (in force) or `error` (refused, the old one stays)."""
    CONFIG_RELOADS.labels(result).inc()


def received(site: str | None, dialect: str, result: str) -> None:
    """Count one request carrying an event: `stored`, `duplicate` or `refused` (site "" when none was named)."""
    EVENTS_RECEIVED.labels(site or "", dialect, result).inc()


def answered(dest: Destination, outcomes: list[Outcome], changes: list[Change]) -> None:
    """Count the platform's verdict on each send of one request; a retry that gives up counts as `failed`."""
    named = Counter_((FAILED_OUTCOME if values["status"] == FAILED and outcome.kind == RETRY else
                      VERDICTS[outcome.kind]) for outcome, (_, values) in zip(outcomes, changes))
    for outcome, count in named.items():
        SENDS.labels(dest.site_id, dest.name, outcome).inc(count)


def unsent(dest: Destination, changes: list[Change]) -> None:
    """Count the sends that ended without a request: `skipped` (dry mode, a skip reason) or `failed` (too late)."""
    for status, count in Counter_(values["status"] for _, values in changes).items():
        SENDS.labels(dest.site_id, dest.name, status).inc(count)


@contextmanager
def platform_request(dest: Destination) -> Iterator[None]:
    """Time one request to `dest`'s platform into postback_dispatch_request_seconds."""
    started = time.perf_counter()
    try:
        yield
    finally:
        DISPATCH_SECONDS.labels(dest.site_id, dest.name).observe(time.perf_counter() - started)


class StoredState:
    """The gauges read from the database at scrape time: queue depth, oldest waiting send, paused destinations."""

    def __init__(self, config: Config, now: datetime):
        self.config, self.now = config, now

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("postback_queue_depth", "Sends waiting (pending) or in flight (sending).",
                                  labels=("site", "destination", "status"))
        oldest = GaugeMetricFamily("postback_oldest_pending_seconds",
                                   "Age of the event behind the oldest send not yet delivered; 0 when none waits.",
                                   labels=("site", "destination"))
        stopped = GaugeMetricFamily("postback_destination_paused", "1 while a setup error pauses the destination.",
                                    labels=("site", "destination"))
        counts = {(key, status): n for key, status, n in
                  Send.select(Send.destination, Send.status, fn.COUNT(Send.id))
                  .where(Send.status.in_(WAITING)).group_by(Send.destination, Send.status).tuples()}
        first = {key: Event.received_at.python_value(at) for key, at in
                 Send.select(Send.destination, fn.MIN(Event.received_at)).join(Event)
                 .where(Send.status.in_(WAITING)).group_by(Send.destination).tuples()}
        for site in self.config.sites:
            for dest in site.active_destinations:
                labels = [site.id, dest.name]
                for status in WAITING:
                    depth.add_metric([*labels, status], counts.get((dest.key, status), 0))
                since = first.get(dest.key)
                oldest.add_metric(labels, max(0.0, (self.now - since).total_seconds()) if since else 0.0)
                stopped.add_metric(labels, 1 if paused(dest) else 0)
        yield from (depth, oldest, stopped)


def exposition(config: Config, now: datetime) -> tuple[bytes, str]:
    """The text a scrape gets and its content type: every process's counts, then the database's gauges."""
    registry = CollectorRegistry()
    folder = os.environ.get(MULTIPROCESS_DIR)
    if folder:
        MultiProcessCollector(registry, folder)
    else:
        for metric in COUNTED:
            registry.register(metric)
    registry.register(StoredState(config, now))
    return generate_latest(registry), CONTENT_TYPE_LATEST
