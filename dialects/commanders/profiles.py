"""User profiles (Commanders' User API): hashed identity by the shop's user id, what events learn from it, GDPR erasure."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from peewee import OP, CharField, Expression, SqliteDatabase, Value

from ingest import privacy
from ingest.identity import keys_of
from models import FINAL, PENDING, SENDING, SKIPPED, BaseModel, Event, JSONField, Send, UTCDateTimeField, database

log = logging.getLogger(__name__)

# Flavours that name one person; names, gender, birth date or zip are shared by many and never link events.
PERSONAL_KEYS = keys_of("email", "phone")
ERASED_NOTE = "personal data erased at the user's request (User API)"
ERASED_REASON = "user erased (User API): not sent"
CHUNK = 500  # ids per IN (...): well under SQLite's bound-variable limit


class Profile(BaseModel):
    """What the shop told us about one of its users; identity hashed, never raw."""

    site = CharField()
    user_id = CharField()
    anonymous_id = CharField(null=True)
    identity = JSONField(default=dict)  # flavour -> sha256 hex
    location = JSONField(default=dict)  # normalized, clear (SPEC §4)
    created_at = UTCDateTimeField()
    updated_at = UTCDateTimeField()

    class Meta:
        table_name = "user_profiles"
        indexes = ((("site", "user_id"), True),)


@dataclass(frozen=True)
class Erasure:
    """What one erasure removed."""

    profile: bool
    events: int
    sends: int


def upsert(site_id: str, user_id: str, hashes: dict, location: dict, anonymous_id: str | None, now: datetime) -> bool:
    """Create or update a profile; given flavours replace old ones, the rest stay. True when created."""
    with database.atomic():
        profile = Profile.get_or_none((Profile.site == site_id) & (Profile.user_id == user_id))
        if profile is None:
            Profile.create(site=site_id, user_id=user_id, anonymous_id=anonymous_id, identity=hashes,
                           location=location, created_at=now, updated_at=now)
            return True
        (Profile.update(identity={**profile.identity, **hashes}, location={**profile.location, **location},
                        anonymous_id=anonymous_id or profile.anonymous_id, updated_at=now)
         .where(Profile.id == profile.id).execute())
        return False


def known(site_id: str, user_id: str | None) -> dict | None:
    """What the profile of `user_id` knows (identity, location, anonymous_id), for an event to be filled from."""
    if not user_id:
        return None
    profile = Profile.get_or_none((Profile.site == site_id) & (Profile.user_id == user_id))
    if profile is None:
        return None
    return {"identity": profile.identity, "location": profile.location, "anonymous_id": profile.anonymous_id}


def erase(site_id: str, user_id: str, now: datetime) -> Erasure:
    """Erase a user (GDPR): the profile, and every personal field of every event of theirs and its sends.

    Their events are those with their user id, the profile's anonymous id, or one of their email/phone
    hashes — followed transitively, so an event linked only by an email seen on another of their events
    is found too. Sends that could still go out end `skipped`; no send keeps a payload.
    """
    with _secure_delete():
        with database.atomic():
            profile = Profile.get_or_none((Profile.site == site_id) & (Profile.user_id == user_id))
            anonymous_id = profile.anonymous_id if profile else None
            hashes = _personal(profile.identity) if profile else set()
            events = _events_of(site_id, user_id, anonymous_id, hashes)  # grows `hashes` as it links events
            anonymous_ids = {e.anonymous_id for e in events if e.anonymous_id} | ({anonymous_id} - {None})
            privacy.erase_elsewhere(site_id, anonymous_ids, hashes)
            for event in events:
                (Event.update(identity={}, location={}, external_id=None, anonymous_id=None, click_ids={}, ip=None,
                              notes=[*event.notes, ERASED_NOTE])
                 .where(Event.id == event.id).execute())
            sends = 0
            ids = [event.id for event in events]
            for chunk in (ids[i:i + CHUNK] for i in range(0, len(ids), CHUNK)):
                sends += (Send.update(payload=None, response_excerpt=None)
                          .where(Send.event.in_(chunk) & Send.status.in_(FINAL)).execute())
                # A dispatcher mid-send finds its row no longer `sending`, so it records nothing back.
                sends += (Send.update(status=SKIPPED, reason=ERASED_REASON, finished_at=now, lease_owner=None,
                                      lease_until=None, payload=None, response_excerpt=None)
                          .where(Send.event.in_(chunk) & Send.status.in_((PENDING, SENDING))).execute())
            if profile is not None:
                profile.delete_instance()
    log.info("user erased", extra={"site": site_id, "events": len(events), "sends": sends})
    return Erasure(profile=profile is not None, events=len(events), sends=sends)


def _events_of(site_id: str, user_id: str, anonymous_id: str | None, hashes: set[str]) -> list[Event]:
    """Every event of the site that belongs to the user, following their email/phone hashes to a fixed point."""
    found: dict[int, Event] = {}
    while True:
        linked = (Event.external_id == user_id)
        if anonymous_id:
            linked |= Event.anonymous_id == anonymous_id
        for digest in hashes:
            # The identity column is JSON text; a 64-hex digest cannot occur in it by accident.
            linked |= Expression(Event.identity, OP.ILIKE, Value(f"%{digest}%", converter=False))
        query = Event.select().where((Event.site == site_id) & linked)
        if found:
            query = query.where(Event.id.not_in(list(found)))
        new = [e for e in query if _belongs(e, user_id, anonymous_id, hashes)]
        if not new:
            return list(found.values())
        for event in new:
            found[event.id] = event
            hashes |= _personal(event.identity)


def _belongs(event: Event, user_id: str, anonymous_id: str | None, hashes: set[str]) -> bool:
    return (event.external_id == user_id or (anonymous_id is not None and event.anonymous_id == anonymous_id)
            or bool(_personal(event.identity) & hashes))


def _personal(identity: dict) -> set[str]:
    return {identity[key] for key in PERSONAL_KEYS if identity.get(key)}


class _secure_delete:
    """On SQLite, zero what the erasure frees and empty the WAL after it, so the old values leave the files too."""

    def __enter__(self):
        db = database.obj
        self.sqlite = isinstance(db, SqliteDatabase)
        if self.sqlite:
            self.before = db.execute_sql("PRAGMA secure_delete").fetchone()[0]
            db.execute_sql("PRAGMA secure_delete = ON")
        return self

    def __exit__(self, *exc):
        if self.sqlite:
            db = database.obj
            db.execute_sql(f"PRAGMA secure_delete = {int(self.before)}")
            if exc[0] is None:
                db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # best effort: a reader elsewhere may hold it
        return False
