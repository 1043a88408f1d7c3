"""Retention: events past `storage.retention_days` go, once none of their sends can still go out."""
from __future__ import annotations

from datetime import datetime, timedelta

from peewee import fn

import inspector
from models import FINAL, Event, Send, database


def purge(retention_days: int, now: datetime) -> dict[str, int]:
    """Delete old events whose sends are all final (with those sends) and old inspector entries."""
    cutoff = now - timedelta(days=retention_days)
    still_open = Send.select(Send.event).where(Send.status.not_in(FINAL))
    old = Event.select(Event.id).where((Event.received_at < cutoff) & Event.id.not_in(still_open))
    with database.atomic():
        sends = Send.delete().where(Send.event.in_(old)).execute()
        events = Event.delete().where(Event.id.in_(old)).execute()
    refusals = inspector.purge(timedelta(days=retention_days), now)
    return {"events": events, "sends": sends, "refusals": refusals}


def stats() -> dict[str, dict[str, int]]:
    """Sends per destination and status, and events per site."""
    sends: dict[str, dict[str, int]] = {}
    for row in Send.select(Send.destination, Send.status, fn.COUNT(Send.id).alias("n")).group_by(Send.destination, Send.status):
        sends.setdefault(row.destination, {})[row.status] = row.n
    events = {row.site: row.n for row in Event.select(Event.site, fn.COUNT(Event.id).alias("n")).group_by(Event.site)}
    return {"events": events, "sends": sends}
