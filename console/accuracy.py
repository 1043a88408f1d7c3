"""The accuracy report: per site and destination, per day in the site's time zone, the purchases received against
those delivered, skipped (with the reasons) and failed, and the days whose delivery coverage fell below the
site's `coverage_alert_below`.

A purchase counts on the day it was received; its sends are read with it (the (site, received_at) index, then
each event's sends), so a late delivery still counts on the purchase's day.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from config import Config, Site
from models import CHUNK, FAILED, PENDING, SENDING, SENT, SKIPPED, Event, Send

DAYS = 14
PURCHASE = "Purchase"
KINDS = {SENT: "delivered", SKIPPED: "skipped", FAILED: "failed", PENDING: "waiting", SENDING: "waiting"}


def report(config: Config, now: datetime, days: int = DAYS) -> dict:
    """Every site's report over its last `days` days, today included."""
    return {"now": now.isoformat(), "days": days, "sites": [site_report(site, now, days) for site in config.sites]}


def site_report(site: Site, now: datetime, days: int = DAYS) -> dict:
    """One site: per destination, its days with purchases, newest first."""
    zone = ZoneInfo(site.timezone)
    first = datetime.combine(now.astimezone(zone).date() - timedelta(days=days - 1), datetime.min.time(), zone)
    purchases = (Event.select(Event.id, Event.received_at, Event.value, Event.currency)
                 .where((Event.site == site.id) & (Event.received_at >= first) & (Event.standard_name == PURCHASE)))
    received: dict[str, dict] = {}
    day_of: dict[int, tuple[str, float | None, str | None]] = {}
    for event_id, at, value, currency in purchases.tuples():
        day = Event.received_at.python_value(at).astimezone(zone).date().isoformat()
        day_of[event_id] = (day, value, currency)
        _add(received.setdefault(day, _tally()), value, currency)
    per_destination: dict[str, dict[str, dict]] = {}
    ids = list(day_of)
    for event_ids in (ids[i:i + CHUNK] for i in range(0, len(ids), CHUNK)):
        sends = Send.select(Send.event, Send.destination, Send.status, Send.reason).where(Send.event.in_(event_ids))
        for event_id, destination, status, reason in sends.tuples():
            day, value, currency = day_of[event_id]
            tally = per_destination.setdefault(destination, {}).setdefault(day, _day())
            kind = KINDS.get(status, "waiting")
            _add(tally[kind], value, currency)
            if kind in ("skipped", "failed"):
                reasons = tally[kind]["reasons"]
                reasons[reason or "no reason recorded"] = reasons.get(reason or "no reason recorded", 0) + 1
    return {"id": site.id, "name": site.name, "timezone": site.timezone, "alert_below": site.coverage_alert_below,
            "destinations": [_destination(dest.key, dest.name, dest.platform, received,
                                          per_destination.get(dest.key, {}), site.coverage_alert_below)
                             for dest in site.destinations]}


def _destination(key: str, name: str, platform: str, received: dict, sends: dict, alert_below: float | None) -> dict:
    days = []
    for day in sorted(received, reverse=True):
        tally = sends.get(day, _day())
        coverage = tally["delivered"]["count"] / received[day]["count"]
        days.append({"day": day, "received": received[day], **{kind: _shown(t) for kind, t in tally.items()},
                     "coverage": round(coverage, 4),
                     "below": alert_below is not None and coverage < alert_below})
    return {"key": key, "name": name, "platform": platform, "days": days}


def _tally() -> dict:
    return {"count": 0, "value": {}}


def _day() -> dict:
    return {"delivered": _tally(), "skipped": {**_tally(), "reasons": {}}, "failed": {**_tally(), "reasons": {}},
            "waiting": _tally()}


def _add(tally: dict, value: float | None, currency: str | None) -> None:
    tally["count"] += 1
    if value is not None:
        tally["value"][currency or "?"] = round(tally["value"].get(currency or "?", 0) + value, 2)


def _shown(tally: dict) -> dict:
    """A tally with its reasons as a list, most frequent first."""
    if "reasons" not in tally:
        return tally
    reasons = sorted(tally["reasons"].items(), key=lambda item: (-item[1], item[0]))
    return {**tally, "reasons": [{"reason": reason, "count": count} for reason, count in reasons]}

