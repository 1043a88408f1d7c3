"""One event's whole story: how it arrived, what was decided, and what became of each destination's send."""
from __future__ import annotations

from config import Config, Destination
from console.masking import masked
from delivery.sends import replay_failed
from ingest.canonical import CanonicalEvent
from ingest.privacy import payload_with_reduced_ip, reduce_ip
from models import FAILED, PENDING, Event, Send
from platforms import REGISTRY
from platforms.base import Skip, match_quality

COARSE_LOCATION = ("country", "state", "city")  # never the zip code
RAISERS = 4


def story(config: Config, event_pk: int) -> dict | None:
    """Everything the console shows about one stored event; None when there is no such event."""
    event = Event.get_or_none(Event.id == event_pk)
    if event is None:
        return None
    canonical = event.to_canonical()
    sends = Send.select().where(Send.event == event.id).order_by(Send.id)
    return {
        "event": {"id": event.id, "site": event.site, "event_id": event.event_id, "event_name": event.event_name,
                  "standard_name": event.standard_name, "order_id": event.order_id, "value": event.value,
                  "currency": event.currency, "channel": event.channel},
        "received": {"dialect": event.dialect, "received_at": event.received_at.isoformat(),
                     "occurred_at": event.occurred_at.isoformat(), "page_url": event.page_url,
                     "location": {k: event.location[k] for k in COARSE_LOCATION if event.location.get(k)},
                     "ip": reduce_ip(event.ip, config.ip_policy)},
        "decisions": {"consent": event.consent, "consent_categories": event.consent_categories,
                      "mapped_to": event.standard_name, "bot": event.is_bot, "notes": event.notes},
        # a field's other forms kept for one platform (em_google, ph_e164) are that same field arriving
        "identity": {"fields": sorted({name.split("_")[0] for name in event.identity}), "click_ids": sorted(k for k, v in event.click_ids.items() if v),
                     "external_id": event.external_id is not None, "anonymous_id": event.anonymous_id is not None},
        "sends": [send_story(send, canonical, config.destination(send.destination), config.ip_policy)
                  for send in sends],
    }


def send_story(send: Send, event: CanonicalEvent, dest: Destination | None, ip_policy: str) -> dict:
    """A send as the platform got it (or would): payload kept on the send, else rebuilt; secrets masked, and the
    client IP reduced as on the event's story (the full one is for the platform alone)."""
    module = REGISTRY.get(send.platform)
    payload, rebuilt, unbuildable = send.payload, False, None
    if payload is None and module is not None and dest is not None:
        try:
            payload, rebuilt = module.build(event, dest), True
        except Skip as skip:
            unbuildable = skip.reason
        except Exception as exc:  # noqa: BLE001 - the page still tells the rest of the story
            unbuildable = f"could not build the payload: {type(exc).__name__}: {exc}"
    quality = send.match_quality
    if quality is None and payload is not None and module is not None:
        quality = match_quality(module.identifiers(payload), module.WEIGHTS)
    return {
        "id": send.id, "destination": send.destination, "platform": send.platform, "status": send.status,
        "reason": send.reason, "attempts": send.attempts, "retries": send.retries,
        "next_attempt_at": send.next_attempt_at.isoformat() if send.status == PENDING else None,
        "finished_at": send.finished_at.isoformat() if send.finished_at else None,
        "url": module.url(dest) if module is not None and dest is not None else None,
        "payload": masked(payload_with_reduced_ip(payload, event.ip, ip_policy)), "rebuilt": rebuilt,
        "unbuildable": unbuildable,
        "configured": dest is not None,
        "answer": {"status": send.last_status, "error": send.last_error, "response": send.response_excerpt,
                   "trace_id": send.trace_id},
        "match_quality": quality and {**quality, "raise_with": _raisers(quality, module)},
        "replayable": send.status == FAILED,
    }


def replay(send_pk: int) -> int:
    """Queue a failed send again, as `cli.py replay --send` does; how many were queued (0 or 1)."""
    return replay_failed(send_id=send_pk)


def _raisers(quality: dict, module) -> list[dict]:
    """The platform's weightiest identifiers this send lacks, each with what it would add to the score."""
    if module is None or quality["score"] >= 10:
        return []
    missing = [(name, weight) for name, weight in module.WEIGHTS.items() if name not in quality["identifiers"]]
    missing.sort(key=lambda item: (-item[1], item[0]))
    return [{"identifier": name, "adds": weight} for name, weight in missing[:RAISERS]]
