"""The indexes the console's lookups need beyond those the models declare: a schema change for a migration step.

`?q=` finds an event by its order id within a site; the events list and the overview's chart read one site's
events by time. Both statements are idempotent.
"""
from __future__ import annotations

from peewee import Database

INDEXES = (
    "CREATE INDEX IF NOT EXISTS events_site_order_id ON events (site, order_id)",
    "CREATE INDEX IF NOT EXISTS events_site_received_at ON events (site, received_at)",
)


def add_indexes(db: Database) -> None:
    """Create the console's indexes on an open database (SQLite or PostgreSQL)."""
    for statement in INDEXES:
        db.execute_sql(statement)
