"""Storage verbs for sends: claim with a lease, record each outcome, pause, resume, replay.

Each write is one short transaction, begun in its turn (models.writing); none is ever held across an HTTP call.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import NamedTuple

from ingest.canonical import CanonicalEvent, utcnow
from config import Destination
from models import (
    CANONICAL_COLUMNS, FAILED, FINAL, PENDING, SENDING, SKIPPED, DestinationState, Event, Send, canonical_event,
    database, for_update, padded, update_rows, writing,
)
from ingest.privacy import payload_with_reduced_ip, reduce_ip


class Claimed(NamedTuple):
    """A claimed send as the dispatcher needs it: its claim, its counters, and its event (None once the payload is
    built: only `ip` is read after that, for the IP reduction of `record`)."""

    id: int
    event_id: int
    status: str
    attempts: int
    retries: int
    lease_owner: str
    lease_until: datetime
    ip: str | None
    event: CanonicalEvent | None = None


def claim(destination: str, limit: int, now: datetime, lease: timedelta) -> list[Claimed]:
    """Lease up to `limit` due sends of one destination; a row is only ever claimed by one owner.

    One UPDATE whose WHERE re-checks `status = pending` is the compare-and-set: a racing claimer's
    statement matches no row this one took. On PostgreSQL the rows are picked `FOR UPDATE SKIP LOCKED`,
    so claimers on several nodes each take rows the others are not taking, instead of all racing for the
    same first ones. Each send comes with its event, read as tuples converted by each field's own
    `python_value` (model rows cost three times as much to build as the query takes).
    """
    owner = uuid.uuid4().hex
    due = for_update(_due(destination, now).select(Send.id).order_by(Send.next_attempt_at, Send.id).limit(limit),
                     skip_locked=True)
    with writing():
        # Picked first, then updated: as a subquery of the UPDATE, PostgreSQL may run the pick more than once
        # and lease more rows than `limit`.
        ids = [send_id for send_id, in due.tuples()]
        if not ids:
            return []
        (Send.update(status=SENDING, lease_owner=owner, lease_until=now + lease)
         .where(Send.id.in_(padded(ids)) & (Send.status == PENDING)).execute())
    # Read back by id: lease_owner has no index, and alone it made every claim read the whole sends table, a
    # claim taking longer with every send stored (seconds at a few million).
    rows = (Send.select(*CLAIM_COLUMNS, *CANONICAL_COLUMNS).join(Event)
            .where(Send.id.in_(padded(ids)) & (Send.lease_owner == owner) & (Send.status == SENDING))
            .order_by(Send.id).tuples())
    return [_claimed(row) for row in rows.iterator()]  # iterated: peewee keeps no second copy of the rows


CLAIM_COLUMNS = (Send.id, Send.event, Send.status, Send.attempts, Send.retries, Send.lease_owner, Send.lease_until)
_IP = list(CanonicalEvent.__dataclass_fields__).index("ip")


def _claimed(row: tuple) -> Claimed:
    """A claimed send from its tuple: the send's columns, then its event's (as Event.to_canonical builds it)."""
    send, values = row[:len(CLAIM_COLUMNS)], row[len(CLAIM_COLUMNS):]
    return Claimed(*send, values[_IP], canonical_event(values))


def any_due(destination: str, now: datetime) -> bool:
    """Whether a send of the destination is due and unclaimed (one another claimer is taking right now counts)."""
    return _due(destination, now).exists()


def _due(destination: str, now: datetime):
    return Send.select().where((Send.destination == destination) & (Send.status == PENDING)
                               & (Send.next_attempt_at <= now))


LEASE_LOST = "lease expired: the dispatcher stopped mid-send"

# A claimed send's new state, for `record`: the row as claimed, and the fields to set.
Change = tuple[Claimed, dict]


def release_expired(now: datetime, max_attempts: int, ip_policy: str) -> int:
    """Sends whose lease ran out (their dispatcher died mid-send) go back to pending, counted as a retry.

    The platform may have received them; it deduplicates on event_id. A send whose dispatcher keeps
    dying (say, out of memory on it) fails once its retries are spent, like any other retry.
    """
    expired = (Send.status == SENDING) & (Send.lease_until < now)
    spent = expired & (Send.retries + 1 >= max_attempts)
    with writing():
        given_up = list(Send.select(Send.event, Event.ip).join(Event).where(spent).tuples())  # (event id, its IP)
        (Send.update(status=FAILED, lease_owner=None, lease_until=None, finished_at=now,
                     attempts=Send.attempts + 1, retries=Send.retries + 1, last_error=LEASE_LOST,
                     reason=f"gave up after {max_attempts} attempts: {LEASE_LOST}")
         .where(spent).execute())
        _reduce(_reductions(dict(given_up), ip_policy))
        released = (Send.update(status=PENDING, lease_owner=None, lease_until=None, next_attempt_at=now,
                                attempts=Send.attempts + 1, retries=Send.retries + 1, last_error=LEASE_LOST)
                    .where(expired).execute())
    return released + len(given_up)


def finishing(send: Claimed, status: str, now: datetime, **fields) -> Change:
    """The change that ends a claimed send as sent, failed or skipped."""
    return send, {"status": status, "finished_at": now, **fields}


def rescheduling(send: Claimed, at: datetime, **fields) -> Change:
    """The change that puts a claimed send back to pending until `at`."""
    return send, {"status": PENDING, "next_attempt_at": at, **fields}


def record(changes: list[Change], ip_policy: str) -> int:
    """Write many claimed sends' new states in one short transaction; returns how many were still claimed.

    The events whose sends are then all final lose their full IP, from the IP the claim loaded with
    each send (`send.ip`), so no event row is read again. A payload kept on a send never holds the full IP,
    whatever its status: the console shows the reduced one. Values are converted before the transaction begins:
    it holds SQLite's one write lock only for a few statements.
    """
    changes = [(send, {**values, "payload": payload_with_reduced_ip(values["payload"], send.ip, ip_policy)})
               if values.get("payload") is not None else (send, values) for send, values in changes]
    updates = _updates(changes)
    reductions = _reductions({send.event_id: send.ip for send, values in changes if values["status"] in FINAL},
                             ip_policy)
    with writing():
        changed = _apply(updates)
        _reduce(reductions)
    return changed


def finish(send: Claimed, status: str, now: datetime, ip_policy: str, **fields) -> bool:
    """End a claimed send as sent, failed or skipped; the event's full IP goes once nothing can be sent."""
    return record([finishing(send, status, now, **fields)], ip_policy) == 1


# A claimed send is still this claim's while all three match: a lease that expired meanwhile is left alone.
CLAIMED = ["id", "lease_owner", "status"]


def _updates(changes: list[Change]) -> dict[tuple[str, ...], list[list]]:
    """The changes as UPDATE rows (claim, then new values as stored), grouped by the columns they set."""
    shapes: dict[tuple[str, ...], list[list]] = {}
    for send, values in changes:
        values = {**values, "lease_owner": None, "lease_until": None}
        fields = [Send._meta.fields[name] for name in values]
        shapes.setdefault(tuple(field.column_name for field in fields), []).append(
            [send.id, send.lease_owner, SENDING, *(field.db_value(v) for field, v in zip(fields, values.values()))])
    return shapes


def _apply(updates: dict[tuple[str, ...], list[list]]) -> int:
    return sum(update_rows("sends", CLAIMED, list(columns), rows) for columns, rows in updates.items())


def _reductions(ips: dict[int, str | None], ip_policy: str) -> list[list]:
    """(event id, IP as loaded, reduced IP) for each event whose IP `_reduce` may cut once its sends are final."""
    return [[event_id, ip, reduced] for event_id, ip in ips.items() if (reduced := reduce_ip(ip, ip_policy)) != ip]


def _reduce(reductions: list[list]) -> None:
    """Reduce the IP of those events none of whose sends is still open, set-based.

    The UPDATE re-checks the IP it was computed from: one erased or reduced meanwhile stays as it is.
    """
    p = database.param
    update_rows("events", ["id", "ip"], ["ip"], reductions, params=FINAL,
                where=f"NOT EXISTS (SELECT 1 FROM sends WHERE sends.event_id = events.id "
                      f"AND sends.status NOT IN ({p}, {p}, {p}))")


def pause(dest: Destination, reason: str, now: datetime) -> None:
    """A setup error: the destination waits until its config changes or an admin resumes it."""
    with writing():
        state = {"paused_reason": reason, "paused_at": now, "fingerprint": dest.fingerprint()}
        (DestinationState.insert(destination=dest.key, **state)
         .on_conflict(conflict_target=[DestinationState.destination], update=state).execute())


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
    with writing():
        return DestinationState.delete().where(DestinationState.destination == key).execute() > 0


def replay_failed(send_id: int | None = None, destination: str | None = None, now: datetime | None = None) -> int:
    """Queue failed sends again with a fresh retry budget; the dispatcher rebuilds their payloads."""
    query = Send.update(status=PENDING, retries=0, reason=None, finished_at=None, next_attempt_at=now or utcnow())
    where = Send.status == FAILED
    where &= (Send.id == send_id) if send_id is not None else (Send.destination == destination)
    with writing():
        return query.where(where).execute()


def renew(sends: list[Claimed], until: datetime) -> None:
    """Before each HTTP call, extend the lease of every row still held under these sends' claim.

    The whole claim, not only this request's rows: the rest of a batch split waits its turn.
    """
    with writing():
        (Send.update(lease_until=until)
         .where(Send.lease_owner.in_(list({s.lease_owner for s in sends})) & (Send.status == SENDING)).execute())


def put_back(sends: list[Claimed], now: datetime) -> None:
    """Return claimed sends that were never tried, counting nothing."""
    if not sends:
        return
    updates = _updates([rescheduling(send, now) for send in sends])
    with writing():
        _apply(updates)


DROPPED = "destination disabled or removed from the config"


def skip_dropped(destinations: list[str], now: datetime, ip_policy: str) -> int:
    """Pending sends of a destination no longer enabled end as skipped, instead of waiting forever."""
    dropped = (Send.status == PENDING) & Send.destination.not_in(destinations)
    with writing():
        ips = dict(Send.select(Send.event, Event.ip).join(Event).where(dropped).tuples())
        skipped = Send.update(status=SKIPPED, reason=DROPPED, finished_at=now).where(dropped).execute()
        _reduce(_reductions(ips, ip_policy))
    return skipped
