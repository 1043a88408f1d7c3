"""The inspector: every refused or partly accepted request, with its reason and a PII-free excerpt.

Bounded per (site, reason) and per site, oldest first out, so junk traffic cannot fill the disk.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from peewee import AutoField, CharField, TextField

import dialects
from console import metrics
from dialects.common import PII_PROPERTY_KEYS
from ingest import personal
from ingest.canonical import fold, utcnow
from ingest.identity import FIELDS as IDENTITY_FIELDS
from models import BaseModel, JSONField, UTCDateTimeField, writing
from storage.stores import Store

KEEP_PER_REASON = 200
KEEP_PER_SITE = 5000  # reasons can name keys, so junk traffic could mint many; the site's total is bounded too
EXCERPT_TEXT_CHARS = 80
EXCERPT_KEYS = 40
EXCERPT_DEPTH = 4
PARTLY_ACCEPTED = "partly accepted"  # how each route's reason begins when the request was stored all the same


def declared(name: str) -> frozenset[str]:
    """The keys every dialect declares under `name` (in its package), folded."""
    return frozenset(fold(key) for package in dialects.packages() for key in getattr(package, name, ()))


# Values safe to show: they name an event, not a person. Everything else shows only its type.
SAFE_KEYS = declared("SAFE_FIELDS")
SECRET_KEYS = declared("SECRET_FIELDS") | {"key", "secret"}  # so named, a credential whatever the dialect
IDENTITY_KEYS = PII_PROPERTY_KEYS | frozenset(fold(k) for k in IDENTITY_FIELDS) | declared("PERSONAL_FIELDS")


class Refusal(BaseModel):
    id = AutoField()
    site = CharField(null=True)  # None when the request named no known site
    dialect = CharField()
    reason = TextField()
    excerpt = JSONField(null=True)
    created_at = UTCDateTimeField()

    class Meta:
        table_name = "refusals"
        indexes = ((("site", "reason"), False), (("created_at",), False))


def record(dialect: str, site: str | None, reason: str, body: Any = None, now: datetime | None = None) -> None:
    """Keep one refused (or partly accepted) request; drop the oldest beyond the bound for its reason."""
    if PARTLY_ACCEPTED not in reason:
        metrics.received(site, dialect, "refused")
    entry = excerpt(body)
    same_site = Refusal.site.is_null() if site is None else Refusal.site == site
    with writing():
        Refusal.create(site=site, dialect=dialect, reason=reason[:1000], excerpt=entry, created_at=now or utcnow())
        for scope, keep in ((same_site & (Refusal.reason == reason[:1000]), KEEP_PER_REASON), (same_site, KEEP_PER_SITE)):
            cutoff = Refusal.select(Refusal.id).where(scope).order_by(Refusal.id.desc()).offset(keep).limit(1).scalar()
            if cutoff is not None:
                Refusal.delete().where(scope & (Refusal.id <= cutoff)).execute()


def listing(site: str | None = None, dialect: str | None = None, limit: int = 100) -> list[dict]:
    """Newest first, optionally for one site and one dialect."""
    query = Refusal.select().order_by(Refusal.id.desc()).limit(limit)
    if site:
        query = query.where(Refusal.site == site)
    if dialect:
        query = query.where(Refusal.dialect == dialect)
    return [
        {"id": r.id, "site": r.site, "dialect": r.dialect, "reason": r.reason, "excerpt": r.excerpt,
         "created_at": r.created_at.isoformat()}
        for r in query
    ]


def purge(older_than: timedelta, now: datetime | None = None) -> int:
    """Drop entries older than the retention period."""
    return Refusal.delete().where(Refusal.created_at < (now or utcnow()) - older_than).execute()


def excerpt(body: Any, depth: int = 0) -> Any:
    """The request's shape without personal data: safe fields' values, secrets masked, the rest typed."""
    if isinstance(body, dict) and depth < EXCERPT_DEPTH:
        return {_key(str(k)): _value(str(k), v, depth) for k, v in list(body.items())[:EXCERPT_KEYS]}
    if body is None:
        return None
    return f"<{type(body).__name__}>"


def _key(key: str) -> str:
    """A key as shown: one that is itself an email address or a phone number shows only what it is."""
    found = personal.kind(key)
    return f"<{found} as a key>" if found else key[:EXCERPT_TEXT_CHARS]


def _value(key: str, value: Any, depth: int) -> Any:
    folded = fold(key)
    if folded in SECRET_KEYS:
        return f"{str(value)[:4]}…" if isinstance(value, str) and len(value) > 4 else "<secret>"
    if folded in IDENTITY_KEYS:
        return f"<{type(value).__name__}>"
    if isinstance(value, dict):
        return excerpt(value, depth + 1)
    if folded in SAFE_KEYS and isinstance(value, (str, int, float, bool)) or value is None:
        return value[:EXCERPT_TEXT_CHARS] if isinstance(value, str) else value
    return f"<{type(value).__name__}>"


STORE = Store("inspector", (Refusal,), purge=purge,
              impersonal="reasons and excerpts that show types, not values, where a value could name a person")
