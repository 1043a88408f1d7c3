"""The store registry: every module that keeps rows declares a `STORE`; this lists those modules.

A store says what it keeps (its tables, in creation order) and how its rows go: purged past the retention
period, erased for a person (`retention.py` walks them), or why neither is needed: it holds no personal data.
The core stores are listed here; a dialect lists its own in `STORES` in its package's `__init__.py`, so adding a
dialect touches nothing here. tests/test_store_registry.py walks every module and fails on a store left out.
"""
from __future__ import annotations

import pkgutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterator, Mapping

from peewee import Model

ROOT = Path(__file__).resolve().parent.parent
NOT_APPLICATION = ("tests", "bench")
# The stores of the core, in creation order: events and their sends first.
CORE_STORES = ("models", "ingest.inspector", "console.sessions", "console.throttle", "ingest.browser_keys",
               "delivery.alerts", "console.kept")

# Rows removed or emptied: a count of the store's first table, or one per table name.
Rows = int | Mapping[str, int]


@dataclass
class Person:
    """Whom an erasure is for, on one site: the user ids, anonymous ids and email/phone hashes that name them.

    A store that `links` adds what it finds tied to the person (their events' other hashes and ids), and
    erases before the others, so those erase every row of theirs, not only the rows the request named.
    """

    site: str
    requested_by: str  # said in what the erasure leaves behind, e.g. "User API"
    external_ids: set[str] = field(default_factory=set)
    anonymous_ids: set[str] = field(default_factory=set)
    hashes: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Store:
    """What one module keeps, and how its rows leave: `purge` past the period, `erase` for a person.

    A store that holds no personal data says why in `impersonal` and needs no erase (a purge is optional).
    """

    name: str
    tables: tuple[type[Model], ...]
    purge: Callable[[timedelta, datetime], Rows] | None = None
    erase: Callable[[Person, datetime], Rows] | None = None
    impersonal: str = ""
    links: bool = False  # its erase adds to the person what it finds tied to them: it goes first
    stats: Callable[[], dict] | None = None
    chunked: bool = False  # its purge commits chunk by chunk itself, and takes progress=(done, total)

    def __post_init__(self):
        if not self.impersonal and (self.purge is None or self.erase is None):
            raise ValueError(f"store {self.name!r} keeps personal data: it needs a purge and an erase")


def modules() -> Iterator[ModuleType]:
    """Every module of the application (its top-level modules and packages, tests and bench aside), imported:
    what the registry's contract test walks."""
    for info in pkgutil.iter_modules([str(ROOT)]):
        if info.name in NOT_APPLICATION:
            continue
        module = import_module(info.name)
        yield module
        if info.ispkg:
            for sub in pkgutil.walk_packages(module.__path__, f"{info.name}."):
                yield import_module(sub.name)


def store_modules() -> list[str]:
    """The modules that declare a store: the core's, then each dialect's (`STORES` in its package)."""
    import dialects  # the dialects' stores register here, never the other way round

    return [*CORE_STORES, *(name for package in dialects.packages() for name in getattr(package, "STORES", ()))]


def registered() -> tuple[Store, ...]:
    """Every store: those that link a person first (their erasure must come first), then in listed order."""
    found = [import_module(name).STORE for name in store_modules()]
    return tuple(sorted(found, key=lambda store: not store.links))


def tables() -> list[type[Model]]:
    """Every table, in creation order: each store's, as it lists them."""
    return [table for store in registered() for table in store.tables]
