"""The one way an accepted event enters storage, whatever its dialect."""
from __future__ import annotations

import logging

from ingest.canonical import CanonicalEvent
from config import Config, Site
from console import metrics
from models import Event, Statement, record_event
from ingest.fanout import plan_sends

log = logging.getLogger(__name__)


def accept(event: CanonicalEvent, site: Site, config: Config, also: Statement | None = None) -> tuple[Event, bool]:
    """Store the event with a send row per destination; (row, created) — a repeat is stored once. `also`: a
    statement stored with a new event in its transaction (models.record_event)."""
    row, created = record_event(event, plan_sends(event, site), config.ip_policy, also)
    metrics.received(site.id, event.dialect, "stored" if created else "duplicate")
    # DEBUG: gunicorn's access log has a line per request already, and one more line per event costs about as
    # much CPU as validating its email address (docs/operations.md#logs).
    if created and log.isEnabledFor(logging.DEBUG):
        log.debug("event stored", extra={"site": site.id, "dialect": event.dialect, "event": event.display_name,
                                         "event_id": row.event_id})
    return row, created


def already_stored(event: CanonicalEvent) -> bool:
    """Whether an event with this id is stored for its site: what a dry run answers about a repeat."""
    return Event.select().where((Event.site == event.site_id) & (Event.event_id == event.event_id)).exists()
