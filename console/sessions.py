"""Admin login sessions: the admin API's bearer tokens, also Octeth's `SessionID` credential.

Only the SHA-256 of a session id is stored: a copy of the database signs no one in.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from peewee import CharField

from ingest.canonical import utcnow
from ingest.hashing import sha256
from models import BaseModel, UTCDateTimeField, writing
from storage.stores import Store


class AdminSession(BaseModel):
    """A login session; Octeth's `SessionID` credential is one of these."""

    id = CharField(primary_key=True)  # sha256 of the session id the client holds
    expires_at = UTCDateTimeField()

    class Meta:
        table_name = "admin_sessions"


@dataclass(frozen=True)
class OpenedSession:
    """A session as its holder gets it: the id (never stored) and when it expires."""

    id: str
    expires_at: datetime


def open_session(hours: float) -> OpenedSession:
    """A new session, valid for `hours`."""
    opened = OpenedSession(secrets.token_urlsafe(24), utcnow() + timedelta(hours=hours))
    with writing():
        AdminSession.create(id=sha256(opened.id), expires_at=opened.expires_at)
    return opened


def valid_session(session_id: object) -> bool:
    """True for the id of a session that has not expired (looked up by its hash: no comparison of secrets)."""
    if not isinstance(session_id, str) or not session_id:
        return False
    session = AdminSession.get_or_none(AdminSession.id == sha256(session_id))
    return session is not None and session.expires_at > utcnow()


def end_session(session_id: object) -> bool:
    """Sign a session out: its id is no longer valid. True when there was one."""
    if not isinstance(session_id, str):
        return False
    with writing():
        return AdminSession.delete().where(AdminSession.id == sha256(session_id)).execute() > 0


def purge(older_than: timedelta, now: datetime) -> int:
    """Drop sessions that expired longer ago than the retention period."""
    return AdminSession.delete().where(AdminSession.expires_at < now - older_than).execute()


STORE = Store("admin_sessions", (AdminSession,), purge=purge, impersonal="hashes of random tokens and when they expire")
