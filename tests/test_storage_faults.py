"""Storage faults get honest answers: a full disk, a read-only database or an unusable lock file is a 503 in each
dialect's own shape (the pixel still answers its GIF), nothing is half-stored, /healthz says why, and every
write works again by itself once the fault is gone; start-up with such a fault stops with one message."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from playhouse.db_url import connect

from models import SQLITE_PRAGMAS, database
from tests.conftest import BROWSER, ROOT, base_config
from tests.fakes.telegram import chat_member, telegram_section
from tests.helpers import signup, storage_fault_answers, store_in_every_dialect

PIXEL = "52fb5565a7b23ec66fad3988"
READ_ONLY = "Storage unavailable: the database is read-only; nothing was stored, try again later"
SECRET = "whsec_Test-Secret_1"
FULL = "Storage unavailable: the disk is full; nothing was stored, try again later"


pytestmark = pytest.mark.sqlite_only(reason="faults of a SQLite file and its write-lock file")


def reopen(config, **pragmas) -> None:
    """Bind the models to a new connection to the same file with these pragmas, as a remount would reopen it."""
    database.initialize(connect(config.database, pragmas={**SQLITE_PRAGMAS, **pragmas}, check_same_thread=False))


def clear(pragma: str) -> None:
    """The fault goes away at its source: connections opened from now on no longer have it."""
    database.obj._pragmas = [(name, value) for name, value in database.obj._pragmas if name != pragma]


def path_of(config) -> Path:
    return Path(config.database[len("sqlite:///"):])


def rows(config) -> dict[str, int]:
    """Rows per table, every table."""
    with sqlite3.connect(path_of(config)) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in tables}


def test_a_read_only_database_gets_a_503_in_every_dialects_shape_and_stores_nothing(client, config):
    before = rows(config)
    reopen(config, query_only=1)
    answers = store_in_every_dialect(client, "ro")
    assert {name: (r.status_code, r.get_json(), r.headers.get("Retry-After")) for name, r in answers.items()} == \
        storage_fault_answers(READ_ONLY)
    health = client.get("/healthz")
    assert (health.status_code, health.get_json()) == (
        503, {"status": "error", "database": "cannot write: the database is read-only"})
    assert rows(config) == before


def test_the_pixel_still_answers_its_gif_while_nothing_can_be_stored_and_says_why_with_debug(client, config):
    reopen(config, query_only=1)
    gif = client.get(f"/{PIXEL}/event.gif?event_token=signup", headers=BROWSER)
    debug = client.get(f"/{PIXEL}/event.gif?event_token=signup&debug=1", headers=BROWSER)
    assert (gif.status_code, gif.mimetype, gif.data[:6]) == (200, "image/gif", b"GIF89a")
    assert (debug.status_code, debug.get_json()) == (503, {"accepted": False, "stored": False, "error": READ_ONLY})
    assert rows(config)["events"] == 0


def test_a_read_only_database_recovers_by_itself_once_it_can_be_written_again(client, config):
    reopen(config, query_only=1)
    assert client.post("/v1/track", json=signup("ro-2"), headers=BROWSER).status_code == 503
    clear("query_only")  # the connections that met the fault were closed: the next ones open writable
    assert client.post("/v1/track", json=signup("ro-2"), headers=BROWSER).status_code == 200
    assert client.get("/healthz").get_json() == {"status": "ok", "database": "ok"}
    assert rows(config)["events"] == 1


def test_a_full_disk_answers_503_from_the_first_event_that_does_not_fit_and_nothing_is_half_stored(client, config):
    with sqlite3.connect(path_of(config)) as db:
        pages = db.execute("PRAGMA page_count").fetchone()[0]
    reopen(config, max_page_count=pages)  # the file may not grow: a full disk
    answers = []
    while len(answers) < 200 and (not answers or answers[-1].status_code == 200):
        answers.append(client.post("/v1/track", json=signup(f"full-{len(answers)}"), headers=BROWSER))
    last = answers[-1]
    assert len(answers) > 1  # the first events found room in the pages the file had
    assert (last.status_code, last.get_json()) == (503, {"error": FULL, "code": 503})
    stored = rows(config)
    assert stored["events"] == stored["sends"] == len(answers) - 1  # each acknowledged event whole, the refused one absent
    assert client.get("/healthz").get_json() == {"status": "error", "database": "cannot write: the disk is full"}

    clear("max_page_count")
    assert client.post("/v1/track", json=signup("after"), headers=BROWSER).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_a_lock_file_that_cannot_be_opened_is_a_503_until_it_can_again(client, config):
    lock = Path(f"{path_of(config)}.write.lock")
    lock.unlink()
    lock.mkdir()  # works as root too, where a chmod would not
    refused = client.post("/v1/track", json=signup("lock-1"), headers=BROWSER)
    reason = "Storage unavailable: the write lock file postback.db.write.lock cannot be used (Is a directory); " \
             "nothing was stored, try again later"
    assert (refused.status_code, refused.get_json()) == (503, {"error": reason, "code": 503})
    assert client.get("/healthz").status_code == 503
    lock.rmdir()
    assert client.post("/v1/track", json=signup("lock-1"), headers=BROWSER).status_code == 200
    assert client.get("/healthz").status_code == 200


@pytest.fixture
def unusable_lock(tmp_path) -> Path:
    """A config whose database has a directory where its lock file must be: no one can open it for writing."""
    raw = base_config(tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "postback.db.write.lock").mkdir()
    return path


def run(*command: str, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "POSTBACK_CONFIG": str(config), "PORT": "0"})


def test_gunicorn_does_not_start_on_a_database_it_cannot_write_and_says_why_in_one_line(unusable_lock, tmp_path):
    done = run("-m", "gunicorn", "-c", "gunicorn.conf.py", config=unusable_lock)
    said = [line for line in done.stderr.splitlines() if line.startswith("postback:")]
    assert done.returncode == 1
    assert said == [f"postback: cannot write the database sqlite:///{tmp_path}/db/postback.db: the write lock file "
                    f"postback.db.write.lock cannot be used (Is a directory)"]
    assert "Traceback" not in done.stderr and "Booting worker" not in done.stderr


def test_a_worker_booting_on_a_lock_file_made_unusable_after_the_check_stops_gunicorn_with_one_line(
        unusable_lock, tmp_path, monkeypatch, capfd):
    import app as application

    monkeypatch.setenv("POSTBACK_CONFIG", str(unusable_lock))
    with pytest.raises(SystemExit) as stopped:
        application.serve()  # gunicorn's entry in each worker: exit 3 stops gunicorn rather than booting it again
    assert stopped.value.code == 3
    said = [json.loads(line) for line in capfd.readouterr().err.splitlines()]
    assert [(line["level"], line["logger"], line["message"]) for line in said] == [("ERROR", "app", (
        "database: cannot write: the write lock file postback.db.write.lock cannot be used (Is a directory)"))]


def test_the_dispatch_command_does_not_start_on_a_database_it_cannot_write(unusable_lock, tmp_path):
    done = run("cli.py", "dispatch", config=unusable_lock)
    assert (done.returncode, done.stdout, done.stderr) == (
        1, "", f"cannot write the database sqlite:///{tmp_path}/db/postback.db: the write lock file "
               f"postback.db.write.lock cannot be used (Is a directory)\n")


@pytest.fixture
def raw_config(tmp_path) -> dict:
    """The example config with a Telegram webhook secret, so the webhook reaches the point of storing."""
    raw = base_config(tmp_path)
    raw["sites"][0]["telegram"] = telegram_section("http://127.0.0.1:9", "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0", SECRET)
    return raw


def test_telegram_is_told_to_deliver_an_update_again_when_it_cannot_be_stored(client, config):
    reopen(config, query_only=1)
    update = chat_member(1, "-1001234567890", 600000001, "https://t.me/+abc", int(time.time()))
    answer = client.post("/telegram/webhook/shop", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
    assert (answer.status_code, answer.get_json()) == (503, {"error": "STORAGE_UNAVAILABLE", "message": READ_ONLY})
