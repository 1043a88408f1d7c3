"""ChannelStack `POST /v1/track`: one flat JSON event with `api_key` in the body (docs/dialects/channelstack.md)."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Mapping

from ingest.canonical import CanonicalEvent, standard_name
from config import Site
from dialects.common import (
    ClientContext, FieldError, clean_url, custom_properties, is_bot, item_list, new_event_id, url_without_pii, kept_user_id,
    read_bool, read_currency, read_id, read_text, read_timestamp, read_value,
)
from ingest import clickids
from ingest.identity import normalize_identity

DIALECT = "channelstack"
IDENTITY_FIELDS = ("email", "phone", "first_name", "last_name", "city", "state", "zip", "country", "gender", "date_of_birth")
# Click ids come under their keys, URL parameter names, aliases or cookie names (ingest/clickids.py).
OWN_FIELDS = frozenset((
    "api_key", "event", "distinct_id", "anonymous_id", "value", "currency", "order_id", "event_id",
    "occurred_at", "source_url", "consent", "items", *IDENTITY_FIELDS,
))


def parse(body: Mapping[str, Any], client: ClientContext, site: Site, consent_default: str, now: datetime) -> CanonicalEvent:
    """Read a /v1/track body into the canonical event; raises FieldError for a bad typed field."""
    name = body.get("event")
    if name is None:
        raise FieldError("event")
    if not isinstance(name, str) or not name.strip():
        raise FieldError("event", "must be a non-empty string")
    value = read_value(body, "value")
    currency = read_currency(body, "currency")
    occurred_at = read_timestamp(body, "occurred_at") or now
    consent = read_bool(body, "consent")
    event_id = read_id(body, "event_id") or new_event_id()
    order_id = read_id(body, "order_id")

    identity = normalize_identity({k: body.get(k) for k in IDENTITY_FIELDS}, site.default_country)
    notes = list(identity.dropped)
    click_ids, click_notes = clickids.read(body)
    notes += click_notes
    country = site.default_country
    page_url = clean_url(body.get("source_url"), "source_url", notes, country)
    own = OWN_FIELDS | clickids.names().keys()
    properties = custom_properties({k: v for k, v in body.items() if k not in own}, notes, country=country)
    return CanonicalEvent(
        site_id=site.id,
        dialect=DIALECT,
        event_name=name.strip(),
        standard_name=standard_name(name.strip(), site.event_map),
        event_id=event_id,
        occurred_at=occurred_at,
        received_at=now,
        external_id=kept_user_id(read_text(body, "distinct_id"), "distinct_id", notes, country),
        anonymous_id=kept_user_id(read_text(body, "anonymous_id"), "anonymous_id", notes, country),
        identity=identity.hashes,
        location=identity.location,
        click_ids=click_ids,
        ip=client.ip,
        user_agent=client.user_agent,
        page_url=page_url,
        referrer=url_without_pii(client.referrer, "Referer", notes, country),
        language=client.language,
        value=value,
        currency=currency or (site.default_currency if value is not None else None),
        order_id=order_id,
        items=_items(body.get("items"), notes),
        consent=consent if consent is not None else consent_default == "granted",
        properties=properties,
        notes=notes,
        is_bot=is_bot(client.user_agent),
    )


def _items(raw: Any, notes: list[str]) -> list[dict]:
    """Optional `items: [{id, quantity, price}]`; malformed entries are dropped with a reason."""
    items = []
    for i, item in enumerate(item_list(raw, notes)):
        try:
            quantity = read_value(item, "quantity")
            items.append({k: v for k, v in (
                ("id", read_id(item, "id")),
                ("quantity", int(quantity) if quantity is not None and quantity.is_integer() else quantity),
                ("price", read_value(item, "price")),
            ) if v is not None})
        except (FieldError, AttributeError):
            notes.append(f"items[{i}]: dropped, expected {{id, quantity, price}}")
    return items
