"""Schema migrations: a database made before them is upgraded in place, a step adds a column, a newer one stops.

tests/fixtures/before_migrations.db was made by Postback as it stood before migrations (commit 0e1740c):
two rounds of ChannelStack, Octeth, Commanders (event, User and Product APIs), pixel and AdTarget
(visit, Lead, a Purchase awaiting its value), an admin login and a refusal, drained once in dry mode.
"""
from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from peewee import TextField
from playhouse.migrate import migrate

import app as application
from app import create_app
from cli import cli
from models import Event, Send, database, open_database
from storage.migrations import STEPS, VERSION_TABLE, SchemaError, Step, status
from tests.conftest import DATABASE_FILES, ROOT, SEED_EXAMPLE, base_config, build_config

pytestmark = pytest.mark.sqlite_only(reason="upgrades SQLite files made before migrations (PostgreSQL's first start: test_backends)")

FIXTURE = ROOT / "tests" / "fixtures" / "before_migrations.db"
FIXTURE_TABLES = {"events": 10, "sends": 50, "user_profiles": 2, "products": 1, "pixel_profiles": 1,
                  "octeth_subscribers": 2, "octeth_properties": 11, "funnel_visits": 2, "funnel_sessions": 2,
                  "funnel_invite_links": 0, "funnel_conversions": 4, "funnel_leads": 2, "admin_sessions": 1,
                  "refusals": 1, "destination_state": 0}
APPLIED = [(step.version, step.says) for step in STEPS]  # what a database at the code's latest version records
LATEST = STEPS[-1].version
ADD_NOTE = Step(LATEST + 1, "sends.note: a note for the operator",
                lambda migrator, db: migrate(migrator.add_column("sends", "note", TextField(null=True))))


@pytest.fixture
def old_database(tmp_path) -> Path:
    """A copy of the fixture, where a config of the test's points."""
    path = tmp_path / "db" / "postback.db"
    path.parent.mkdir()
    shutil.copy(FIXTURE, path)
    DATABASE_FILES.append(path)
    return path


@pytest.fixture
def config_file(tmp_path, old_database) -> Path:
    raw = base_config(tmp_path)
    path = tmp_path / "postback.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(autouse=True)
def closed():
    yield
    if database.obj is not None:
        database.close()


def rows(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table of the fixture, in id order, in the fixture's columns (step 4 moved user agents
    to a table of their own: an event's is read from there)."""
    with sqlite3.connect(FIXTURE) as fixture:
        event_columns = [row[1] for row in fixture.execute("PRAGMA table_info(events)")]
    with sqlite3.connect(path) as db:
        picks = {table: "*" for table in FIXTURE_TABLES}
        if "user_agent_id" in [row[1] for row in db.execute("PRAGMA table_info(events)")]:
            picks["events"] = ", ".join("(SELECT text FROM user_agents u WHERE u.id = events.user_agent_id)"
                                        if column == "user_agent" else column for column in event_columns)
        return {table: db.execute(f"SELECT {picks[table]} FROM {table} ORDER BY rowid").fetchall()
                for table in FIXTURE_TABLES}


def versions(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as db:
        return db.execute(f"SELECT version, says FROM {VERSION_TABLE} ORDER BY version").fetchall()


def url(path: Path) -> str:
    return f"sqlite:///{path}"


def test_the_fixture_holds_rows_of_every_store_and_no_version():
    before = rows(FIXTURE)
    assert {table: len(found) for table, found in before.items()} == FIXTURE_TABLES
    with sqlite3.connect(FIXTURE) as db:
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = ?", (VERSION_TABLE,)).fetchone() == (0,)


def test_a_database_made_before_migrations_is_version_1_every_row_intact_and_it_takes_new_events(tmp_path, old_database):
    before = rows(old_database)

    open_database(url(old_database))

    assert rows(old_database) == before
    assert versions(old_database) == APPLIED  # recognised as version 1, then every later step applied
    assert status(database.obj).pending == ()
    client = create_app(build_config(base_config(tmp_path))).test_client()
    response = client.post("/v1/track", json={**SEED_EXAMPLE, "event_id": "after-upgrade"})
    assert (response.status_code, response.get_json()) == (200, {"success": True, "eventId": "after-upgrade",
                                                                 "message": "Event recorded successfully"})
    after = rows(old_database)
    assert (len(after["events"]), after["events"][:10]) == (11, before["events"])


def test_a_step_adds_a_column_old_rows_keep_their_values_and_new_writes_fill_it(old_database):
    before = rows(old_database)
    Send._meta.add_field("note", TextField(null=True))
    try:
        with pytest.raises(SchemaError, match="^table sends has no column note: the code declares it without a "
                                              r"migration step that adds it \(storage/migrations.py\)$"):
            open_database(url(old_database))  # the code changed, its step forgotten: said at start, not on a write

        open_database(url(old_database), steps=(*STEPS, ADD_NOTE))

        assert versions(old_database) == [*APPLIED, (ADD_NOTE.version, ADD_NOTE.says)]
        assert rows(old_database)["sends"] == [(*row, None) for row in before["sends"]]
        first = Send.select().order_by(Send.id).first()
        Send.update(note="checked").where(Send.id == first.id).execute()
        copy = Send.create(event=first.event_id, site="shop", destination="shop/meta", platform="meta",
                           next_attempt_at=first.next_attempt_at, note="new row")
        assert [(s.id, s.note) for s in Send.select().where(Send.note.is_null(False)).order_by(Send.id)] == \
            [(first.id, "checked"), (copy.id, "new row")]
    finally:
        Send._meta.remove_field("note")


def test_a_database_newer_than_the_code_stops_the_start_with_a_clear_error(tmp_path, old_database, config_file,
                                                                            monkeypatch):
    open_database(url(old_database), steps=(*STEPS, ADD_NOTE))
    database.close()
    message = (f"the database is at schema version {LATEST + 1}, newer than this Postback knows (version {LATEST}): "
               "a newer release upgraded it. Run that release, or restore the backup taken before the upgrade "
               "(docs/upgrading.md)")

    with pytest.raises(SchemaError) as raised:
        open_database(url(old_database))
    assert str(raised.value) == message
    monkeypatch.setenv("POSTBACK_CONFIG", str(config_file))
    with pytest.raises(SystemExit) as stopped:
        application.serve()  # gunicorn's entry: exit 3 stops gunicorn instead of booting workers again and again
    assert stopped.value.code == 3
    result = CliRunner().invoke(cli, ["migrate", "--status"], env={"POSTBACK_CONFIG": str(config_file)})
    assert (result.exit_code, result.stderr) == (1, message + "\n")


def test_migrate_prints_the_pending_steps_then_applies_them(old_database, config_file):
    def run(*args: str) -> str:
        result = CliRunner().invoke(cli, ["migrate", *args], env={"POSTBACK_CONFIG": str(config_file)})
        assert result.exit_code == 0, result.output
        return result.stdout

    pending = STEPS[1:]
    assert run("--status") == (f"schema version 1 of {LATEST}: {len(pending)} step(s) pending\n"
                               + "".join(f"pending {step.version}: {step.says}\n" for step in pending))
    assert run() == ("".join(f"applying {step.version}: {step.says}\n" for step in pending)
                     + f"schema at version {LATEST}: {len(pending)} step(s) applied\n")
    assert versions(old_database) == APPLIED
    assert run("--status") == f"schema version {LATEST} of {LATEST}: up to date\n"


def test_a_new_database_is_created_at_the_latest_version(tmp_path):
    path = tmp_path / "new.db"
    result = CliRunner().invoke(cli, ["migrate"], env={"POSTBACK_CONFIG": str(write_config(tmp_path, path))})

    assert result.stdout == (f"new database: created at schema version {LATEST}\n"
                             f"schema at version {LATEST}: 0 step(s) applied\n")
    assert versions(path) == [(LATEST, STEPS[-1].says)]


def write_config(tmp_path: Path, path: Path) -> Path:
    raw = base_config(tmp_path)
    raw["storage"]["database"] = url(path)
    config = tmp_path / "new.yaml"
    config.write_text(yaml.safe_dump(raw))
    return config


# Each process opens the database as a gunicorn worker does, with a second step that logs who applied it.
STARTING_WORKER = """
import sys
from models import open_database
from storage.migrations import STEPS, Step

def logged(migrator, db):
    db.execute_sql("CREATE TABLE step_runs (worker TEXT)")
    db.execute_sql("INSERT INTO step_runs VALUES (?)", (sys.argv[2],))

open_database("sqlite:///" + sys.argv[1], steps=(*STEPS, Step(len(STEPS) + 1, "logged", logged)))
"""


def test_workers_starting_together_apply_each_step_exactly_once(old_database):
    workers = [subprocess.Popen([sys.executable, "-c", STARTING_WORKER, str(old_database), str(n)], cwd=ROOT,
                                stderr=subprocess.PIPE, text=True) for n in range(4)]
    errors = [worker.communicate(timeout=120)[1] for worker in workers]

    assert [worker.returncode for worker in workers] == [0, 0, 0, 0], errors
    assert versions(old_database) == [*APPLIED, (LATEST + 1, "logged")]
    with sqlite3.connect(old_database) as db:
        assert db.execute("SELECT count(*) FROM step_runs").fetchone() == (1,)


def test_step_2_gives_an_old_database_the_consoles_indexes_on_events(old_database):
    def indexes() -> set[str]:
        with sqlite3.connect(old_database) as db:
            return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'")}

    assert {"events_site_order_id", "events_site_received_at"} & indexes() == set()
    open_database(url(old_database))
    assert {"events_site_order_id", "events_site_received_at"} <= indexes()


def test_step_3_indexes_an_old_databases_sends_by_lease_only_while_they_are_in_flight(old_database):
    def indexes() -> dict[str, str]:
        with sqlite3.connect(old_database) as db:
            return dict(db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'sends'"))

    assert "send_status_lease_until" in indexes() and "sends_leased" not in indexes()
    open_database(url(old_database))
    after = indexes()
    assert "send_status_lease_until" not in after
    assert after["sends_leased"] == "CREATE INDEX sends_leased ON sends (lease_until) WHERE status = 'sending'"


def test_a_new_database_has_the_same_lease_index_as_an_upgraded_one_and_8_kb_pages(tmp_path):
    path = tmp_path / "new.db"
    open_database(url(path))
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA page_size").fetchone() == (8192,)
        assert db.execute("SELECT sql FROM sqlite_master WHERE name = 'sends_leased'").fetchone() == (
            """CREATE INDEX "sends_leased" ON "sends" ("lease_until") WHERE ("status" = 'sending')""",)


def test_step_4_moves_an_old_databases_user_agents_to_a_table_holding_each_once(old_database):
    with sqlite3.connect(old_database) as db:
        agents = [ua for ua, in db.execute("SELECT user_agent FROM events ORDER BY id")]
    assert len(set(agents) - {None}) < len([ua for ua in agents if ua])  # the fixture repeats some

    open_database(url(old_database))

    with sqlite3.connect(old_database) as db:
        table = dict(db.execute("SELECT text, id FROM user_agents"))
        named = [row for row in db.execute("SELECT user_agent_id FROM events ORDER BY id")]
        columns = [row[1] for row in db.execute("PRAGMA table_info(events)")]
    assert sorted(table) == sorted(set(agents) - {None})
    assert named == [(table.get(ua),) for ua in agents] and "user_agent" not in columns
    assert [e.user_agent for e in Event.select().order_by(Event.id)] == agents


def test_a_new_database_has_the_same_user_agents_table_as_an_upgraded_one(tmp_path, old_database):
    new = tmp_path / "new.db"
    open_database(url(new))
    database.close()
    open_database(url(old_database))

    def schema(path: Path) -> list:
        with sqlite3.connect(path) as db:
            return [(row[1], row[2], row[3], row[5]) for row in db.execute("PRAGMA table_info(user_agents)")] + \
                db.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'user_agents' AND type = 'index'").fetchall()

    assert schema(new) == schema(old_database) == [("id", "INTEGER", 1, 1), ("text", "TEXT", 1, 0),
                                                   ("useragent_text",)]
    with sqlite3.connect(new) as db:
        assert "AUTOINCREMENT" in db.execute("SELECT sql FROM sqlite_master WHERE name = 'user_agents'").fetchone()[0]
