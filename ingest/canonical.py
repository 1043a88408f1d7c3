"""The canonical event every dialect produces and every platform consumes (docs/layout.md)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

STANDARD_EVENTS = (
    "Purchase", "Lead", "CompleteRegistration", "Subscribe", "AddToCart",
    "InitiateCheckout", "ViewContent", "PageView", "Search", "Contact",
)
CUSTOM = "Custom"

_DEFAULT_NAMES = {
    "purchase": "Purchase", "purchasecompleted": "Purchase", "ordercompleted": "Purchase",
    "signup": "CompleteRegistration", "signedup": "CompleteRegistration",
    "registration": "CompleteRegistration", "completeregistration": "CompleteRegistration",
    "lead": "Lead", "generatelead": "Lead",
    "subscribe": "Subscribe",
    "addtocart": "AddToCart",
    "initiatecheckout": "InitiateCheckout", "begincheckout": "InitiateCheckout", "checkoutstarted": "InitiateCheckout",
    "viewcontent": "ViewContent", "viewitem": "ViewContent", "productviewed": "ViewContent",
    "pageview": "PageView",
    "search": "Search",
    "contact": "Contact",
}
_SEPARATORS = re.compile(r"[\s_\-.]+")


def fold(name: str) -> str:
    """Case- and separator-insensitive form used for name and key matching."""
    return _SEPARATORS.sub("", name).lower()


def standard_name(name: str, event_map: Mapping[str, str]) -> str:
    """The site's event_map first, then the built-in defaults; anything else is Custom."""
    if name in event_map:
        return event_map[name]
    folded = fold(name)
    for sent, standard in event_map.items():
        if fold(sent) == folded:
            return standard
    return _DEFAULT_NAMES.get(folded, CUSTOM)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class CanonicalEvent:
    """One accepted event in the only shape platforms see; identity is already hashed."""

    site_id: str
    dialect: str
    event_name: str
    standard_name: str
    event_id: str
    occurred_at: datetime
    received_at: datetime
    channel: str = "web"  # web | chat (a Telegram funnel conversion, with no browser of its own)
    external_id: str | None = None
    anonymous_id: str | None = None
    identity: dict[str, str] = field(default_factory=dict)   # flavour -> sha256 hex
    location: dict[str, str] = field(default_factory=dict)   # normalized city/state/zip/country, clear
    click_ids: dict[str, str] = field(default_factory=dict)  # as the platforms declare them (ingest/clickids.py)
    ip: str | None = None
    user_agent: str | None = None
    page_url: str | None = None
    referrer: str | None = None
    language: str | None = None
    value: float | None = None
    currency: str | None = None
    order_id: str | None = None
    items: list[dict[str, Any]] = field(default_factory=list)
    consent: bool = True
    consent_categories: tuple[str, ...] | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # why a value was dropped, never the value
    is_bot: bool = False

    @property
    def display_name(self) -> str:
        """The name platforms get: the standard name, or the event's own name when custom."""
        return self.event_name if self.standard_name == CUSTOM else self.standard_name

    @property
    def shared_properties(self) -> dict[str, Any]:
        """Custom properties a platform may receive: the client's own, not the server-side `$` context
        (Octeth's `$current_url` and the like can carry a full URL with its query string)."""
        return {k: v for k, v in self.properties.items() if not k.startswith("$")}

    @property
    def source_url(self) -> str | None:
        return self.page_url or self.referrer
