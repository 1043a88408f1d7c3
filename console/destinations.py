"""Every destination with its mode, state and sends by status, and what an operator does to one: resume it, retry
its backing-off sends now, replay its failed sends, verify its credentials. The page and the admin API call these."""
from __future__ import annotations

from dataclasses import asdict, replace
from datetime import datetime

from peewee import fn

from config import Config, Destination
from console.overview import paused
from delivery.backlog import retry_now
from delivery.sends import replay_failed, resume_destination
from models import FAILED, PENDING, SENDING, SENT, SKIPPED, Send
from outbound import Http
from platforms import REGISTRY

STATUSES = (PENDING, SENDING, SENT, SKIPPED, FAILED)


def destinations(config: Config, now: datetime) -> dict:
    """Per site, each destination (disabled ones too) with its state and its sends counted by status."""
    return {"now": now.isoformat(),
            "sites": [{"id": site.id, "name": site.name, "destinations": [state(dest, now) for dest in site.destinations]}
                      for site in config.sites]}


def state(dest: Destination, now: datetime) -> dict:
    """One destination: `state` is disabled, paused (with the platform's error), backing off or active."""
    counts = dict.fromkeys(STATUSES, 0)
    counts.update(Send.select(Send.status, fn.COUNT(Send.id)).where(Send.destination == dest.key)
                  .group_by(Send.status).tuples())
    backing_off = (Send.select(fn.COUNT(Send.id))
                   .where((Send.destination == dest.key) & (Send.status == PENDING) & (Send.next_attempt_at > now))
                   .scalar())
    pause = paused(dest) if dest.enabled else None
    kind = "disabled" if not dest.enabled else "paused" if pause else "backing off" if backing_off else "active"
    return {"key": dest.key, "site": dest.site_id, "name": dest.name, "platform": dest.platform, "mode": dest.mode,
            "state": kind, "paused": pause, "backing_off": backing_off, "counts": counts}


def find(config: Config, key: str) -> Destination | None:
    """An enabled destination by its key, `<site>/<name>`."""
    return config.destination(key)


def resume(key: str) -> bool:
    """Lift a pause now; the destination's waiting sends go on the dispatcher's next pass."""
    return resume_destination(key)


def retry(key: str, now: datetime) -> int:
    """The destination's backing-off sends become due now."""
    return retry_now(key, now)


def replay(key: str, now: datetime) -> int:
    """The destination's failed sends are queued again with a fresh retry budget."""
    return replay_failed(destination=key, now=now)


def verify(config: Config, dest: Destination) -> dict:
    """One harmless call with the destination's credentials: `ok` and the platform's own words."""
    platform = REGISTRY[dest.platform]
    missing = platform.check_settings(replace(dest, mode="live"))
    if missing:
        return {"ok": False, "message": "; ".join(f"{key}: {problem}" for key, problem in missing)}
    return asdict(platform.verify(dest, Http(config.timeout_seconds)))
