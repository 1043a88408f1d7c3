"""Schema migrations (docs/upgrading.md): the schema's version kept in the database, and the ordered steps past it.

At start-up (and by `cli.py migrate`) `upgrade()` takes the box's write turn, reads the version, applies each
pending step in a transaction of its own that records it, creates the tables of stores new since, and checks
that every column the code declares is there. Several workers starting together: the first applies the
steps, the others find them applied. A new database gets every table as the code declares it and the
latest version at once.

The next schema change is one `Step` appended to `STEPS`, e.g.
`Step(2, "sends.note", lambda migrator, db: migrate(migrator.add_column("sends", "note", TextField(null=True))))`.
"""
from __future__ import annotations

import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, ContextManager, Iterator

from peewee import Database, IntegerField, Model, PostgresqlDatabase, SqliteDatabase, TextField
from playhouse.migrate import SchemaMigrator

from storage.stores import tables

VERSION_TABLE = "schema_version"
FIRST_TABLE = "events"  # every database Postback ever made has it: one without a version is at step 1
ADVISORY_KEY = zlib.crc32(b"postback schema migrations")  # PostgreSQL's lock for the steps, one per database


@dataclass(frozen=True)
class Step:
    """One schema change: its version (one more than the step before), what it does, and how."""

    version: int
    says: str
    apply: Callable[[SchemaMigrator, Database], None]


def _unchanged(migrator: SchemaMigrator, db: Database) -> None:
    """Step 1 is the schema the first release with migrations found: nothing to change in it."""


def _console_indexes(migrator: SchemaMigrator, db: Database) -> None:
    """The console finds an event by its order id within a site, and lists a site's events by time."""
    for columns in (("site", "order_id"), ("site", "received_at")):
        db.execute_sql(f"CREATE INDEX IF NOT EXISTS events_{'_'.join(columns)} ON events ({', '.join(columns)})")


def _partial_lease_index(migrator: SchemaMigrator, db: Database) -> None:
    """Only sends in flight are looked up by their lease: the index holds those, not every finished send."""
    db.execute_sql("DROP INDEX IF EXISTS send_status_lease_until")
    db.execute_sql("CREATE INDEX IF NOT EXISTS sends_leased ON sends (lease_until) WHERE status = 'sending'")


def _user_agents_table(migrator: SchemaMigrator, db: Database) -> None:
    """Each distinct user agent once, in its own table; an event names its own by id."""
    sqlite = isinstance(db, SqliteDatabase)
    key = "INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT" if sqlite else "SERIAL NOT NULL PRIMARY KEY"
    db.execute_sql(f"CREATE TABLE user_agents (id {key}, text TEXT NOT NULL)")
    db.execute_sql("CREATE UNIQUE INDEX useragent_text ON user_agents (text)")
    db.execute_sql("INSERT INTO user_agents (text) SELECT DISTINCT user_agent FROM events "
                   "WHERE user_agent IS NOT NULL ORDER BY user_agent")
    db.execute_sql("ALTER TABLE events ADD COLUMN user_agent_id INTEGER")
    db.execute_sql("UPDATE events SET user_agent_id = (SELECT id FROM user_agents WHERE text = events.user_agent) "
                   "WHERE user_agent IS NOT NULL")
    db.execute_sql("ALTER TABLE events DROP COLUMN user_agent")


STEPS: tuple[Step, ...] = (
    Step(1, "the schema as Postback made it before migrations (events, sends and every store's tables)", _unchanged),
    Step(2, "indexes on events for the console: (site, order_id) and (site, received_at)", _console_indexes),
    Step(3, "sends indexed by lease only while in flight (a partial index)", _partial_lease_index),
    Step(4, "user agents stored once each, in their own table (events.user_agent becomes user_agent_id)",
         _user_agents_table),
)


class SchemaError(RuntimeError):
    """The database's schema is not one this code can use; the message says what to do."""


class SchemaVersion(Model):
    """One row per applied step."""

    version = IntegerField(primary_key=True)
    says = TextField()
    applied_at = TextField()  # ISO 8601, UTC

    class Meta:
        table_name = VERSION_TABLE


@dataclass(frozen=True)
class Status:
    """Where a database stands: its version (0 for a new one) and the steps still to apply."""

    version: int
    pending: tuple[Step, ...]
    latest: int


def write_transaction(db: Database) -> ContextManager:
    """A transaction that starts as the writer (BEGIN IMMEDIATE on SQLite), so no read in it must upgrade later."""
    real = getattr(db, "obj", db)  # the models' DatabaseProxy, or a database
    return db.atomic(lock_type="IMMEDIATE") if isinstance(real, SqliteDatabase) else db.atomic()


def status(db: Database, steps: tuple[Step, ...] = STEPS) -> Status:
    """The database's version and its pending steps; SchemaError when it is newer than these steps."""
    latest = steps[-1].version
    version = _version(db)
    if version > latest:
        raise SchemaError(
            f"the database is at schema version {version}, newer than this Postback knows (version {latest}): "
            f"a newer release upgraded it. Run that release, or restore the backup taken before the upgrade "
            f"(docs/upgrading.md)")
    return Status(version, tuple(step for step in steps if step.version > version), latest)


def upgrade(db: Database, turn: Callable[[], ContextManager], steps: tuple[Step, ...] = STEPS,
            say: Callable[[str], None] = lambda line: None) -> list[Step]:
    """Bring the schema up to date under the write turn (exactly once per box); the steps applied, each `say`-d."""
    _check_order(steps)
    with turn(), _advisory_lock(db):
        found = set(db.get_tables())
        if VERSION_TABLE not in found:
            with write_transaction(db), db.bind_ctx([SchemaVersion]):
                db.create_tables([SchemaVersion])
                if FIRST_TABLE in found:  # made before migrations: the tables step 1 declares
                    _record(db, steps[0])
                else:  # a new database: every table as the code declares it, at the latest version
                    db.create_tables(tables())
                    _record(db, steps[-1])
                    say(f"new database: created at schema version {steps[-1].version}")
        applied = []
        for step in status(db, steps).pending:
            say(f"applying {step.version}: {step.says}")
            with write_transaction(db):
                step.apply(SchemaMigrator.from_database(db), db)
                _record(db, step)
            applied.append(step)
        db.create_tables(tables(), safe=True)  # a store's new table needs no step
        _check_columns(db)
    return applied


def _version(db: Database) -> int:
    if VERSION_TABLE not in db.get_tables():
        return 1 if FIRST_TABLE in db.get_tables() else 0
    with db.bind_ctx([SchemaVersion]):
        return SchemaVersion.select(SchemaVersion.version).order_by(SchemaVersion.version.desc()).scalar() or 0


def _record(db: Database, step: Step) -> None:
    with db.bind_ctx([SchemaVersion]):
        SchemaVersion.insert(version=step.version, says=step.says,
                             applied_at=datetime.now(timezone.utc).isoformat(timespec="seconds")).execute()


def _check_order(steps: tuple[Step, ...]) -> None:
    if [step.version for step in steps] != list(range(1, len(steps) + 1)):
        raise ValueError("migration steps must be numbered 1, 2, 3, … in order")


def _check_columns(db: Database) -> None:
    """Every column a model declares is in its table: a change without its step is named here, not on a write."""
    for model in tables():
        present = {column.name for column in db.get_columns(model._meta.table_name)}
        missing = [field.column_name for field in model._meta.sorted_fields if field.column_name not in present]
        if missing:
            raise SchemaError(f"table {model._meta.table_name} has no column {', '.join(missing)}: the code declares "
                              f"it without a migration step that adds it (storage/migrations.py)")


@contextmanager
def _advisory_lock(db: Database) -> Iterator[None]:
    """PostgreSQL: one migrating process per database, whichever box it runs on (SQLite's turn is the box's)."""
    if not isinstance(db, PostgresqlDatabase):
        yield
        return
    db.execute_sql("SELECT pg_advisory_lock(%s)", (ADVISORY_KEY,))
    try:
        yield
    finally:
        db.execute_sql("SELECT pg_advisory_unlock(%s)", (ADVISORY_KEY,))
