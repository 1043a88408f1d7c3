"""The same behaviour on SQLite and PostgreSQL, and what PostgreSQL needs of its own: row locks, one migrator.

With DATABASE_URL=postgresql://… (`make test-postgres`) every test here runs against PostgreSQL too.
"""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from playhouse.db_url import connect

from delivery import sends as delivery
from dialects.commanders import profiles
from ingest.canonical import utcnow
from models import Event, Send, any_of, database, holding, purge_events
from storage.migrations import STEPS, VERSION_TABLE
from storage.stores import tables
from tests.conftest import BROWSER, ROOT, base_config
from tests.helpers import sha, signup, track

LONG_NAME = "checkout_" + "x" * 291  # 300 characters: no silent 255 limit on either backend


def test_money_keeps_every_digit_a_double_holds(client):
    track(client, signup("big-order", event="purchase_completed", value=1234567.89, currency="EUR"))

    assert Event.get().value == 1234567.89


def test_an_event_name_of_three_hundred_characters_is_stored_whole(client):
    response = client.post("/v1/track", headers=BROWSER, json={
        "api_key": "key_demo_123", "event": LONG_NAME, "event_id": "long", "email": "x@example.com"})

    assert (response.status_code, response.get_json()["message"]) == (200, "Event recorded successfully")
    assert Event.get().event_name == LONG_NAME


def test_a_pause_written_twice_keeps_the_latest_reason(client, config):
    dest = config.destinations()[0]
    delivery.pause(dest, "token expired", utcnow())
    delivery.pause(dest, "token revoked", utcnow())

    assert delivery.paused_reason(dest) == "token revoked"


@pytest.mark.postgres_only(reason="SQLite has no row locks: its one writer claims alone")
def test_a_claim_takes_the_due_sends_another_claimer_holds_no_lock_on_without_waiting_for_it(client, config):
    track(client, *(signup(f"e{n}") for n in range(6)))
    first_three = [send.id for send in Send.select().order_by(Send.id).limit(3)]
    other = connect(config.database)  # another node, mid-claim: it holds the first three rows
    with other.atomic():
        other.execute_sql("SELECT id FROM sends WHERE id IN %s FOR UPDATE", (tuple(first_three),))

        claimed = delivery.claim("shop/meta", 10, utcnow(), timedelta(seconds=30))

        assert [send.id for send in claimed] == [send.id for send in Send.select().order_by(Send.id)][3:]
    other.close()


def test_the_same_new_user_upserted_by_eight_requests_at_once_is_one_profile_holding_every_hash(client):
    start = threading.Barrier(8)
    created, errors = [], []

    def upsert(n):
        try:
            start.wait()
            created.append(profiles.upsert("shop", "user-1", {f"flavour{n}": f"hash{n}"}, {}, None, utcnow()))
        except Exception as exc:  # what a request thread would have answered 500 for
            errors.append(exc)
        finally:
            database.close()

    threads = [threading.Thread(target=upsert, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert (errors, sorted(created)) == ([], [False] * 7 + [True])
    assert [(p.user_id, p.identity) for p in profiles.Profile.select()] == [
        ("user-1", {f"flavour{n}": f"hash{n}" for n in range(8)})]


def test_an_identity_stores_each_distinct_hash_once_and_reads_back_whole(client):
    track(client, signup("ident", email="margo@example.com", first_name="Margo"))
    stored = database.execute_sql("SELECT identity FROM events").fetchone()[0]

    assert stored == f"em:{b64(sha('margo@example.com'))} em_google:=em fn:{b64(sha('margo'))} fn_compact:=fn"
    assert Event.get().identity == {"em": sha("margo@example.com"), "em_google": sha("margo@example.com"),
                                    "fn": sha("margo"), "fn_compact": sha("margo")}


def b64(hex_digest: str) -> str:
    return base64.urlsafe_b64encode(bytes.fromhex(hex_digest)).decode().rstrip("=")


def test_an_identity_stored_before_the_compact_form_reads_the_same(client):
    track(client, signup("old-form", email="margo@example.com"))
    whole = json.dumps({"em": sha("margo@example.com"), "em_google": sha("margo@example.com")})
    database.execute_sql(f"UPDATE events SET identity = {database.param}", (whole,))

    assert Event.get().identity == {"em": sha("margo@example.com"), "em_google": sha("margo@example.com")}


def test_an_identity_stored_as_base64_json_reads_the_same(client):
    track(client, signup("json-form", email="margo@example.com"))
    earlier = json.dumps({"em": b64(sha("margo@example.com")), "em_google": "=em"})
    database.execute_sql(f"UPDATE events SET identity = {database.param}", (earlier,))

    assert Event.get().identity == {"em": sha("margo@example.com"), "em_google": sha("margo@example.com")}


def test_an_identity_holding_a_value_postback_did_not_make_is_stored_as_json_and_reads_back_whole(client):
    track(client, signup("odd", email="margo@example.com"))
    Event.update(identity={"em": sha("margo@example.com"), "partner id": "a b:c"}).execute()

    stored = database.execute_sql("SELECT identity FROM events").fetchone()[0]
    assert json.loads(stored) == {"em": b64(sha("margo@example.com")), "partner id": "a b:c"}
    assert Event.get().identity == {"em": sha("margo@example.com"), "partner id": "a b:c"}


def test_a_person_is_found_by_a_hash_in_either_stored_form(client):
    track(client, signup("new-form", email="margo@example.com"))
    track(client, signup("old-form", email="margo@example.com"))
    whole = json.dumps({"em": sha("margo@example.com")})
    database.execute_sql(f"UPDATE events SET identity = {database.param} WHERE event_id = 'old-form'", (whole,))

    found = Event.select(Event.event_id).where(any_of(holding(Event.identity, {sha("margo@example.com")})))
    assert sorted(e.event_id for e in found) == ["new-form", "old-form"]
    assert not Event.select().where(any_of(holding(Event.identity, {sha("someone@example.com")}))).exists()


# Run in a process of its own: each one opens the database as a starting gunicorn worker does.
START = "import sys; from models import open_database; open_database(sys.argv[1]); print('ok')"


@pytest.mark.postgres_only(reason="PostgreSQL's advisory lock; SQLite's turn is a lock file, tested in test_migrations")
def test_six_workers_starting_on_an_empty_database_create_and_version_it_once(tmp_path):
    url = base_config(tmp_path)["storage"]["database"]

    workers = [subprocess.Popen([sys.executable, "-c", START, url], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for _ in range(6)]
    outputs = [worker.communicate(timeout=120)[0] for worker in workers]

    assert outputs == ["ok\n"] * 6
    db = connect(url)
    assert db.execute_sql(f"SELECT version FROM {VERSION_TABLE}").fetchall() == [(STEPS[-1].version,)]
    assert set(db.get_tables()) == {VERSION_TABLE, *(table._meta.table_name for table in tables())}
    db.close()


@pytest.mark.postgres_only(reason="SQLite keeps its one connection per thread; PostgreSQL's are counted")
def test_a_request_hands_its_connection_back(client):
    track(client, signup("e1"))

    assert database.is_closed()


FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
SAFARI = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Version/17.5 Mobile/15E148 Safari/604.1"


def test_each_user_agent_is_stored_once_and_events_name_it_by_id(client):
    for event_id, agent in (("a", FIREFOX), ("b", SAFARI), ("c", FIREFOX)):
        track(client, signup(event_id), headers={**BROWSER, "User-Agent": agent})
    track(client, signup("server-side"), headers={"User-Agent": ""})

    agents = dict(database.execute_sql("SELECT text, id FROM user_agents").fetchall())
    named = dict(database.execute_sql("SELECT event_id, user_agent_id FROM events").fetchall())
    assert sorted(agents) == sorted([FIREFOX, SAFARI])
    assert named == {"a": agents[FIREFOX], "b": agents[SAFARI], "c": agents[FIREFOX], "server-side": None}
    assert {e.event_id: e.to_canonical().user_agent for e in Event.select()} == {
        "a": FIREFOX, "b": SAFARI, "c": FIREFOX, "server-side": None}


def test_a_purge_drops_the_user_agents_no_event_names_any_more(client):
    track(client, signup("old"), headers={**BROWSER, "User-Agent": SAFARI})
    track(client, signup("kept"), headers={**BROWSER, "User-Agent": FIREFOX})
    track(client, signup("old-too"), headers={**BROWSER, "User-Agent": FIREFOX})
    Event.update(received_at=utcnow() - timedelta(days=400)).where(Event.event_id.in_(["old", "old-too"])).execute()
    Send.update(status="sent").execute()

    assert purge_events(timedelta(days=30), utcnow()) == {"events": 2, "sends": 2}
    assert [text for text, in database.execute_sql("SELECT text FROM user_agents").fetchall()] == [FIREFOX]
    track(client, signup("back"), headers={**BROWSER, "User-Agent": SAFARI})  # a new row, a new id
    assert {e.event_id: e.user_agent for e in Event.select()} == {"kept": FIREFOX, "back": SAFARI}
