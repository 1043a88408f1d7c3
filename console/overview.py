"""The overview: events per day per site, and per destination what became of its sends today and over 7 days.

A final send is counted on the day of its last scheduled attempt (`next_attempt_at`: the event's arrival for
one sent at once), so every count is a range search of the sends index (destination, status, next_attempt_at).
"""
from __future__ import annotations

from datetime import datetime, timedelta

from peewee import Case, Cast, fn

from config import Config, Destination
from models import FINAL, PENDING, SENDING, SENT, SKIPPED, DestinationState, Event, Send

DAYS = 30
TOP_REASONS = 5


def overview(config: Config, now: datetime) -> dict:
    """Per site: 30 days of events, then its destinations, paused ones first."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    sites = []
    for site in config.sites:
        destinations = [delivery(dest, today, now) for dest in site.active_destinations]
        destinations.sort(key=lambda d: d["paused"] is None)
        days = events_per_day(site.id, today)
        sites.append({"id": site.id, "name": site.name, "days": days, "events": sum(d["count"] for d in days),
                      "destinations": destinations})
    backlog = sum(d["backlog"] for s in sites for d in s["destinations"])
    ages = [d["oldest_waiting_seconds"] for s in sites for d in s["destinations"] if d["oldest_waiting_seconds"] is not None]
    return {"now": now.isoformat(), "sites": sites, "backlog": backlog, "oldest_waiting_seconds": max(ages, default=None)}


def events_per_day(site_id: str, today: datetime) -> list[dict]:
    """The site's events received on each of the last DAYS days, oldest first, days without any included."""
    first = today - timedelta(days=DAYS - 1)
    day = Cast(fn.date(Event.received_at), "TEXT").coerce(False)  # the day as text on both backends (PostgreSQL: a date)
    counts = dict(Event.select(day, fn.COUNT(Event.id))
                  .where((Event.site == site_id) & (Event.received_at >= first)).group_by(day).tuples())
    dates = [(first + timedelta(days=i)).date().isoformat() for i in range(DAYS)]
    return [{"day": date, "count": counts.get(date, 0)} for date in dates]


def delivery(dest: Destination, today: datetime, now: datetime) -> dict:
    """One destination: paused or not, its shares today and over 7 days, its backlog and oldest waiting send."""
    week = today - timedelta(days=6)
    rows = list(Send.select(Send.status, Send.reason, fn.COUNT(Send.id),
                            fn.SUM(Case(None, [(Send.next_attempt_at >= today, 1)], 0)))
                .where((Send.destination == dest.key) & Send.status.in_(FINAL) & (Send.next_attempt_at >= week))
                .group_by(Send.status, Send.reason).tuples())
    waiting, oldest = (Send.select(fn.COUNT(Send.id), fn.MIN(Event.received_at)).join(Event)
                       .where((Send.destination == dest.key) & Send.status.in_((PENDING, SENDING))).tuples()[0])
    oldest = Event.received_at.python_value(oldest)
    return {
        "key": dest.key, "name": dest.name, "platform": dest.platform, "mode": dest.mode,
        "paused": paused(dest),
        "today": _shares([(status, reason, today_count) for status, reason, _, today_count in rows], waiting),
        "week": _shares([(status, reason, count) for status, reason, count, _ in rows], waiting),
        "backlog": waiting,
        "oldest_waiting_seconds": int((now - oldest).total_seconds()) if oldest else None,
    }


def paused(dest: Destination) -> dict | None:
    """Why and since when the destination is paused; None when it is not (or its config changed since)."""
    state = DestinationState.get_or_none(DestinationState.destination == dest.key)
    if state is None or state.fingerprint != dest.fingerprint():
        return None
    return {"reason": state.paused_reason, "since": state.paused_at.isoformat()}


def _shares(rows: list[tuple], waiting: int) -> dict:
    """Counts and percentages of sent, skipped (with its main reasons), failed and waiting sends."""
    counts = {"sent": 0, "skipped": 0, "failed": 0, "waiting": waiting}
    reasons: dict[str, int] = {}
    for status, reason, count in rows:
        kind = "sent" if status == SENT else "skipped" if status == SKIPPED else "failed"
        counts[kind] += count or 0
        if status == SKIPPED and count:
            reasons[reason or "no reason recorded"] = reasons.get(reason or "no reason recorded", 0) + count
    total = sum(counts.values())
    top = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))[:TOP_REASONS]
    return {**counts, "total": total,
            "percent": {kind: round(100 * n / total, 1) if total else 0 for kind, n in counts.items()},
            "skipped_by_reason": [{"reason": reason, "count": n} for reason, n in top]}
