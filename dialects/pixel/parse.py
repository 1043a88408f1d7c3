"""PitchTarget pixel `GET /{app_token}/{event|revenue}.gif`: query and `params` into the canonical event (docs/dialects/pixel.md)."""
from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from ingest.canonical import CanonicalEvent, standard_name
from config import Site
from dialects.common import (
    ClientContext, FieldError, clean_url, custom_properties, is_bot,
    new_event_id, present, read_bool, read_currency, read_id,
)
from ingest import clickids
from ingest.identity import normalize_identity

DIALECT = "pixel"
CATEGORIES = ("event", "revenue")
IDENTITY_FIELDS = ("email", "phone", "first_name", "last_name", "city", "state", "zip", "country", "gender", "date_of_birth")
# Besides these, `params` carries click ids under their keys (ingest/clickids.py); `fbid` is read on its own.
OWN_PARAMS = frozenset(("uuid", "fbid", "access_token", "currency", "event_id", "consent", *IDENTITY_FIELDS))
MAX_TOKEN_CHARS = 255
MAX_DEPTH = 20  # deeper `params` is garbage, and would exhaust the stack of the recursive property filters
MAX_KEY_IN_NOTE = 40
VISITOR_ID_RE = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII without spaces: safe in a cookie
FBID_RE = re.compile(r"[0-9]{1,20}")
AMOUNT_RE = re.compile(r"[0-9]{1,15}")  # beyond 15 digits a float no longer holds every cent
BASE64_RE = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# ISO 4217 minor units where they are not 2: `amount` counts the currency's smallest unit.
MINOR_UNITS = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI",
                     "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("CLF", "UYW"), 4),
}
_FAILED = object()


@dataclass
class Hit:
    """One pixel call: its event, the visitor it belongs to, and what this call attaches to that visitor."""

    event: CanonicalEvent
    uuid: str
    identity: dict[str, str] = field(default_factory=dict)  # this call's hashes only
    fbid: str | None = None
    identity_fields: list[str] = field(default_factory=list)  # names of the identity fields this call sent
    new_visitor: bool = False  # no uuid came with the call: one was minted, so no profile can exist yet


def valid_visitor_id(value: Any) -> str | None:
    """A uuid (from `params` or the cookie) usable as a profile key, or None."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and VISITOR_ID_RE.fullmatch(value.strip()):
        return value.strip()
    return None


def new_visitor_id() -> str:
    return str(uuid.uuid4())


def decode_params(raw: str | None, limit: int) -> dict[str, Any]:
    """`params` as standard or URL-safe Base64 (padding optional) or URL-encoded JSON; a JSON object only."""
    if raw is None or not raw.strip():
        return {}
    if len(raw.encode("utf-8")) > limit:
        raise FieldError("params", f"longer than server.max_body_bytes ({limit} bytes)")
    decoded = _base64(raw)
    if decoded is not None:
        value = _json(decoded)
        if value is _FAILED:
            value = _json(raw.strip())  # "123" is both Base64 and JSON
        if value is _FAILED:
            raise FieldError("params", "Base64 that does not decode to UTF-8 JSON")
    else:
        value = _json(raw.strip())
        if value is _FAILED and raw.strip().startswith(("{", "[")):
            raise FieldError("params", "not valid JSON")
        if value is _FAILED:
            raise FieldError("params", "neither Base64 nor URL-encoded JSON")
    if not isinstance(value, dict):
        raise FieldError("params", "must be a JSON object")
    if _depth(value) > MAX_DEPTH:
        raise FieldError("params", f"nested deeper than {MAX_DEPTH} levels")
    if not _encodable(value):
        raise FieldError("params", "holds a lone \\u surrogate escape, which is not text")
    return value


def parse(category: str, args: Mapping[str, str], params: Mapping[str, Any], cookie_uuid: str | None,
          client: ClientContext, site: Site, consent_default: str, now: datetime) -> Hit:
    """Read one pixel call into the canonical event; raises FieldError for a missing or bad typed field."""
    token = _event_token(args.get("event_token"))
    notes: list[str] = []
    params = _vendor_keys(params, "", notes)
    try:
        currency = read_currency(params, "currency")
        event_id = read_id(params, "event_id") or new_event_id()
        consent = read_bool(params, "consent")
    except FieldError as exc:
        raise FieldError(f"params.{exc.field}", exc.why) from None
    cents = _amount(args.get("amount"), required=category == "revenue")
    if cents is not None:
        currency = currency or site.default_currency
    value = None if cents is None else cents / 10 ** MINOR_UNITS.get(currency or "", 2)

    given = _params_visitor(params, notes) or valid_visitor_id(cookie_uuid)
    visitor = given or new_visitor_id()
    identity = normalize_identity({k: params.get(k) for k in IDENTITY_FIELDS}, site.default_country)
    notes += identity.dropped
    fbid = _fbid(params.get("fbid"), notes)
    if present(params.get("access_token")):
        notes.append("access_token: dropped, Facebook access tokens are neither resolved nor stored")
    click_ids, click_notes = clickids.read(params, (clickids.KEY,))
    notes += click_notes
    page_url = clean_url(client.referrer, "Referer", notes, site.default_country)
    own = OWN_PARAMS | clickids.names((clickids.KEY,)).keys()
    properties = custom_properties({k: v for k, v in params.items() if k not in own}, notes,
                                   country=site.default_country)
    event = CanonicalEvent(
        site_id=site.id,
        dialect=DIALECT,
        event_name=token,
        # Every revenue.gif call is a purchase, whatever its token says (docs/dialects/pixel.md).
        standard_name="Purchase" if category == "revenue" else standard_name(token, site.event_map),
        event_id=event_id,
        occurred_at=now,
        received_at=now,
        anonymous_id=visitor,
        identity=dict(identity.hashes),
        location=identity.location,
        click_ids=click_ids,
        ip=client.ip,
        user_agent=client.user_agent,
        page_url=page_url,  # an <img> request's Referer is the page it sits on
        referrer=None,
        language=client.language,
        value=value,
        currency=currency,
        consent=consent if consent is not None else consent_default == "granted",
        properties=properties,
        notes=notes,
        is_bot=is_bot(client.user_agent),
    )
    sent = [name for name in IDENTITY_FIELDS if present(params.get(name))]
    return Hit(event, visitor, dict(identity.hashes), fbid, sent, new_visitor=given is None)


def _event_token(raw: str | None) -> str:
    if raw is None or not raw.strip():
        raise FieldError("event_token")
    token = raw.strip()
    if len(token) > MAX_TOKEN_CHARS:
        raise FieldError("event_token", f"must be at most {MAX_TOKEN_CHARS} characters")
    if CONTROL_RE.search(token):
        raise FieldError("event_token", "must not contain control characters")
    return token


def _amount(raw: str | None, required: bool) -> int | None:
    """`amount` in the currency's minor unit (cents): a whole, non-negative number."""
    if raw is None or not raw.strip():
        if required:
            raise FieldError("amount")
        return None
    if not AMOUNT_RE.fullmatch(raw.strip()):
        raise FieldError("amount", "must be a whole number of cents, such as 2500 for 25.00")
    return int(raw.strip())


def _params_visitor(params: Mapping[str, Any], notes: list[str]) -> str | None:
    raw = params.get("uuid")
    if not present(raw):
        return None
    visitor = valid_visitor_id(raw)
    if visitor is None:
        notes.append("uuid: dropped, must be printable text without spaces, at most 255 characters")
    return visitor


def _fbid(raw: Any, notes: list[str]) -> str | None:
    if not present(raw):
        return None
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        raw = str(raw)
    if isinstance(raw, str) and FBID_RE.fullmatch(raw.strip()):
        return raw.strip()
    notes.append("fbid: dropped, must be a numeric Facebook user id (usernames are not accepted)")
    return None


def _vendor_keys(value: Any, path: str, notes: list[str]) -> Any:
    """Drop keys starting with `$` or `_` or containing `.`, at any depth, as PitchTarget did."""
    if isinstance(value, Mapping):
        kept = {}
        for key, item in value.items():
            if key.startswith(("$", "_")) or "." in key:
                shown = key if len(key) <= MAX_KEY_IN_NOTE else key[:MAX_KEY_IN_NOTE] + "…"
                notes.append(f"params.{path}{shown}: dropped, keys starting with $ or _ or containing . are ignored")
            else:
                kept[key] = _vendor_keys(item, f"{path}{key}.", notes)
        return kept
    if isinstance(value, list):
        return [_vendor_keys(item, path, notes) for item in value]
    return value


def _base64(raw: str) -> bytes | None:
    """The decoded bytes when `raw` is Base64 of either alphabet, padded or not; else None."""
    # A '+' the page left unescaped arrives as a space (form decoding); Base64 itself has no spaces.
    text = raw.strip("\r\n\t").replace(" ", "+").replace("\n", "").replace("\r", "")
    if not BASE64_RE.fullmatch(text):
        return None
    body = text.rstrip("=")
    url_safe = "-" in body or "_" in body
    if url_safe and ("+" in body or "/" in body):
        return None
    if len(body) % 4 == 1:
        return None
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), altchars=b"-_" if url_safe else None, validate=True)
    except (binascii.Error, ValueError):
        return None


def _json(data: bytes | str) -> Any:
    try:
        text = data.decode("utf-8-sig") if isinstance(data, bytes) else data
        return json.loads(text)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return _FAILED


def _depth(value: Any) -> int:
    """How deeply objects and arrays nest, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _encodable(value: Any) -> bool:
    """A lone \\ud800 escape parses but cannot be hashed or stored as UTF-8."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):
        return False
    return True
