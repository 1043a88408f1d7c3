"""PostgreSQL going away and coming back (a restart, a failover, a cut network): every dialect answers 503 in its own
shape while nothing can be stored, /healthz says why, and the same processes store and deliver again once the server
is back, without a restart and without failing the first write on a connection the server dropped meanwhile."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from urllib.parse import urlsplit

import pytest
import yaml

from dialects.errors import StorageFault
from ingest.canonical import utcnow
from models import Event, Send, database
from tests.conftest import BROWSER, POSTGRES_URL, ROOT, base_config, build_config
from tests.fakes.gate import Gate
from tests.helpers import received, row, signup, storage_fault_answers, store_in_every_dialect

pytestmark = pytest.mark.postgres_only(reason="a database server that goes away (SQLite's faults: test_storage_faults)")

PIXEL = "52fb5565a7b23ec66fad3988"
AWAY = "Storage unavailable: the database server cannot be reached; nothing was stored, try again later"


@pytest.fixture
def gate():
    server = urlsplit(POSTGRES_URL)
    gate = Gate(server.hostname, server.port)
    yield gate
    gate.close()


def through(gate: Gate, url: str) -> str:
    """The same database, reached through the gate."""
    return url.replace(f":{urlsplit(POSTGRES_URL).port}/", f":{gate.port}/", 1)


@pytest.fixture
def raw_config(tmp_path, gate) -> dict:
    raw = base_config(tmp_path)
    raw["storage"]["database"] = through(gate, raw["storage"]["database"])
    return raw


@pytest.fixture
def config(raw):
    return build_config(raw)


def test_while_the_server_is_away_every_dialect_answers_503_in_its_own_shape_and_nothing_is_stored(client, gate):
    gate.cut()
    answers = store_in_every_dialect(client, "away")
    assert {name: (r.status_code, r.get_json(), r.headers.get("Retry-After")) for name, r in answers.items()} == \
        storage_fault_answers(AWAY)
    gif = client.get(f"/{PIXEL}/event.gif?event_token=signup", headers=BROWSER)
    debug = client.get(f"/{PIXEL}/event.gif?event_token=signup&debug=1", headers=BROWSER)
    assert (gif.status_code, gif.mimetype, gif.data[:6]) == (200, "image/gif", b"GIF89a")
    assert (debug.status_code, debug.get_json()) == (503, {"accepted": False, "stored": False, "error": AWAY})
    health = client.get("/healthz")
    assert (health.status_code, health.get_json()) == (
        503, {"status": "error", "database": "cannot read: the database server cannot be reached"})

    gate.restore()
    assert (Event.select().count(), Send.select().count()) == (0, 0)


def test_once_the_server_is_back_the_same_app_stores_again_without_a_restart(client, gate):
    gate.cut()
    assert client.post("/v1/track", json=signup("e1"), headers=BROWSER).status_code == 503
    gate.restore()

    answer = client.post("/v1/track", json=signup("e1"), headers=BROWSER)
    assert (answer.status_code, answer.get_json()) == (
        200, {"success": True, "message": "Event recorded successfully", "eventId": "e1"})
    assert [e.event_id for e in Event.select()] == ["e1"]
    assert client.get("/healthz").get_json() == {"status": "ok", "database": "ok"}


def test_a_connection_the_server_dropped_while_idle_does_not_fail_the_next_write(client, gate):
    assert client.post("/v1/track", json=signup("e1"), headers=BROWSER).status_code == 200
    gate.cut()  # a restart: the writer's open connection is gone, the server takes new ones again at once
    gate.restore()

    answer = client.post("/v1/track", json=signup("e2"), headers=BROWSER)
    assert (answer.status_code, answer.get_json()) == (
        200, {"success": True, "message": "Event recorded successfully", "eventId": "e2"})
    assert sorted(e.event_id for e in Event.select()) == ["e1", "e2"]


def test_the_dispatcher_waits_out_the_outage_and_delivers_once_the_server_is_back(client, gate, dispatcher, fake_meta,
                                                                                  caplog):
    assert client.post("/v1/track", json=signup("e1"), headers=BROWSER).status_code == 200
    assert dispatcher.drain_once(now=utcnow()) == {"shop/meta": 1}  # its threads have connections to lose
    assert client.post("/v1/track", json=signup("e2"), headers=BROWSER).status_code == 200
    gate.cut()

    with pytest.raises(StorageFault, match="the database server cannot be reached"):
        dispatcher.drain_once(now=utcnow())
    with caplog.at_level(logging.WARNING, logger="delivery.dispatcher"):
        dispatcher.tick()  # the scheduler's job says it waits, and raises nothing
    assert [(r.getMessage(), r.fault) for r in caplog.records if r.name == "delivery.dispatcher"] == [
        ("dispatcher waiting for the database", "the database server cannot be reached")]
    gate.restore()

    assert dispatcher.drain_once(now=utcnow()) == {"shop/meta": 1}
    assert received(fake_meta) == ["e1", "e2"]
    assert row("e2", "shop/meta")["status"] == "sent"


def test_gunicorn_does_not_start_while_the_server_is_away_and_names_the_database_without_its_password(
        raw_config, gate, tmp_path):
    parts = urlsplit(raw_config["storage"]["database"])
    with_password = parts._replace(netloc=f"postgres:hunter2@{parts.hostname}:{parts.port}")
    raw_config["storage"]["database"] = with_password.geturl()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw_config))
    gate.cut()

    done = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "POSTBACK_CONFIG": str(path), "PORT": "0"})

    shown = parts._replace(netloc=f"postgres:***@{parts.hostname}:{parts.port}").geturl()
    assert done.returncode == 1
    assert [line for line in done.stderr.splitlines() if line.startswith("postback:")] == [
        f"postback: cannot write the database {shown}: the database server cannot be reached"]
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr


def test_a_pool_with_every_connection_in_use_is_a_503_that_says_so(raw_config, request):
    pooled = urlsplit(raw_config["storage"]["database"])
    raw_config["storage"]["database"] = pooled._replace(scheme="postgresql+pool",
                                                        query=f"{pooled.query}&max_connections=1").geturl()
    client = request.getfixturevalue("client")
    taken, done = threading.Event(), threading.Event()

    def hold_the_only_connection():
        database.connect()
        taken.set()
        done.wait(10)
        database.close()

    database.close()  # the start-up's, back to the pool
    holder = threading.Thread(target=hold_the_only_connection)
    holder.start()
    assert taken.wait(10)
    try:
        answer = client.post("/v1/track", json=signup("e1"), headers=BROWSER)
        health = client.get("/healthz")
    finally:
        done.set()
        holder.join(10)

    full = "every connection of this worker's pool is in use (its max_connections)"
    assert (answer.status_code, answer.get_json()) == (
        503, {"error": f"Storage unavailable: {full}; nothing was stored, try again later", "code": 503})
    assert (health.status_code, health.get_json()) == (503, {"status": "error", "database": f"cannot read: {full}"})
    assert client.post("/v1/track", json=signup("e1"), headers=BROWSER).status_code == 200
