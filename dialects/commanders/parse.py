"""Commanders Act (docs/dialects/commanders.md): the nested `user`/`context` event of `POST /events`, and the
bodies of the User API (`POST /users`) and the Product API (`POST /products`). Pure: no Flask, no database."""
from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

from ingest.canonical import CanonicalEvent, standard_name
from config import Site
from dialects.common import (
    MAX_ID_CHARS, ClientContext, FieldError, clean_url, custom_properties, is_bot, item_list,
    finite, new_event_id, present, read_currency, read_id, read_value, url_without_pii, kept_user_id,
)
from ingest import clickids
from ingest.identity import HASHED_RE, normalize_identity

DIALECT = "commanders"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
EARLIEST_MS = 946_684_800_000  # 2000-01-01: anything smaller is seconds sent as milliseconds, or junk
MAX_TEXT_CHARS = 500
# The user object's keys (Commanders' user properties) -> normalize_identity's; the first key given wins.
USER_IDENTITY_KEYS = {
    "email": "email", "email_sha256": "email",
    "phone": "phone", "phone_sha256": "phone",
    "firstname": "first_name", "first_name": "first_name",
    "lastname": "last_name", "last_name": "last_name",
    "gender": "gender",
    "birthdate": "date_of_birth", "date_of_birth": "date_of_birth",
    "city": "city", "state": "state",
    "zipcode": "zip", "zip": "zip",
    "country": "country",
}
PREHASHED_KEYS = ("email_sha256", "phone_sha256")
USER_OWN_KEYS = frozenset(("id", "consistent_anonymous_id", "consent_categories", *USER_IDENTITY_KEYS))
EVENT_OWN_KEYS = frozenset(("event_name", "user", "context", "id", "revenue", "value", "currency", "items"))
# Context fields that become canonical fields; the rest of `context` is kept as a property.
CONTEXT_USED = {"": ("event_id", "event_timestamp"), "page": ("url", "referrer"), "device": ("user_agent", "ip", "lang", "cookie")}
PRODUCT_TEXT_FIELDS = ("name", "category", "brand")


@dataclass(frozen=True)
class UserFields:
    """What a Commanders `user` object says: ids, hashed identity, consent categories, and what was dropped."""

    user_id: str | None = None
    anonymous_id: str | None = None
    hashes: dict[str, str] = field(default_factory=dict)
    location: dict[str, str] = field(default_factory=dict)
    consent_categories: tuple[str, ...] | None = None
    notes: list[str] = field(default_factory=list)


def user_id(body: Any, site: Site) -> str | None:
    """The event's `user.id` as stored, to look up its profile before parsing; None when absent or malformed."""
    user = body.get("user") if isinstance(body, Mapping) else None
    try:
        return stored_user_id(read_id(user, "id"), site) if isinstance(user, Mapping) else None
    except FieldError:
        return None


def stored_user_id(given: str | None, site: Site) -> str | None:
    """A user id as profiles keep it: hashed when it is an email address or phone number."""
    return kept_user_id(given, "id", [], site.default_country)


def parse(body: Mapping[str, Any], client: ClientContext, site: Site, consent_default: str, now: datetime,
          known: Mapping[str, Any] | None = None) -> CanonicalEvent:
    """Read a `POST /events` body into the canonical event; raises FieldError for a bad typed field.

    `known` is the user's profile (identity, location, anonymous_id): it fills what the event does not say.
    """
    name = body.get("event_name")
    if name is None:
        raise FieldError("event_name")
    if not isinstance(name, str) or not name.strip():
        raise FieldError("event_name", "must be a non-empty string")
    notes: list[str] = []
    context = _section(body, "context", notes)
    page = _section(context, "page", notes, "context.")
    device = _section(context, "device", notes, "context.")
    event_id = _nested(read_id, context, "event_id", "context.") or new_event_id()
    occurred_at = _nested(read_epoch_ms, context, "event_timestamp", "context.") or now
    order_id = read_id(body, "id")
    revenue, plain_value = read_value(body, "revenue"), read_value(body, "value")
    value = revenue if revenue is not None else plain_value
    currency = read_currency(body, "currency")
    user = read_user(body.get("user"), site, with_consent=True)
    known = known or {}
    location = {**known.get("location", {}), **user.location}
    if "country" not in location and site.default_country:
        location["country"] = site.default_country.lower()

    click_ids = cookie_click_ids(device.get("cookie"), notes)
    country = site.default_country
    properties = custom_properties({k: v for k, v in body.items() if k not in EVENT_OWN_KEYS}, notes, country=country)
    if revenue is not None and plain_value is not None:
        properties["value"] = plain_value  # `revenue` is the event's value; the other figure is kept, not lost
    rest = _unused_context(context)
    if rest:
        properties["context"] = custom_properties(rest, notes, "context.", country=country)
    user_agent = _text_field(device, "user_agent", "context.device.", notes) or client.user_agent
    categories = user.consent_categories
    return CanonicalEvent(
        site_id=site.id,
        dialect=DIALECT,
        event_name=name.strip(),
        standard_name=standard_name(name.strip(), site.event_map),
        event_id=event_id,
        occurred_at=occurred_at,
        received_at=now,
        external_id=user.user_id,
        anonymous_id=user.anonymous_id or known.get("anonymous_id"),
        identity={**known.get("identity", {}), **user.hashes},
        location=location,
        click_ids=click_ids,
        ip=_ip(device.get("ip"), notes) or client.ip,
        user_agent=user_agent,
        page_url=clean_url(page.get("url"), "context.page.url", notes, country),
        referrer=(clean_url(page.get("referrer"), "context.page.referrer", notes, country)
                  or url_without_pii(client.referrer, "Referer", notes, country)),
        language=_text_field(device, "lang", "context.device.", notes) or client.language,
        value=value,
        currency=currency or (site.default_currency if value is not None else None),
        order_id=order_id,
        items=_items(body.get("items"), notes),
        # Categories present mean the CMP spoke: the destinations' consent_category decides (routing.skip_reason).
        consent=bool(categories) or consent_default == "granted",
        consent_categories=categories,
        properties=properties,
        notes=notes + user.notes,
        is_bot=is_bot(user_agent),
    )


def read_user(raw: Any, site: Site, with_consent: bool = False, path: str = "user.") -> UserFields:
    """A Commanders user object: `id`, `consistent_anonymous_id`, identity fields hashed, consent categories.

    Keys it does not know are dropped, never stored: a user object describes a person.
    """
    if raw is None:
        return UserFields()
    if not isinstance(raw, Mapping):
        return UserFields(notes=[f"{path.rstrip('.')}: dropped, must be an object"])
    own: list[str] = []
    chosen: dict[str, str] = {}  # normalize_identity's key -> the user key it came from
    for key, target in USER_IDENTITY_KEYS.items():
        if target not in chosen and present(raw.get(key)):
            chosen[target] = key
    for key in PREHASHED_KEYS:
        value = raw.get(key)
        if chosen.get(USER_IDENTITY_KEYS[key]) == key and not (isinstance(value, str) and HASHED_RE.match(value.strip())):
            own.append(f"{path}{key}: dropped, not a SHA-256 hex digest")
            del chosen[USER_IDENTITY_KEYS[key]]
    identity = normalize_identity({target: raw.get(key) for target, key in chosen.items()}, site.default_country)
    for note in identity.dropped:
        target, _, why = note.partition(": ")
        own.append(f"{path}{chosen.get(target, target)}: dropped, {why}")
    location = dict(identity.location)
    if "country" not in chosen:
        location.pop("country", None)  # the site's default: the caller decides whether a profile knows better
    unknown = sorted(str(k) for k in raw if k not in USER_OWN_KEYS)
    if unknown:
        own.append(f"{path.rstrip('.')}: dropped {', '.join(unknown)} (unknown user properties are never stored)")
    return UserFields(
        user_id=kept_user_id(_user_id(raw, "id", path, own), f"{path}id", own, site.default_country),
        anonymous_id=kept_user_id(_user_id(raw, "consistent_anonymous_id", path, own), f"{path}consistent_anonymous_id",
                             own, site.default_country),
        hashes=identity.hashes,
        location=location,
        consent_categories=_consent_categories(raw.get("consent_categories"), path) if with_consent else None,
        notes=own,
    )


def parse_profile(body: Mapping[str, Any], site: Site) -> UserFields:
    """A User API body: the same object as an event's `user`, with `id` required (consent stays per event)."""
    user_id = read_id(body, "id")
    if user_id is None:
        raise FieldError("id")
    return replace(read_user(body, site), user_id=user_id)


def cookie_click_ids(cookie: Any, notes: list[str]) -> dict[str, str]:
    """The click ids of `context.device.cookie`, a `Cookie`-style string, byte for byte."""
    if cookie is None:
        return {}
    if not isinstance(cookie, str):
        notes.append("context.device.cookie: dropped, must be a string")
        return {}
    click_ids, click_notes = clickids.read_cookie_header(cookie)
    notes += click_notes
    return click_ids


def read_epoch_ms(body: Mapping, key: str) -> datetime | None:
    """Epoch milliseconds, as a number or a numeric string (the vendor's `event_timestamp`)."""
    value = body.get(key)
    if not present(value):
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise FieldError(key, "must be epoch milliseconds")
    try:
        ms = int(value.strip()) if isinstance(value, str) and value.strip().isdigit() else float(value)
    except (ValueError, OverflowError):
        raise FieldError(key, "must be epoch milliseconds") from None
    if isinstance(ms, float) and not math.isfinite(ms):
        raise FieldError(key, "must be epoch milliseconds")
    if ms < EARLIEST_MS:
        raise FieldError(key, "must be epoch milliseconds; this is before 2000, seconds perhaps")
    try:
        return EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        raise FieldError(key, "must be epoch milliseconds") from None


def parse_product(raw: Any, notes: list[str], path: str = "") -> dict[str, Any]:
    """One Product API item -> the catalogue fields it gives (absent ones are left as they are)."""
    if not isinstance(raw, Mapping):
        raise FieldError("product", "must be an object")
    product_id = read_id(raw, "id")
    if product_id is None:
        raise FieldError("id")
    fields: dict[str, Any] = {"id": product_id}
    for key in PRODUCT_TEXT_FIELDS:
        text = _strict_text(raw, key)
        if text is not None:
            fields[key] = text
    price, currency = read_value(raw, "price"), read_currency(raw, "currency")
    if price is not None:
        fields["price"] = price
    if currency is not None:
        fields["currency"] = currency
    if present(raw.get("url")):
        url = clean_url(raw.get("url"), "url", [])
        if url is None:
            raise FieldError("url", "must be an http(s) URL")
        fields["url"] = url
    extra = {k: v for k, v in raw.items() if k not in ("id", "price", "currency", "url", *PRODUCT_TEXT_FIELDS)}
    if extra:
        fields["attributes"] = custom_properties(extra, notes, path)
    return fields


def _items(raw: Any, notes: list[str]) -> list[dict]:
    """`items: [{id, quantity, price, product: {id, name, category_1, brand, price}}]`; bad entries are dropped."""
    items = []
    for i, item in enumerate(item_list(raw, notes)):
        if not isinstance(item, Mapping):
            notes.append(f"items[{i}]: dropped, must be an object")
            continue
        product = item.get("product")
        if product is not None and not isinstance(product, Mapping):
            notes.append(f"items[{i}].product: ignored, must be an object")
        product = product if isinstance(product, Mapping) else {}
        try:
            items.append(_item(item, product))
        except FieldError as exc:
            notes.append(f"items[{i}]: dropped, {exc.field} {exc.why or 'missing'}")
    return items


def _item(item: Mapping, product: Mapping) -> dict:
    """One item; the nested `product` fills what the item itself does not say."""
    quantity = read_value(item, "quantity")
    category = _strict_text(item, "category") or _strict_text(product, "category") or _strict_text(product, "category_1")
    return {k: v for k, v in (
        ("id", read_id(item, "id") or read_id(product, "id")),
        ("quantity", int(quantity) if quantity is not None and quantity.is_integer() else quantity),
        ("price", read_value(item, "price") if present(item.get("price")) else read_value(product, "price")),
        ("name", _strict_text(item, "name") or _strict_text(product, "name")),
        ("category", category),
        ("brand", _strict_text(item, "brand") or _strict_text(product, "brand")),
    ) if v is not None}


def _section(body: Mapping, key: str, notes: list[str], path: str = "") -> Mapping:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        notes.append(f"{path}{key}: ignored, must be an object")
        return {}
    return value


def _nested(reader, body: Mapping, key: str, path: str):
    """Run a typed reader on a nested object, naming the field by its full path when it refuses."""
    try:
        return reader(body, key)
    except FieldError as exc:
        raise FieldError(f"{path}{exc.field}", exc.why) from None


def _unused_context(context: Mapping) -> dict:
    """`context` without the fields mapped to the canonical event (the cookie string is never kept)."""
    rest = {k: v for k, v in context.items() if k not in CONTEXT_USED[""]}
    for section, used in CONTEXT_USED.items():
        if section and isinstance(rest.get(section), Mapping):
            kept = {k: v for k, v in rest[section].items() if k not in used}
            if kept:
                rest[section] = kept
            else:
                del rest[section]
        elif section in rest:
            del rest[section]  # not an object: already noted as ignored
    return rest


def _text_field(body: Mapping, key: str, path: str, notes: list[str]) -> str | None:
    value = body.get(key)
    if not present(value):
        return None
    if not isinstance(value, str):
        notes.append(f"{path}{key}: dropped, must be a string")
        return None
    return value.strip()


def _strict_text(body: Mapping, key: str) -> str | None:
    """Text or a number; anything else refuses the field."""
    value = body.get(key)
    if not present(value):
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or not finite(value):
        raise FieldError(key, "must be text")
    text = value.strip() if isinstance(value, str) else str(value)
    if len(text) > MAX_TEXT_CHARS:
        raise FieldError(key, f"must be at most {MAX_TEXT_CHARS} characters")
    return text


def _user_id(raw: Mapping, key: str, path: str, notes: list[str]) -> str | None:
    """A user id is judged by form like identity: a bad one is dropped with a reason, never refused."""
    try:
        return read_id(raw, key)
    except FieldError as exc:
        notes.append(f"{path}{key}: dropped, {exc.why}")
        return None


def _consent_categories(raw: Any, path: str) -> tuple[str, ...] | None:
    if raw is None:
        return None
    valid = isinstance(raw, list) and all(
        isinstance(c, (str, int)) and not isinstance(c, bool) and str(c).strip() and len(str(c)) <= MAX_ID_CHARS for c in raw)
    if not valid:
        raise FieldError(f"{path}consent_categories", "must be a list of category ids")
    return tuple(str(c).strip() for c in raw)


def _ip(value: Any, notes: list[str]) -> str | None:
    if not present(value):
        return None
    try:
        if isinstance(value, str):
            return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        pass
    notes.append("context.device.ip: dropped, not an IP address")
    return None
