"""Retention: events past `storage.retention_days` go, once none of their sends can still go out."""
from __future__ import annotations

from datetime import datetime, timedelta

from peewee import fn

from dialects.adtarget import funnel
from ingest import inspector
from dialects.pixel import profiles as pixel_profiles
from models import FINAL, Event, Send, database


def purge(retention_days: int, now: datetime) -> dict[str, int]:
    """Delete old events whose sends are all final (with those sends), old inspector entries, and
    funnel visits and visitor profiles past the period (they keep IPs, user agents and hashes)."""
    cutoff = now - timedelta(days=retention_days)
    still_open = Send.select(Send.event).where(Send.status.not_in(FINAL))
    old = Event.select(Event.id).where((Event.received_at < cutoff) & Event.id.not_in(still_open))
    with database.atomic():
        sends = Send.delete().where(Send.event.in_(old)).execute()
        events = Event.delete().where(Event.id.in_(old)).execute()
    period = timedelta(days=retention_days)
    refusals = inspector.purge(period, now)
    funnel_rows = sum(funnel.purge(period, now).values())
    profiles = pixel_profiles.purge(period, now)
    return {"events": events, "sends": sends, "refusals": refusals, "funnel": funnel_rows, "profiles": profiles}


def stats() -> dict[str, dict[str, int]]:
    """Sends per destination and status, and events per site."""
    sends: dict[str, dict[str, int]] = {}
    for row in Send.select(Send.destination, Send.status, fn.COUNT(Send.id).alias("n")).group_by(Send.destination, Send.status):
        sends.setdefault(row.destination, {})[row.status] = row.n
    events = {row.site: row.n for row in Event.select(Event.site, fn.COUNT(Event.id).alias("n")).group_by(Event.site)}
    return {"events": events, "sends": sends}
