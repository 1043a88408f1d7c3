"""Backfill: a destination added later gets sends for the stored events it would have taken, inside its window.

Each stored event is judged by the rules it met at ingest (`ingest.fanout.skip_rule`), the platform's own
`build` and its late-event window (`ingest.fanout.past_window`); the dispatcher then delivers the new sends
as usual. An event that already has a send for the destination is left alone, so a second run adds nothing.
"""
from __future__ import annotations

import re
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

from config import Config, Destination
from ingest.canonical import CanonicalEvent
from ingest.fanout import past_window, skip_rule
from models import PENDING, Event, Send, exclusive, writing
from platforms import REGISTRY
from platforms.base import Skip

CHUNK = 500  # events judged and written per transaction: a short hold of the write lock

# Why an event is left out, in the order they are checked; what a person reads for each.
LEFT_OUT = {
    "outside_window": "outside the window",
    "already_sent": "already has a send",
    "no_consent": "no consent",
    "bot": "bot",
    "filtered": "not in the destination's events",
    "consent_category": "no consent for its category",
    "no_attribution": "no attribution signal",
    "not_taken": "not taken by the platform",
}
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
DURATION = re.compile(r"([1-9][0-9]{0,5})([smhd])")

Progress = Callable[[int, int], None]  # (events judged so far, events to judge)


class BackfillError(LookupError):
    """A destination that cannot be backfilled: unknown, or disabled."""


def parse_since(text: str) -> timedelta:
    """`7d`, `12h`, `30m` or `90s` as a duration; ValueError says what is accepted."""
    match = DURATION.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError("a whole number followed by s, m, h or d, e.g. 7d")
    return timedelta(**{UNITS[match[2]]: int(match[1])})


def destination_to_backfill(config: Config, key: str) -> Destination:
    """The enabled destination `site/name`; BackfillError names what is wrong otherwise."""
    site_id, _, name = key.partition("/")
    site = config.site(site_id)
    dest = next((d for d in site.destinations if d.name == name), None) if site else None
    if dest is None:
        raise BackfillError(f"no destination {key!r} in the config (site/name, e.g. shop/meta)")
    if not dest.enabled:
        raise BackfillError(f"destination {key!r} is disabled: enable it first")
    return dest


@dataclass
class Outcome:
    """What a backfill did (or, dry, would do): the sends it queued and the events it left out, by reason."""

    destination: str
    since: datetime  # the oldest occurred_at taken
    dry_run: bool
    queued: int = 0
    left_out: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LEFT_OUT, 0))

    def as_json(self) -> dict:
        return {"destination": self.destination, "since": self.since.isoformat(timespec="seconds"), "dry_run": self.dry_run,
                "queued": self.queued, "left_out": dict(self.left_out)}


def backfill(dest: Destination, now: datetime, since: timedelta | None = None, dry_run: bool = False,
             progress: Progress | None = None) -> Outcome:
    """Queue a send to `dest` for each stored event of its site that it would have taken and can still take."""
    module = REGISTRY[dest.platform]
    window = min(module.MAX_AGE, since) if since else module.MAX_AGE
    outcome = Outcome(dest.key, now - window, dry_run)
    of_site = Event.site == dest.site_id
    outcome.left_out["outside_window"] = Event.select().where(of_site & (Event.occurred_at < outcome.since)).count()
    recent = Event.select().where(of_site & (Event.occurred_at >= outcome.since))
    total, done, last = recent.count(), 0, 0
    while chunk := list(recent.where(Event.id > last).order_by(Event.id).limit(CHUNK)):
        last = chunk[-1].id
        verdicts = {row.id: _verdict(row.to_canonical(), dest, module, now, window) for row in chunk}
        _queue(verdicts, dest, now, outcome)
        done += len(chunk)
        if progress:
            progress(done, total)
    return outcome


def _verdict(event: CanonicalEvent, dest: Destination, module, now: datetime, window: timedelta) -> str | None:
    """Why the destination does not get this event (a LEFT_OUT key), or None when it does."""
    if past_window(event, module, now) or now - event.occurred_at > window:
        return "outside_window"
    rule = skip_rule(event, dest)
    if rule:
        return rule[0]
    try:
        module.build(event, dest)
    except Skip:
        return "not_taken"
    except Exception:  # noqa: BLE001 - queued anyway: the dispatcher records why its payload cannot be built
        pass
    return None


def _queue(verdicts: dict[int, str | None], dest: Destination, now: datetime, outcome: Outcome) -> None:
    """Create the sends of one chunk, skipping events that have one for `dest`, checked in the same transaction."""
    with nullcontext() if outcome.dry_run else writing():
        if not outcome.dry_run:
            exclusive(f"backfill {dest.key}")  # a backfill of it on another node checks after this one inserts
        sent = {event for (event,) in Send.select(Send.event)
                .where((Send.destination == dest.key) & Send.event.in_(list(verdicts))).tuples()}
        taken = [event for event, reason in verdicts.items() if reason is None and event not in sent]
        if taken and not outcome.dry_run:
            Send.insert_many([{"event": event, "site": dest.site_id, "destination": dest.key,
                               "platform": dest.platform, "status": PENDING, "next_attempt_at": now}
                              for event in taken]).execute()
    outcome.queued += len(taken)
    for event, reason in verdicts.items():
        if event in sent or reason is not None:
            outcome.left_out["already_sent" if event in sent else reason] += 1
