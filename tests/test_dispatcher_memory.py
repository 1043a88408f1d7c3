"""What the dispatcher keeps per database connection: few prepared statements, and (SQLite) a small page cache."""
from __future__ import annotations

import threading
from datetime import timedelta

import peewee
import pytest
import yaml
from click.testing import CliRunner

import models
from cli import cli
from delivery import sends as delivery
from delivery.dispatcher import CONNECTION_PRAGMAS
from models import Send, database, padded, update_rows
from tests.helpers import signup, track

LEASE = timedelta(seconds=30)


@pytest.mark.parametrize("n, length", [(0, 0), (1, 1), (2, 2), (3, 4), (4, 4), (5, 8), (250, 256), (256, 256)])
def test_an_in_list_is_padded_with_its_last_value_to_a_power_of_two(n, length):
    values = list(range(n))

    assert len(padded(values)) == length and padded(values)[:n] == values and set(padded(values)) == set(values)


@pytest.fixture
def statements(monkeypatch):
    """The SQL texts run through peewee, in order."""
    texts, execute = [], peewee.Database.execute_sql

    def recorded(self, sql, params=None, *args, **kwargs):
        texts.append(sql)
        return execute(self, sql, params, *args, **kwargs)

    monkeypatch.setattr(peewee.Database, "execute_sql", recorded)
    return texts


def test_claims_of_three_and_four_sends_run_the_same_statement(client, statements):
    now = track(client, *(signup(f"e{n}") for n in range(7)))

    three = delivery.claim("shop/meta", 3, now, LEASE)
    four = delivery.claim("shop/meta", 4, now, LEASE)

    assert (len(three), len(four)) == (3, 4)
    assert Send.select().where(Send.status == "sending").count() == 7
    leases = [sql for sql in statements if sql.startswith('UPDATE "sends" SET "status"')]
    assert len(leases) == 2 and leases[0] == leases[1]


def test_an_update_of_many_rows_runs_statements_of_at_most_update_rows_rows(client, statements):
    now = track(client, *(signup(f"e{n}") for n in range(5)))
    claimed = delivery.claim("shop/meta", 5, now, LEASE)
    rows = [[send.id, send.lease_owner, "sending", "pending"] for send in claimed] * 40  # 200 rows, 5 sends

    with models.writing():
        update_rows("sends", ["id", "lease_owner", "status"], ["status"], rows)

    sizes = [sql.count("), (") + 1 for sql in statements if sql.startswith("UPDATE sends SET status")]
    assert sizes == [64, 64, 64, 8] and max(sizes) == models.UPDATE_ROWS
    assert Send.select().where(Send.status == "pending").count() == 5


@pytest.mark.sqlite_only(reason="a page cache per connection is SQLite's")
def test_every_connection_a_drain_opens_has_the_dispatchers_small_page_cache(client, raw_config, tmp_path,
                                                                             monkeypatch):
    track(client, signup("e1"))
    seen, claim = [], delivery.claim

    def noted(*args, **kwargs):  # on the drain's own thread, through its own connection
        seen.append((threading.current_thread().name, database.execute_sql("PRAGMA cache_size").fetchone()[0]))
        return claim(*args, **kwargs)

    monkeypatch.setattr(delivery, "claim", noted)
    path = tmp_path / "postback.yaml"
    site = raw_config["sites"][0]
    site["destinations"] = [{**d, "mode": "dry"} for d in site["destinations"]]  # nothing is sent
    path.write_text(yaml.safe_dump(raw_config))

    result = CliRunner().invoke(cli, ["drain"], env={"POSTBACK_CONFIG": str(path)})

    assert result.exit_code == 0, result.output
    assert seen and {size for _, size in seen} == {CONNECTION_PRAGMAS["cache_size"]} == {-256}
    assert all(name != threading.main_thread().name for name, _ in seen)
    # the web workers' connections keep SQLite's default: 2,000 KiB
    models.open_database(raw_config["storage"]["database"], migrate=False)
    assert database.execute_sql("PRAGMA cache_size").fetchone()[0] == -2000
