"""Octeth's own state: the subscribers seen per list (for `identify_event_sent`) and the properties catalogue.

Both are keyed by site and ListID; a subscriber by the SHA-256 of the email, never the address.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Iterable

from peewee import AutoField, IntegrityError, TextField, fn

from models import BaseModel, UTCDateTimeField, any_of, writing
from storage.stores import Person, Store

MAX_EVENTS_PER_LIST = 500  # junk traffic must not grow the catalogue without bound
MAX_KEYS_PER_EVENT = 500


class OctethSubscriber(BaseModel):
    """A subscriber first seen on a list: the event that identified it and its external id."""

    id = AutoField()
    site = TextField()
    list_id = TextField()
    email_hash = TextField()  # sha256 of the normalized email, as in the event's identity
    external_id = TextField()  # the `ID` sent, else one generated on first sight
    first_event_id = TextField()
    created_at = UTCDateTimeField()

    class Meta:
        table_name = "octeth_subscribers"
        indexes = ((("site", "list_id", "email_hash"), True),)


class OctethProperty(BaseModel):
    """One property name seen on an event of a list: the catalogue `website_events.properties` answers."""

    id = AutoField()
    site = TextField()
    list_id = TextField()
    event = TextField()
    key = TextField()

    class Meta:
        table_name = "octeth_properties"
        indexes = ((("site", "list_id", "event", "key"), True),)


def subscriber(site: str, list_id: str, email_hash: str) -> OctethSubscriber | None:
    return OctethSubscriber.get_or_none(
        (OctethSubscriber.site == site) & (OctethSubscriber.list_id == list_id) & (OctethSubscriber.email_hash == email_hash))


def remember(site: str, list_id: str, email_hash: str, external_id: str, event_id: str, given_id: bool, now: datetime) -> bool:
    """Record the subscriber; True when this event is the first seen for it. A sent `ID` replaces the stored one."""
    try:
        with writing():
            OctethSubscriber.create(site=site, list_id=list_id, email_hash=email_hash, external_id=external_id,
                                    first_event_id=event_id, created_at=now)
        return True
    except IntegrityError:  # seen before, or a concurrent first event won the race
        pass
    if given_id:
        with writing():
            (OctethSubscriber.update(external_id=external_id)
             .where((OctethSubscriber.site == site) & (OctethSubscriber.list_id == list_id)
                    & (OctethSubscriber.email_hash == email_hash) & (OctethSubscriber.external_id != external_id))
             .execute())
    return False


def learn(site: str, list_id: str, event: str, keys: Iterable[str]) -> None:
    """Add property names to the list's catalogue for `event`, within the bounds."""
    on_list = (OctethProperty.site == site) & (OctethProperty.list_id == list_id)
    known = {row.key for row in OctethProperty.select(OctethProperty.key).where(on_list & (OctethProperty.event == event))}
    new = [key for key in dict.fromkeys(keys) if key not in known][: max(0, MAX_KEYS_PER_EVENT - len(known))]
    if not new:
        return
    if not known:
        events = OctethProperty.select(fn.COUNT(OctethProperty.event.distinct())).where(on_list).scalar()
        if events >= MAX_EVENTS_PER_LIST:
            return
    with writing():
        OctethProperty.insert_many(
            [{"site": site, "list_id": list_id, "event": event, "key": key} for key in new]
        ).on_conflict_ignore().execute()


def catalogue(site: str, list_id: str) -> dict[str, list[str]]:
    """Per event name, the sorted property names seen on the list."""
    rows = (OctethProperty.select(OctethProperty.event, OctethProperty.key)
            .where((OctethProperty.site == site) & (OctethProperty.list_id == list_id)))
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row.event, []).append(row.key)
    return {event: sorted(keys) for event, keys in sorted(found.items())}


def purge(older_than: timedelta, now: datetime) -> int:
    """Forget subscribers first seen longer ago than the retention period (seen again, one is first seen again).

    The catalogue stays: property names name no one.
    """
    return OctethSubscriber.delete().where(OctethSubscriber.created_at < now - older_than).execute()


def erase(person: Person, now: datetime) -> int:
    """A person's erasure forgets them on every list: by their email hash or their external id."""
    named = any_of([OctethSubscriber.email_hash.in_(list(person.hashes)),
                    OctethSubscriber.external_id.in_(list(person.external_ids))])
    return OctethSubscriber.delete().where((OctethSubscriber.site == person.site) & named).execute()


STORE = Store("octeth", (OctethSubscriber, OctethProperty), purge=purge, erase=erase)
