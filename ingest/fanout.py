"""Which destinations an event goes to, and what a dry run would send to each."""
from __future__ import annotations

from datetime import datetime

from ingest.canonical import CanonicalEvent
from config import Destination, Site
from models import PENDING, SKIPPED
from ingest.clickids import attribution_keys
from platforms import REGISTRY
from platforms.base import Skip, match_quality


def skip_reason(event: CanonicalEvent, dest: Destination) -> str | None:
    """Why this destination must not get this event at all, whatever the platform; None if it may."""
    rule = skip_rule(event, dest)
    return rule[1] if rule else None


def skip_rule(event: CanonicalEvent, dest: Destination) -> tuple[str, str] | None:
    """The shared rule that keeps this event from this destination, as (rule, reason); None if none does.

    The rule is one of `no_consent`, `bot`, `filtered`, `consent_category`, `no_attribution`: a backfill
    counts the events it leaves out by it.
    """
    if not event.consent:
        return "no_consent", "no consent"
    if event.is_bot:
        return "bot", "bot"
    if dest.events is not None and not {event.standard_name, event.event_name} & set(dest.events):
        return "filtered", f"event {event.display_name!r} is not in this destination's events"
    if dest.consent_category and dest.consent_category not in (event.consent_categories or ()):
        return "consent_category", f"no consent for category {dest.consent_category}"
    unattributed = missing_attribution(event, dest)
    return ("no_attribution", unattributed) if unattributed else None


def missing_attribution(event: CanonicalEvent, dest: Destination) -> str | None:
    """A Telegram-funnel (`chat`) event goes only where it carries that platform's own click signal.

    Such an event has no browser of its own: without the platform's click id or cookie it cannot be
    tied to an ad, so sending it would only add an unattributed conversion. A platform marks its
    signals among its CLICK_IDS (`attribution`).
    """
    if event.channel != "chat":
        return None
    module = REGISTRY[dest.platform]
    keys = attribution_keys(module)
    if any(event.click_ids.get(key) for key in keys):
        return None
    return f"no {module.LABEL} attribution signal ({' or '.join(keys) or 'none accepted'}) on this Telegram conversion"


def past_window(event: CanonicalEvent, module, now: datetime) -> str | None:
    """Why the platform's late-event window forbids sending at `now` (the dispatcher fails such a send)."""
    if now - event.occurred_at > module.MAX_AGE:
        return f"older than {module.LABEL}'s {module.MAX_AGE.days}-day window: not sent"
    return None


def plan_sends(event: CanonicalEvent, site: Site) -> list[dict]:
    """One send row per enabled destination, pending or skipped with its reason."""
    sends = []
    for dest in site.active_destinations:
        reason = skip_reason(event, dest)
        sends.append({
            "destination": dest.key,
            "platform": dest.platform,
            "status": SKIPPED if reason else PENDING,
            "reason": reason,
            "finished_at": event.received_at if reason else None,
        })
    return sends


def preview(event: CanonicalEvent, site: Site) -> list[dict]:
    """What `?dry_run=1` answers: per destination, the exact item the platform would receive."""
    out = []
    for dest in site.active_destinations:
        module = REGISTRY[dest.platform]
        entry: dict = {"name": dest.name, "platform": dest.platform, "mode": dest.mode, "url": module.url(dest)}
        reason = skip_reason(event, dest) or past_window(event, module, event.received_at)
        try:
            item = module.build(event, dest)
        except Skip as skip:
            item, reason = None, reason or skip.reason
        entry["status"] = "skipped" if reason else "would_send"
        if reason:
            entry["reason"] = reason
        entry["payload"] = item
        entry["match_quality"] = match_quality(module.identifiers(item) if item else [], module.WEIGHTS)
        out.append(entry)
    return out
