"""User profiles (Commanders' User API): hashed identity by the shop's user id, what events learn from it, GDPR erasure."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from peewee import TextField

from ingest.hashing import HASHED_RE
from storage import retention
from models import BaseModel, JSONField, UTCDateTimeField, any_of, for_update, holding, personal_hashes, writing
from storage.stores import Person, Store

log = logging.getLogger(__name__)


class Profile(BaseModel):
    """What the shop told us about one of its users; identity hashed, never raw."""

    site = TextField()
    user_id = TextField()
    anonymous_id = TextField(null=True)
    identity = JSONField(default=dict)  # flavour -> sha256 hex
    location = JSONField(default=dict)  # normalized, clear (docs/privacy.md)
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
    """Create or update a profile; given flavours replace old ones, the rest stay. True when created.

    Inserted with ON CONFLICT DO NOTHING first, then merged under a row lock: on PostgreSQL two calls for the
    same new user may run at once, and a read-then-create would let the second one fail on the unique index.
    """
    key = (Profile.site == site_id) & (Profile.user_id == user_id)
    with writing():
        created = (Profile.insert(site=site_id, user_id=user_id, anonymous_id=anonymous_id, identity=hashes,
                                  location=location, created_at=now, updated_at=now)
                   .on_conflict_ignore().as_rowcount().execute())
        if created:
            return True
        profile = for_update(Profile.select().where(key)).get()
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
    """Erase a user (GDPR) from every store: the profile, every personal field of every event of theirs and its sends,
    and what other stores keep of them (see `models.erase_events` for how their events are found)."""
    with retention.erasing():
        profile = Profile.get_or_none((Profile.site == site_id) & (Profile.user_id == user_id))
        person = Person(site_id, "User API", {user_id})
        if HASHED_RE.match(user_id):  # an email or phone sent as the user id, hashed at ingest like its identity
            person.hashes.add(user_id)
        if profile is not None:
            person.anonymous_ids |= {profile.anonymous_id} - {None}
            person.hashes |= personal_hashes(profile.identity)
        erased = retention.erase(person, now)
    log.info("user erased", extra={"site": site_id, "events": erased["events"], "sends": erased["sends"]})
    return Erasure(profile=profile is not None, events=erased["events"], sends=erased["sends"])


def forget(person: Person, now: datetime) -> int:
    """The profiles that are the person's: by user id, anonymous id, or a shared email/phone hash."""
    named = any_of([Profile.user_id.in_(list(person.external_ids)), Profile.anonymous_id.in_(list(person.anonymous_ids)),
                    *holding(Profile.identity, person.hashes)])
    return Profile.delete().where((Profile.site == person.site) & named).execute()


def purge(older_than: timedelta, now: datetime) -> int:
    """Drop profiles the shop has not updated for longer than the retention period."""
    return Profile.delete().where(Profile.updated_at < now - older_than).execute()


STORE = Store("user_profiles", (Profile,), purge=purge, erase=forget)
