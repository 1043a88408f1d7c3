"""One log line per change of a destination's state: outage begun or recovered, throttled, paused, sends given up."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from models import FAILED
from platforms.base import RETRY, SETUP, THROTTLE, Outcome

log = logging.getLogger(__name__)

OK, OUTAGE, THROTTLED, PAUSED = "ok", "outage", "throttled", "paused"


@dataclass
class _State:
    name: str
    since: datetime
    sends: int = 0  # sends that met this state, counted until it changes


@dataclass
class Health:
    """What the dispatcher last saw of each destination, so it logs a change once instead of every batch."""

    states: dict[str, _State] = field(default_factory=dict)
    slow: set[str] = field(default_factory=set)  # destinations already logged as slower than timeout_seconds

    def observe(self, destination: str, outcomes: list[Outcome], changes: list[tuple], now: datetime) -> None:
        """Take one request's outcomes; log when the destination's state changes, and any sends given up."""
        given_up = sum(1 for _, values in changes
                       if values["status"] == FAILED and str(values.get("reason", "")).startswith("gave up"))
        if given_up:
            log.warning("destination gave up sends", extra={"destination": destination, "sends": given_up,
                                                            "error": _first_error(outcomes, RETRY)})
        name = state_of(outcomes)
        before = self.states.get(destination) or _State(OK, now)
        if name == before.name:
            before.sends += len(outcomes)
            self.states[destination] = before
            return
        self.states[destination] = _State(name, now, len(outcomes))
        extra = {"destination": destination, "sends": len(outcomes)}
        if name == OK:
            log.info(f"destination recovered from {before.name}",
                     extra={**extra, "sends": before.sends, "after_seconds": round((now - before.since).total_seconds())})
        elif name == OUTAGE:
            log.warning("destination outage begun", extra={**extra, "error": _first_error(outcomes, RETRY)})
        elif name == THROTTLED:
            waits = [o.retry_after for o in outcomes if o.kind == THROTTLE and o.retry_after is not None]
            log.warning("destination throttled", extra={**extra, "error": _first_error(outcomes, THROTTLE),
                                                        "retry_after_seconds": max(waits) if waits else None})
        else:
            log.warning("destination paused", extra={**extra, "error": _first_error(outcomes, SETUP)})


def state_of(outcomes: list[Outcome]) -> str:
    """Paused on a setup error, throttled on a throttle, an outage when every send is to be retried, else ok."""
    kinds = {o.kind for o in outcomes}
    if SETUP in kinds:
        return PAUSED
    if THROTTLE in kinds:
        return THROTTLED
    if kinds == {RETRY}:
        return OUTAGE
    return OK


def _first_error(outcomes: list[Outcome], kind: str) -> str | None:
    return next((o.error for o in outcomes if o.kind == kind), None)
