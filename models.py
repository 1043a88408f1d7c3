"""Storage: the canonical event, its send rows, destination state, and the verbs that write them."""
from __future__ import annotations

import base64
import fcntl
import json
import operator
import os
import re
import threading
import zlib
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from functools import reduce
from typing import Callable, Iterable, NamedTuple

from peewee import (
    OP, SQL, AutoField, BooleanField, DatabaseError, DatabaseProxy, DateTimeField, DoubleField, Expression, Field,
    ForeignKeyField, IntegerField, IntegrityError, InterfaceError, Model, NodeList, SqliteDatabase, TextField, Value,
    fn,
)
from playhouse.db_url import connect
from playhouse.pool import MaxConnectionsExceeded

import logs
from dialects.errors import StorageFault
from ingest.canonical import CanonicalEvent
from ingest.identity import keys_of
from ingest.privacy import reduce_ip
from ingest.writer import GroupWriter
from storage import postgres  # noqa: F401 - PostgreSQL URLs get connections that survive a server restart
from storage.migrations import STEPS, Step, upgrade, write_transaction
from storage.stores import Person, Store, tables

database = DatabaseProxy()

PENDING, SENDING, SENT, FAILED, SKIPPED = "pending", "sending", "sent", "failed", "skipped"
FINAL = (SENT, FAILED, SKIPPED)
MAX_ROW_ID = 2 ** 63 - 1  # the largest id (and offset) SQLite and PostgreSQL take: a larger one overflows
# secure_delete: pages freed by an erasure or an IP reduction are zeroed, so the old bytes leave the file.
# page_size (a new database only): events are about 900 bytes each, and a page holds whole rows, so 4 KB pages
# leave a fifth of each page empty where 8 KB pages leave a few percent. Bigger pages save little more and cost
# CPU: a commit writes every page it changed to the WAL whole (docs/performance.md).
SQLITE_PRAGMAS = {"page_size": 8192, "journal_mode": "wal", "busy_timeout": 10000, "synchronous": "normal", "foreign_keys": 1,
                  "secure_delete": 1}


class JSONField(TextField):
    """JSON text that works the same on SQLite and PostgreSQL."""

    def db_value(self, value):
        return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)

    def python_value(self, value):
        return None if value is None else json.loads(value)


class IdentityField(JSONField):
    """Identity hashes (flavour -> sha256 hex), stored compactly.

    Each digest is stored in unpadded base64url (43 characters instead of 64 hex), and a flavour whose hash
    another flavour already holds (em_google of an address without dots, fn_compact of a one-word name) as
    "=<that flavour>"; the entries are written "flavour:value", one space apart, where JSON's quotes and braces
    would add about 35 bytes to every event. Every digest stays whole in the text, so a search for it (`holding`)
    finds the row; rows stored before this form (JSON, hex, every flavour spelled out) read the same.
    """

    def db_value(self, value):
        if not value:
            return super().db_value(value)
        first: dict[str, str] = {}
        compact = {}
        for flavour in sorted(value):
            digest = value[flavour]
            compact[flavour] = f"={first[digest]}" if digest in first else _to_base64(digest)
            first.setdefault(digest, flavour)
        if not all(_FLAVOUR.fullmatch(flavour) and _COMPACT_VALUE.fullmatch(stored)
                   for flavour, stored in compact.items()):
            return super().db_value(compact)  # a value Postback did not make: JSON keeps it whole
        return " ".join(f"{flavour}:{stored}" for flavour, stored in compact.items())

    def python_value(self, value):
        if value is None or value.startswith("{"):
            identity = super().python_value(value)
        else:
            identity = dict(entry.split(":", 1) for entry in value.split(" ") if entry)
        if not identity:
            return identity
        digests = {flavour: _to_hex(digest) for flavour, digest in identity.items() if not digest.startswith("=")}
        return {flavour: digests[digest[1:]] if digest.startswith("=") else digests[flavour]
                for flavour, digest in identity.items()}

    @staticmethod
    def forms(digest: str) -> tuple[str, ...]:
        """How a hex digest may appear in the stored text: as written now, and as rows before it hold it."""
        compact = _to_base64(digest)
        return (compact, digest) if compact != digest else (digest,)


_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_BASE64_DIGEST = re.compile(r"[A-Za-z0-9_-]{43}")
_FLAVOUR = re.compile(r"[a-z0-9_]+")
_COMPACT_VALUE = re.compile(r"[A-Za-z0-9_-]{43}|=[a-z0-9_]+")


def _to_base64(digest: str) -> str:
    if not _HEX_DIGEST.fullmatch(digest):
        return digest  # not a digest Postback made: kept as given
    return base64.urlsafe_b64encode(bytes.fromhex(digest)).rstrip(b"=").decode("ascii")


def _to_hex(stored: str) -> str:
    if not _BASE64_DIGEST.fullmatch(stored):
        return stored
    return base64.urlsafe_b64decode(stored + "=").hex()


class UTCDateTimeField(DateTimeField):
    """Stored as naive UTC, handed back as aware UTC."""

    def db_value(self, value):
        if isinstance(value, datetime) and value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return super().db_value(value)

    def python_value(self, value):
        value = super().python_value(value)
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value


class BaseModel(Model):
    class Meta:
        database = database


class NeverReusedId(AutoField):
    """An id never given twice, even after its row is deleted: processes keep what an id names in a cache.

    (SQLite hands the largest rowid out again once its row is gone, unless the table says AUTOINCREMENT;
    PostgreSQL's sequences never go back.)
    """

    def ddl(self, ctx):
        nodes = super().ddl(ctx)
        return NodeList((nodes, SQL("AUTOINCREMENT"))) if isinstance(database.obj, SqliteDatabase) else nodes


class UserAgent(BaseModel):
    """Each distinct user agent once: an event names its own by id (a browser's is about 110 bytes, and the same
    for many events)."""

    id = NeverReusedId()
    text = TextField(unique=True)

    class Meta:
        table_name = "user_agents"


_USER_AGENTS: dict[int, str] = {}  # id -> text, for reading; ids are never reused, so an entry never goes stale
_USER_AGENTS_KEPT = 10000


class UserAgentField(IntegerField):
    """An event's user agent: its text in Python, the id of its `user_agents` row in the table.

    The writer turns texts into ids inside the transaction that stores the events (`_user_agent_ids`).
    """

    def db_value(self, value):
        return value  # a text until the writer resolves it, an id after

    def python_value(self, value):
        if value is None or isinstance(value, str):
            return value
        text = _USER_AGENTS.get(value)
        if text is None:
            text = UserAgent.select(UserAgent.text).where(UserAgent.id == value).scalar()
            if len(_USER_AGENTS) >= _USER_AGENTS_KEPT:
                _USER_AGENTS.clear()
            _USER_AGENTS[value] = text
        return text


class Event(BaseModel):
    site = TextField()
    dialect = TextField()
    event_name = TextField()
    standard_name = TextField()
    event_id = TextField()  # the dedup key: the client's id, or one we generated
    channel = TextField(default="web")
    occurred_at = UTCDateTimeField()
    received_at = UTCDateTimeField()
    external_id = TextField(null=True)
    anonymous_id = TextField(null=True)
    identity = IdentityField(default=dict)
    location = JSONField(default=dict)
    click_ids = JSONField(default=dict)
    ip = TextField(null=True)
    user_agent = UserAgentField(null=True, column_name="user_agent_id")
    page_url = TextField(null=True)
    referrer = TextField(null=True)
    language = TextField(null=True)
    value = DoubleField(null=True)
    currency = TextField(null=True)
    order_id = TextField(null=True)
    items = JSONField(default=list)
    consent = BooleanField(default=True)
    consent_categories = JSONField(null=True)
    properties = JSONField(default=dict)
    notes = JSONField(default=list)
    is_bot = BooleanField(default=False)

    class Meta:
        table_name = "events"
        # (site, order_id) and (site, received_at): the console finds an order and lists a site's events by time.
        indexes = ((("site", "event_id"), True), (("received_at",), False), (("site", "order_id"), False),
                   (("site", "received_at"), False))

    def to_canonical(self) -> CanonicalEvent:
        return canonical_event(getattr(self, field.name) for field in CANONICAL_COLUMNS)


# The event's columns a CanonicalEvent is built from, in its fields' order: a query can select them as a tuple.
CANONICAL_COLUMNS = tuple(Event.site if name == "site_id" else Event._meta.fields[name]
                          for name in CanonicalEvent.__dataclass_fields__)
_CATEGORIES = list(CanonicalEvent.__dataclass_fields__).index("consent_categories")


def canonical_event(values: Iterable) -> CanonicalEvent:
    """The CanonicalEvent of CANONICAL_COLUMNS' values, each as its field reads it (python_value)."""
    values = list(values)
    if values[_CATEGORIES] is not None:
        values[_CATEGORIES] = tuple(values[_CATEGORIES])
    return CanonicalEvent(*values)


class Send(BaseModel):
    event = ForeignKeyField(Event, backref="sends", on_delete="CASCADE")
    site = TextField()
    destination = TextField()  # "<site>/<name>": names are unique per site only
    platform = TextField()
    status = TextField(default=PENDING)
    reason = TextField(null=True)  # why skipped/failed, for a person to act on
    attempts = IntegerField(default=0)  # every try; only retries count toward max_attempts
    retries = IntegerField(default=0)
    next_attempt_at = UTCDateTimeField()
    lease_owner = TextField(null=True)
    lease_until = UTCDateTimeField(null=True)
    last_status = IntegerField(null=True)
    last_error = TextField(null=True)
    response_excerpt = TextField(null=True)
    trace_id = TextField(null=True)
    payload = JSONField(null=True)
    match_quality = JSONField(null=True)
    finished_at = UTCDateTimeField(null=True)

    class Meta:
        table_name = "sends"
        # Claims find due sends by (destination, status, time), and the console and alerts count finished ones
        # by the same; only sends in flight are looked up by lease, so that index holds those alone (step 3).
        indexes = ((("destination", "status", "next_attempt_at"), False),)


Send.add_index(Send.index(Send.lease_until, name="sends_leased").where(Send.status == SENDING))


class DestinationState(BaseModel):
    """A paused destination: its sends wait until its config changes or an admin resumes it."""

    destination = TextField(primary_key=True)
    paused_reason = TextField()
    paused_at = UTCDateTimeField()
    fingerprint = TextField()  # the config it was paused under

    class Meta:
        table_name = "destination_state"


def open_database(url: str, migrate: bool = True, steps: tuple[Step, ...] = STEPS, pragmas: dict | None = None):
    """Connect (SQLite in WAL mode with a busy timeout), create missing folders; unless told not to, bring the
    schema up to date (storage/migrations.py: missing tables created, pending steps applied, once per box).
    `pragmas` are added to SQLITE_PRAGMAS for every connection of this process (SQLite only)."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        folder = os.path.dirname(path)
        if folder and path != ":memory:":
            os.makedirs(folder, exist_ok=True)
        db = connect(url, pragmas={**SQLITE_PRAGMAS, **(pragmas or {})}, check_same_thread=False)
    else:
        db = connect(url)
    database.initialize(db)
    _USER_AGENTS.clear()  # ids name rows of the database they came from
    if migrate:
        upgrade(db, write_turn, steps)
    return db


def release_connection(_error: BaseException | None = None) -> None:
    """After each request (Flask's teardown): on PostgreSQL the thread's connection is closed, or handed back to
    its pool (`postgresql+pool://`), so a node holds connections only while it uses them. SQLite keeps its own."""
    if not isinstance(database.obj, SqliteDatabase) and not database.in_transaction():
        database.close()


_turns = threading.local()  # a lock file per thread: a flock excludes other open files, not threads sharing one


@contextmanager
def write_turn():
    """Wait for this thread's turn to write, behind the other writers of this box (SQLite only).

    SQLite has one writer, and a writer that finds it busy polls with sleeps growing to 100 ms: under
    load one process takes the lock again and again while another sleeps, for seconds. Writers that
    take turns through a flock beside the database instead are woken as soon as the last one is done.
    A lock file that cannot be opened is a storage fault: nothing can be written until it can.
    """
    db = database.obj
    if not isinstance(db, SqliteDatabase) or db.database == ":memory:":
        yield
        return
    path = db.database + ".write.lock"
    handle = getattr(_turns, "handle", None)
    try:
        if handle is None or handle.name != path or _replaced(handle, path):
            if handle is not None:
                handle.close()
            _turns.handle = None  # so a failed open below is tried again next time, not a closed handle reused
            handle = _turns.handle = open(path, "a+")
        fcntl.flock(handle, fcntl.LOCK_EX)
    except OSError as exc:
        raise StorageFault(f"the write lock file {os.path.basename(path)} cannot be used ({exc.strerror})") from exc
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)


def _replaced(handle, path: str) -> bool:
    """Whether the lock file was removed or replaced since this handle opened it: a flock on the old one would
    exclude nobody who opens the path now."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return True
    then = os.fstat(handle.fileno())
    return (now.st_dev, now.st_ino) != (then.st_dev, then.st_ino)


def forget_write_turn() -> None:
    """Close this thread's lock file (a process about to fork keeps none for its children to share)."""
    handle = getattr(_turns, "handle", None)
    if handle is not None:
        handle.close()
        _turns.handle = None


@contextmanager
def writing():
    """A write transaction, begun once it is this thread's turn (`write_turn`) and as the writer; nested, a savepoint.

    Every write of every store goes through here. Begun as the writer (BEGIN IMMEDIATE on SQLite), it never
    has to upgrade a read to a write: in WAL mode that upgrade fails at once ("database is locked") when
    another connection committed since the read began, whatever the busy timeout.

    A write the storage refuses (disk full, read-only database, unusable lock file) raises StorageFault,
    and this thread's connection is closed, so the next write opens it afresh once the fault is gone (a
    connection SQLite opened read-only would stay read-only).
    """
    if database.in_transaction():
        with database.atomic():
            yield
        return
    try:
        with write_turn(), write_transaction(database):
            yield
    except (DatabaseError, InterfaceError) as exc:  # InterfaceError: a PostgreSQL connection lost mid-transaction
        reason = storage_fault(exc)
        if reason is None:
            raise
        database.close()
        raise StorageFault(reason) from exc


def exclusive(name: str) -> None:
    """In a write transaction: wait until no other transaction holds `name`, then hold it until this one ends.

    SQLite's one writer already runs write transactions one at a time; PostgreSQL runs them side by side, so a
    read-then-insert ("has this event a send yet?") of two of them would both find nothing and both insert.
    """
    if not isinstance(database.obj, SqliteDatabase):
        database.execute_sql(f"SELECT pg_advisory_xact_lock({database.param})", (zlib.crc32(name.encode()),))


def for_update(query, skip_locked: bool = False):
    """`query` locking the rows it reads until the transaction ends, where the backend has row locks.

    SQLite has none and needs none: its one writer at a time (`writing`) already keeps others out.
    """
    if isinstance(database.obj, SqliteDatabase):
        return query
    return query.for_update(skip_locked=skip_locked)


UNREACHABLE = "the database server cannot be reached"
# What the database drivers say when storage, not the statement, is at fault; and what a person reads instead.
# PostgreSQL's texts are libpq's and the server's (https://www.postgresql.org/docs/current/errcodes-appendix.html,
# class 08 and 57P0x): a server that is down, restarting or out of connections fails every statement alike.
_FAULTS = (
    ("server closed the connection unexpectedly", UNREACHABLE),
    ("connection already closed", UNREACHABLE),
    ("could not connect to server", UNREACHABLE),
    ("connection refused", UNREACHABLE),
    ("could not receive data from server", UNREACHABLE),
    ("could not send data to server", UNREACHABLE),
    ("no connection to the server", UNREACHABLE),
    ("ssl connection has been closed unexpectedly", UNREACHABLE),
    ("could not translate host name", UNREACHABLE),
    ("timeout expired", UNREACHABLE),
    ("terminating connection due to administrator command", "the database server is shutting down"),
    ("the database system is shutting down", "the database server is shutting down"),
    ("the database system is starting up", "the database server is starting up"),
    ("the database system is in recovery mode", "the database server is recovering"),
    ("too many clients already", "the database server has no connection to spare"),
    ("too many connections for", "the database server has no connection to spare"),
    ("database or disk is full", "the disk is full"),
    ("no space left on device", "the disk is full"),
    ("attempt to write a readonly database", "the database is read-only"),
    ("read-only transaction", "the database is read-only"),
    ("unable to open database file", "the database file cannot be opened"),
    ("disk i/o error", "disk I/O error"),
)
_NO_TRANSACTION = "no transaction is active"  # SQLite rolled back on its own (a full disk): the cause is the context


def storage_fault(exc: BaseException) -> str | None:
    """Why the storage refused a write, in words for a person; None when the error is not a storage fault."""
    if isinstance(exc, StorageFault):
        return exc.fault
    if isinstance(exc, MaxConnectionsExceeded):  # postgresql+pool://…?max_connections=N, every one in use
        return "every connection of this worker's pool is in use (its max_connections)"
    message = str(exc).lower()
    if _NO_TRANSACTION in message and exc.__context__ is not None:
        return storage_fault(exc.__context__)
    return next((reason for text, reason in _FAULTS if text in message), None)


class _ProbeDone(Exception):
    """Rolls the probe's transaction back."""


PROBE_BYTES = 16384  # a few pages: a write that must find room, as an event with its sends does


def write_fault() -> str | None:
    """Why the database cannot be written now, or None: a small write in a transaction that is rolled back."""
    try:
        with writing():
            database.execute_sql("CREATE TABLE postback_write_probe (filler TEXT)")
            database.execute_sql("INSERT INTO postback_write_probe (filler) VALUES (" + database.param + ")",
                                 ["0" * PROBE_BYTES])
            raise _ProbeDone
    except _ProbeDone:
        return None
    except StorageFault as exc:
        return exc.fault


def unwritable(url: str) -> str | None:
    """Why the database at `url` cannot be opened, brought up to date and written, or None; for start-up checks,
    so it leaves no connection and no lock file open (a process about to fork must not share them)."""
    try:
        open_database(url)
        fault = write_fault()
    except StorageFault as exc:
        fault = exc.fault
    except DatabaseError as exc:
        fault = storage_fault(exc)
        if fault is None:
            raise
    finally:
        if database.obj is not None:
            database.close()
        forget_write_turn()
    return None if fault is None else f"cannot write the database {logs.redact(url)}: {fault}"


def record_event(event: CanonicalEvent, sends: Iterable[dict], ip_policy: str,
                 also: Statement | None = None) -> tuple[Event, bool]:
    """Store an event and its send rows in one transaction; (existing row, False) on a repeat event_id.

    Every ingest path writes through here. The rows are written by this process's writer thread,
    together with other requests' (group commit, writer.py); this returns once they have committed.
    `also`: one more statement (SQL, parameters) of the caller's, run in that transaction if the event is new,
    so what it writes (a pixel visitor's profile) is stored with the event or not at all, without a commit of its own.
    """
    sends = list(sends)
    if all(s["status"] in FINAL for s in sends):
        event.ip = reduce_ip(event.ip, ip_policy)  # nothing can go out: no reason to keep the full IP
    fields = {name: getattr(event, name) for name in CanonicalEvent.__dataclass_fields__ if name != "site_id"}
    fields["consent_categories"] = list(event.consent_categories) if event.consent_categories is not None else None
    row = Event(site=event.site_id, **fields)  # with the model's defaults, as Event.create would store it
    # Sends differ in a few fields: the rest is converted once per event.
    common = _params(_SEND_COLUMNS, {**_SEND_DEFAULTS, "site": event.site_id, "next_attempt_at": event.received_at})
    rows = _Rows((event.site_id, event.event_id), _params(_EVENT_COLUMNS, row.__data__),
                 [_fill(common, send) for send in sends], also)
    row.id = WRITER.run(rows)
    if row.id is None:
        existing = Event.get_or_none((Event.site == event.site_id) & (Event.event_id == event.event_id))
        if existing is None:  # erased between our INSERT and this read
            raise IntegrityError(f"event {event.event_id!r} of site {event.site_id!r} was stored and is gone")
        return existing, False
    return row, True


class Statement(NamedTuple):
    sql: str  # with the database's own parameter marks (`database.param`)
    params: tuple


class _Rows(NamedTuple):
    """One event's INSERT parameters and its sends', each field's db_value computed by the caller's thread."""

    key: tuple[str, str]  # (site, event_id): stored once
    event: list
    sends: list[list]
    also: Statement | None = None  # run once the event is stored new


# Column order of those parameters; a send's event id is put first by the writer, once known.
_EVENT_COLUMNS = [f for f in Event._meta.sorted_fields if f.name != "id"]
_SEND_COLUMNS = [f for f in Send._meta.sorted_fields if f.name not in ("id", "event")]


_SEND_DEFAULTS = Send._meta.get_default_dict()
_SEND_INDEX = {field.name: i for i, field in enumerate(_SEND_COLUMNS)}


def _params(columns: list, values: dict) -> list:
    return [field.db_value(values.get(field.name)) for field in columns]


def _fill(common: list, send: dict) -> list:
    """A send's parameters: the event's common ones, with this send's own fields converted in their places."""
    params = common.copy()
    for name, value in send.items():
        i = _SEND_INDEX[name]
        params[i] = _SEND_COLUMNS[i].db_value(value)
    return params


def _insert_events(items: list[_Rows]) -> list[int | None]:
    """On the writer thread, in one transaction: a group's events and sends in a few multi-row INSERTs.

    Each item's result is its event's new id, or None when its (site, event_id) was stored before or
    comes earlier in the group.
    """
    first: dict[tuple[str, str], _Rows] = {}
    for item in items:
        first.setdefault(item.key, item)
    events = [item.event for item in first.values()]
    texts = {event[_USER_AGENT] for event in events if isinstance(event[_USER_AGENT], str)}
    if texts:  # copies: if this transaction rolls back, the items are written again from their texts
        ids = _user_agent_ids(texts)
        events = [[*event[:_USER_AGENT], ids[event[_USER_AGENT]], *event[_USER_AGENT + 1:]]
                  if isinstance(event[_USER_AGENT], str) else event for event in events]
    stored = insert_rows("events", [f.column_name for f in _EVENT_COLUMNS], events,
                         " ON CONFLICT (site, event_id) DO NOTHING RETURNING site, event_id, id")
    ids = {(site, event_id): pk for site, event_id, pk in stored}
    insert_rows("sends", ["event_id", *(f.column_name for f in _SEND_COLUMNS)],
                [[ids[key], *send] for key, item in first.items() if key in ids for send in item.sends])
    for key, item in first.items():
        if key in ids and item.also is not None:
            database.execute_sql(*item.also)
    return [ids.get(item.key) if first[item.key] is item else None for item in items]


_USER_AGENT = [field.name for field in _EVENT_COLUMNS].index("user_agent")


def _user_agent_ids(texts: set[str]) -> dict[str, int]:
    """The ids of these user agents, each added to `user_agents` if new; in the caller's write transaction.

    On PostgreSQL the table is held in ROW EXCLUSIVE mode until the transaction ends, so a purge of unused user
    agents (SHARE mode, `purge_user_agents`) waits for events about to name one, and they for it.
    """
    if not isinstance(database.obj, SqliteDatabase):
        database.execute_sql("LOCK TABLE user_agents IN ROW EXCLUSIVE MODE")
    ids = _user_agents_named(texts)
    missing = sorted(texts - ids.keys())
    if missing:
        insert_rows("user_agents", ["text"], [[text] for text in missing], " ON CONFLICT (text) DO NOTHING")
        ids.update(_user_agents_named(set(missing)))
    return ids


def _user_agents_named(texts: set[str]) -> dict[str, int]:
    # Plain SQL: once per group commit, where building the query with peewee cost more than running it.
    listed, named = sorted(texts), {}
    for chunk in (listed[i:i + CHUNK] for i in range(0, len(listed), CHUNK)):
        marks = ", ".join([database.param] * len(chunk))
        named.update(database.execute_sql(f"SELECT text, id FROM user_agents WHERE text IN ({marks})", chunk))
    return named


def purge_user_agents() -> int:
    """Delete the user agents no event names any more (after a purge): in the caller's write transaction."""
    if not isinstance(database.obj, SqliteDatabase):
        database.execute_sql("LOCK TABLE user_agents IN SHARE MODE")
    named = Event.select(Event.user_agent).where(Event.user_agent.is_null(False))
    return UserAgent.delete().where(UserAgent.id.not_in(named)).execute()


WRITER: GroupWriter[_Rows, int | None] = GroupWriter(database, _insert_events, writing)

# Bulk statements: many rows per statement. Each statement gives up the GIL and waits to get it back,
# which, with SQLite's write lock held, every other writer of the box waits for too.
MAX_PARAMS = 32766  # per statement: SQLite's default limit (PostgreSQL's is 65535)
MAX_ROWS = 256
# An UPDATE ... FROM (VALUES ...) is prepared at about 1.4 KB per row of VALUES, and every thread that records
# outcomes (the dispatcher's senders and drains, a connection each) keeps each size it ran in its connection's
# statement cache: up to 256 rows, about 1 MB a connection; up to 64, about 270 KB, for a few more statements.
UPDATE_ROWS = 64


def insert_rows(table: str, columns: list[str], rows: list[list], suffix: str = "") -> list[tuple]:
    """INSERT rows (values as stored: db_value) in few statements; what a RETURNING `suffix` gives back."""
    returned = []
    for chunk in _chunks(rows, len(columns)):
        cursor = database.execute_sql(f"INSERT INTO {table} ({', '.join(columns)}) VALUES {_values(chunk)}{suffix}",
                                      [value for row in chunk for value in row])
        if cursor.description is not None:  # the statement returns rows (PostgreSQL's driver refuses a fetch if not)
            returned.extend(cursor.fetchall())
    return returned


def update_rows(table: str, match: list[str], columns: list[str], rows: list[list], where: str = "",
                params: tuple = ()) -> int:
    """UPDATE many rows, each to values of its own, in few statements; how many rows changed.

    A row is the values of `match`, then the new values of `columns`: it changes the row of `table`
    whose `match` columns equal its own, if that also meets `where` (SQL after AND, with `params`).
    """
    sets = ", ".join(f"{column} = v.column{len(match) + i}" for i, column in enumerate(columns, 1))
    conditions = [f"{table}.{column} = v.column{i}" for i, column in enumerate(match, 1)] + ([where] if where else [])
    types = _column_types(table, [*match, *columns])
    changed = 0
    for chunk in _chunks(rows, len(match) + len(columns), UPDATE_ROWS):
        cursor = database.execute_sql(
            f"UPDATE {table} SET {sets} FROM (VALUES {_values(chunk, types)}) AS v WHERE {' AND '.join(conditions)}",
            [*(value for row in chunk for value in row), *params])
        changed += cursor.rowcount
    return changed


def _column_types(table: str, columns: list[str]) -> list[str] | None:
    """PostgreSQL: the SQL types of the table's columns, for a VALUES list to cast its first row to.

    PostgreSQL types each VALUES column from its values, and one that is all NULL as text, which no timestamp
    or integer column takes. SQLite is typeless: None, no casts.
    """
    if isinstance(database.obj, SqliteDatabase):
        return None
    model = next(model for model in tables() if model._meta.table_name == table)
    fields = {field.column_name: field for field in model._meta.sorted_fields}
    types = []
    for column in columns:
        context = database.get_sql_context()
        kind = context.sql(fields[column].ddl_datatype(context)).query()[0]
        types.append({"SERIAL": "INTEGER", "BIGSERIAL": "BIGINT"}.get(kind, kind))
    return types


def _chunks(rows: list[list], width: int, limit: int = MAX_ROWS):
    """Slices of a power-of-two length up to `limit` rows: few statements, and few shapes of them for the driver to
    prepare and keep (each size is a statement of its own in its cache, a big one weighing megabytes)."""
    most = min(limit, 1 << (MAX_PARAMS // width).bit_length() - 1)
    start = 0
    while start < len(rows):
        size = min(most, 1 << (len(rows) - start).bit_length() - 1)
        yield rows[start:start + size]
        start += size


def padded(values: list) -> list:
    """`values` with its last one repeated up to a power-of-two length, for an `IN (...)` list. Each length is a
    statement of its own in the connection's cache (about 200 bytes of prepared statement per value): claims of
    every size up to a few hundred ids would keep up to 128 of them (the cache's size), where padded they are
    nine or ten. A value twice in an IN list matches the same rows."""
    return values + values[-1:] * ((1 << (len(values) - 1).bit_length()) - len(values)) if values else values


def _values(rows: list[list], types: list[str] | None = None) -> str:
    """Placeholders for rows of values; with `types`, the first row's cast to them (the others follow it)."""
    one = f"({', '.join([database.param] * len(rows[0]))})"
    first = f"({', '.join(f'{database.param}::{kind}' for kind in types)})" if types else one
    return ", ".join([first] + [one] * (len(rows) - 1))


# --- retention and erasure of events and their sends --------------------------------------------------------

# Flavours that name one person; names, gender, birth date or zip are shared by many and never link events.
PERSONAL_KEYS = keys_of("email", "phone")  # flavours that name one person
CHUNK = 500  # ids per IN (...): well under SQLite's bound-variable limit


PURGE_CHUNK = 1000  # events per transaction


def purge_events(older_than: timedelta, now: datetime,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Delete events older than the period whose sends are all final, with those sends; `progress(done, total)`.

    PURGE_CHUNK events per transaction, in id order: a purge of a month of events held the write lock for as long
    as it took, and every request waiting to store an event timed out behind it; now each waits for one chunk.
    """
    still_open = fn.EXISTS(Send.select(Send.id).where((Send.event == Event.id) & Send.status.not_in(FINAL)))
    old = Event.select(Event.id).where((Event.received_at < now - older_than) & ~still_open)
    total, events, sends, last = old.count(), 0, 0, 0
    while True:
        with writing():
            ids = [event_id for event_id, in old.where(Event.id > last).order_by(Event.id).limit(PURGE_CHUNK).tuples()]
            if ids:
                sends += Send.delete().where(Send.event.in_(ids)).execute()
                events += Event.delete().where(Event.id.in_(ids)).execute()
        if progress is not None:
            progress(events, max(total, events))
        if len(ids) < PURGE_CHUNK:
            break
        last = ids[-1]
    if events:
        with writing():
            purge_user_agents()
    return {"events": events, "sends": sends}


def erase_events(person: Person, now: datetime) -> dict[str, int]:
    """Empty every personal field of the person's events and of their sends; tell `person` what those events name.

    Their events are those with one of their user ids or anonymous ids, or one of their email/phone hashes —
    followed transitively, so an event linked only by an email seen on another of their events is found too.
    Sends that could still go out end `skipped`; no send keeps a payload.
    """
    events = _events_of(person.site, frozenset(person.external_ids), frozenset(person.anonymous_ids), person.hashes)
    person.anonymous_ids |= {e.anonymous_id for e in events if e.anonymous_id}
    person.external_ids |= {e.external_id for e in events if e.external_id}
    for event in events:
        (Event.update(identity={}, location={}, external_id=None, anonymous_id=None, click_ids={}, ip=None,
                      notes=[*event.notes, f"personal data erased at the user's request ({person.requested_by})"])
         .where(Event.id == event.id).execute())
    sends = 0
    ids = [event.id for event in events]
    for chunk in (ids[i:i + CHUNK] for i in range(0, len(ids), CHUNK)):
        sends += (Send.update(payload=None, response_excerpt=None)
                  .where(Send.event.in_(chunk) & Send.status.in_(FINAL)).execute())
        # A dispatcher mid-send finds its row no longer `sending`, so it records nothing back.
        sends += (Send.update(status=SKIPPED, reason=f"user erased ({person.requested_by}): not sent", finished_at=now,
                              lease_owner=None, lease_until=None, payload=None, response_excerpt=None)
                  .where(Send.event.in_(chunk) & Send.status.in_((PENDING, SENDING))).execute())
    return {"events": len(events), "sends": sends}


def personal_hashes(identity: dict) -> set[str]:
    """The hashes of an identity that name one person (email, phone)."""
    return {identity[key] for key in PERSONAL_KEYS if identity.get(key)}


def any_of(conditions: Iterable[Expression]) -> Expression:
    """The conditions OR-ed together; with none, one that no row meets."""
    return reduce(operator.or_, conditions, SQL("0 = 1"))


def holding(column: Field, digests: Iterable[str]) -> list[Expression]:
    """Conditions that a JSON text column holds one of these hashes (a digest cannot occur in it by accident)."""
    forms = column.forms if isinstance(column, IdentityField) else (lambda digest: (digest,))
    return [Expression(column, OP.ILIKE, Value(f"%{form}%", converter=False))
            for digest in digests for form in forms(digest)]


def _events_of(site: str, external_ids: frozenset[str], anonymous_ids: frozenset[str], hashes: set[str]) -> list[Event]:
    """Every event of the site that belongs to the person, following their email/phone hashes to a fixed point."""
    found: dict[int, Event] = {}
    while True:
        linked = any_of([Event.external_id.in_(list(external_ids)), Event.anonymous_id.in_(list(anonymous_ids)),
                         *holding(Event.identity, hashes)])
        query = Event.select().where((Event.site == site) & linked)
        if found:
            query = query.where(Event.id.not_in(list(found)))
        new = [e for e in query if e.external_id in external_ids or e.anonymous_id in anonymous_ids
               or personal_hashes(e.identity) & hashes]
        if not new:
            return list(found.values())
        for event in new:
            found[event.id] = event
            hashes |= personal_hashes(event.identity)


def event_counts() -> dict[str, dict]:
    """Events per site, and sends per destination and status."""
    sends: dict[str, dict[str, int]] = {}
    for row in Send.select(Send.destination, Send.status, fn.COUNT(Send.id).alias("n")).group_by(Send.destination, Send.status):
        sends.setdefault(row.destination, {})[row.status] = row.n
    events = {row.site: row.n for row in Event.select(Event.site, fn.COUNT(Event.id).alias("n")).group_by(Event.site)}
    return {"events": events, "sends": sends}


STORE = Store("events", (Event, Send, DestinationState, UserAgent), purge=purge_events, erase=erase_events, links=True,
              stats=event_counts, chunked=True)
