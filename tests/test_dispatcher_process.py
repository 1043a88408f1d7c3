"""The dispatcher as a process of its own (`cli.py dispatch`): a SIGTERM mid-batch loses nothing and sends nothing
twice; gunicorn's master starts it, starts it again when it dies, and stops it."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from delivery.dispatcher import CLAIM_LIMIT
from delivery.process import NICENESS
from ingest.fanout import plan_sends
from models import Event, record_event, writing
from tests.conftest import DATABASE_FILES, ROOT, base_config, build_config, meta_destination
from tests.fakes.meta import FakeMeta
from tests.helpers import signup, track
from tests.test_concurrency import _wait_until_up, free_port

BACKLOG = 5000
BATCH_SECONDS = 2  # the fake answers the first two batches (a claim each) after this long, under timeout_seconds


pytestmark = pytest.mark.sqlite_only(reason="counts sends in the SQLite file and runs the box's one leader")


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.05)


def statuses(database: Path) -> dict[str, int]:
    with sqlite3.connect(database) as db:
        return dict(db.execute("SELECT status, count(*) FROM sends GROUP BY status").fetchall())


@pytest.fixture
def meta():
    fake = FakeMeta(token="meta-token", pixels=("123",)).start()
    yield fake
    fake.stop()


@pytest.fixture
def setup(tmp_path, meta):
    """A config whose one destination is a live Meta at the fake, written where the dispatcher process reads it."""
    raw = base_config(tmp_path)
    raw["sites"][0]["destinations"] = [meta_destination(meta.url)]
    raw["dispatch"].update(interval_seconds=0.2, timeout_seconds=10)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    database = tmp_path / "db" / "postback.db"
    DATABASE_FILES.append(database)
    return build_config(raw), path, database


@pytest.fixture
def backlog(setup, client_for):
    """5,000 stored events, each with one pending send to Meta."""
    config, _, _ = setup
    client = client_for(config)
    track(client, signup("backlog-0"))
    first = Event.get().to_canonical()
    site = config.site(first.site_id)
    with writing():  # one transaction: record_event writes right here instead of through the group writer
        for n in range(1, BACKLOG):
            event = replace(first, event_id=f"backlog-{n}")
            record_event(event, plan_sends(event, site), config.ip_policy)
    return setup


@pytest.fixture
def client_for():
    from app import create_app
    from models import database

    def make(config):
        app = create_app(config)
        app.testing = True
        return app.test_client()

    yield make
    database.close()


def dispatcher(config_path: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "cli.py", "dispatch"], cwd=ROOT, stdout=log.open("a"),
                            stderr=subprocess.STDOUT, env={**os.environ, "POSTBACK_CONFIG": str(config_path)})


def test_a_sigterm_mid_batch_records_that_batch_and_a_restart_delivers_every_event_exactly_once(backlog, meta, tmp_path):
    _, config_path, database = backlog
    log = tmp_path / "dispatch.log"
    meta.script(*[("hang", BATCH_SECONDS)] * 2)  # the second waits when the SIGTERM comes; the rest answer at once
    first = dispatcher(config_path, log)
    wait_for(lambda: len(meta.events) == CLAIM_LIMIT and len(meta.requests) == 2, 30, "the second batch in flight")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=BATCH_SECONDS + 5) == 0
    assert len(meta.events) == 2 * CLAIM_LIMIT  # the batch in flight was answered ...
    # ... and recorded; nothing claimed is left
    assert statuses(database) == {"sent": 2 * CLAIM_LIMIT, "pending": BACKLOG - 2 * CLAIM_LIMIT}

    second = dispatcher(config_path, log)
    try:
        wait_for(lambda: statuses(database) == {"sent": BACKLOG}, 30, "every send delivered")
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=10) == 0
    delivered = Counter(event["event_id"] for event in meta.events)
    assert len(delivered) == BACKLOG and set(delivered.values()) == {1}
    text = log.read_text()
    assert "cannot schedule new futures" not in text and "Traceback" not in text
    assert text.count('"message": "dispatcher stopped"') == 2


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])  # field 19: nice


def started_pids(log: Path) -> list[int]:
    return [json.loads(line)["pid"] for line in log.read_text().splitlines()
            if '"message": "dispatcher started"' in line]


def test_gunicorns_master_runs_the_dispatcher_starts_it_again_when_it_dies_and_stops_it_with_itself(setup, tmp_path):
    _, config_path, _ = setup
    log = tmp_path / "gunicorn.log"
    port = free_port()
    env = {**os.environ, "POSTBACK_CONFIG": str(config_path), "HOST": "127.0.0.1", "PORT": str(port),
           "ACCESS_LOG": str(tmp_path / "access.log")}
    master = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], cwd=ROOT, env=env,
                              stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        _wait_until_up(f"http://127.0.0.1:{port}", master, log)
        wait_for(lambda: len(started_pids(log)) == 1, 30, "the dispatcher started")
        first = started_pids(log)[0]
        assert niceness(first) == niceness(master.pid) + NICENESS  # requests get the CPU first
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: len(started_pids(log)) == 2, 30, "the dispatcher started again")
        second = started_pids(log)[1]
    finally:
        master.send_signal(signal.SIGTERM)
        master.wait(timeout=60)
    assert second != first
    assert not Path(f"/proc/{second}").exists()
    text = log.read_text()
    assert '"message": "dispatcher exited; starting it again in 1 s"' in text
    assert text.count('"message": "dispatcher stopped"') == 1


def test_the_dispatcher_process_caps_mallocs_arenas_where_glibc_lets_it():
    import platform

    from delivery.process import cap_malloc_arenas

    assert cap_malloc_arenas() is (platform.libc_ver()[0] == "glibc")


@pytest.mark.parametrize("setting, steps", [(None, NICENESS), ("2", 2), ("0", 0), ("soon", NICENESS), ("-3", 0)])
def test_the_dispatcher_lowers_its_own_priority_by_postback_dispatcher_nice(setting, steps):
    environ = {} if setting is None else {"POSTBACK_DISPATCHER_NICE": setting}
    code = f"from delivery.process import lower_priority; print(lower_priority({environ!r}))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout

    assert int(out) == os.nice(0) + steps
