"""The event listing: newest first, filtered by site, dialect, event name and send status, or found by `?q=`.

Every query walks an index: received_at for the listing, (site, event_id) and (site, order_id) for `?q=`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

from peewee import fn

from config import Config
from models import FAILED, MAX_ROW_ID, PENDING, SENDING, SENT, SKIPPED, Event, Send

PAGE_SIZE = 50
LAST_PAGE = MAX_ROW_ID // PAGE_SIZE  # past it the offset overflows the database's integer: an empty page, not a 500
STATUSES = (PENDING, SENDING, SENT, FAILED, SKIPPED)
LISTED = (Event.id, Event.site, Event.dialect, Event.event_name, Event.standard_name, Event.event_id,
          Event.order_id, Event.value, Event.currency, Event.received_at)


@dataclass(frozen=True)
class Filters:
    site: str = ""
    dialect: str = ""
    event: str = ""  # the name as sent or its standard name
    status: str = ""  # events with at least one send in this status
    q: str = ""  # an event_id or an order id

    @classmethod
    def from_args(cls, args: Mapping[str, str]) -> Filters:
        """From a query string; unknown statuses are ignored rather than refused."""
        values = {name: str(args.get(name, "")).strip()[:200] for name in cls.__dataclass_fields__}
        if values["status"] not in STATUSES:
            values["status"] = ""
        return cls(**values)


def listing(config: Config, filters: Filters, page: int = 1) -> dict:
    """One page of events, newest first, with each event's sends' statuses."""
    page = min(max(1, page), LAST_PAGE)
    if filters.q:
        events, more = found(config, filters), False
    else:
        rows = list(_filtered(filters).order_by(Event.received_at.desc(), Event.id.desc())
                    .offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1))
        events, more = rows[:PAGE_SIZE], len(rows) > PAGE_SIZE
    return {"events": _with_sends(events), "page": page, "has_next": more, "filters": asdict(filters),
            "query": {name: value for name, value in asdict(filters).items() if value},  # for the pages' links
            "sites": [site.id for site in config.sites], "statuses": list(STATUSES)}


def found(config: Config, filters: Filters) -> list[Event]:
    """The events whose event_id or order id is `filters.q`, in the chosen site or any configured one."""
    sites = [filters.site] if filters.site else [site.id for site in config.sites]
    matches: dict[int, Event] = {}
    for column in (Event.event_id, Event.order_id):
        for event in Event.select(*LISTED).where(Event.site.in_(sites) & (column == filters.q)).limit(PAGE_SIZE):
            matches[event.id] = event
    return sorted(matches.values(), key=lambda e: (e.received_at, e.id), reverse=True)


def _filtered(filters: Filters):
    query = Event.select(*LISTED)
    if filters.site:
        query = query.where(Event.site == filters.site)
    if filters.dialect:
        query = query.where(Event.dialect == filters.dialect)
    if filters.event:
        query = query.where((Event.event_name == filters.event) | (Event.standard_name == filters.event))
    if filters.status:
        query = query.where(fn.EXISTS(Send.select(Send.id).where((Send.event == Event.id) & (Send.status == filters.status))))
    return query


def _with_sends(events: list[Event]) -> list[dict]:
    sends: dict[int, list[dict]] = {}
    if events:
        for event_id, destination, status in (Send.select(Send.event, Send.destination, Send.status)
                                              .where(Send.event.in_([e.id for e in events])).order_by(Send.id).tuples()):
            sends.setdefault(event_id, []).append({"destination": destination, "status": status})
    return [{"id": e.id, "site": e.site, "dialect": e.dialect, "event_name": e.event_name,
             "standard_name": e.standard_name, "event_id": e.event_id, "order_id": e.order_id, "value": e.value,
             "currency": e.currency, "received_at": e.received_at.isoformat(), "sends": sends.get(e.id, [])}
            for e in events]
