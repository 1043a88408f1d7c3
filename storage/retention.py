"""Retention and erasure: what every registered store (stores.py) forgets past `storage.retention_days`, or of a person."""
from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Callable, Iterator

from peewee import SqliteDatabase

from config import Site
from ingest.identity import normalize_identity
from models import database, personal_hashes, writing
from storage.stores import Person, Rows, Store, registered


def purge(retention_days: int, now: datetime, progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Each store forgets what is older than the period (events only once none of their sends can still go out);
    rows removed per table. `progress(done, total)` follows the events, nearly all of a purge's work."""
    removed: dict[str, int] = {}
    period = timedelta(days=retention_days)
    for store in registered():
        if store.chunked:
            removed.update(_per_table(store, store.purge(period, now, progress=progress)))
        elif store.purge is not None:
            with writing():  # one transaction per store: a long purge does not hold the others' writers back
                removed.update(_per_table(store, store.purge(period, now)))
    return removed


def erase(person: Person, now: datetime) -> dict[str, int]:
    """Erase a person (GDPR) from every store, in one transaction; rows erased per table.

    Stores that link more of the person (their events' other hashes and ids) come first, so the others erase
    what those name too.
    """
    erased: dict[str, int] = {}
    with erasing():
        for store in registered():
            if store.erase is not None:
                erased.update(_per_table(store, store.erase(person, now)))
    return erased


def person_named(site: Site, requested_by: str, email: str | None = None, phone: str | None = None) -> Person:
    """The person an email address or phone number names on a site, hashed exactly as ingest hashes them (a user
    id that was that email or phone is kept as the same hash); ValueError, saying why, for a value ingest would
    drop."""
    identity = normalize_identity({"email": email, "phone": phone}, site.default_country)
    if identity.dropped:
        raise ValueError("; ".join(identity.dropped))
    hashes = personal_hashes(identity.hashes)
    if not hashes:
        raise ValueError("give an email address or a phone number")
    return Person(site.id, requested_by, external_ids=set(hashes), hashes=set(hashes))


def _per_table(store: Store, rows: Rows) -> dict[str, int]:
    """A purge's or an erasure's rows per table name (a count alone is of the store's first table)."""
    return {store.tables[0]._meta.table_name: rows} if isinstance(rows, int) else dict(rows)


@contextmanager
def erasing() -> Iterator[None]:
    """One transaction for an erasure; nested, a savepoint.

    On SQLite what it frees is zeroed and, once it is committed, the WAL emptied, so the old values leave the
    files too.
    """
    db = database.obj
    if database.in_transaction() or not isinstance(db, SqliteDatabase):
        with writing():
            yield
        return
    before = db.execute_sql("PRAGMA secure_delete").fetchone()[0]
    db.execute_sql("PRAGMA secure_delete = ON")
    try:
        with writing():
            yield
    finally:
        db.execute_sql(f"PRAGMA secure_delete = {int(before)}")
    db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # best effort: a reader elsewhere may hold it


def stats() -> dict[str, dict]:
    """What the stores report of themselves (events per site, sends per destination and status), and the rows
    of every table."""
    found: dict[str, dict] = {}
    for store in registered():
        if store.stats is not None:
            found.update(store.stats())
    found["rows"] = {table._meta.table_name: table.select().count() for store in registered() for table in store.tables}
    return found
