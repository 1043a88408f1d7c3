"""`backup PATH` (docs/operations.md#backups-and-restore): a copy taken while events keep coming restores whole."""
from __future__ import annotations

import re
import shutil
import sqlite3
import threading

import pytest
import yaml
from click.testing import CliRunner

from app import bind
from cli import cli
from models import Event
from storage.backup import BackupError, backup
from tests.conftest import BROWSER, build_config
from tests.helpers import signup

WARM_UP = 150


pytestmark = pytest.mark.sqlite_only(reason="SQLite's online backup of a file")


@pytest.fixture
def config_file(tmp_path, raw_config):
    path = tmp_path / "postback.yaml"
    path.write_text(yaml.safe_dump(raw_config))
    return path


def run(config_file, *args: str):
    return CliRunner().invoke(cli, list(args), env={"POSTBACK_CONFIG": str(config_file)})


def test_a_backup_taken_under_load_restores_into_a_fresh_directory_with_every_acknowledged_event(
        app, client, config_file, raw_config, tmp_path):
    acknowledged: list[str] = []
    stop = threading.Event()

    def post(event_id: str) -> None:
        if client.post("/v1/track", json=signup(event_id), headers=BROWSER).status_code == 200:
            acknowledged.append(event_id)

    def load() -> None:
        n = WARM_UP
        while not stop.is_set():
            post(f"load-{n}")
            n += 1

    for n in range(WARM_UP):
        post(f"load-{n}")
    poster = threading.Thread(target=load)
    poster.start()
    try:
        before = list(acknowledged)
        result = run(config_file, "backup", str(tmp_path / "nightly.db"))
        during = list(acknowledged)
    finally:
        stop.set()
        poster.join()
    assert result.exit_code == 0, result.output
    # the last line (the posting thread's log lines land in the same captured output)
    assert re.fullmatch(rf"{tmp_path / 'nightly.db'}: \d+ page\(s\), \d+ bytes, integrity ok",
                        result.output.splitlines()[-1])

    restored = tmp_path / "restored" / "data"
    restored.mkdir(parents=True)
    shutil.copyfile(tmp_path / "nightly.db", restored / "postback.db")
    raw_config["storage"]["database"] = f"sqlite:///{restored}/postback.db"
    bind(app, build_config(raw_config))  # start on the restored copy

    stored = {e.event_id for e in Event.select(Event.event_id)}
    assert set(before) <= stored  # everything acknowledged before the backup began
    assert stored <= set(during)  # and nothing but acknowledged events
    assert len(before) > WARM_UP - 1 and len(acknowledged) > len(before)  # it did run under load


def test_a_backup_never_overwrites_a_file(config_file, tmp_path, app):
    (tmp_path / "taken.db").write_text("yesterday's")

    result = run(config_file, "backup", str(tmp_path / "taken.db"))

    assert (result.exit_code, result.stderr) == (1, f"{tmp_path / 'taken.db'}: already exists; give a new file name\n")
    assert (tmp_path / "taken.db").read_text() == "yesterday's"


def test_postgresql_is_backed_up_with_pg_dump(tmp_path):
    raw = {"storage": {"database": "postgresql://postback@db/postback"}}
    with pytest.raises(BackupError) as caught:
        from storage.backup import sqlite_file
        sqlite_file(raw["storage"]["database"])
    assert str(caught.value).startswith("the database is PostgreSQL: back it up with pg_dump")


def test_the_copy_is_a_checked_sqlite_file_in_wal_mode_like_the_original(app, client, tmp_path, config):
    client.post("/v1/track", json=signup("e1"), headers=BROWSER)
    source = config.database[len("sqlite:///"):]

    made = backup(source, str(tmp_path / "copy.db"))

    with sqlite3.connect(made.path) as copy:
        assert copy.execute("SELECT event_id FROM events").fetchall() == [("e1",)]
        assert copy.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert not (tmp_path / "copy.db.partial").exists()
