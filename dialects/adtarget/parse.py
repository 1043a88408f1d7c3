"""AdTarget (docs/dialects/adtarget.md): pure parsing of the API's bodies and of Telegram's webhook updates.

No Flask and no storage here: request data in, plain values out, FieldError for a field the API refuses.
"""
from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

from config import Site
from dialects.common import (
    ClientContext, FieldError, clean_url, custom_properties, url_without_pii, kept_user_id,
    finite, present, read_currency, read_id, read_value, split_url,
)
from ingest import clickids, personal
from ingest.identity import Identity, normalize_identity

DIALECT = "adtarget"
EVENT_TYPES = ("Lead", "Purchase", "CompleteRegistration", "Subscribe", "Custom")
PII_FIELDS = {"email": "email", "phone": "phone", "firstName": "first_name", "lastName": "last_name"}
UTM_FIELDS = {"utmSource": "utm_source", "utmMedium": "utm_medium", "utmCampaign": "utm_campaign",
              "utmContent": "utm_content", "utmTerm": "utm_term"}
MAX_TEXT_CHARS = 4096
MAX_TELEGRAM_ID = 2 ** 53  # Telegram ids fit in 52 bits; anything larger is not one
# Besides these, both bodies carry click ids under their keys (ingest/clickids.py); a visit's href, under the
# URL parameters an ad click appends.
VISIT_FIELDS = frozenset((
    "tempId", "clientSessionId", "externalUserId", "href", "landingPage", "referrer", "clientIp", "userAgent",
    "country", "city", "region", *UTM_FIELDS,
))
CONVERSION_FIELDS = frozenset((
    "telegramUserId", "channelId", "eventType", "customEventName", "value", "currency", "contentName", "pii",
    "externalUserId", "eventTime", "clientIp", "userAgent", "eventSourceUrl",
))


@dataclass(frozen=True)
class Attribution:
    """What ties a conversion to an ad click: click ids and the visitor's browser and page."""

    click_ids: dict[str, str] = field(default_factory=dict)
    ip: str | None = None
    user_agent: str | None = None
    page_url: str | None = None
    referrer: str | None = None
    anonymous_id: str | None = None  # the visitor's tempId
    location: dict[str, str] = field(default_factory=dict)
    external_id: str | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, {}, "")}

    @classmethod
    def from_json(cls, data: Mapping | None) -> "Attribution":
        return cls(**{k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__})

    def filled_from(self, other: "Attribution") -> "Attribution":
        """This attribution, with what it lacks taken from `other`."""
        mine = self.to_json()
        merged = {**other.to_json(), **mine}
        merged["click_ids"] = {**other.click_ids, **self.click_ids}
        merged["location"] = self.location or other.location
        return Attribution.from_json(merged)


@dataclass(frozen=True)
class VisitInput:
    """A landing-page visit: ids the visitor already has (or None: to be generated) and its attribution."""

    temp_id: str | None
    client_session_id: str | None
    external_user_id: str | None
    href: str
    landing_page: str
    attribution: Attribution
    utm: dict[str, str]
    properties: dict[str, Any]
    notes: list[str]


@dataclass(frozen=True)
class ConversionInput:
    """A conversion as the API was asked for it; the funnel decides warm/cold and what is sent."""

    telegram_user_id: str
    channel_ref: str | None
    event_type: str
    custom_event_name: str | None
    value: float | None
    currency: str | None
    identity: Identity
    external_user_id: str | None
    occurred_at: datetime
    overrides: Attribution
    properties: dict[str, Any]
    notes: list[str]

    @property
    def event_name(self) -> str:
        return self.custom_event_name if self.event_type == "Custom" and self.custom_event_name else self.event_type


@dataclass(frozen=True)
class ValueInput:
    value: float
    currency: str
    identity: Identity


@dataclass(frozen=True)
class Join:
    """Someone joined (or asked to join) a chat, possibly through one of our invite links."""

    update_id: int
    kind: str  # chat_member | chat_join_request
    chat_id: str
    user_id: str
    invite_link: str | None
    occurred_at: datetime


class Ignored(Exception):
    """A webhook update that is acknowledged but not a join to attribute; `quiet` ones are routine traffic."""

    def __init__(self, reason: str, quiet: bool = False):
        super().__init__(reason)
        self.reason, self.quiet = reason, quiet


def parse_visit(body: Mapping[str, Any], forwarded: ClientContext, connection: ClientContext, site: Site,
                now: datetime) -> VisitInput:
    """`POST /api/v1/events/visit`: IP and UA from the X-Adtarget headers, else the body, else the request."""
    href = body.get("href")
    if not present(href):
        raise FieldError("href")
    if not isinstance(href, str) or clean_url(href, "href", []) is None:
        raise FieldError("href", "must be an http(s) URL")
    notes: list[str] = []
    country = site.default_country
    query = url_parameters(href.strip())  # read before the personal data leaves it: a click id is no one's
    href = url_without_pii(href.strip(), "href", notes, country)
    temp_id = kept_user_id(read_id(body, "tempId"), "tempId", notes, country)
    client_session_id = read_id(body, "clientSessionId")
    external_user_id = kept_user_id(read_id(body, "externalUserId"), "externalUserId", notes, country)
    texts = {key: _text(body, key) for key in ("landingPage", "referrer", "clientIp", "userAgent", "country", "city",
                                               "region", *UTM_FIELDS)}
    landing_page = clean_url(texts["landingPage"], "landingPage", notes, country) or _without_query(href)
    in_url, _ = clickids.named(query, (clickids.PARAM,))
    given, _ = clickids.named(body, (clickids.KEY,))
    click_ids, click_notes = clickids.clean({**in_url, **given})
    notes += click_notes
    # One minted from the URL replaces one sent for an older click: the URL's click is the newest.
    click_ids, click_notes = clickids.minted(click_ids, query, now, "href")
    notes += click_notes
    own = VISIT_FIELDS | clickids.names((clickids.KEY,)).keys()
    location = normalize_identity(
        {"country": texts["country"], "city": texts["city"], "state": texts["region"]}, None)
    notes += location.dropped
    utm = {name: texts[key] or query.get(name) for key, name in UTM_FIELDS.items()}
    return VisitInput(
        temp_id=temp_id,
        client_session_id=client_session_id,
        external_user_id=external_user_id,
        href=href,
        landing_page=landing_page,
        attribution=Attribution(
            click_ids=click_ids,
            ip=forwarded.ip or _ip(texts["clientIp"], "clientIp", notes) or connection.ip,
            user_agent=forwarded.user_agent or texts["userAgent"] or connection.user_agent,
            page_url=href,
            referrer=clean_url(texts["referrer"], "referrer", notes, country),
            anonymous_id=temp_id,
            location=location.location,
            external_id=external_user_id,
        ),
        utm={k: v for k, v in utm.items() if v and not personal.kind(v, country)},
        properties=custom_properties({k: v for k, v in body.items() if k not in own}, notes, country=country),
        notes=notes,
    )


def parse_update_fbp(body: Mapping[str, Any]) -> tuple[str, str]:
    """`POST /api/v1/events/update-fbp`: (tempId, fbp); a malformed fbp is refused, not dropped (it is all there is)."""
    temp_id = read_id(body, "tempId")
    if temp_id is None:
        raise FieldError("tempId")
    fbp = body.get("fbp")
    if not present(fbp):
        raise FieldError("fbp")
    kept, _ = clickids.read({"fbp": fbp}, (clickids.KEY,))
    if "fbp" not in kept:
        raise FieldError("fbp", f"must be of the form {clickids.declared()['fbp'].form.text}")
    return temp_id, kept["fbp"]


def parse_invite(body: Mapping[str, Any]) -> tuple[str, str | None, str]:
    """`POST /api/v1/events/invite`: (tempId, clientSessionId, channelId)."""
    temp_id = read_id(body, "tempId")
    if temp_id is None:
        raise FieldError("tempId")
    client_session_id = read_id(body, "clientSessionId")
    channel_ref = read_id(body, "channelId")
    if channel_ref is None:
        raise FieldError("channelId")
    return temp_id, client_session_id, channel_ref


def parse_conversion(body: Mapping[str, Any], forwarded: ClientContext, site: Site, now: datetime,
                     telegram_user_id: str | None = None) -> ConversionInput:
    """`POST /api/v1/events/conversion` (or a lead's `/events`, whose path gives the user and makes channelId optional).

    The caller is the operator's server, never the lead: only the X-Adtarget headers and the body say
    who the lead's browser was, never the request's own connection.
    """
    from_path = telegram_user_id is not None
    if not from_path:
        telegram_user_id = read_telegram_user_id(body.get("telegramUserId"), "telegramUserId")
    channel_ref = read_id(body, "channelId")
    if channel_ref is None and not from_path:
        raise FieldError("channelId")
    event_type = body.get("eventType")
    if not present(event_type):
        raise FieldError("eventType")
    if event_type not in EVENT_TYPES:
        raise FieldError("eventType", f"must be one of {', '.join(EVENT_TYPES)}")
    custom_name = _text(body, "customEventName")
    if event_type == "Custom" and not custom_name:
        raise FieldError("customEventName")  # required when eventType is Custom
    value = read_value(body, "value")
    currency = read_currency(body, "currency")
    occurred_at = read_millis(body, "eventTime") or now
    content_name = _text(body, "contentName")
    identity = read_pii(body.get("pii"), site)
    texts = {key: _text(body, key) for key in ("clientIp", "userAgent", "eventSourceUrl")}
    notes = list(identity.dropped)
    country = site.default_country
    external_user_id = kept_user_id(read_id(body, "externalUserId"), "externalUserId", notes, country)
    click_ids, click_notes = clickids.read(body, (clickids.KEY,))
    notes += click_notes
    own = CONVERSION_FIELDS | clickids.names((clickids.KEY,)).keys()
    properties = custom_properties({k: v for k, v in body.items() if k not in own}, notes, country=country)
    if content_name:
        properties["content_name"] = content_name
    return ConversionInput(
        telegram_user_id=telegram_user_id,
        channel_ref=channel_ref,
        event_type=event_type,
        custom_event_name=custom_name,
        value=value,
        currency=currency or (site.default_currency if value is not None else None),
        identity=identity,
        external_user_id=external_user_id,
        occurred_at=occurred_at,
        overrides=Attribution(
            click_ids=click_ids,
            ip=forwarded.ip or _ip(texts["clientIp"], "clientIp", notes),
            user_agent=forwarded.user_agent or texts["userAgent"],
            page_url=clean_url(texts["eventSourceUrl"], "eventSourceUrl", notes, country),
        ),
        properties=properties,
        notes=notes,
    )


def parse_value(body: Mapping[str, Any], site: Site) -> ValueInput:
    """`POST /api/v1/leads/{id}/conversions/{id}/value`: value > 0, an ISO 4217 currency, optional pii."""
    value = read_value(body, "value")
    if value is None:
        raise FieldError("value")
    if value <= 0:
        raise FieldError("value", "must be greater than 0")
    currency = read_currency(body, "currency")
    if currency is None:
        raise FieldError("currency")
    return ValueInput(value, currency, read_pii(body.get("pii"), site))


def read_telegram_user_id(value: Any, key: str) -> str:
    """A Telegram user id: a positive whole number (digits in a string accepted), as text."""
    if not present(value):
        raise FieldError(key)
    if isinstance(value, str) and value.strip().isdecimal() and value.strip().isascii():
        value = int(value.strip())
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < MAX_TELEGRAM_ID:
        raise FieldError(key, "must be a positive integer (the Telegram user id)")
    return str(value)


def read_millis(body: Mapping[str, Any], key: str) -> datetime | None:
    """Unix milliseconds as a moment; numeric strings accepted."""
    millis = read_value(body, key, at_most=math.inf)  # a moment, not an amount: fromtimestamp judges it
    if millis is None:
        return None
    try:
        return datetime.fromtimestamp(millis / 1000, timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise FieldError(key, "must be Unix milliseconds") from None


def read_pii(raw: Any, site: Site) -> Identity:
    """`pii: {email, phone, firstName, lastName}` hashed now; raw values go no further than this call."""
    if raw is None:
        return Identity()
    if not isinstance(raw, Mapping):
        raise FieldError("pii", "must be an object")
    identity = normalize_identity({name: raw.get(key) for key, name in PII_FIELDS.items()}, site.default_country)
    dropped = [f"pii.{reason}" for reason in identity.dropped]
    dropped += [f"pii.{key}: dropped, not one of {', '.join(PII_FIELDS)}" for key in raw if key not in PII_FIELDS]
    # pii carries no location: the country that phone parsing used must not become the lead's.
    return Identity(identity.hashes, {}, dropped)


def parse_update(update: Any, now: datetime) -> Join:
    """A Telegram `Update` that is a join to attribute, else Ignored with the reason."""
    if not isinstance(update, dict):
        raise Ignored("not a Telegram update: expected a JSON object")
    update_id = update.get("update_id")
    if isinstance(update_id, bool) or not isinstance(update_id, int):
        raise Ignored("not a Telegram update: update_id missing or not an integer")
    if "chat_member" in update:
        return _chat_member(update_id, update["chat_member"], now)
    if "chat_join_request" in update:
        return _join_request(update_id, update["chat_join_request"], now)
    if isinstance(update.get("my_chat_member"), dict):
        chat = _chat_id(update["my_chat_member"].get("chat"))
        member = update["my_chat_member"].get("new_chat_member")
        status = member.get("status") if isinstance(member, dict) else None
        raise Ignored(f"the bot's own membership in chat {chat} changed to {status!r} "
                      "(it needs to be an administrator with can_invite_users)")
    kinds = [key for key in update if key != "update_id"]
    raise Ignored(f"update type {kinds[0] if kinds else 'none'!r} is not handled (only chat_member and chat_join_request)")


def _chat_member(update_id: int, change: Any, now: datetime) -> Join:
    """A ChatMemberUpdated; a join is a move from not-a-member to a member."""
    if not isinstance(change, dict):
        raise Ignored("chat_member update: not an object")
    old, new = change.get("old_chat_member"), change.get("new_chat_member")
    if not isinstance(old, dict) or not isinstance(new, dict):
        raise Ignored("chat_member update without old_chat_member and new_chat_member")
    if _is_member(old) or not _is_member(new):
        raise Ignored(f"chat_member update is not a join ({old.get('status')} → {new.get('status')})", quiet=True)
    user = new.get("user") if isinstance(new.get("user"), dict) else change.get("from")
    return Join(update_id, "chat_member", _chat_id(change.get("chat")), _user_id(user),
                _link(change.get("invite_link")), _date(change.get("date"), now))


def _join_request(update_id: int, request: Any, now: datetime) -> Join:
    if not isinstance(request, dict):
        raise Ignored("chat_join_request update: not an object")
    return Join(update_id, "chat_join_request", _chat_id(request.get("chat")), _user_id(request.get("from")),
                _link(request.get("invite_link")), _date(request.get("date"), now))


def _is_member(member: dict) -> bool:
    status = member.get("status")
    return status in ("creator", "administrator", "member") or (status == "restricted" and member.get("is_member") is True)


def _chat_id(chat: Any) -> str:
    chat_id = chat.get("id") if isinstance(chat, dict) else None
    if isinstance(chat_id, bool) or not isinstance(chat_id, int):
        raise Ignored("update without chat.id")
    return str(chat_id)


def _user_id(user: Any) -> str:
    if not isinstance(user, dict):
        raise Ignored("update without the joining user")
    if user.get("is_bot") is True:
        raise Ignored("a bot joined: bots are not leads")
    try:
        return read_telegram_user_id(user.get("id"), "user.id")
    except FieldError:
        raise Ignored("update without a valid user id") from None


def _link(invite_link: Any) -> str | None:
    link = invite_link.get("invite_link") if isinstance(invite_link, dict) else None
    return link if isinstance(link, str) and link else None


def _date(date: Any, now: datetime) -> datetime:
    """Telegram's Unix seconds; a missing or absurd date is not worth losing the join over."""
    if isinstance(date, bool) or not isinstance(date, int):
        return now
    try:
        return datetime.fromtimestamp(date, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return now


def url_parameters(url: str) -> dict[str, str]:
    """First value of each query parameter, percent-decoded once and nothing more ('+' stays '+')."""
    params: dict[str, str] = {}
    parts = split_url(url)
    for pair in parts.query.split("&") if parts is not None else ():
        key, _, value = pair.partition("=")
        if key and key not in params:
            params[unquote(key)] = unquote(value)
    return params


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))


def _text(body: Mapping[str, Any], key: str) -> str | None:
    """Text (numbers coerced); any other type is refused rather than guessed at."""
    value = body.get(key)
    if not present(value):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and finite(value):
        value = str(value)
    if not isinstance(value, str):
        raise FieldError(key, "must be a string")
    if len(value) > MAX_TEXT_CHARS:
        raise FieldError(key, f"must be at most {MAX_TEXT_CHARS} characters")
    return value.strip()


def _ip(value: str | None, key: str, notes: list[str]) -> str | None:
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        notes.append(f"{key}: dropped, not an IP address")
        return None
