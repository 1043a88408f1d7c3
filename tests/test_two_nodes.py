"""Two nodes, one PostgreSQL: every event reaches Meta exactly once, and every repeat is answered as one.

Two gunicorns (gunicorn.conf.py: two workers each, every worker with its own dispatcher) serve one config and
so one database; Meta is tests/fakes/meta.py. Clients send events to both nodes, and some event_ids to both
at the same moment.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from playhouse.db_url import connect

from tests.conftest import base_config, meta_destination
from tests.fakes.meta import FakeMeta
from tests.test_concurrency import BROWSER, gunicorn

pytestmark = pytest.mark.postgres_only(reason="two nodes share one database only on PostgreSQL")

ALONE = 300  # event_ids sent to one node, alternating between the two
TWICE = 60  # event_ids sent to both nodes at the same moment
RECORDED, DUPLICATE = "Event recorded successfully", "Duplicate event ignored"


@pytest.fixture
def meta():
    meta = FakeMeta(token="meta-token", pixels=("123",)).start()
    yield meta
    meta.stop()


def track(node: str, event_id: str) -> tuple[int, str]:
    response = requests.post(f"{node}/v1/track", headers=BROWSER, timeout=60, json={
        "api_key": "key_demo_123", "event": "purchase_completed", "event_id": event_id,
        "email": f"{event_id}@example.com", "value": 10, "currency": "USD",
        "source_url": "https://shop.example/thanks"})
    return response.status_code, response.json().get("message", response.text)


def both_at_once(nodes: list[str], event_id: str) -> list[tuple[int, str]]:
    """The same event to every node, each request released at the same moment."""
    start = threading.Barrier(len(nodes))

    def send(node: str) -> tuple[int, str]:
        start.wait()
        return track(node, event_id)

    with ThreadPoolExecutor(len(nodes)) as pool:
        return list(pool.map(send, nodes))


def sends_by_status(url: str) -> dict[str, int]:
    db = connect(url)
    try:
        return dict(db.execute_sql("SELECT status, count(*) FROM sends GROUP BY status").fetchall())
    finally:
        db.close()


def test_two_nodes_on_one_database_deliver_each_event_exactly_once_and_answer_repeats_as_duplicates(tmp_path, meta):
    raw = base_config(tmp_path)
    raw["sites"][0]["destinations"] = [meta_destination(meta.url)]
    raw["dispatch"]["interval_seconds"] = 1
    with gunicorn(tmp_path, raw, "node-a") as (node_a, _), gunicorn(tmp_path, raw, "node-b") as (node_b, _):
        nodes = [node_a, node_b]
        with ThreadPoolExecutor(16) as pool:
            alone = list(pool.map(lambda n: track(nodes[n % 2], f"alone-{n}"), range(ALONE)))
            twice = list(pool.map(lambda n: both_at_once(nodes, f"twice-{n}"), range(TWICE)))
        deadline = time.monotonic() + 120
        while sends_by_status(raw["storage"]["database"]) != {"sent": ALONE + TWICE} and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2)  # two more passes of every dispatcher: none may send anything again

    assert alone == [(200, RECORDED)] * ALONE
    assert [sorted(answers) for answers in twice] == [[(200, DUPLICATE), (200, RECORDED)]] * TWICE
    assert sends_by_status(raw["storage"]["database"]) == {"sent": ALONE + TWICE}
    received = Counter(event["event_id"] for event in meta.events)
    assert received == Counter({**{f"alone-{n}": 1 for n in range(ALONE)}, **{f"twice-{n}": 1 for n in range(TWICE)}})
