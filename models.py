"""Storage: the canonical event, its send rows, destination state, and the verbs that write them."""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from typing import Iterable

from peewee import (
    BooleanField, CharField, DatabaseProxy, DateTimeField, FloatField, ForeignKeyField,
    IntegerField, IntegrityError, Model, TextField,
)
from playhouse.db_url import connect

from canonical import CanonicalEvent
from privacy import reduce_ip

database = DatabaseProxy()

PENDING, SENDING, SENT, FAILED, SKIPPED = "pending", "sending", "sent", "failed", "skipped"
FINAL = (SENT, FAILED, SKIPPED)
# secure_delete: pages freed by an erasure or an IP reduction are zeroed, so the old bytes leave the file.
SQLITE_PRAGMAS = {"journal_mode": "wal", "busy_timeout": 10000, "synchronous": "normal", "foreign_keys": 1,
                  "secure_delete": 1}


class JSONField(TextField):
    """JSON text that works the same on SQLite and PostgreSQL."""

    def db_value(self, value):
        return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)

    def python_value(self, value):
        return None if value is None else json.loads(value)


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


class Event(BaseModel):
    site = CharField()
    dialect = CharField()
    event_name = CharField()
    standard_name = CharField()
    event_id = CharField()  # the dedup key: the client's id, or one we generated
    channel = CharField(default="web")
    occurred_at = UTCDateTimeField()
    received_at = UTCDateTimeField()
    external_id = CharField(null=True)
    anonymous_id = CharField(null=True)
    identity = JSONField(default=dict)
    location = JSONField(default=dict)
    click_ids = JSONField(default=dict)
    ip = CharField(null=True)
    user_agent = TextField(null=True)
    page_url = TextField(null=True)
    referrer = TextField(null=True)
    language = CharField(null=True)
    value = FloatField(null=True)
    currency = CharField(null=True)
    order_id = CharField(null=True)
    items = JSONField(default=list)
    consent = BooleanField(default=True)
    consent_categories = JSONField(null=True)
    properties = JSONField(default=dict)
    notes = JSONField(default=list)
    is_bot = BooleanField(default=False)

    class Meta:
        table_name = "events"
        indexes = ((("site", "event_id"), True), (("received_at",), False))

    def to_canonical(self) -> CanonicalEvent:
        fields = {name: getattr(self, name) for name in CanonicalEvent.__dataclass_fields__ if name != "site_id"}
        fields["consent_categories"] = tuple(self.consent_categories) if self.consent_categories is not None else None
        return CanonicalEvent(site_id=self.site, **fields)


class Send(BaseModel):
    event = ForeignKeyField(Event, backref="sends", on_delete="CASCADE")
    site = CharField()
    destination = CharField()  # "<site>/<name>": names are unique per site only
    platform = CharField()
    status = CharField(default=PENDING)
    reason = TextField(null=True)  # why skipped/failed, for a person to act on
    attempts = IntegerField(default=0)  # every try; only retries count toward max_attempts
    retries = IntegerField(default=0)
    next_attempt_at = UTCDateTimeField()
    lease_owner = CharField(null=True)
    lease_until = UTCDateTimeField(null=True)
    last_status = IntegerField(null=True)
    last_error = TextField(null=True)
    response_excerpt = TextField(null=True)
    trace_id = CharField(null=True)
    payload = JSONField(null=True)
    match_quality = JSONField(null=True)
    finished_at = UTCDateTimeField(null=True)

    class Meta:
        table_name = "sends"
        indexes = ((("destination", "status", "next_attempt_at"), False), (("status", "lease_until"), False))


class DestinationState(BaseModel):
    """A paused destination: its sends wait until its config changes or an admin resumes it."""

    destination = CharField(primary_key=True)
    paused_reason = TextField()
    paused_at = UTCDateTimeField()
    fingerprint = CharField()  # the config it was paused under

    class Meta:
        table_name = "destination_state"


def open_database(url: str):
    """Connect (SQLite in WAL mode with a busy timeout), create missing folders and tables."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        folder = os.path.dirname(path)
        if folder and path != ":memory:":
            os.makedirs(folder, exist_ok=True)
        db = connect(url, pragmas=SQLITE_PRAGMAS, check_same_thread=False)
    else:
        db = connect(url)
    database.initialize(db)
    db.create_tables(all_models(), safe=True)
    return db


def all_models() -> list[type[BaseModel]]:
    """Every table: ours, and those of feature modules imported so far (they subclass BaseModel)."""
    found, stack = [], list(BaseModel.__subclasses__())
    while stack:
        model = stack.pop(0)
        found.append(model)
        stack.extend(model.__subclasses__())
    return found


def record_event(event: CanonicalEvent, sends: Iterable[dict], ip_policy: str) -> tuple[Event, bool]:
    """Store an event and its send rows in one transaction; (existing row, False) on a repeat event_id.

    Every ingest path writes through here, so group commit can come without touching the dialects.
    """
    sends = list(sends)
    if all(s["status"] in FINAL for s in sends):
        event.ip = reduce_ip(event.ip, ip_policy)  # nothing can go out: no reason to keep the full IP
    fields = {name: getattr(event, name) for name in CanonicalEvent.__dataclass_fields__ if name != "site_id"}
    fields["consent_categories"] = list(event.consent_categories) if event.consent_categories is not None else None
    try:
        with database.atomic():
            row = Event.create(site=event.site_id, **fields)
            for send in sends:
                Send.create(event=row, site=event.site_id, next_attempt_at=event.received_at, **send)
    except IntegrityError:
        existing = Event.get_or_none((Event.site == event.site_id) & (Event.event_id == event.event_id))
        if existing is None:
            raise
        return existing, False
    return row, True
