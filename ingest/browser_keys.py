"""Browser keys (docs/tracker.md): publishable keys a page may hold, each kept to its site's origins, its events
and its own rate.

A browser key is public and a script can forge `Origin`, so the origin check only keeps honest browsers on
other sites out; the rate (counted in the database, so every worker sees the same count) and the event list
bound what a copied key can do. Server keys are not browser keys: `Config.site_for_key` never returns a site
for one, so every API that takes a server key refuses a browser key as it refuses any unknown key.
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from peewee import CharField, IntegerField

from config import BrowserKey, Config, Site
from dialects.errors import BadCredentials, Refused
from models import BaseModel, UTCDateTimeField, writing
from storage.stores import Store

INVALID_KEY = "Invalid API key"
WINDOW = timedelta(minutes=1)


class EventNotAllowed(Refused):
    """An event the browser key does not list in its `events`."""

    def __init__(self, name: str):
        super().__init__(f"Event {name[:100]!r} is not allowed for this browser key (sites[].browser_keys[].events)")


class OverRate(Refused):
    """More calls in this minute than the browser key's `rate_per_minute`."""

    def __init__(self, rate: int, retry_after: int):
        super().__init__(f"Rate limit exceeded: this browser key allows {rate} calls a minute "
                         "(sites[].browser_keys[].rate_per_minute)")
        self.retry_after = retry_after


class BrowserKeyMinute(BaseModel):
    """How many calls a browser key made in one minute; the key is kept as a digest, the counts are impersonal."""

    key = CharField()  # a digest of the key: a public key, but no reason to copy it into the database
    minute = UTCDateTimeField()
    calls = IntegerField(default=0)

    class Meta:
        table_name = "browser_key_minutes"
        primary_key = False
        indexes = ((("key", "minute"), True),)


def admit(config: Config, key: object, origin: str | None) -> tuple[Site, BrowserKey]:
    """The site and settings of a browser key used from one of its site's allowed origins; BadCredentials else."""
    found = config.browser_key(key)
    if found is None or not origin or not found[0].allows_origin(origin):
        raise BadCredentials(INVALID_KEY)
    return found


def of_site(config: Config, site: Site, key: object) -> BrowserKey:
    """The settings of one of `site`'s browser keys; BadCredentials for any other key (a server key included)."""
    found = config.browser_key(key)
    if found is None or found[0] is not site:
        raise BadCredentials(INVALID_KEY)
    return found[1]


def check_event(browser: BrowserKey, *names: str | None) -> None:
    """Refuse an event (by the name sent or its standard name) the key does not list."""
    if not browser.allows_event(*names):
        raise EventNotAllowed(next(name for name in names if name))


def count_call(browser: BrowserKey, now: datetime) -> None:
    """Count one call in this minute; OverRate once the key's rate is spent (the refused call counts too, so a
    flood stays refused until the minute is over)."""
    minute = now.replace(second=0, microsecond=0)
    digest = hashlib.sha256(browser.key.encode()).hexdigest()[:32]
    with writing():
        (BrowserKeyMinute.insert(key=digest, minute=minute, calls=1)
         .on_conflict(conflict_target=[BrowserKeyMinute.key, BrowserKeyMinute.minute],
                      update={BrowserKeyMinute.calls: BrowserKeyMinute.calls + 1})
         .execute())
        calls = (BrowserKeyMinute.select(BrowserKeyMinute.calls)
                 .where(BrowserKeyMinute.key == digest, BrowserKeyMinute.minute == minute).scalar())
    if calls > browser.rate_per_minute:
        raise OverRate(browser.rate_per_minute, max(1, int((minute + WINDOW - now).total_seconds() + 0.999)))


def purge(older_than: timedelta, now: datetime) -> int:
    """Counts of minutes gone by: only the current minute's count is ever read."""
    return BrowserKeyMinute.delete().where(BrowserKeyMinute.minute < now - WINDOW).execute()


STORE = Store("browser_key_minutes", (BrowserKeyMinute,), purge=purge,
              impersonal="a digest of a public key and a count of calls per minute")
