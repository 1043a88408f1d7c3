"""`make bench`'s driver: its parsing, judging and reporting helpers and its baseline server, not anyone's speed."""
import json
import runpy
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from bench import fake_platforms
from bench import run as bench
from bench.bare import app as bare_app

ROOT = Path(__file__).resolve().parent.parent
WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:40000/v1/track
  2 threads and 16 connections
BENCH requests=6543 duration_us=10004117 bytes=1234567 non2xx=0 connect=0 read=0 write=0 timeout=0 p50_us=1800 p90_us=5000 p99_us=41234 max_us=90000
"""


def test_the_done_line_of_the_lua_script_is_parsed():
    numbers = bench.parse_wrk(WRK_OUTPUT)
    assert numbers["requests"] == 6543 and numbers["p99_us"] == 41234 and numbers["duration_us"] == 10004117
    assert bench.wrk_errors(numbers) == {}


def test_every_kind_of_wrk_error_is_reported():
    numbers = bench.parse_wrk(WRK_OUTPUT.replace("non2xx=0", "non2xx=7").replace("timeout=0", "timeout=2"))
    assert bench.wrk_errors(numbers) == {"non2xx": 7, "timeout": 2}


def test_output_without_the_done_line_fails_loudly():
    with pytest.raises(bench.BenchError, match="no BENCH line"):
        bench.parse_wrk("Running 10s test @ http://127.0.0.1:1/\nNon-2xx or 3xx responses: 5372\n")


def test_a_figure_is_the_median_with_min_and_max():
    assert bench.spread([3.0, 1.0, 2.0]) == (2.0, 1.0, 3.0)
    assert bench.measured([1.5, 2.5, 40.0], "ms") == "2.5 ms (1.5 ms–40.0 ms, 3 runs)"
    assert bench.measured([0.56], "x") == "0.56× (1 run)"


def test_a_ratio_is_the_median_of_its_pairs_not_a_ratio_of_medians():
    postback, bare = [100.0, 300.0, 200.0], [400.0, 500.0, 250.0]
    assert bench.pair_ratios(postback, bare) == [0.25, 0.6, 0.8]
    assert bench.spread(bench.pair_ratios(postback, bare))[0] == 0.6
    assert 200.0 / 400.0 == 0.5  # the ratio of the medians would say otherwise
    with pytest.raises(bench.BenchError, match="unpaired"):
        bench.pair_ratios([1.0, 2.0], [1.0])


def test_verdicts_take_the_goal_itself_as_met():
    assert bench.verdict(0.5, 0.5, True) == "met" and bench.verdict(0.49, 0.5, True) == "MISSED"
    assert bench.verdict(50.0, 50.0, False) == "met" and bench.verdict(50.1, 50.0, False) == "MISSED"


def test_the_bar_is_scaled_to_the_goal():
    assert bench.bar(0.25, 0.5, True) == "█████░░░░░"
    assert bench.bar(0.9, 0.5, True) == "██████████"
    assert bench.bar(100.0, 50.0, False) == "█████░░░░░"
    assert bench.bar(20.0, 50.0, False) == "██████████"
    assert bench.bar(0.0, 0.5, True) == "░░░░░░░░░░"
    assert bench.bar(3.0, 10.0, True, width=4) == "█░░░"


def test_a_target_row_says_measured_goal_verdict_and_bar():
    missed = bench.Target("1. Ingest ÷ bare", [0.3, 0.2, 0.4], "x", 0.5, True, reason="CPU")
    assert missed.verdict == "MISSED"
    assert missed.row() == "| 1. Ingest ÷ bare | 0.30× (0.20×–0.40×, 3 runs) | ≥ 0.50× | MISSED | `██████░░░░` |"
    met = bench.Target("6. Bytes", [900.0], "B", 1200, False)
    assert met.row() == "| 6. Bytes | 900 B (1 run) | ≤ 1,200 B | met | `██████████` |"
    skipped = bench.Target("4. Flat", [], "%", 0.10, False, not_run="BENCH_MILLION=1 runs it")
    assert skipped.verdict == "not run"
    assert skipped.row() == "| 4. Flat | not run: BENCH_MILLION=1 runs it | ≤ 10.0 % | not run | |"


def test_durations_read_as_people_say_them():
    assert [bench.duration(s) for s in (45, 720, 3900)] == ["45 s", "12 min", "1 h 05 min"]


def test_knobs_come_from_the_environment():
    default = bench.Settings.from_env({})
    assert (default.pairs, default.seconds, default.connections, default.events) == (5, 6, 16, 10_000)
    assert (default.dispatch_runs, default.million) == (5, 0)
    quick = bench.Settings.from_env({"BENCH_PAIRS": "1", "BENCH_SECONDS": "2", "BENCH_EVENTS": "2000"})
    assert (quick.pairs, quick.seconds, quick.events, quick.dispatch_runs) == (1, 2, 2000, 1)
    assert bench.Settings.from_env({"BENCH_MILLION": "1"}).million == 1_000_000
    assert bench.Settings.from_env({"BENCH_MILLION": "5000"}).million == 5000
    with pytest.raises(bench.BenchError, match="BENCH_SECONDS"):
        bench.Settings.from_env({"BENCH_SECONDS": "ten"})
    with pytest.raises(bench.BenchError, match="BENCH_PAIRS"):
        bench.Settings.from_env({"BENCH_PAIRS": "0"})


def test_the_baseline_server_has_postbacks_gunicorn_settings_but_no_dispatcher():
    postback = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    bare = runpy.run_path(str(ROOT / "bench" / "gunicorn_bare.conf.py"))
    for key in ("worker_class", "workers", "threads", "keepalive", "bind", "accesslog"):
        assert bare[key] == postback[key]
    assert bare["wsgi_app"] == "bench.bare:app" and "when_ready" not in bare


def test_the_bench_knows_the_line_the_dispatcher_logs_once_started(caplog):
    import logging

    import logs
    from delivery import process

    with caplog.at_level(logging.INFO, logger="delivery.process"):
        process.log.info("dispatcher started", extra={"pid": 1, "interval_seconds": 2.0})
    line = logs.JSONFormatter().format(caplog.records[-1])
    assert bench.DISPATCHER_STARTED.search(line) and not bench.DISPATCHER_STARTED.search(line.replace("started", "x"))


def test_the_bare_endpoint_only_parses_the_json_and_answers():
    body = json.dumps({**bench.PURCHASE, "event_id": "e-1"})
    response = bare_app.test_client().post("/v1/track", data=body, content_type="application/json")
    assert response.status_code == 200 and response.get_json()["eventId"] == "e-1"


def test_the_bare_gif_route_answers_the_same_bytes_as_postbacks_pixel(client):
    path = bench.pixel_path("52fb5565a7b23ec66fad3988")
    pixel = client.get(path)
    bare = bare_app.test_client().get(path)
    assert pixel.status_code == bare.status_code == 200
    assert bare.data == pixel.data and bare.mimetype == pixel.mimetype == "image/gif"
    assert bare.headers["Cache-Control"] == pixel.headers["Cache-Control"] == "no-store"


def test_the_fakes_count_each_platforms_events_by_its_own_id():
    assert fake_platforms.event_key({"event_id": "e-1", "orderId": "o"}) == "e-1"
    assert fake_platforms.event_key({"orderId": "ord-1", "gclid": "g"}) == "ord-1"
    assert fake_platforms.event_key({"name": "purchase", "params": {"transaction_id": "ord-2"}}) == "ord-2"
    conversions = [{"orderId": "o", "gclid": "g", "conversionAction": "a", "conversionDateTime": "t"}]
    assert fake_platforms.items("google_ads", "/v26/customers/1234567890:uploadClickConversions",
                                {"conversions": conversions}) == conversions
    assert fake_platforms.items("google_ads", "/token", {"conversions": conversions}) is None
    assert fake_platforms.success("google_ads", conversions) == (
        200, b'{"results": [{"gclid": "g", "conversionAction": "a", "conversionDateTime": "t"}], "jobId": "1"}')
    assert fake_platforms.success("ga4", [{}]) == (204, b"")


def sends_table(path: Path, pending: int) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE sends (id INTEGER PRIMARY KEY, status TEXT)")
        db.executemany("INSERT INTO sends (status) VALUES (?)", [("pending",)] * pending)


def test_the_wait_for_a_backlog_lasts_while_it_shrinks_longer_than_the_stall_limit(tmp_path):
    path = tmp_path / "postback.db"
    sends_table(path, 6)

    def deliver():  # one send every 0.1 s: 0.6 s in all, each step well within the 0.4 s stall limit
        for _ in range(6):
            time.sleep(0.1)
            with sqlite3.connect(path) as db:
                db.execute("UPDATE sends SET status = 'sent' "
                           "WHERE id = (SELECT min(id) FROM sends WHERE status = 'pending')")

    worker = threading.Thread(target=deliver)
    worker.start()
    left, waited = bench.wait_drained(path, stall=0.4)
    worker.join()
    assert left == 0 and waited >= 0.6


def test_the_wait_for_a_backlog_gives_up_once_it_stops_shrinking(tmp_path):
    path = tmp_path / "postback.db"
    sends_table(path, 3)

    assert bench.wait_drained(path, stall=0.3)[0] == 3
