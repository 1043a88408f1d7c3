"""What every platform module shares: the five outcomes, Skip, match quality, the HTTP seam (from outbound)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import requests

from outbound import Http  # noqa: F401 - re-exported: every platform sends through it

SENT, RETRY, THROTTLE, SETUP, REJECTED = "sent", "retry", "throttle", "setup", "rejected"
EXCERPT_CHARS = 2000


class Skip(Exception):
    """The platform cannot take this event (no identifier, no user agent, …): skip it with the reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Outcome:
    """A platform's verdict on one send, classified into one of SPEC §5's five kinds."""

    kind: str
    status: int | None = None
    error: str | None = None
    trace_id: str | None = None
    response: str | None = None
    retry_after: float | None = None
    whole_batch: bool = False  # rejected because of *some* event in the batch: split to find it


def missing_settings(dest, always: tuple = (), credentials: tuple = (), in_test: tuple = ()) -> list[tuple[str, str]]:
    """The keys a destination lacks: `always`; `credentials` unless it is dry; `in_test` in test mode."""
    s = dest.settings
    problems = [(key, "required") for key in always if not s.get(key)]
    if dest.mode != "dry":
        problems += [(key, f"required in {dest.mode} mode") for key in credentials if not s.get(key)]
    if dest.mode == "test":
        problems += [(key, "required in test mode") for key in in_test if not s.get(key)]
    return problems


def everyone(outcome: Outcome, count: int) -> list[Outcome]:
    return [outcome] * count


def excerpt(text: str | None) -> str | None:
    return None if text is None else text[:EXCERPT_CHARS]


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def match_quality(identifiers: list[str], weights: Mapping[str, float]) -> dict:
    """Score 0–10: the sum of the platform's weights for the identifiers present, capped at 10."""
    score = min(10.0, sum(weights.get(name, 0.0) for name in identifiers))
    return {"score": round(score, 1), "identifiers": identifiers}


def network_failure(exc: requests.RequestException, count: int, timeout: float) -> list[Outcome]:
    """Timeouts and connection errors are transient: the platform may come back."""
    if isinstance(exc, requests.Timeout):
        error = f"no answer within {timeout:g} s"
    else:
        error = f"connection failed ({type(exc).__name__})"
    return everyone(Outcome(RETRY, error=error), count)
