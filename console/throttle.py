"""Brute-force throttle of the admin credentials (login, Basic, Bearer, the console's sign-in), per client IP.

Five failures are free; then each one makes the client wait twice as long before its next try (1 s, 2 s, 4 s,
… at most 5 minutes), answered 429 with `Retry-After`. It never locks out: once the wait has passed, the right
password is let in (and clears the count), so an operator and Prometheus behind one proxy IP wait at most one
delay. Kept in the database so every worker sees the same count.
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta

from peewee import CharField, IntegerField

from models import BaseModel, UTCDateTimeField, writing
from storage.stores import Store

FREE_FAILURES = 5
MAX_DELAY = timedelta(minutes=5)
FORGOTTEN_AFTER = timedelta(hours=1)  # failures this old no longer count


class AuthFailure(BaseModel):
    """Failed admin credentials from one client, and until when it must wait."""

    client = CharField(primary_key=True)
    failures = IntegerField(default=0)
    last_failed_at = UTCDateTimeField()
    blocked_until = UTCDateTimeField(null=True)

    class Meta:
        table_name = "auth_failures"


def retry_after(client: str, now: datetime) -> int:
    """Seconds the client must still wait before a try counts; 0 when it may try now."""
    row = AuthFailure.get_or_none(AuthFailure.client == client)
    if row is None or row.blocked_until is None or row.blocked_until <= now:
        return 0
    return max(1, math.ceil((row.blocked_until - now).total_seconds()))


def failed(client: str, now: datetime) -> None:
    """Count a wrong credential; past the free ones, the client waits 1 s, 2 s, 4 s, … up to MAX_DELAY."""
    with writing():
        row = AuthFailure.get_or_none(AuthFailure.client == client)
        failures = 1 if row is None or now - row.last_failed_at > FORGOTTEN_AFTER else row.failures + 1
        blocked = now + delay(failures) if failures > FREE_FAILURES else None
        (AuthFailure.insert(client=client, failures=failures, last_failed_at=now, blocked_until=blocked)
         .on_conflict(conflict_target=[AuthFailure.client],
                      update={AuthFailure.failures: failures, AuthFailure.last_failed_at: now,
                              AuthFailure.blocked_until: blocked})
         .execute())


def delay(failures: int) -> timedelta:
    """The wait after the `failures`-th failure in a row (past the free ones)."""
    return min(MAX_DELAY, timedelta(seconds=2 ** min(failures - FREE_FAILURES - 1, 20)))


def succeeded(client: str) -> None:
    """The right credential: the client's count starts again."""
    if AuthFailure.get_or_none(AuthFailure.client == client) is not None:
        with writing():
            AuthFailure.delete().where(AuthFailure.client == client).execute()


def purge(older_than: timedelta, now: datetime) -> int:
    """Forget failures older than the retention period."""
    return AuthFailure.delete().where(AuthFailure.last_failed_at < now - older_than).execute()


STORE = Store("auth_failures", (AuthFailure,), purge=purge,
              impersonal="client IPs that sent wrong admin credentials, forgotten after the retention period")
