"""The command line: purge (retention), stats, generate-key, check-config; run as a script too."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta

import pytest
import yaml
from click.testing import CliRunner

from cli import cli
from ingest.canonical import utcnow
from ingest.inspector import Refusal
from models import Event, Send
from tests.conftest import BROWSER, ROOT, SEED_EXAMPLE, build_config, on_postgres


@pytest.fixture
def run(raw_config, tmp_path):
    """Run a CLI command against the test's config file; returns its output."""
    def run(*args: str) -> str:
        path = tmp_path / "postback.yaml"
        path.write_text(yaml.safe_dump(raw_config))
        result = CliRunner().invoke(cli, list(args), env={"POSTBACK_CONFIG": str(path)})
        assert result.exit_code == 0, result.output
        return result.stdout
    return run


def post(client, event_id: str, **fields) -> Event:
    response = client.post("/v1/track", json={**SEED_EXAMPLE, "event_id": event_id, **fields}, headers=BROWSER)
    assert response.status_code == 200
    return Event.get(Event.event_id == event_id)


def age(event: Event, days: int) -> None:
    Event.update(received_at=utcnow() - timedelta(days=days)).where(Event.id == event.id).execute()


def test_purge_removes_old_final_events_and_keeps_recent_and_still_pending_ones(client, run):
    old_final = post(client, "old-final", consent=False)  # every send skipped: final
    old_pending = post(client, "old-pending")              # its Meta send is still pending
    post(client, "recent", consent=False)
    age(old_final, 91)
    age(old_pending, 91)
    client.post("/v1/track", data="{nope", headers=BROWSER)
    Refusal.update(created_at=utcnow() - timedelta(days=91)).where(Refusal.reason == "Invalid JSON body").execute()

    assert run("purge") == (
        "removed events 1, sends 1, refusals 1, admin_sessions 0, auth_failures 0, browser_key_minutes 0, funnel_conversions 0, funnel_invite_links 0, funnel_visits 0, "
        "funnel_sessions 0, funnel_leads 0, user_profiles 0, octeth_subscribers 0, pixel_profiles 0\n")

    assert sorted(e.event_id for e in Event.select()) == ["old-pending", "recent"]
    assert sorted(s.event.event_id for s in Send.select()) == ["old-pending", "recent"]
    assert Refusal.select().where(Refusal.reason == "Invalid JSON body").count() == 0
    assert Refusal.select().count() == 3  # the three seed events' "partly accepted" entries are young


def test_purge_removes_events_a_chunk_per_transaction_and_says_how_far_it_is(client, raw_config, tmp_path,
                                                                              monkeypatch):
    monkeypatch.setattr("models.PURGE_CHUNK", 2)
    for n in range(5):
        age(post(client, f"old-{n}", consent=False), 91)
    age(post(client, "old-pending"), 91)
    post(client, "recent", consent=False)
    path = tmp_path / "postback.yaml"
    path.write_text(yaml.safe_dump(raw_config))

    result = CliRunner().invoke(cli, ["purge"], env={"POSTBACK_CONFIG": str(path)})

    assert result.exit_code == 0, result.output
    assert result.stderr == "purge: 2/5 event(s) removed\npurge: 4/5 event(s) removed\npurge: 5/5 event(s) removed\n"
    assert result.stdout.startswith("removed events 5, sends 5, ")
    assert sorted(e.event_id for e in Event.select()) == ["old-pending", "recent"]
    assert sorted(s.event.event_id for s in Send.select()) == ["old-pending", "recent"]


def test_stats_counts_events_per_site_sends_per_status_and_the_rows_of_every_table(client, run):
    post(client, "a")
    post(client, "b", consent=False)
    kept = 2 if on_postgres() else 0  # the console's cookie key and the generated password: shared by the nodes
    assert run("stats") == (
        "site shop: 2 event(s)\nshop/meta: pending 1, skipped 1\n"
        "rows: events 2, sends 2, destination_state 0, user_agents 1, refusals 2, admin_sessions 0, auth_failures 0, browser_key_minutes 0, "
        f"alert_state 0, kept_values {kept}, funnel_sessions 0, funnel_visits 0, "
        "funnel_invite_links 0, funnel_leads 0, funnel_conversions 0, user_profiles 0, products 0, octeth_subscribers 0, "
        "octeth_properties 0, pixel_profiles 0\n")  # each seed event is partly accepted: fbc, fbp


def test_generate_key_prints_a_fresh_random_key(run):
    first, second = run("generate-key").strip(), run("generate-key").strip()
    assert re.fullmatch(r"key_[A-Za-z0-9_-]{32}", first) and first != second


def test_generate_key_browser_prints_a_publishable_key_the_config_takes(run, raw_config):
    key = run("generate-key", "--browser").strip()
    assert re.fullmatch(r"pk_[A-Za-z0-9_-]{32}", key)
    raw_config["sites"][0]["browser_keys"] = [key]
    assert build_config(raw_config).browser_key(key)[0].id == "shop"


def test_check_config_reports_each_problem_with_its_path(raw_config, tmp_path):
    raw_config["sites"][0]["destinations"][0].pop("pixel_id")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw_config))
    result = CliRunner().invoke(cli, ["check-config", str(path)])
    assert (result.exit_code, result.stderr) == (1, "sites[0].destinations[0].pixel_id: required\n")


@pytest.mark.parametrize("script", ["cli.py", "app.py"])
def test_the_command_line_runs_as_a_script_as_make_and_the_readme_run_it(script):
    result = subprocess.run([sys.executable, script, "check-config", "config.example.yaml"], cwd=ROOT,
                            capture_output=True, encoding="utf-8", env={**os.environ, "PYTHONIOENCODING": "utf-8"},
                            timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (
        0, "config.example.yaml: OK — 1 site(s), 5 enabled destination(s)\n", "")


@pytest.fixture
def fail(raw_config, tmp_path):
    """Run a CLI command that must fail; returns (exit code, stderr)."""
    def fail(*args: str) -> tuple[int, str]:
        path = tmp_path / "postback.yaml"
        path.write_text(yaml.safe_dump(raw_config))
        result = CliRunner().invoke(cli, list(args), env={"POSTBACK_CONFIG": str(path)})
        return result.exit_code, result.stderr.replace(str(path), "<config>")
    return fail


def test_resume_of_a_destination_that_does_not_exist_says_so_and_fails(fail):
    assert fail("resume", "nope/x") == (1, "no destination 'nope/x' in <config> (site/name, e.g. shop/meta)\n")


def test_resume_of_a_configured_destination_that_is_not_paused_says_so(run):
    assert run("resume", "shop/meta") == "shop/meta: was not paused\n"


def test_replay_of_a_send_that_does_not_exist_says_so_and_fails(fail):
    assert fail("replay", "--send", "99999") == (1, "no send 99999\n")


def test_replay_of_a_destination_that_does_not_exist_says_so_and_fails(fail):
    assert fail("replay", "--destination", "nope/x") == (1, "no destination 'nope/x' in <config> (site/name, e.g. shop/meta)\n")


def test_replay_of_an_existing_send_that_has_not_failed_queues_nothing(client, run):
    post(client, "evt_replay")
    assert run("replay", "--send", str(Send.get().id)) == "0 send(s) queued again\n"


def test_set_webhook_for_a_site_that_does_not_exist_says_so_and_fails(fail):
    code, stderr = fail("set-webhook", "nope")
    assert (code, stderr.splitlines()[-1]) == (2, "Error: no site 'nope' in <config>")
