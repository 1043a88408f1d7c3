"""Admin login sessions: the admin API's bearer tokens, also Octeth's `SessionID` credential."""
from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from peewee import CharField

from ingest.canonical import utcnow
from models import BaseModel, UTCDateTimeField, writing
from storage.stores import Store


class AdminSession(BaseModel):
    """A login session; Octeth's `SessionID` credential is one of these."""

    id = CharField(primary_key=True)
    expires_at = UTCDateTimeField()

    class Meta:
        table_name = "admin_sessions"


def open_session(hours: float) -> AdminSession:
    """A new session, valid for `hours`."""
    with writing():
        return AdminSession.create(id=secrets.token_urlsafe(24), expires_at=utcnow() + timedelta(hours=hours))


def valid_session(session_id: object) -> bool:
    """True for the id of a session that has not expired."""
    if not isinstance(session_id, str) or not session_id:
        return False
    session = AdminSession.get_or_none(AdminSession.id == session_id)
    return session is not None and session.expires_at > utcnow()


def end_session(session_id: object) -> None:
    """Sign a session out: its id is no longer valid."""
    if isinstance(session_id, str):
        with writing():
            AdminSession.delete().where(AdminSession.id == session_id).execute()


def purge(older_than: timedelta, now: datetime) -> int:
    """Drop sessions that expired longer ago than the retention period."""
    return AdminSession.delete().where(AdminSession.expires_at < now - older_than).execute()


STORE = Store("admin_sessions", (AdminSession,), purge=purge, impersonal="random tokens and when they expire")
