"""The inspector: every refused or partly accepted request, with its reason and a PII-free excerpt.

Bounded per (site, reason) and per site, oldest first out, so junk traffic cannot fill the disk.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from peewee import AutoField, CharField, TextField

from ingest.canonical import fold, utcnow
from dialects.common import PII_PROPERTY_KEYS
from models import BaseModel, JSONField, UTCDateTimeField

KEEP_PER_REASON = 200
KEEP_PER_SITE = 5000  # reasons can name keys, so junk traffic could mint many; the site's total is bounded too
EXCERPT_TEXT_CHARS = 80
EXCERPT_KEYS = 40
EXCERPT_DEPTH = 4
# Values safe to show: they name an event, not a person. Everything else shows only its type.
SAFE_KEYS = frozenset(fold(k) for k in (
    "event", "event_name", "event_id", "order_id", "value", "currency", "occurred_at", "consent",
    "event_token", "category", "listid", "list_id", "revenue", "amount", "eventtype", "tc_s", "id",
    "type", "channel", "eventtime", "source", "conversionid", "conversionname", "conversionvalue",
))
SECRET_KEYS = frozenset(fold(k) for k in ("api_key", "apikey", "access_token", "token", "sessionid", "key", "secret"))
IDENTITY_KEYS = PII_PROPERTY_KEYS | frozenset(fold(k) for k in (
    "first_name", "last_name", "gender", "date_of_birth", "city", "state", "zip", "country",
    "distinct_id", "user_id", "email", "phone", "pii", "params", "cookie", "user",
))


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
    Refusal.create(site=site, dialect=dialect, reason=reason[:1000], excerpt=excerpt(body), created_at=now or utcnow())
    same_site = Refusal.site.is_null() if site is None else Refusal.site == site
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
    return Refusal.delete().where(Refusal.created_at < (now or utcnow()) - older_than).execute()


def excerpt(body: Any, depth: int = 0) -> Any:
    """The request's shape without personal data: safe fields' values, secrets masked, the rest typed."""
    if isinstance(body, dict) and depth < EXCERPT_DEPTH:
        return {str(k)[:EXCERPT_TEXT_CHARS]: _value(str(k), v, depth) for k, v in list(body.items())[:EXCERPT_KEYS]}
    if body is None:
        return None
    return f"<{type(body).__name__}>"


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
