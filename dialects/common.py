"""What every dialect parser shares: the request's client context, typed-field readers,
personal-data filtering of properties, URLs and user ids, and bot detection (click ids: ingest/clickids.py)."""
from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Mapping
from urllib.parse import SplitResult, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from user_agents import parse as parse_user_agent

from dialects.errors import FieldError
from ingest.canonical import fold
from ingest import personal
from ingest.iso import currency_code

MAX_ID_CHARS = 255
# Amounts above this lose their cents as doubles (2**53 ≈ 9.007e15); no order is worth more.
MAX_VALUE = 1e13
PII_PROPERTY_KEYS = frozenset(fold(k) for k in (
    "email", "e_mail", "mail", "phone", "phone_number", "mobile", "tel", "name", "first_name", "firstname",
    "last_name", "lastname", "full_name", "address", "street", "ip", "ip_address", "birthday", "dob",
    "date_of_birth", "email_address", "emailaddress", "phone_no", "mobile_phone", "cell", "cellphone",
))


@dataclass(frozen=True)
class ClientContext:
    """What the HTTP request says about the customer's browser."""

    ip: str | None = None
    user_agent: str | None = None
    referrer: str | None = None
    language: str | None = None


def new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex}"


@lru_cache(maxsize=4096)
def is_bot(user_agent: str | None) -> bool:
    """Cached: a user-agent parse costs ~0.7 ms and the same few agents repeat."""
    return bool(user_agent) and parse_user_agent(user_agent).is_bot


def item_list(raw: Any, notes: list[str]) -> list:
    """An optional `items` field: the list as given, or [] (with a note when it is not a list)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        notes.append("items: dropped, must be a list of objects")
        return []
    return raw


def present(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def read_text(body: Mapping, key: str) -> str | None:
    """Loose text: numbers are coerced, anything else that is not text counts as absent."""
    value = body.get(key)
    if isinstance(value, bool) or not present(value):
        return None
    if isinstance(value, (int, float)):
        return number_text(value) if finite(value) else None
    return value.strip() if isinstance(value, str) else None


def read_id(body: Mapping, key: str) -> str | None:
    value = body.get(key)
    if not present(value):
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or not finite(value):
        raise FieldError(key, "must be a string or number")
    text = number_text(value) if isinstance(value, (int, float)) else value.strip()
    if len(text) > MAX_ID_CHARS:
        raise FieldError(key, f"must be at most {MAX_ID_CHARS} characters")
    return text


def read_value(body: Mapping, key: str, at_most: float = MAX_VALUE) -> float | None:
    """A finite, non-negative number (numeric strings accepted), refused above `at_most`."""
    value = body.get(key)
    if not present(value):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise FieldError(key, "must be a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldError(key, "must be a number")
    try:
        value = float(value)
    except OverflowError:  # a JSON integer too big for a float
        raise FieldError(key, "must be a number") from None
    if not math.isfinite(value):
        raise FieldError(key, "must be a number")
    if value < 0:
        raise FieldError(key, "must not be negative")
    if value > at_most:
        raise FieldError(key, f"must be at most {at_most:.0f}")
    return value


def read_currency(body: Mapping, key: str) -> str | None:
    value = body.get(key)
    if not present(value):
        return None
    code = currency_code(value) if isinstance(value, str) else None
    if code is None:
        raise FieldError(key, "must be an ISO 4217 currency code such as USD")
    return code


def read_bool(body: Mapping, key: str) -> bool | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise FieldError(key, "must be true or false")


def read_timestamp(body: Mapping, key: str) -> datetime | None:
    value = body.get(key)
    if not present(value):
        return None
    if not isinstance(value, str):
        raise FieldError(key, "must be an ISO 8601 date-time")
    try:
        moment = datetime.fromisoformat(value.strip())
        return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    except (ValueError, OverflowError):  # OverflowError: an offset that pushes it past year 1 or 9999
        raise FieldError(key, "must be an ISO 8601 date-time") from None


def split_url(url: str) -> SplitResult | None:
    """The URL's parts; None when it cannot be split (an unclosed IPv6 bracket such as `http://[::1`)."""
    try:
        return urlsplit(url)
    except ValueError:
        return None


def clean_url(value: Any, key: str, notes: list[str], country: str | None = None) -> str | None:
    """An http(s) URL without the personal data it carries (`url_without_pii`); None, with a reason, for anything else."""
    if not present(value):
        return None
    if isinstance(value, str):
        parts = split_url(value.strip())
        if parts is not None and parts.scheme in ("http", "https") and parts.netloc:
            return url_without_pii(value.strip(), key, notes, country)
    notes.append(f"{key}: dropped, not an http(s) URL")
    return None


REDACTED = "redacted"


def url_without_pii(url: str | None, key: str, notes: list[str], country: str | None = None) -> str | None:
    """The URL without the query parameters whose value is an email address or phone number (each dropped with a
    reason), such path segments and fragment replaced by `redacted`, and no user name or password."""
    parts = split_url(url) if url else None
    if parts is None:
        return url
    netloc, query, fragment = parts.netloc, parts.query, parts.fragment
    if "@" in netloc:
        netloc = netloc.rsplit("@", 1)[1]
        notes.append(f"{key}: user name dropped from the URL")
    pairs = parse_qsl(query, keep_blank_values=True)
    kept = []
    for name, value in pairs:
        found = personal.kind(value, country) or personal.kind(name, country)
        if found:
            notes.append(f"{key}: query parameter {_safe_name(name, country)!r} dropped, its value is {found}")
        else:
            kept.append((name, value))
    if len(kept) < len(pairs):
        query = urlencode(kept)
    segments = parts.path.split("/")
    redacted = [REDACTED if personal.kind(unquote(segment), country) else segment for segment in segments]
    if redacted != segments:
        notes.append(f"{key}: a path segment that is an email address or phone number redacted")
    if fragment and (personal.kind(unquote(fragment), country)
                     or any(personal.kind(v, country) for _, v in parse_qsl(fragment))):
        fragment = REDACTED
        notes.append(f"{key}: fragment redacted, it holds an email address or phone number")
    if (netloc, query, redacted, fragment) == (parts.netloc, parts.query, segments, parts.fragment):
        return url
    return urlunsplit((parts.scheme, netloc, "/".join(redacted), query, fragment))


def _safe_name(name: str, country: str | None) -> str:
    """A key as a reason may quote it: not when the key itself is personal data."""
    return "(personal data)" if personal.kind(name, country) else name


def kept_user_id(value: str | None, key: str, notes: list[str], country: str | None = None) -> str | None:
    """A shop's user id as it is kept: in clear, unless its value is an email address or phone number, which is
    hashed like any personal data (docs/privacy.md)."""
    if value is None:
        return None
    digest = personal.hashed_id(value, country)
    if digest is None:
        return value
    notes.append(f"{key}: hashed, its value is {personal.kind(value, country)}; "
                 "a destination that takes only a plain user id gets none")
    return digest


MAX_PROPERTY_DEPTH = 16


def custom_properties(raw: Mapping[str, Any], notes: list[str], path: str = "", depth: int = 0,
                      country: str | None = None) -> dict[str, Any]:
    """Unknown keys are kept as properties, except (at any depth) keys that name personal data and values that are
    personal data, whatever their key (`ingest/personal.py`): those are dropped with a reason."""
    kept = {}
    for key, value in raw.items():
        name = f"{path}{_safe_name(str(key), country)}"
        if fold(str(key)) in PII_PROPERTY_KEYS:
            notes.append(f"{name}: dropped, a custom property named like personal data is never stored")
        elif found := personal.kind(str(key), country):
            notes.append(f"{name}: dropped, its key is {found}")
        elif not _dropped(value, name, notes, country):
            kept[str(key)] = _without_pii(value, name, notes, depth + 1, country)
    return kept


def _without_pii(value: Any, path: str, notes: list[str], depth: int, country: str | None) -> Any:
    """A nested object's or list's personal data would otherwise reach the database raw."""
    if isinstance(value, (Mapping, list)) and depth > MAX_PROPERTY_DEPTH:
        notes.append(f"{path}: dropped, nested deeper than {MAX_PROPERTY_DEPTH} levels")
        return None
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return url_without_pii(value, path, notes, country)
    if isinstance(value, Mapping):
        return custom_properties(value, notes, f"{path}.", depth, country)
    if isinstance(value, list):
        return [_without_pii(item, f"{path}[{i}]", notes, depth + 1, country)
                for i, item in enumerate(value) if not _dropped(item, f"{path}[{i}]", notes, country)]
    return value


def _dropped(value: Any, path: str, notes: list[str], country: str | None) -> bool:
    """Whether a value is personal data itself, or a URL that holds some: dropped, with a reason (a URL's
    personal parameters alone are dropped, `url_without_pii`, by the caller)."""
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        value = url_without_pii(value, path, [], country)
    found = personal.kind(value, country)
    if found:
        notes.append(f"{path}: dropped, its value is {found}")
    return bool(found)


def number_text(value: int | float) -> str:
    """A finite JSON number as an id's text: 94.0 reads as "94"."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def finite(value: Any) -> bool:
    """False for the NaN and ±Infinity a JSON reader lets through as bare tokens: never an id or a value."""
    return not isinstance(value, float) or math.isfinite(value)
