"""Octeth `POST /api/v1/event` and `POST /api/v1/website_events.properties` (docs/dialects/octeth.md).

Pure: request data in, a canonical event (or the vendor's error list) out; no Flask, no database.
"""
from __future__ import annotations

import json
import unicodedata
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from typing import Any, Mapping, Sequence

from user_agents import parse as parse_user_agent

from ingest.canonical import CUSTOM, CanonicalEvent, fold, standard_name
from config import Site
from dialects.common import (
    PII_PROPERTY_KEYS, ClientContext, FieldError, clean_url,
    custom_properties, is_bot, present, url_without_pii, kept_user_id, read_currency, read_id, read_value, split_url,
)
from dialects.errors import InvalidJSON, NotAnObject, Refused
from ingest import clickids
from ingest.identity import normalize_identity

DIALECT = "octeth"
CONVERSION, IDENTIFY = "conversion", "identify"
MAX_EVENT_CHARS = 255
MAX_KEY_CHARS = 255  # longer property names stay on the event but not in the catalogue
MAX_DEPTH = 32  # deeper JSON would exhaust the recursion of the property filters
OWN_FIELDS = frozenset(("apikey", "sessionid", "listid", "id", "event", "email", "emailaddress", "properties"))
# A conversion's id, value and currency become the canonical order id, value and currency; its name stays a property.
CONVERSION_FIELDS = frozenset(("conversion-id", "conversion-value", "conversion-currency"))
# Property names the dialect reads as identity: hashed, never kept raw (docs/privacy.md).
IDENTITY_ALIASES = {
    "firstname": "first_name", "lastname": "last_name",
    "phone": "phone", "phonenumber": "phone", "mobile": "phone", "tel": "phone",
    "gender": "gender", "dateofbirth": "date_of_birth", "birthdate": "date_of_birth", "birthday": "date_of_birth",
    "dob": "date_of_birth", "city": "city", "state": "state", "zip": "zip", "zipcode": "zip", "postalcode": "zip",
    "country": "country",
}
EMAIL_ALIASES = frozenset(("email", "emailaddress", "mail"))  # the subscriber's address is the `email` parameter
# A property named for a click id's key or its cookie, in any case, carries it (ingest/clickids.py).
CLICK_ID_NAMES = (clickids.KEY, clickids.COOKIE)

MISSING_CREDENTIALS = "Missing APIKey or SessionID parameter"
INVALID_CREDENTIALS = "Invalid APIKey or SessionID parameter"


@dataclass(frozen=True)
class Problem:
    """One entry of the vendor's `Errors` list."""

    code: int
    message: str


class ErrorList(Refused):
    """A refused request in the vendor's numbered errors: its HTTP status and every problem found."""

    def __init__(self, status: int, problems: Sequence[Problem]):
        self.status = status
        self.problems = sorted(problems, key=lambda p: p.code)
        super().__init__("; ".join(f"Code {p.code}: {p.message}" for p in self.problems))

    def body(self) -> dict:
        return {"Errors": [{"Code": p.code, "Message": p.message} for p in self.problems]}


@dataclass(frozen=True)
class ListProblems:
    """The codes and texts one endpoint uses for a missing, malformed and unknown ListID."""

    missing: Problem
    invalid: Problem
    unknown: Problem


EVENT_LIST_PROBLEMS = ListProblems(
    Problem(4, "Missing ListID parameter"), Problem(4, "Invalid ListID parameter"), Problem(4, "Invalid ListID parameter"))
CATALOGUE_LIST_PROBLEMS = ListProblems(
    Problem(1, "Missing ListID parameter"), Problem(2, "Invalid ListID parameter"), Problem(3, "List not found"))


@dataclass(frozen=True)
class OctethConversion:
    """What a `conversion` event adds: conversion-id is its order id and dedup key."""

    order_id: str
    name: str
    value: float
    currency: str | None


@dataclass(frozen=True)
class Accepted:
    """A valid event request: the canonical event plus what the Octeth endpoint answers and remembers."""

    event: CanonicalEvent
    site: Site
    list_id: str
    uuid: str
    email_hash: str
    given_id: bool  # the request carried `ID` (else the subscriber's stored or a generated one is used)
    catalogue: tuple[str, ...] = field(default=())

    @property
    def identify(self) -> bool:
        return is_identify(self.event.event_name)


# --- the body -----------------------------------------------------------------------------------

def decode(data: bytes) -> dict:
    """The body as a JSON object, whatever its Content-Type; raises Refused (Code 0 to the vendor)."""
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack
        body = _loads_commented(data)
    if b"\\u" in data and not _encodable(body):
        raise InvalidJSON()  # a lone \ud800 escape cannot be hashed or stored
    if not isinstance(body, dict):
        raise NotAnObject()
    if _depth(body) > MAX_DEPTH:
        raise Refused(f"Request body nested deeper than {MAX_DEPTH} levels")
    return body


def _loads_commented(data: bytes) -> Any:
    """The vendor's examples carry `// "SessionID": …` lines (Postman style); read such a body without them."""
    try:
        return json.loads(strip_comments(data.decode("utf-8-sig")))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise InvalidJSON() from None


def strip_comments(text: str) -> str:
    """Remove `//` and `/* */` comments outside JSON strings."""
    out, i, n, in_string = [], 0, len(text), False
    while i < n:
        ch = text[i]
        if in_string:
            out.append(ch)
            if ch == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
            out.append(ch)
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                return text  # an unclosed comment: let the JSON parser refuse it
            out.append(" ")
            i = end + 2
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def _encodable(body: Any) -> bool:
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):
        return False
    return True


def _depth(value: Any) -> int:
    """How deeply objects and arrays nest, stopping early past MAX_DEPTH."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                return depth
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def lower_keys(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Field names matched case-insensitively (`APIKey`/`apikey`); the first spelling sent wins."""
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        fields.setdefault(str(key).lower(), value)
    return fields


# --- credentials and lists ----------------------------------------------------------------------

def credentials(body: Mapping[str, Any]) -> tuple[Any, Any]:
    """(APIKey, SessionID) as sent; ErrorList(401, Code 1) when neither is there."""
    fields = lower_keys(body)
    api_key, session_id = fields.get("apikey"), fields.get("sessionid")
    if not present(api_key) and not present(session_id):
        raise ErrorList(401, [Problem(1, MISSING_CREDENTIALS)])
    return api_key, session_id


def invalid_credentials() -> ErrorList:
    return ErrorList(401, [Problem(2, INVALID_CREDENTIALS)])


def list_key(value: Any) -> str | None:
    """A ListID as the string ids compare as (94 and "94" alike); None when it is not an id.

    Octeth's list ids are numbers: a ListID of other text is "Invalid ListID parameter" (Code 2 of
    website_events.properties in Octeth's error table, docs/dialects/octeth.md), not a list that is missing."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and value.strip().isdecimal() and value.strip().isascii() and len(value) <= MAX_KEY_CHARS:
        return value.strip()
    return None


def resolve_list(body: Mapping[str, Any], sites: Sequence[Site], problems: ListProblems) -> tuple[Site | None, str | None, Problem | None]:
    """The one site among `sites` that owns the request's ListID, with that id; else the problem."""
    raw = lower_keys(body).get("listid")
    if not present(raw):
        return None, None, problems.missing
    key = list_key(raw)
    if key is None:
        return None, None, problems.invalid
    owner = next((site for site in sites if key in site.lists), None)  # list ids are unique across sites (config)
    if owner is None:
        return None, key, problems.unknown
    return owner, key, None


def catalogue_request(body: Mapping[str, Any], sites: Sequence[Site]) -> tuple[Site, str]:
    """The site and ListID whose properties catalogue is asked for; raises ErrorList (Codes 1–3)."""
    site, key, problem = resolve_list(body, sites, CATALOGUE_LIST_PROBLEMS)
    if problem:
        raise ErrorList(422, [problem])
    return site, key


# --- the event ----------------------------------------------------------------------------------

def is_identify(name: str) -> bool:
    return fold(name) == IDENTIFY


def new_uuid() -> str:
    return str(uuid.uuid4())


def parse_event(body: Mapping[str, Any], client: ClientContext, sites: Sequence[Site],
                consent_default: str, now: datetime) -> Accepted:
    """Read an /api/v1/event body; raises ErrorList(422) listing every problem found."""
    fields = lower_keys(body)
    problems: list[Problem] = []
    site, list_id, list_problem = resolve_list(body, sites, EVENT_LIST_PROBLEMS)
    if list_problem:
        problems.append(list_problem)
    name = _event_name(fields.get("event"), problems)
    email = _email(fields, problems)
    external_id = _read(fields, "id", 12, "Invalid ID parameter", problems)
    sent = _properties(fields.get("properties"), problems)
    extras = {k: v for k, v in body.items() if str(k).lower() not in OWN_FIELDS}
    merged = {**extras, **sent}  # Properties win over a top-level key of the same name
    conversion = _conversion(lower_keys(merged), problems) if name and fold(name) == CONVERSION else None

    notes: list[str] = []
    identity_raw, rest = _split_identity(merged, email, notes)
    identity = normalize_identity({"email": email, **identity_raw}, site.default_country if site else None)
    if email is not None and "em" not in identity.hashes:
        problems.append(Problem(7, "Invalid email parameter."))
    if problems:
        raise ErrorList(422, problems)
    notes[:0] = [note for note in identity.dropped if not note.startswith("email:")]

    click_ids, click_notes = clickids.read(rest, CLICK_ID_NAMES, fold_case=True)
    notes += click_notes
    own = clickids.names(CLICK_ID_NAMES, fold_case=True).keys() | (CONVERSION_FIELDS if conversion else set())
    rest = {k: v for k, v in rest.items() if k.lower() not in own}
    country = site.default_country if site else None
    external_id = kept_user_id(external_id, "ID", notes, country)
    custom = custom_properties(rest, notes, country=country)
    client = replace(client, referrer=url_without_pii(client.referrer, "Referer", notes, country))
    event_uuid = _client_uuid(custom, notes) or new_uuid()
    page_url = _page_url(custom)
    properties = {
        **server_properties(client, page_url, now),
        **({"$id": external_id} if external_id else {}),
        **custom,
        "$list_id": list_id,
        "$uuid": event_uuid,
    }
    event = CanonicalEvent(
        site_id=site.id,
        dialect=DIALECT,
        event_name=name,
        standard_name=_standard_name(name, conversion, site.event_map),
        event_id=conversion.order_id if conversion else event_uuid,
        occurred_at=now,
        received_at=now,
        external_id=external_id,
        identity=identity.hashes,
        location=identity.location,
        click_ids=click_ids,
        ip=client.ip,
        user_agent=client.user_agent,
        page_url=page_url,
        referrer=client.referrer,
        language=client.language,
        value=conversion.value if conversion else None,
        currency=(conversion.currency or site.default_currency) if conversion else None,
        order_id=conversion.order_id if conversion else None,
        consent=consent_default == "granted",
        properties=properties,
        notes=notes,
        is_bot=is_bot(client.user_agent),
    )
    return Accepted(
        event=event, site=site, list_id=list_id, uuid=event_uuid, email_hash=identity.hashes["em"],
        given_id=external_id is not None, catalogue=_catalogue(merged, properties),
    )


def _event_name(raw: Any, problems: list[Problem]) -> str | None:
    if not present(raw):
        problems.append(Problem(5, "Missing event parameter."))
        return None
    if not isinstance(raw, str):
        problems.append(Problem(5, "Invalid event parameter: must be a non-empty string"))
        return None
    if len(raw.strip()) > MAX_EVENT_CHARS:
        problems.append(Problem(5, f"Invalid event parameter: must be at most {MAX_EVENT_CHARS} characters"))
        return None
    return raw.strip()


def _email(fields: Mapping[str, Any], problems: list[Problem]) -> str | None:
    """The subscriber's address (`email`, or Octeth's `EmailAddress`); its syntax is judged by normalize_identity."""
    raw = fields.get("email") if present(fields.get("email")) else fields.get("emailaddress")
    if not present(raw):
        problems.append(Problem(6, "Missing email parameter."))
        return None
    if not isinstance(raw, str):
        problems.append(Problem(7, "Invalid email parameter."))
        return None
    return raw


def _read(fields: Mapping[str, Any], key: str, code: int, label: str, problems: list[Problem]) -> str | None:
    try:
        return read_id(fields, key)
    except FieldError as exc:
        problems.append(Problem(code, f"{label}: {exc.why}"))
        return None


def _properties(raw: Any, problems: list[Problem]) -> dict[str, Any]:
    """`Properties` is an object; PHP clients send an empty one as `[]`."""
    if raw is None or raw == [] or raw == "":
        return {}
    if isinstance(raw, dict):
        return raw
    problems.append(Problem(11, "Invalid Properties parameter: must be an object"))
    return {}


def _conversion(props: Mapping[str, Any], problems: list[Problem]) -> OctethConversion | None:
    """A `conversion` event's properties: conversion-id, -name and -value are required."""
    before = len(problems)
    order_id = _required_property(props, "conversion-id", 8, problems, read_id)
    name = _required_property(props, "conversion-name", 9, problems, read_id)
    value = _required_property(props, "conversion-value", 10, problems, read_value)
    try:
        currency = read_currency(props, "conversion-currency")
    except FieldError as exc:
        problems.append(Problem(13, f"Invalid conversion-currency event property: {exc.why}"))
        currency = None
    return None if len(problems) > before else OctethConversion(order_id, name, value, currency)


def _required_property(props: Mapping[str, Any], key: str, code: int, problems: list[Problem], reader) -> Any:
    try:
        value = reader(props, key)
    except FieldError as exc:
        problems.append(Problem(code, f"Invalid {key} event property: {exc.why}"))
        return None
    if value is None:
        problems.append(Problem(code, f"Missing {key} event property."))
    return value


def _split_identity(merged: Mapping[str, Any], email: str | None, notes: list[str]) -> tuple[dict, dict]:
    """Properties that name personal data the dialect can hash go to identity; the rest stay properties."""
    identity: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key, value in merged.items():
        folded = fold(str(key))
        if folded in IDENTITY_ALIASES:
            identity.setdefault(IDENTITY_ALIASES[folded], value)
        elif folded in EMAIL_ALIASES:
            if email is None or _plain_email(value) != _plain_email(email):
                notes.append(f"{key}: dropped, differs from the email parameter (the subscriber's address)")
        else:
            rest[key] = value
    return identity, rest


def _plain_email(value: Any) -> str | None:
    return unicodedata.normalize("NFC", value).strip().lower() if isinstance(value, str) else None


def _client_uuid(custom: dict[str, Any], notes: list[str]) -> str | None:
    """A tracker's own `$uuid` names the event: a retry carrying it is stored once."""
    if "$uuid" not in custom:
        return None
    try:
        return read_id(custom, "$uuid")
    except FieldError as exc:
        notes.append(f"$uuid: dropped, {exc.why}; a new one was generated")
        return None


def _page_url(custom: Mapping[str, Any]) -> str | None:
    """The page the event happened on: the tracker's `$current_url`, else a pageView's `url`."""
    for key in ("$current_url", "url"):
        url = clean_url(custom.get(key), key, [])
        if url:
            return url
    return None


def _standard_name(name: str, conversion: OctethConversion | None, event_map: Mapping[str, str]) -> str:
    """`conversion` is a Purchase unless the site's event_map or its conversion-name says otherwise."""
    named = standard_name(name, event_map)
    if conversion is None or named != CUSTOM:
        return named
    by_conversion_name = standard_name(conversion.name, event_map)
    return by_conversion_name if by_conversion_name != CUSTOM else "Purchase"


def _catalogue(merged: Mapping[str, Any], properties: Mapping[str, Any]) -> tuple[str, ...]:
    """Property names the list's catalogue learns: those sent (bar PII-named ones dropped) and ours."""
    hashed = IDENTITY_ALIASES.keys() | EMAIL_ALIASES
    sent = {k for k in merged if fold(str(k)) not in PII_PROPERTY_KEYS or fold(str(k)) in hashed}
    return tuple(sorted(k for k in sent | set(properties) if k.strip() and len(k) <= MAX_KEY_CHARS))


# --- server-side `$` properties -----------------------------------------------------------------

def server_properties(client: ClientContext, page_url: str | None, now: datetime) -> dict[str, Any]:
    """What the server knows about the call: the browser from its user agent, the page, the time."""
    props: dict[str, Any] = dict(describe_user_agent(client.user_agent))
    current_url = page_url or client.referrer
    parts = split_url(current_url) if current_url else None
    if parts is not None:  # an unsplittable Referer names no page
        props.update({"$current_url": current_url, "$host": parts.hostname or "", "$pathname": parts.path or "/"})
    if client.referrer:
        props["$referrer"] = client.referrer
    if client.language:
        props["$browser_language"] = client.language
    props["$sent_at"] = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    return props


@lru_cache(maxsize=4096)
def describe_user_agent(user_agent: str | None) -> tuple[tuple[str, str], ...]:
    """Cached like is_bot: a user-agent parse costs ~0.7 ms and the same few agents repeat."""
    if not user_agent:
        return ()
    agent = parse_user_agent(user_agent)
    kind = ("Bot" if agent.is_bot else "Tablet" if agent.is_tablet else "Mobile" if agent.is_mobile
            else "Desktop" if agent.is_pc else "Other")
    described = {
        "$browser": agent.browser.family,
        "$browser_version": agent.browser.version_string,
        "$os": agent.os.family,
        "$device": agent.device.family,
        "$device_type": kind,
    }
    return tuple((key, value) for key, value in described.items() if value)
