"""`make bench`'s driver: its parsing and reporting helpers and its baseline server, not anyone's speed."""
import json
import runpy
from pathlib import Path

import pytest

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
    row = bench.table_row("Ingest X: p99", [1.5, 2.5, 40.0], "ms", "note")
    assert row == "| Ingest X: p99 | 2.50 ms | 1.50 ms | 40.00 ms | 3 | note |"


def test_knobs_come_from_the_environment():
    settings = bench.Settings.from_env({"BENCH_RUNS": "1", "BENCH_SECONDS": "2", "BENCH_EVENTS": "500",
                                        "BENCH_CONNECTIONS": "8, 32"})
    assert (settings.runs, settings.seconds, settings.events, settings.connections) == (1, 2, 500, (8, 32))
    assert settings.dispatch_runs == 1  # follows BENCH_RUNS unless given
    with pytest.raises(bench.BenchError, match="BENCH_SECONDS"):
        bench.Settings.from_env({"BENCH_SECONDS": "ten"})


def test_the_baseline_server_has_postbacks_gunicorn_settings_but_no_dispatcher():
    postback = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    bare = runpy.run_path(str(ROOT / "bench" / "gunicorn_bare.conf.py"))
    for key in ("worker_class", "workers", "threads", "keepalive", "bind", "accesslog"):
        assert bare[key] == postback[key]
    assert bare["wsgi_app"] == "bench.bare:app" and "when_ready" not in bare


def test_the_bare_endpoint_only_parses_the_json_and_answers():
    body = json.dumps({**bench.PURCHASE, "event_id": "e-1"})
    response = bare_app.test_client().post("/v1/track", data=body, content_type="application/json")
    assert response.status_code == 200 and response.get_json()["eventId"] == "e-1"
