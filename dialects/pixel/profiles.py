"""Pixel visitor profiles: what earlier calls said about a visitor (site + uuid), merged across calls.

Only hashes and the numeric Facebook id are kept, so a later call (a purchase without the email)
can be matched on what the visitor sent before (docs/dialects/pixel.md).
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from peewee import TextField

from ingest.canonical import utcnow
from models import BaseModel, JSONField, Statement, UTCDateTimeField, any_of, database, holding, writing
from storage.stores import Person, Store


class PixelProfile(BaseModel):
    site = TextField()
    uuid = TextField()
    identity = JSONField(default=dict)  # flavour -> sha256 hex, as on the canonical event
    fbid = TextField(null=True)  # kept plain: Meta's fb_login_id must not be hashed
    created_at = UTCDateTimeField()
    updated_at = UTCDateTimeField()

    class Meta:
        table_name = "pixel_profiles"
        indexes = ((("site", "uuid"), True), (("updated_at",), False))


class Known(NamedTuple):
    """What a visitor's profile holds."""

    identity: dict[str, str]
    fbid: str | None


def find(site_id: str, uuid: str) -> Known | None:
    """The visitor's profile; one indexed read on every pixel call, so its SQL is written once, not built each time."""
    row = database.execute_sql(_FIND.format(param=database.param), (site_id, uuid)).fetchone()
    return None if row is None else Known(PixelProfile.identity.python_value(row[0]), row[1])


_FIND = "SELECT identity, fbid FROM pixel_profiles WHERE site = {param} AND uuid = {param}"
_UPSERT = ("INSERT INTO pixel_profiles (site, uuid, identity, fbid, created_at, updated_at) "
           "VALUES ({param}, {param}, {param}, {param}, {param}, {param}) ON CONFLICT (site, uuid) DO UPDATE SET "
           "identity = excluded.identity, fbid = excluded.fbid, updated_at = excluded.updated_at")


def merging(site_id: str, uuid: str, identity: dict[str, str], fbid: str | None, now: datetime,
            known: Known | None) -> Statement | None:
    """The upsert that merges this call's hashes and fbid into the visitor's profile (newer values win, nothing is
    forgotten), or None when it would change nothing. `known`: the profile as the caller just read it (`find`), or
    None for a visitor who has none. The pixel route stores it with the call's event (models.record_event)."""
    if not identity and fbid is None:
        return None  # a call that names nobody adds nothing: no row per page view
    merged = {**(known.identity if known else {}), **identity}
    fbid = fbid or (known.fbid if known else None)
    if known and (known.identity, known.fbid) == (merged, fbid):
        return None
    # A visitor's calls rarely race; if two do, the later write wins and both events keep their own hashes.
    stamp = PixelProfile.updated_at.db_value(now)
    return Statement(_UPSERT.format(param=database.param),
                     (site_id, uuid, PixelProfile.identity.db_value(merged), fbid, stamp, stamp))


def forget(site_id: str, uuid: str) -> int:
    """Erase one visitor's profile (a GDPR request names the visitor by its uuid)."""
    with writing():
        return PixelProfile.delete().where((PixelProfile.site == site_id) & (PixelProfile.uuid == uuid)).execute()


def purge(older_than: timedelta, now: datetime | None = None) -> int:
    """Drop profiles unchanged for longer than the retention period."""
    return PixelProfile.delete().where(PixelProfile.updated_at < (now or utcnow()) - older_than).execute()


def erase(person: Person, now: datetime) -> int:
    """A person's erasure removes the visitor profiles that are theirs: by uuid, or by a shared email/phone hash."""
    named = any_of([PixelProfile.uuid.in_(list(person.anonymous_ids)), *holding(PixelProfile.identity, person.hashes)])
    return PixelProfile.delete().where((PixelProfile.site == person.site) & named).execute()


STORE = Store("pixel_profiles", (PixelProfile,), purge=purge, erase=erase)
