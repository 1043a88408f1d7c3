"""What an operator sees and does about sends that wait: destinations paused or backing off, and retry-now."""
from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from peewee import fn

from models import PENDING, DestinationState, Send, writing


class Waiting(NamedTuple):
    """A destination's sends that wait past now, and the first of them to come due."""

    destination: str
    sends: int
    next_attempt_at: datetime


def backing_off(now: datetime) -> list[Waiting]:
    """Per destination, its pending sends not due yet (backing off after a retry or a throttle), soonest first."""
    rows = (Send.select(Send.destination, fn.COUNT(Send.id), fn.MIN(Send.next_attempt_at))
            .where((Send.status == PENDING) & (Send.next_attempt_at > now))
            .group_by(Send.destination).order_by(Send.destination).tuples())
    return [Waiting(destination, n, Send.next_attempt_at.python_value(first)) for destination, n, first in rows]


def paused() -> list[DestinationState]:
    """Every paused destination, with why and since when."""
    return list(DestinationState.select().order_by(DestinationState.destination))


def retry_now(destination: str, now: datetime) -> int:
    """Make the destination's backing-off sends due now (an outage is over); how many. Counts no attempt."""
    with writing():
        return (Send.update(next_attempt_at=now)
                .where((Send.destination == destination) & (Send.status == PENDING) & (Send.next_attempt_at > now))
                .execute())
