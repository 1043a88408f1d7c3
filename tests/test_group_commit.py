"""Group commit (docs/performance.md): many requests' events in one transaction, each answered only once it has committed."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from peewee import IntegrityError, SqliteDatabase

import models
from ingest.canonical import CanonicalEvent, utcnow
from ingest.accept import accept
from models import Event, Send, database
from tests.conftest import ROOT
from ingest.writer import GroupWriter


def purchase(event_id: str, **fields) -> CanonicalEvent:
    now = utcnow()
    return CanonicalEvent(**{
        "site_id": "shop", "dialect": "test", "event_name": "purchase", "standard_name": "Purchase",
        "event_id": event_id, "occurred_at": now, "received_at": now, "identity": {"em": "a" * 64},
        "ip": "203.0.113.7", "user_agent": "Mozilla/5.0", "value": 10.0, "currency": "EUR", **fields})


def eventually(condition, seconds: float = 10.0) -> None:
    """Wait for another thread to get somewhere; fails instead of hanging the suite."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the other thread never got there"
        time.sleep(0.001)


class Gate:
    """An item that holds the writer inside its transaction until opened: what queues meanwhile is the next group."""

    def __init__(self):
        self.inside, self.opened = threading.Event(), threading.Event()


@pytest.fixture
def groups(app, monkeypatch) -> list[int]:
    """models.WRITER, able to write Gates; returns the size of each group it writes (Gates included)."""
    sizes, real = [], models.WRITER.write

    def write(items):
        sizes.append(len(items))
        rows = [item for item in items if not isinstance(item, Gate)]
        stored = iter(real(rows) if rows else [])
        for gate in (item for item in items if isinstance(item, Gate)):
            gate.inside.set()
            assert gate.opened.wait(10)
        return [None if isinstance(item, Gate) else next(stored) for item in items]

    monkeypatch.setattr(models.WRITER, "write", write)
    return sizes


@pytest.fixture
def pool():
    with ThreadPoolExecutor(16) as pool:
        yield pool


def hold(pool) -> Gate:
    """Put the writer inside a transaction and keep it there."""
    gate = Gate()
    pool.submit(models.WRITER.run, gate)
    assert gate.inside.wait(10)
    return gate


def committed(config, sql: str) -> int:
    """What another connection sees: only committed rows."""
    connection = sqlite3.connect(config.database[len("sqlite:///"):])
    try:
        return connection.execute(sql).fetchone()[0]
    finally:
        connection.close()


def test_events_accepted_by_many_threads_at_once_are_each_stored_exactly_once(app, config, pool):
    site = config.site_for_key("key_demo_123")
    ids = [f"t{n:03}" for n in range(200)]
    calls = ids + ids[::4]  # every fourth one twice, racing with itself

    results = list(pool.map(lambda event_id: accept(purchase(event_id), site, config), calls))

    assert Event.select().count() == 200 and Send.select().count() == 200  # the example's one Meta destination
    stored = {event.event_id: event.id for event in Event.select()}
    assert sorted(row.event_id for row, created in results if created) == ids
    assert all(row.id == stored[row.event_id] for row, _ in results)
    assert {send.event_id for send in Send.select()} == set(stored.values())


def test_events_waiting_together_are_written_in_one_transaction(config, groups, pool):
    site = config.site_for_key("key_demo_123")
    gate = hold(pool)
    futures = [pool.submit(accept, purchase(f"e{n}"), site, config) for n in range(10)]
    eventually(lambda: models.WRITER.waiting() == 10)

    gate.opened.set()

    assert [future.result(10)[1] for future in futures] == [True] * 10
    assert groups == [1, 10]
    assert Event.select().count() == 10


@pytest.mark.sqlite_only(reason="reads the SQLite file from a second connection while the group is written")
def test_a_caller_is_answered_only_once_its_group_has_committed(config, groups, pool):
    site = config.site_for_key("key_demo_123")
    first = hold(pool)
    answer = pool.submit(accept, purchase("e1"), site, config)
    eventually(lambda: models.WRITER.waiting() == 1)
    second = Gate()
    pool.submit(models.WRITER.run, second)  # the same group as e1, after it: holds that transaction open
    eventually(lambda: models.WRITER.waiting() == 2)

    first.opened.set()
    assert second.inside.wait(10)  # e1 is inserted, its transaction not yet committed

    assert not answer.done()
    assert committed(config, "SELECT count(*) FROM events WHERE event_id = 'e1'") == 0
    second.opened.set()
    row, created = answer.result(10)
    assert created and committed(config, "SELECT count(*) FROM events WHERE event_id = 'e1'") == 1
    assert row.id == Event.get(Event.event_id == "e1").id


def test_a_repeated_event_id_in_one_group_or_already_stored_is_stored_once(config, groups, pool):
    site = config.site_for_key("key_demo_123")
    before, _ = accept(purchase("stored"), site, config)
    gate = hold(pool)
    futures = [pool.submit(accept, purchase(event_id), site, config) for event_id in ("twice", "twice", "stored")]
    eventually(lambda: models.WRITER.waiting() == 3)

    gate.opened.set()

    (first, first_created), (second, second_created), (again, again_created) = [f.result(10) for f in futures]
    assert groups[-1] == 3
    assert sorted([first_created, second_created]) == [False, True] and first.id == second.id
    assert (again_created, again.id) == (False, before.id)
    assert [e.event_id for e in Event.select().order_by(Event.id)] == ["stored", "twice"]
    assert Send.select().count() == 2


def test_one_bad_event_fails_alone_and_its_neighbours_are_stored(config, groups, pool):
    site = config.site_for_key("key_demo_123")
    gate = hold(pool)
    good = [pool.submit(accept, purchase(event_id), site, config) for event_id in ("a", "b")]
    bad = pool.submit(accept, purchase("bad", event_name=None), site, config)  # events.event_name is NOT NULL
    later = pool.submit(accept, purchase("c"), site, config)
    eventually(lambda: models.WRITER.waiting() == 4)

    gate.opened.set()

    assert [future.result(10)[1] for future in (*good, later)] == [True, True, True]
    with pytest.raises(IntegrityError, match="event_name"):
        bad.result(10)
    assert groups[1] == 4  # tried together first, then one by one
    assert sorted(e.event_id for e in Event.select()) == ["a", "b", "c"]
    assert Send.select().count() == 3  # nothing of the bad one is left half-written


def test_inside_a_transaction_of_its_own_the_event_commits_or_rolls_back_with_it(app, config):
    site = config.site_for_key("key_demo_123")
    with database.atomic() as transaction:
        row, created = accept(purchase("e1"), site, config)
        assert created and Event.get_by_id(row.id).event_id == "e1"
        transaction.rollback()

    assert Event.select().count() == 0 and Send.select().count() == 0


def test_the_writer_thread_starts_with_the_first_write_not_before(tmp_path: Path):
    db = SqliteDatabase(str(tmp_path / "scratch.db"), check_same_thread=False)
    db.execute_sql("CREATE TABLE t (n INTEGER NOT NULL)")

    def write(items: list[int]) -> list[int]:
        db.execute_sql(f"INSERT INTO t (n) VALUES {', '.join(['(?)'] * len(items))}", items)
        return [n * 2 for n in items]

    def writers() -> int:
        return sum(thread.name == "group-writer" for thread in threading.enumerate())

    started = writers()
    writer = GroupWriter(db, write)
    assert writers() == started

    assert writer.run(21) == 42
    assert writers() == started + 1
    assert db.execute_sql("SELECT n FROM t").fetchall() == [(21,)]
    db.close()


BOOT = """
import sys, time
from models import open_database
path, start = sys.argv[1], float(sys.argv[2])
while time.time() < start:
    pass
open_database("sqlite:///" + path).execute_sql("SELECT count(*) FROM events")
"""


def test_workers_booting_at_once_on_a_new_database_both_start(tmp_path):
    """The first connection turns a new file to WAL, and SQLite fails (not waits) a second one meanwhile."""
    for attempt in range(5):
        start = str(time.time() + 0.5)
        workers = [subprocess.Popen([sys.executable, "-c", BOOT, str(tmp_path / f"{attempt}.db"), start], cwd=ROOT,
                                    stderr=subprocess.PIPE, text=True) for _ in range(2)]
        errors = [worker.communicate(timeout=30)[1] for worker in workers]
        assert [worker.returncode for worker in workers] == [0, 0], errors
