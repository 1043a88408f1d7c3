"""The config file re-read on change (docs/operations.md#config-reload): the watcher's check is called with a given
time, never slept for."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from app import reload_counts, watch
from cli import cli
from config import ConfigWatch, load_config
from platforms import REGISTRY
from tests.conftest import BROWSER
from tests.helpers import signup
from tests.test_console import PASSWORD, sign_in

NEW_KEY = "key_added_later_456"


def write(path: Path, raw: dict, stamp: int) -> None:
    """The file as an editor leaves it, with a modification time of its own (seconds since the epoch)."""
    path.write_text(yaml.safe_dump(raw))
    os.utime(path, (stamp, stamp))


@pytest.fixture
def raw_config(raw_config) -> dict:
    raw_config["admin"]["password"] = PASSWORD
    return raw_config


@pytest.fixture
def config_file(tmp_path, raw_config) -> Path:
    path = tmp_path / "postback.yaml"
    write(path, raw_config, 1_000_000)
    return path


@pytest.fixture
def config(config_file):
    return load_config(str(config_file), {}, platforms=REGISTRY)


@pytest.fixture
def applied():
    return []


@pytest.fixture
def watcher(config, applied) -> ConfigWatch:
    return ConfigWatch(config, applied.append, platforms=REGISTRY, env={}, every=3)


def test_a_valid_edit_is_applied_at_the_next_check(watcher, applied, config_file, raw_config):
    raw_config["sites"][0]["keys"].append(NEW_KEY)
    write(config_file, raw_config, 1_000_010)

    result = watcher.check(100.0)

    assert (result.ok, result.problems) == (True, ())
    assert [c.site_for_key(NEW_KEY).id for c in applied] == ["shop"]
    assert watcher.counts == {"ok": 1, "error": 0}


def test_an_edit_made_while_the_process_was_starting_is_still_seen(config, applied, config_file, raw_config):
    raw_config["sites"][0]["keys"].append(NEW_KEY)
    write(config_file, raw_config, 1_000_010)  # after the config was read, before the watcher exists
    watcher = ConfigWatch(config, applied.append, platforms=REGISTRY, env={})

    assert watcher.check(100.0).ok is True
    assert [c.site_for_key(NEW_KEY).id for c in applied] == ["shop"]


def test_an_unchanged_file_is_not_read_again(watcher, applied):
    assert [watcher.check(t) for t in (100.0, 110.0, 120.0)] == [None, None, None]
    assert applied == []


def test_the_file_is_looked_at_no_more_often_than_every_few_seconds(watcher, applied, config_file, raw_config):
    watcher.check(100.0)
    raw_config["dispatch"]["max_attempts"] = 3
    write(config_file, raw_config, 1_000_010)

    assert watcher.check(102.0) is None
    assert watcher.check(103.0).ok is True
    assert [c.max_attempts for c in applied] == [3]


def test_a_broken_edit_is_refused_logged_once_with_every_problem_and_counted(watcher, applied, config_file,
                                                                            raw_config, caplog):
    raw_config["sites"][0]["default_country"] = "Narnia"
    raw_config["dispatch"]["max_attempts"] = 0
    write(config_file, raw_config, 1_000_010)

    with caplog.at_level(logging.ERROR, logger="config"):
        first = watcher.check(100.0)
        later = [watcher.check(t) for t in (110.0, 120.0)]

    assert first.problems == ("dispatch.max_attempts: must be at least 1",
                              "sites[0].default_country: unknown country 'Narnia'; use an ISO code such as \"US\"")
    assert (first.ok, later, applied) == (False, [None, None], [])
    assert [r.getMessage() for r in caplog.records] == [
        "config reload refused, the config in force stays: " + "; ".join(first.problems)]
    assert watcher.counts == {"ok": 0, "error": 1}


def test_a_fixed_edit_after_a_broken_one_takes_effect(watcher, applied, config_file, raw_config):
    broken = {**raw_config, "sites": "none"}
    write(config_file, broken, 1_000_010)
    watcher.check(100.0)
    raw_config["storage"]["retention_days"] = 7
    write(config_file, raw_config, 1_000_020)

    assert watcher.check(110.0).ok is True
    assert [c.retention_days for c in applied] == [7]
    assert watcher.counts == {"ok": 1, "error": 1}


def test_a_new_database_is_refused_until_a_restart(watcher, applied, config_file, raw_config, tmp_path):
    raw_config["storage"]["database"] = f"sqlite:///{tmp_path}/other.db"
    write(config_file, raw_config, 1_000_010)

    assert watcher.check(100.0).problems == ("storage.database: changed; a new database takes a restart",)
    assert applied == []


def test_the_environment_is_the_one_read_at_start(config, applied, config_file, raw_config, monkeypatch):
    watcher = ConfigWatch(config, applied.append, platforms=REGISTRY, env={"META_TOKEN": "first"})
    monkeypatch.setenv("META_TOKEN", "changed")
    raw_config["sites"][0]["destinations"][0]["access_token"] = "${META_TOKEN}"
    write(config_file, raw_config, 1_000_010)

    watcher.check(100.0)

    assert applied[0].destination("shop/meta").settings["access_token"] == "first"


@pytest.fixture
def watched_app(app):
    watcher = watch(app)  # not started: the test's checks are the looks at the file
    yield app, watcher
    del app.extensions["postback.config_watch"]


def test_the_running_app_takes_a_new_key_and_keeps_the_old_config_on_a_broken_edit(watched_app, config_file,
                                                                                  raw_config):
    app, watcher = watched_app
    client = app.test_client()
    raw_config["sites"][0]["keys"].append(NEW_KEY)
    write(config_file, raw_config, 1_000_010)
    assert client.post("/v1/track", json=signup("e1", api_key=NEW_KEY), headers=BROWSER).status_code == 401

    watcher.check(100.0)
    assert client.post("/v1/track", json=signup("e1", api_key=NEW_KEY), headers=BROWSER).status_code == 200

    write(config_file, {**raw_config, "sites": []}, 1_000_020)
    watcher.check(200.0)
    assert client.post("/v1/track", json=signup("e2", api_key=NEW_KEY), headers=BROWSER).status_code == 200
    assert reload_counts(app) == {"ok": 1, "error": 1}


def test_the_console_shows_the_last_reload_and_its_problems(watched_app, config_file, raw_config):
    app, watcher = watched_app
    write(config_file, {**raw_config, "sites": []}, 1_000_010)
    watcher.check(100.0)
    client = app.test_client()
    sign_in(client)

    page = client.get("/dashboard/config").get_data(as_text=True)

    assert "the edited file was refused; the config below stays in force." in page
    assert "<li class=\"mono\">sites: required: a list with at least one site</li>" in page


def test_reload_config_checks_the_file_and_touches_it(config_file, raw_config):
    before = config_file.stat().st_mtime_ns

    result = CliRunner().invoke(cli, ["reload-config"], env={"POSTBACK_CONFIG": str(config_file)})

    assert (result.exit_code, result.output) == (
        0, f"{config_file}: OK — 1 site(s), 1 enabled destination(s); every process re-reads it within seconds\n")
    assert config_file.stat().st_mtime_ns > before


def test_reload_config_refuses_a_broken_file_and_leaves_it_untouched(config_file, raw_config):
    write(config_file, {**raw_config, "sites": []}, 1_000_010)

    result = CliRunner().invoke(cli, ["reload-config"], env={"POSTBACK_CONFIG": str(config_file)})

    assert (result.exit_code, result.stderr) == (1, "sites: required: a list with at least one site\n")
    assert config_file.stat().st_mtime_ns == 1_000_010 * 10**9
