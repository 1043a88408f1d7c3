"""Storage verbs for sends: claim with a lease, record each outcome, pause, resume, replay.

Each is one short transaction; none is ever held across an HTTP call.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from peewee import fn

from canonical import utcnow
from config import Destination
from models import (
    FAILED, FINAL, PENDING, SENDING, DestinationState, Event, Send, database,
)
from privacy import reduce_ip


def claim(destination: str, limit: int, now: datetime, lease: timedelta) -> list[Send]:
    """Lease up to `limit` due sends of one destination; a row is only ever claimed by one owner.

    One UPDATE whose WHERE re-checks `status = pending` is the compare-and-set: a racing claimer's
    statement matches no row this one took.
    """
    owner = uuid.uuid4().hex
    due = (Send.select(Send.id)
           .where((Send.destination == destination) & (Send.status == PENDING) & (Send.next_attempt_at <= now))
           .order_by(Send.next_attempt_at, Send.id).limit(limit))
    (Send.update(status=SENDING, lease_owner=owner, lease_until=now + lease)
     .where(Send.id.in_(due) & (Send.status == PENDING)).execute())
    return list(Send.select(Send, Event).join(Event)
                .where((Send.lease_owner == owner) & (Send.status == SENDING)).order_by(Send.id))


LEASE_LOST = "lease expired: the dispatcher stopped mid-send"


def release_expired(now: datetime, max_attempts: int, ip_policy: str) -> int:
    """Sends whose lease ran out (their dispatcher died mid-send) go back to pending, counted as a retry.

    The platform may have received them; it deduplicates on event_id. A send whose dispatcher keeps
    dying (say, out of memory on it) fails once its retries are spent, like any other retry.
    """
    expired = (Send.status == SENDING) & (Send.lease_until < now)
    spent = expired & (Send.retries + 1 >= max_attempts)
    given_up = [row.event_id for row in Send.select(Send.event).where(spent)]
    (Send.update(status=FAILED, lease_owner=None, lease_until=None, finished_at=now,
                 attempts=Send.attempts + 1, retries=Send.retries + 1, last_error=LEASE_LOST,
                 reason=f"gave up after {max_attempts} attempts: {LEASE_LOST}")
     .where(spent).execute())
    for event_id in set(given_up):
        reduce_ip_when_final(event_id, ip_policy)
    released = (Send.update(status=PENDING, lease_owner=None, lease_until=None, next_attempt_at=now,
                            attempts=Send.attempts + 1, retries=Send.retries + 1, last_error=LEASE_LOST)
                .where(expired).execute())
    return released + len(given_up)


def finish(send: Send, status: str, now: datetime, ip_policy: str, **fields) -> bool:
    """End a claimed send as sent, failed or skipped; the event's full IP goes once nothing can be sent."""
    with database.atomic():
        changed = (Send.update(status=status, finished_at=now, lease_owner=None, lease_until=None, **fields)
                   .where((Send.id == send.id) & (Send.lease_owner == send.lease_owner) & (Send.status == SENDING))
                   .execute())
        if changed:
            reduce_ip_when_final(send.event_id, ip_policy)
    return bool(changed)


def reschedule(send: Send, at: datetime, **fields) -> bool:
    """Put a claimed send back to pending until `at`."""
    changed = (Send.update(status=PENDING, next_attempt_at=at, lease_owner=None, lease_until=None, **fields)
               .where((Send.id == send.id) & (Send.lease_owner == send.lease_owner) & (Send.status == SENDING))
               .execute())
    return bool(changed)


def reduce_ip_when_final(event_id: int, ip_policy: str) -> None:
    open_sends = Send.select().where((Send.event == event_id) & (Send.status.not_in(FINAL))).exists()
    if not open_sends:
        event = Event.get_by_id(event_id)
        reduced = reduce_ip(event.ip, ip_policy)
        if reduced != event.ip:
            Event.update(ip=reduced).where(Event.id == event_id).execute()


def pause(dest: Destination, reason: str, now: datetime) -> None:
    """A setup error: the destination waits until its config changes or an admin resumes it."""
    (DestinationState.insert(destination=dest.key, paused_reason=reason, paused_at=now, fingerprint=dest.fingerprint())
     .on_conflict_replace().execute())


def paused_reason(dest: Destination) -> str | None:
    """Why the destination is paused, or None; a changed config resumes it."""
    state = DestinationState.get_or_none(DestinationState.destination == dest.key)
    if state is None:
        return None
    if state.fingerprint != dest.fingerprint():
        resume_destination(dest.key)
        return None
    return state.paused_reason


def resume_destination(key: str) -> bool:
    return DestinationState.delete().where(DestinationState.destination == key).execute() > 0


def replay_failed(send_id: int | None = None, destination: str | None = None, now: datetime | None = None) -> int:
    """Queue failed sends again with a fresh retry budget; the dispatcher rebuilds their payloads."""
    query = Send.update(status=PENDING, retries=0, reason=None, finished_at=None, next_attempt_at=now or utcnow())
    where = Send.status == FAILED
    where &= (Send.id == send_id) if send_id is not None else (Send.destination == destination)
    return query.where(where).execute()


def counts_by_status(destination: str) -> dict[str, int]:
    rows = (Send.select(Send.status, fn.COUNT(Send.id).alias("n"))
            .where(Send.destination == destination).group_by(Send.status))
    return {row.status: row.n for row in rows}



def renew(sends: list[Send], until: datetime) -> None:
    """Before each HTTP call, extend the lease of every row still held under these sends' claim.

    The whole claim, not only this request's rows: the rest of a batch split waits its turn.
    """
    for send in sends:
        send.lease_until = until
    (Send.update(lease_until=until)
     .where(Send.lease_owner.in_(list({s.lease_owner for s in sends})) & (Send.status == SENDING)).execute())


def put_back(sends: list[Send], now: datetime) -> None:
    """Return claimed sends that were never tried, counting nothing."""
    for send in sends:
        reschedule(send, now)
