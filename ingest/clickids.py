"""The click ids ingest keeps, as the registered platforms declare them (their CLICK_IDS): where a dialect finds
them, how they are checked, and the ones ingest makes itself when it first sees a click.

Read at every call, never cached: a platform added to the registry is heard at once.
"""
from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime
from typing import Any, Mapping

from platforms import REGISTRY
from platforms.base import ClickId, Cookie, Platform

OPAQUE_ID_RE = re.compile(r"[\x21-\x7e]{1,1024}")  # printable ASCII, no spaces: copied byte for byte
NOT_OPAQUE = "not a click id (text without spaces expected)"
Reading = tuple[dict[str, str], list[str]]  # the click ids kept, by key; why any value was dropped
# How a field may name a click id: by its key, a URL parameter an ad appends, an alias, or a cookie's name.
KEY, PARAM, ALIAS, COOKIE = "key", "param", "alias", "cookie"
EVERY = (KEY, PARAM, ALIAS, COOKIE)


def declared() -> dict[str, ClickId]:
    """Every registered platform's click ids by key; two platforms may share one only if they declare it alike."""
    found: dict[str, ClickId] = {}
    for name, module in REGISTRY.items():
        for click in module.CLICK_IDS:
            first = found.setdefault(click.key, click)
            if first is not click and replace(first, attribution=click.attribution) != click:  # each its own
                raise ValueError(f"platform {name} declares click id {click.key} unlike another platform")
    return found


def names(via: tuple[str, ...] = EVERY, fold_case: bool = False) -> dict[str, tuple[ClickId, Cookie | None]]:
    """The field names that carry a click id, spelled `via` its key, URL parameters, aliases or cookies
    -> (the click id, the cookie when the name is a cookie's)."""
    found: dict[str, tuple[ClickId, Cookie | None]] = {}
    for click in declared().values():
        spellings = ((click.key,) if KEY in via else ()) + (click.params if PARAM in via else ()) \
            + (click.aliases if ALIAS in via else ())
        for name in spellings:
            found[name] = (click, None)
        for cookie in click.cookies if COOKIE in via else ():
            found[cookie.name] = (click, cookie)
    return {name.lower(): entry for name, entry in found.items()} if fold_case else found


def url_parameters() -> frozenset[str]:
    """The query parameters an ad click appends to its landing page, the ones ingest mints from included."""
    clicks = declared().values()
    return frozenset([name for click in clicks for name in click.params]
                     + [click.minted.param for click in clicks if click.minted])


def named(fields: Mapping[str, Any], via: tuple[str, ...] = EVERY, fold_case: bool = False) -> Reading:
    """The values of a body's fields named for a click id (see `names`), by its key, unchecked; a later field wins."""
    spelled = names(via, fold_case)
    raw: dict[str, Any] = {}
    notes: list[str] = []
    for name, value in fields.items():
        found = spelled.get(str(name).lower() if fold_case else name)
        if found is not None and _given(value):
            value = _unwrapped(value, found[1], notes)
            if value is not None:
                raw[found[0].key] = value
    return raw, notes


def read(fields: Mapping[str, Any], via: tuple[str, ...] = EVERY, fold_case: bool = False) -> Reading:
    """The click ids of a body's fields named for one (see `names`), checked."""
    raw, notes = named(fields, via, fold_case)
    kept, dropped = clean(raw)
    return kept, notes + dropped


def read_cookie_header(header: str) -> Reading:
    """The click ids of a `Cookie` header's value, byte for byte; the first of a repeated one wins, as a browser
    sends the most specific path first."""
    spelled = names((COOKIE,))
    raw: dict[str, Any] = {}
    notes: list[str] = []
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        found = spelled.get(name.strip())
        if not sep or found is None or found[0].key in raw:
            continue
        value = _unwrapped(value.strip(), found[1], notes)
        if value is not None:
            raw[found[0].key] = value
    kept, dropped = clean(raw)
    return kept, notes + dropped


def clean(raw: Mapping[str, Any]) -> Reading:
    """Keep well-formed click ids (`raw`: by key) byte for byte; drop malformed ones with a reason."""
    kept, notes = {}, []
    clicks = declared()
    for key, click in clicks.items():
        value = raw.get(key)
        if not _given(value):
            continue
        if not isinstance(value, str) or not OPAQUE_ID_RE.fullmatch(value):
            notes.append(f"{key}: dropped, {NOT_OPAQUE}")
        elif click.form and not click.form.pattern.fullmatch(value):
            notes.append(f"{key}: dropped, not of the form {click.form.text}")
        else:
            kept[key] = value
    for key, click in clicks.items():
        if click.rival and key in kept and click.rival.key in kept:
            del kept[key], kept[click.rival.key]
            notes.append(f"{key}, {click.rival.key}: dropped, {click.rival.why}")
    return kept, notes


def minted(click_ids: Mapping[str, str], query: Mapping[str, str], seen_at: datetime, field: str) -> Reading:
    """`click_ids` with those ingest makes from the query parameters of the URL in `field`, the click first seen at
    `seen_at`; one already given for the very same click is kept, so it keeps its first-seen time."""
    kept, notes = dict(click_ids), []
    for click in declared().values():
        value = query.get(click.minted.param) if click.minted else None
        if value is not None and not OPAQUE_ID_RE.fullmatch(value):
            notes.append(f"{field}: {click.minted.param} dropped, {NOT_OPAQUE}")
        elif value and not (kept.get(click.key) and click.minted.carries(kept[click.key], value)):
            kept[click.key] = click.minted.mint(value, seen_at)
    return kept, notes


def mints_from(query: Mapping[str, str]) -> bool:
    """Whether the query carries a parameter ingest makes a click id from."""
    return any(click.minted and query.get(click.minted.param) for click in declared().values())


def made_for(query: Mapping[str, str], stored: Mapping[str, str]) -> dict[str, str]:
    """The stored click ids that ingest made for the very clicks the query's parameters carry."""
    found = {}
    for click in declared().values():
        value = query.get(click.minted.param) if click.minted else None
        made = stored.get(click.key)
        if value and made and click.minted.carries(made, value):
            found[click.key] = made
    return found


def from_ad_click(click_ids: Mapping[str, str]) -> bool:
    """Whether the click ids hold one that only an ad click sets (a tag's cookie does not count)."""
    return any(click.ad_click and click_ids.get(key) for key, click in declared().items())


def attribution_keys(platform: Platform) -> tuple[str, ...]:
    """The click ids that tie a conversion without a browser of its own (a Telegram join) to the platform's ad."""
    return tuple(click.key for click in platform.CLICK_IDS if click.attribution)


def _given(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def _unwrapped(value: Any, cookie: Cookie | None, notes: list[str]) -> Any:
    """The click id a wrapping cookie holds; None, with a note, when it is not of the cookie's form."""
    if cookie is None or cookie.wraps is None:
        return value
    match = cookie.wraps.pattern.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        notes.append(f"{cookie.name}: dropped, not of the form {cookie.wraps.text}")
        return None
    return match[1]
