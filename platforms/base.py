"""What every platform module shares: its shape, what it declares to ingest, the five outcomes, Skip, match
quality, the HTTP seam and the helpers of more than one platform."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Callable, Hashable, Mapping, Protocol, runtime_checkable

import requests

from ingest.canonical import CanonicalEvent, utcnow
from ingest.hashing import hashed, sha256
from outbound import Http  # noqa: F401 - re-exported: every platform sends through it

if TYPE_CHECKING:
    from config import Destination

SENT, RETRY, THROTTLE, SETUP, REJECTED = "sent", "retry", "throttle", "setup", "rejected"
EXCERPT_CHARS = 2000


class Skip(Exception):
    """The platform cannot take this event (no identifier, no user agent, …): skip it with the reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Outcome:
    """A platform's verdict on one send, classified into one of the five kinds above."""

    kind: str
    status: int | None = None
    error: str | None = None
    trace_id: str | None = None
    response: str | None = None
    retry_after: float | None = None
    whole_batch: bool = False  # rejected because of *some* event in the batch: split to find it


@dataclass(frozen=True)
class Verdict:
    """What one harmless call with a destination's credentials showed: OK, or the platform's own error."""

    ok: bool
    message: str


# --- what a platform needs from ingest -----------------------------------------------------------------------

@dataclass(frozen=True)
class Form:
    """A shape a value must have, matched whole; `text` names it in the note of a value dropped for it."""

    pattern: re.Pattern[str]
    text: str


@dataclass(frozen=True)
class Cookie:
    """A browser cookie that carries a click id; `wraps`: it holds more, and its pattern's first group is the id."""

    name: str
    wraps: Form | None = None


@dataclass(frozen=True)
class Minted:
    """A click id ingest makes itself from a URL parameter, once, when it first sees the click."""

    param: str
    mint: Callable[[str, datetime], str]  # (the parameter's value, when the click was first seen) -> the click id
    carries: Callable[[str, str], bool]  # (a click id made earlier, the parameter's value) -> made for this click?


@dataclass(frozen=True)
class Rival:
    """A click id the platform takes only instead of this one: given both, ingest keeps neither."""

    key: str
    why: str


@dataclass(frozen=True)
class ClickId:
    """A click id or browser id a platform reads, kept byte for byte at ingest as `click_ids[key]`."""

    key: str
    params: tuple[str, ...] = ()  # URL query parameters an ad click appends that carry it
    aliases: tuple[str, ...] = ()  # other field names a dialect's body may give it
    cookies: tuple[Cookie, ...] = ()
    form: Form | None = None  # a stricter shape than an opaque id
    minted: Minted | None = None
    rival: Rival | None = None
    ad_click: bool = False  # set by an ad click, not by a tag: a visit that carries it came from an ad
    attribution: bool = False  # ties a Telegram conversion, which has no browser of its own, to this platform's ad


@dataclass(frozen=True)
class Flavour:
    """A platform's own form of an identity field, hashed at ingest and stored as `identity[key]`."""

    key: str
    field: str  # the identity field it is a form of: email, phone, first_name, …
    form: Callable[[str], str]  # the field's normalized value -> the platform's form of it


@runtime_checkable
class Platform(Protocol):
    """The one shape of a platform module; platforms/__init__.py registers them."""

    NAME: str
    LABEL: str
    BATCH_LIMIT: int
    MAX_AGE: timedelta
    WEIGHTS: Mapping[str, float]
    CLICK_IDS: tuple[ClickId, ...]
    FLAVOURS: tuple[Flavour, ...]

    def check_settings(self, dest: Destination) -> list[tuple[str, str]]: ...

    def url(self, dest: Destination) -> str: ...

    def build(self, event: CanonicalEvent, dest: Destination) -> dict: ...

    def identifiers(self, item: dict) -> list[str]: ...

    def request_key(self, item: dict) -> Hashable: ...

    def send(self, items: list[dict], dest: Destination, http: Http) -> list[Outcome]: ...

    def verify(self, dest: Destination, http: Http) -> Verdict: ...


# --- what platforms share when they build, send and classify -----------------------------------------------

def missing_settings(dest, always: tuple = (), credentials: tuple = (), in_test: tuple = (),
                     optional: tuple = ()) -> list[tuple[str, str]]:
    """The keys a destination lacks: `always`; `credentials` unless it is dry; `in_test` in test mode;
    and any of these or of `optional` that is given as something other than text (a list, a mapping)."""
    s = dest.settings
    wrong = {key: _kind(s[key]) for key in (*always, *credentials, *in_test, *optional)
             if s.get(key) is not None and s.get(key) != "" and not isinstance(s.get(key), str)}
    problems = [(key, f"must be text, got {kind}") for key, kind in wrong.items()]  # and not "required" too
    problems += [(key, "required") for key in always if key not in wrong and not s.get(key)]
    if dest.mode != "dry":
        problems += [(key, f"required in {dest.mode} mode") for key in credentials if key not in wrong and not s.get(key)]
    if dest.mode == "test":
        problems += [(key, "required in test mode") for key in in_test if key not in wrong and not s.get(key)]
    return problems


def _kind(value: object) -> str:
    """What a setting was given as, in YAML's words; never the value itself: it may be a secret."""
    if isinstance(value, bool):
        return f"{str(value).lower()}; quote it"
    return {dict: "a mapping", list: "a list"}.get(type(value), "a number")


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


def json_object(response: requests.Response) -> dict | None:
    """The answer's body as a JSON object; None for anything else (a proxy's HTML page, a JSON array)."""
    try:
        answer = response.json()
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def unreadable(response: requests.Response, owner: str, trace_id: str | None = None) -> Outcome:
    """An answer that is not the platform's JSON, judged by its HTTP status alone; `owner`: "Meta's"."""
    status = response.status_code
    common = {"status": status, "error": f"HTTP {status} with a body that is not {owner} JSON", "trace_id": trace_id,
              "response": excerpt(response.text)}
    if status == 429:  # a proxy's or CDN's rate limit: waiting helps, pausing would not
        return Outcome(THROTTLE, retry_after=retry_after_seconds(response.headers), **common)
    return Outcome(RETRY if status >= 500 else SETUP, **common)


def google_email(email: str) -> str:
    """A normalized email in Google's form: the dots of a gmail.com or googlemail.com local part removed."""
    # "Remove all periods (.) that precede the domain name in gmail.com and googlemail.com email addresses";
    # +tags stay (https://developers.google.com/google-ads/api/docs/conversions/upload-identifiers).
    local, _, domain = email.rpartition("@")
    return f"{local.replace('.', '')}@{domain}" if domain in ("gmail.com", "googlemail.com") else email


def spaceless_city(city: str) -> str:
    """A normalized plain city in the form Meta and Snapchat hash: without spaces."""
    return city.replace(" ", "")


def hashed_user_data(event: CanonicalEvent) -> dict:
    """The `user_data` Meta and Snapchat share: hashed identity and location, external id, IP and user agent."""
    ids, loc = event.identity, event.location
    data: dict = {key: [ids[key]] for key in ("em", "ph", "fn", "ln", "ge", "db") if key in ids}
    location = {
        "ct": ids.get("ct") or (sha256(spaceless_city(loc["city"])) if loc.get("city") else None),
        "st": ids.get("st") or (sha256(loc["state"]) if loc.get("state") else None),
        "zp": ids.get("zp") or (sha256(loc["zip"]) if loc.get("zip") else None),
        "country": ids.get("country") or (sha256(loc["country"]) if loc.get("country") else None),
    }
    data.update({key: [value] for key, value in location.items() if value})
    if event.external_id:
        data["external_id"] = [hashed(event.external_id)]
    if event.ip:
        data["client_ip_address"] = event.ip  # never hashed: both match on the address itself
    if event.user_agent:
        data["client_user_agent"] = event.user_agent
    return data


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


# --- verifying credentials: one harmless call -----------------------------------------------------------------

PROBE_ID = "postback-credentials-check"


def probe_event(dest: Destination, now: datetime) -> CanonicalEvent:
    """A made-up Lead that any platform could match, for a call that is only checked or only shown as a test."""
    return CanonicalEvent(
        site_id=dest.site_id, dialect="console", event_name="Lead", standard_name="Lead",
        event_id=f"{PROBE_ID}-{int(now.timestamp())}", occurred_at=now, received_at=now, external_id=PROBE_ID,
        anonymous_id=PROBE_ID, identity={"em": sha256("credentials-check@example.com")}, ip="127.0.0.1",
        user_agent="Postback credentials check", page_url="https://example.com/postback-credentials-check")


def verdict(outcome: Outcome) -> Verdict:
    """An outcome as a verdict: sent is OK; anything else is the platform's own error."""
    if outcome.kind == SENT:
        return Verdict(True, "OK")
    return Verdict(False, outcome.error or f"HTTP {outcome.status}")


def probe(build: Callable, send: Callable, dest: Destination, http: Http) -> Verdict:
    """Send the probe event as the destination does in test mode, where the platform only checks or only shows it."""
    now = utcnow()
    testing = replace(dest, mode="test")
    try:
        item = build(probe_event(dest, now), testing)
    except Skip as skip:
        return Verdict(False, skip.reason)
    return verdict(send([item], testing, http)[0])
