"""The admin's one YAML file (docs/configuration.md): the example loads as it is; every mistake is one message naming its path."""
from __future__ import annotations

import copy
import textwrap

import pytest
import yaml
from click.testing import CliRunner

from cli import check_config
from config import ConfigError, load_config, parse_config
from platforms import REGISTRY
from tests.conftest import ROOT

EXAMPLE = ROOT / "config.example.yaml"
BUILT = ", ".join(sorted(REGISTRY))
SITE = {
    "id": "shop",
    "keys": ["key_a"],
    "destinations": [{"name": "meta", "platform": "meta", "mode": "dry", "pixel_id": "123"}],
}


def raw(*sites: dict, **sections) -> dict:
    return {**sections, "sites": [copy.deepcopy(s) for s in sites] or [copy.deepcopy(SITE)]}


def site(**overrides) -> dict:
    return {**copy.deepcopy(SITE), **overrides}


def meta(**overrides) -> dict:
    dest = {"name": "meta", "platform": "meta", "mode": "dry", "pixel_id": "123", **overrides}
    return {k: v for k, v in dest.items() if v is not None}


def problems(text: str, env: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, env or {}, platforms=REGISTRY)
    return caught.value.problems


def dump(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False)


def test_the_shipped_example_loads_as_it_is():
    config = load_config(str(EXAMPLE), env={}, platforms=REGISTRY)
    assert (config.path, config.database, config.admin_password) == (str(EXAMPLE), "sqlite:///data/postback.db", "")
    assert dict(config.server) == {"public_url": "http://127.0.0.1:8000", "max_body_bytes": 32768, "trusted_proxies": 0}
    assert (config.retention_days, config.ip_policy, config.consent_default) == (90, "truncate", "granted")
    assert (config.interval_seconds, config.max_attempts, config.timeout_seconds) == (2.0, 25, 10.0)
    [shop] = config.sites
    assert (shop.id, shop.name, shop.keys, shop.pixel_token) == ("shop", "Demo Shop", ("key_demo_123", "atk_live_demo"), "52fb5565a7b23ec66fad3988")
    assert (shop.default_country, shop.default_currency, shop.allowed_origins) == ("US", "USD", ("https://shop.example",))
    assert (shop.timezone, shop.coverage_alert_below) == ("UTC", None)  # the defaults: UTC days, no marked day
    assert dict(shop.event_map) == {"signed_up": "CompleteRegistration", "purchase_completed": "Purchase"}
    assert config.site_for_key("key_demo_123") is shop and config.site_for_key("atk_live_demo") is shop
    # Every built platform, all in dry mode (docs/configuration.md), so `make run` works without a single credential.
    assert [(d.key, d.platform, d.mode) for d in config.destinations()] == [
        ("shop/meta", "meta", "dry"), ("shop/tiktok", "tiktok", "dry"), ("shop/snap", "snapchat", "dry"),
        ("shop/gads", "google_ads", "dry"), ("shop/ga4", "ga4", "dry"),
    ]
    assert sorted(d.platform for d in config.destinations()) == sorted(REGISTRY)
    dest = config.destinations()[0]
    assert (dest.enabled, dest.events, dest.consent_category) == (True, None, None)
    assert dict(dest.settings) == {
        "name": "meta", "platform": "meta", "mode": "dry", "pixel_id": "123", "access_token": "",
        "test_event_code": "TEST123", "api_version": "v25.0", "api_base": "https://graph.facebook.com",
    }


@pytest.mark.parametrize("data, expected", [
    pytest.param(raw(site(destinations=[meta(pixel_id=None)])),
                 ["sites[0].destinations[0].pixel_id: required"], id="missing pixel_id"),
    pytest.param(raw(site(destinations=[meta(pixel_id="")])),
                 ["sites[0].destinations[0].pixel_id: required"], id="empty pixel_id"),
    pytest.param(raw(site(destinations=[meta(), meta(name="meta2", platform="myspace")])),
                 [f"sites[0].destinations[1].platform: unknown platform 'myspace'; built: {BUILT}"], id="unknown platform"),
    pytest.param(raw(site(destinations=[meta(platform=None)])),
                 ["sites[0].destinations[0].platform: required"], id="missing platform"),
    pytest.param(raw(site(destinations=[meta(mode="prod")])),
                 ["sites[0].destinations[0].mode: must be one of live, test, dry, got 'prod'"], id="bad mode"),
    pytest.param(raw(site(destinations=[meta(mode="live")])),
                 ["sites[0].destinations[0].access_token: required in live mode"], id="live without token"),
    pytest.param(raw(site(destinations=[meta(mode=None)])),
                 ["sites[0].destinations[0].access_token: required in live mode"], id="live is the default mode"),
    pytest.param(raw(site(destinations=[meta(mode="test", access_token="t")])),
                 ["sites[0].destinations[0].test_event_code: required in test mode"], id="test without code"),
    pytest.param(raw(site(destinations=[meta(), meta()])),
                 ["sites[0].destinations[1].name: duplicate destination name 'meta'"], id="duplicate destination"),
    pytest.param(raw(site(destinations=[meta(enabled="yes")])),
                 ["sites[0].destinations[0].enabled: must be true or false, got 'yes'"], id="enabled not a boolean"),
    pytest.param(raw(site(default_country="Atlantis")),
                 ["sites[0].default_country: unknown country 'Atlantis'; use an ISO code such as \"US\""], id="unknown country"),
    pytest.param(raw(site(default_currency="Euros")),
                 ["sites[0].default_currency: unknown currency 'Euros'; use ISO 4217 such as \"USD\""], id="unknown currency"),
    pytest.param(raw(site(timezone="Mars/Olympus_Mons")),
                 ["sites[0].timezone: unknown time zone 'Mars/Olympus_Mons'; use an IANA name such as \"Europe/Berlin\""],
                 id="unknown time zone"),
    pytest.param(raw(site(coverage_alert_below=90)),
                 ["sites[0].coverage_alert_below: must be a share between 0 and 1 (0.9 is 90 %), got 90"],
                 id="coverage given as a percentage"),
    pytest.param(raw(site(coverage_alert_below=-0.1)),
                 ["sites[0].coverage_alert_below: must be at least 0"], id="negative coverage"),
    pytest.param(raw(site(default_country=False)),
                 ["sites[0].default_country: must be text, got false; quote it"], id="boolean country"),
    pytest.param(raw(site(), site(id="blog", keys=["key_b", "key_a"])),
                 ["sites[1].keys: key key_… is also used by site 'shop'; keys must be unique across sites"], id="duplicate key"),
    pytest.param(raw(site(lists=[{"id": 94, "name": "News"}]), site(id="blog", keys=["key_b"], lists=[{"id": "94"}])),
                 ["sites[1].lists: list id '94' is also used by site 'shop'; list ids must be unique across sites"],
                 id="duplicate list id"),
    pytest.param(raw(site(lists=[{"id": 94}, {"id": "94"}])),
                 ["sites[0].lists[1].id: duplicate list id '94'"], id="list id twice in a site"),
    pytest.param(raw(site(telegram={"channels": [{"id": "vip", "telegram_id": "@vipchan"}]})),
                 ["sites[0].telegram.channels[0].telegram_id: must be a numeric chat id such as \"-1001234567890\""],
                 id="channel id not numeric"),
    pytest.param(raw(site(), site(keys=["key_b"])),
                 ["sites[1].id: duplicate site id 'shop'"], id="duplicate site id"),
    pytest.param(raw(site(id=None)), ["sites[0].id: required"], id="missing site id"),
    pytest.param(raw(site(keys=[])), ["sites[0].keys: required: at least one API key"], id="no keys"),
    pytest.param(raw(site(keys=["key_a", ""])), ["sites[0].keys[1]: must be non-empty text"], id="empty key"),
    pytest.param(raw(site(event_map={"signed_up": ["Lead"]})),
                 ["sites[0].event_map: must map event names to standard event names"], id="event_map value not text"),
    pytest.param(raw(site(destinations={"name": "meta"})), ["sites[0].destinations: must be a list"], id="destinations not a list"),
    pytest.param({"sites": []}, ["sites: required: a list with at least one site"], id="no sites"),
    pytest.param({}, ["sites: required: a list with at least one site"], id="empty file"),
    pytest.param({"sites": ["shop"]}, ["sites[0]: must be a mapping"], id="site not a mapping"),
    pytest.param(raw(dispatch={"max_attempts": "many"}), ["dispatch.max_attempts: must be a number, got 'many'"], id="number as a word"),
    pytest.param(raw(dispatch={"max_attempts": 2.5}), ["dispatch.max_attempts: must be a whole number, got 2.5"], id="fraction for a count"),
    pytest.param(raw(dispatch={"interval_seconds": 0}), ["dispatch.interval_seconds: must be at least 0.1"], id="too small"),
    pytest.param(raw(server={"max_body_bytes": True}), ["server.max_body_bytes: must be a number, got True"], id="boolean number"),
    pytest.param(raw(server=["public_url"]), ["server: must be a mapping"], id="section not a mapping"),
    pytest.param(raw(privacy={"ip": "keep"}), ["privacy.ip: must be one of truncate, drop, got 'keep'"], id="bad ip policy"),
    pytest.param(raw(privacy={"consent_default": "maybe"}),
                 ["privacy.consent_default: must be one of granted, denied, got 'maybe'"], id="bad consent default"),
    pytest.param(raw(site(destinations=[meta(mode="live", access_token=["tok", "en"])])),
                 ["sites[0].destinations[0].access_token: must be text, got a list"], id="token as a list"),
    pytest.param(raw(site(destinations=[meta(pixel_id={"id": 123})])),
                 ["sites[0].destinations[0].pixel_id: must be text, got a mapping"], id="pixel id as a mapping"),
    pytest.param(raw(site(destinations=[meta(mode="test", access_token="t", test_event_code=True)])),
                 ["sites[0].destinations[0].test_event_code: must be text, got true; quote it"], id="code as a boolean"),
    pytest.param(raw(site(destinations=[{"name": "ga4", "platform": "ga4", "mode": "live", "measurement_id": "G-X1",
                                         "api_secret": {"secret": "s"}}])),
                 ["sites[0].destinations[0].api_secret: must be text, got a mapping"], id="api_secret as a mapping"),
    pytest.param(raw(site(destinations=[{"name": "gads", "platform": "google_ads", "mode": "dry",
                                         "customer_id": "1234567890", "developer_token": ["d"],
                                         "conversion_actions": {"Purchase": "customers/1234567890/conversionActions/1"}}])),
                 ["sites[0].destinations[0].developer_token: must be text, got a list"], id="developer_token as a list"),
    pytest.param(raw(site(telegram={"webhook_secret": "my secret!", "channels": []})),
                 ["sites[0].telegram.webhook_secret: must be 1-256 characters of A-Z, a-z, 0-9, _ and - "
                  "(Telegram's rule: https://core.telegram.org/bots/api#setwebhook)"], id="webhook secret charset"),
    pytest.param(raw(site(telegram={"webhook_secret": "s" * 257, "channels": []})),
                 ["sites[0].telegram.webhook_secret: must be 1-256 characters of A-Z, a-z, 0-9, _ and - "
                  "(Telegram's rule: https://core.telegram.org/bots/api#setwebhook)"], id="webhook secret too long"),
    pytest.param(raw(site(telegram={"bot_token": "7000000001: AAFake token", "channels": []})),
                 ["sites[0].telegram.bot_token: must be the token @BotFather gives: <digits>:<about 35 letters, digits, _ or ->"],
                 id="bot token with spaces"),
    pytest.param(raw(site(telegram={"bot_token": ["7000000001:AAFakeTokenForTests_0123456789abcdef"], "channels": []})),
                 ["sites[0].telegram.bot_token: must be text"], id="bot token as a list"),
    pytest.param(raw(site(lists=[{"id": "newsletter"}])),
                 ["sites[0].lists[0].id: must be a whole number, got 'newsletter'"], id="list id not a number"),
    pytest.param(raw(storage={"database": "oracle://db.example/postback"}),
                 ["storage.database: unknown database scheme 'oracle'; use sqlite:///path/to/postback.db"],
                 id="unknown database scheme"),
    pytest.param(raw(storage={"database": "mysqlconnector://db.example/postback"}),
                 ["storage.database: no driver for mysqlconnector:// is installed (it needs mysql.connector)"],
                 id="database driver missing"),
])
def test_each_mistake_yields_exactly_one_message_naming_its_path(data, expected):
    assert problems(dump(data)) == expected


def test_several_problems_in_one_file_are_reported_together():
    data = raw(
        site(default_country="Atlantis", destinations=[meta(pixel_id=None), meta(name="tt", platform="myspace")]),
        site(keys=["key_a"]),
        dispatch={"max_attempts": "many"},
    )
    assert problems(dump(data)) == [
        "dispatch.max_attempts: must be a number, got 'many'",
        "sites[0].default_country: unknown country 'Atlantis'; use an ISO code such as \"US\"",
        "sites[0].destinations[0].pixel_id: required",
        f"sites[0].destinations[1].platform: unknown platform 'myspace'; built: {BUILT}",
        "sites[1].id: duplicate site id 'shop'",
        "sites[1].keys: key key_… is also used by site 'shop'; keys must be unique across sites",
    ]


@pytest.mark.parametrize("text, expected", [
    ("sites: [\n  {id: shop\n", "YAML syntax: line 3, column 1: expected ',' or '}', but got '<stream end>'"),
    ("sites:\n  - id: shop\n    keys: [a]\n  name: x\n", "YAML syntax: line 4, column 3: expected <block end>, but found '?'"),
    ("server: {a: 1}: 2\n", "YAML syntax: line 1, column 15: mapping values are not allowed here"),
    ("sites:\n\t- id: shop\n", "YAML syntax: line 2, column 1: found character '\\t' that cannot start any token"),
])
def test_a_yaml_syntax_error_is_one_line_with_its_position(text, expected):
    assert problems(text) == [expected]


@pytest.mark.parametrize("text", ["- shop\n- blog\n", "just words\n"])
def test_a_file_that_is_not_a_mapping_is_refused(text):
    assert problems(text) == ["(top level): must be a mapping"]


def test_an_unset_variable_without_fallback_names_its_key_once():
    data = raw(site(name="${SITE_NAME}", destinations=[meta(mode="live", access_token="${META_TOKEN}")]))
    assert problems(dump(data)) == [
        "sites[0].destinations[0].access_token: environment variable META_TOKEN is not set",
        "sites[0].name: environment variable SITE_NAME is not set",
    ]


def test_an_empty_variable_counts_as_absent():
    data = raw(site(destinations=[meta(mode="live", access_token="${META_TOKEN}")]))
    assert problems(dump(data), {"META_TOKEN": ""}) == [
        "sites[0].destinations[0].access_token: environment variable META_TOKEN is not set",
    ]


@pytest.mark.parametrize("env, expected", [
    ({}, "https://fallback.example:8000/t"),
    ({"HOST": ""}, "https://fallback.example:8000/t"),
    ({"HOST": "track.shop.example"}, "https://track.shop.example:8000/t"),
])
def test_a_variable_is_substituted_inside_a_string_or_falls_back(env, expected):
    data = raw(server={"public_url": "https://${HOST:-fallback.example}:8000/t"})
    assert parse_config(dump(data), env, platforms=REGISTRY).server["public_url"] == expected


@pytest.mark.parametrize("env, expected", [({}, 7), ({"MAX_ATTEMPTS": "12"}, 12), ({"MAX_ATTEMPTS": ""}, 7)])
def test_a_substituted_number_is_read_as_a_number(env, expected):
    data = raw(dispatch={"max_attempts": "${MAX_ATTEMPTS:-7}"})
    assert parse_config(dump(data), env, platforms=REGISTRY).max_attempts == expected


def test_an_empty_fallback_leaves_a_number_at_its_default():
    data = raw(dispatch={"max_attempts": "${MAX_ATTEMPTS:-}"})
    assert parse_config(dump(data), {}, platforms=REGISTRY).max_attempts == 25


def test_a_substituted_token_reaches_the_destination():
    data = raw(site(destinations=[meta(mode="live", access_token="${META_TOKEN}")]))
    [dest] = parse_config(dump(data), {"META_TOKEN": "secret-1"}, platforms=REGISTRY).destinations()
    assert (dest.mode, dest.settings["access_token"]) == ("live", "secret-1")


BARE = """
sites:
  - id: 7
    keys: [123, key_a]
    pixel_token: 0123
    default_country: NO
    destinations:
      - name: meta
        platform: meta
        mode: dry
        pixel_id: 123
        consent_category: 1
        enabled: true
      - name: meta2
        platform: meta
        mode: dry
        pixel_id: 0123
        enabled: false
"""


def test_bare_words_keep_their_text_and_ids_compare_as_strings():
    config = parse_config(BARE, {}, platforms=REGISTRY)
    [shop] = config.sites
    assert (shop.id, shop.keys, shop.pixel_token, shop.default_country) == ("7", ("123", "key_a"), "0123", "NO")
    assert config.site_for_key("123") is shop
    assert config.site_for_key(123) is None  # a number never matches a key sent as JSON
    first, second = shop.destinations
    assert (first.settings["pixel_id"], first.consent_category, first.enabled) == ("123", "1", True)
    assert (second.settings["pixel_id"], second.enabled) == ("0123", False)
    assert [d.key for d in config.destinations()] == ["7/meta"]


@pytest.mark.parametrize("word", ["no", "off", "yes", "on"])
def test_a_yaml_1_1_boolean_word_is_not_a_boolean(word):
    text = dump(raw(site(destinations=[meta()]))).replace("pixel_id: '123'", f"pixel_id: '123'\n    enabled: {word}")
    assert problems(text) == [f"sites[0].destinations[0].enabled: must be true or false, got '{word}'"]


@pytest.mark.parametrize("env, expected", [
    ({}, "sqlite:///data/postback.db"),
    ({"DATABASE_URL": ""}, "sqlite:///data/postback.db"),
    ({"DATABASE_URL": "sqlite:////var/lib/postback/events.db"}, "sqlite:////var/lib/postback/events.db"),
])
def test_database_url_in_the_environment_overrides_storage_database(env, expected):
    assert load_config(str(EXAMPLE), env=env, platforms=REGISTRY).database == expected


def test_a_postgresql_url_without_its_driver_is_refused_before_serving(monkeypatch):
    monkeypatch.setattr("config._installed", lambda module: False)
    assert problems(dump(raw(storage={"database": "postgresql://db.example/postback"}))) == [
        "storage.database: no driver for postgresql:// is installed (it needs psycopg2 or psycopg)"]


def test_a_database_url_from_the_environment_is_checked_too():
    assert problems(dump(raw()), {"DATABASE_URL": "postgress://db.example/postback"}) == [
        "storage.database: unknown database scheme 'postgress'; use sqlite:///path/to/postback.db"]


def test_a_bot_token_and_webhook_secret_of_telegrams_shapes_pass():
    telegram = {"bot_token": "4839574812:AAFD39kkdpWt3ywyRZergyOLMaJhac60qc", "webhook_secret": "whsec_Test-Secret_1",
                "channels": []}
    config = parse_config(dump(raw(site(telegram=telegram))), {}, platforms=REGISTRY)
    assert (config.sites[0].telegram.bot_token, config.sites[0].telegram.webhook_secret) == (
        telegram["bot_token"], telegram["webhook_secret"])


def test_postback_config_names_the_file(tmp_path):
    path = tmp_path / "elsewhere.yaml"
    path.write_text(dump(raw(site(id="elsewhere"))))
    config = load_config(env={"POSTBACK_CONFIG": str(path)}, platforms=REGISTRY)
    assert (config.path, [s.id for s in config.sites]) == (str(path), ["elsewhere"])


def test_a_missing_file_is_one_message(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), env={}, platforms=REGISTRY)
    assert caught.value.problems == [f"{path}: cannot read (No such file or directory)"]


def test_check_config_prints_ok_for_the_example():
    result = CliRunner().invoke(check_config, [str(EXAMPLE)])
    assert (result.exit_code, result.stdout, result.stderr) == (
        0, f"{EXAMPLE}: OK — 1 site(s), 5 enabled destination(s)\n", "")


def test_check_config_exits_1_with_the_path_named_messages(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent("""\
        dispatch:
          max_attempts: many
        sites:
          - id: shop
            keys: [key_a]
            destinations:
              - {name: meta, platform: meta, mode: live, pixel_id: "123"}
    """))
    result = CliRunner().invoke(check_config, [str(path)])
    assert (result.exit_code, result.stdout, result.stderr) == (1, "", (
        "dispatch.max_attempts: must be a number, got 'many'\n"
        "sites[0].destinations[0].access_token: required in live mode\n"
    ))


@pytest.mark.parametrize("database, env", [("sqlite:///:memory:", {}), ("sqlite:///data/x.db", {"DATABASE_URL": "sqlite:///:memory:"})])
def test_an_in_memory_database_is_refused(database, env):
    with pytest.raises(ConfigError) as refused:
        parse_config(dump(raw(site(), storage={"database": database})), env, platforms=REGISTRY)
    assert refused.value.problems == ["storage.database: an in-memory database cannot be shared between threads; use a file"]


def test_a_sites_time_zone_and_coverage_threshold_are_read():
    [shop] = parse_config(yaml.safe_dump(raw(site(timezone="Europe/Berlin", coverage_alert_below="0.9"))), {},
                          platforms=REGISTRY).sites
    assert (shop.timezone, shop.coverage_alert_below) == ("Europe/Berlin", 0.9)
