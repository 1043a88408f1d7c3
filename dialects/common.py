"""What every dialect parser shares: the request's client context, typed-field readers,
PII-named property filtering and bot detection (click ids: ingest/clickids.py)."""
from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any, Mapping
from urllib.parse import SplitResult, urlsplit

from user_agents import parse as parse_user_agent

from dialects.errors import FieldError
from ingest.canonical import fold
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


def clean_url(value: Any, key: str, notes: list[str]) -> str | None:
    if not present(value):
        return None
    if isinstance(value, str):
        parts = split_url(value.strip())
        if parts is not None and parts.scheme in ("http", "https") and parts.netloc:
            return value.strip()
    notes.append(f"{key}: dropped, not an http(s) URL")
    return None


MAX_PROPERTY_DEPTH = 16


def custom_properties(raw: Mapping[str, Any], notes: list[str], path: str = "", depth: int = 0) -> dict[str, Any]:
    """Unknown keys are kept as properties, except keys that name personal data (at any depth)."""
    kept = {}
    for key, value in raw.items():
        if fold(str(key)) in PII_PROPERTY_KEYS:
            notes.append(f"{path}{key}: dropped, a custom property named like personal data is never stored")
        else:
            kept[str(key)] = _without_pii(value, f"{path}{key}", notes, depth + 1)
    return kept


def _without_pii(value: Any, path: str, notes: list[str], depth: int) -> Any:
    """A nested object's PII-named keys would otherwise reach the database raw."""
    if isinstance(value, (Mapping, list)) and depth > MAX_PROPERTY_DEPTH:
        notes.append(f"{path}: dropped, nested deeper than {MAX_PROPERTY_DEPTH} levels")
        return None
    if isinstance(value, Mapping):
        return custom_properties(value, notes, f"{path}.", depth)
    if isinstance(value, list):
        return [_without_pii(item, f"{path}[{i}]", notes, depth + 1) for i, item in enumerate(value)]
    return value


def number_text(value: int | float) -> str:
    """A finite JSON number as an id's text: 94.0 reads as "94"."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def finite(value: Any) -> bool:
    """False for the NaN and ±Infinity a JSON reader lets through as bare tokens: never an id or a value."""
    return not isinstance(value, float) or math.isfinite(value)
