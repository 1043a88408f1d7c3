"""Load and validate Postback's YAML config: parse, substitute ${ENV}, check, freeze.

Each destination's section is judged by its platform, from the registry the caller passes in
(`platforms.REGISTRY`): the platforms import this module, so it imports none of them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass, field, replace
from importlib.util import find_spec
from typing import Any, Callable, Mapping, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from ingest.iso import country_code, currency_code

log = logging.getLogger(__name__)

DEFAULT_PATH = "config.yaml"
MODES = ("live", "test", "dry")
IP_POLICIES = ("truncate", "drop")
CONSENT_DEFAULTS = ("granted", "denied")
# https://core.telegram.org/bots/api#setwebhook: secret_token is 1-256 characters, only A-Z, a-z, 0-9, _ and -.
WEBHOOK_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")
# @BotFather's tokens: the bot's numeric id, a colon, some 35 URL-safe characters; Telegram fixes no length and
# its own example has 34 (https://core.telegram.org/bots/features#botfather), hence a range.
BOT_TOKEN_RE = re.compile(r"[0-9]{1,20}:[A-Za-z0-9_-]{30,64}")
# The schemes peewee's database URLs know, each with the modules that can drive it (any one will do).
_POSTGRES = ("psycopg2", "psycopg")
DATABASE_DRIVERS = {
    "sqlite": ("sqlite3",), "postgres": _POSTGRES, "postgresql": _POSTGRES, "postgresext": _POSTGRES,
    "postgresqlext": _POSTGRES, "cockroachdb": _POSTGRES, "crdb": _POSTGRES, "psycopg3": ("psycopg",),
    "mysql": ("pymysql", "MySQLdb"), "mysqlconnector": ("mysql.connector",), "mariadbconnector": ("mariadb",),
}
# A browser key is publishable: it sits in a page, so it says so in its prefix (`generate-key --browser`).
BROWSER_KEY_PREFIX = "pk_"
BROWSER_KEY_RE = re.compile(r"pk_[A-Za-z0-9_-]{8,128}")
DEFAULT_BROWSER_RATE = 600  # per key and minute: every visitor of the site shares it
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(Exception):
    """An invalid config: one message per problem, each naming its YAML path."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Destination:
    site_id: str
    name: str
    platform: str
    mode: str
    enabled: bool
    events: tuple[str, ...] | None
    consent_category: str | None
    settings: Mapping[str, Any]  # the whole YAML section, for the platform module

    @property
    def key(self) -> str:
        """Globally unique name: destination names are unique per site only."""
        return f"{self.site_id}/{self.name}"

    def fingerprint(self) -> str:
        """Changes whenever the destination's section changes; a paused destination resumes on it."""
        text = json.dumps(dict(self.settings), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Channel:
    """A Telegram channel of a site's funnel (AdTarget)."""

    id: str
    telegram_id: str
    title: str
    username: str | None
    funnel_order: int
    event_type: str


@dataclass(frozen=True)
class Telegram:
    bot_token: str | None
    api_base: str
    webhook_secret: str | None
    channels: tuple[Channel, ...]

    def channel(self, ref: object) -> Channel | None:
        """A channel by its config id or its Telegram id (`-100…`), compared as strings."""
        ref = str(ref) if isinstance(ref, (str, int)) and not isinstance(ref, bool) else None
        return next((c for c in self.channels if ref in (c.id, c.telegram_id)), None)


@dataclass(frozen=True)
class BrowserKey:
    """A publishable key for pages (docs/tracker.md): its own rate, and the events it may send (None: any)."""

    key: str
    events: tuple[str, ...] | None
    rate_per_minute: int

    def allows_event(self, *names: str | None) -> bool:
        return self.events is None or any(name in self.events for name in names if name)


@dataclass(frozen=True)
class Site:
    id: str
    name: str
    keys: tuple[str, ...]
    pixel_token: str | None
    default_country: str | None
    default_currency: str | None
    allowed_origins: tuple[str, ...]
    event_map: Mapping[str, str]
    destinations: tuple[Destination, ...]
    settings: Mapping[str, Any]
    lists: Mapping[str, str] = field(default_factory=dict)  # Octeth ListID -> name
    telegram: Telegram | None = None
    timezone: str = "UTC"  # IANA name: the accuracy report's days are this zone's days
    coverage_alert_below: float | None = None  # a share 0–1: a day delivered below it is marked
    browser_keys: tuple[BrowserKey, ...] = ()

    def allows_origin(self, origin: str | None) -> bool:
        return bool(origin) and ("*" in self.allowed_origins or origin in self.allowed_origins)

    @property
    def active_destinations(self) -> tuple[Destination, ...]:
        return tuple(d for d in self.destinations if d.enabled)


@dataclass(frozen=True)
class Alerts:
    """Where the operator hears of a destination pausing, sends given up, a platform down, coverage falling."""

    webhook: str | None = None
    telegram_site: str | None = None  # the site whose bot sends the message
    telegram_chat_id: str | None = None
    failing_minutes: float = 15

    @property
    def enabled(self) -> bool:
        return bool(self.webhook or self.telegram_chat_id)


@dataclass(frozen=True)
class Config:
    server: Mapping[str, Any]
    admin_password: str
    database: str
    retention_days: int
    ip_policy: str
    consent_default: str
    interval_seconds: float
    max_attempts: int
    timeout_seconds: float
    sites: tuple[Site, ...]
    path: str | None = None
    file_stamp: tuple[int, int] | None = field(default=None, compare=False)  # the file's (mtime, size) before the read
    alerts: Alerts = field(default_factory=Alerts)
    _by_key: dict[str, Site] = field(default_factory=dict, repr=False, compare=False)
    _by_browser_key: dict[str, tuple[Site, BrowserKey]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def max_body_bytes(self) -> int:
        return self.server["max_body_bytes"]

    @property
    def trusted_proxies(self) -> int:
        return self.server["trusted_proxies"]

    def site_for_key(self, key: object) -> Site | None:
        return self._by_key.get(key) if isinstance(key, str) else None

    def browser_key(self, key: object) -> tuple[Site, BrowserKey] | None:
        """The site and settings of a browser key; server keys are not browser keys."""
        return self._by_browser_key.get(key) if isinstance(key, str) else None

    def site(self, site_id: str) -> Site | None:
        return next((s for s in self.sites if s.id == site_id), None)

    def destinations(self) -> list[Destination]:
        return [d for s in self.sites for d in s.active_destinations]

    def destination(self, key: str) -> Destination | None:
        return next((d for d in self.destinations() if d.key == key), None)


class Platform(Protocol):
    """What the config needs of a platform module: the problems of a destination's section, as (key, message)."""

    def check_settings(self, dest: Destination) -> list[tuple[str, str]]: ...


class _Loader(yaml.SafeLoader):
    """YAML 1.2-ish scalars: only true/false are booleans and 0123 stays text.

    YAML 1.1 reads country code NO as false and id 0123 as octal; an admin never means that.
    """


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int")]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*))$"), list("-+0123456789"))


def config_path(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("POSTBACK_CONFIG") or DEFAULT_PATH


def load_config(path: str | None = None, env: Mapping[str, str] | None = None, *,
                platforms: Mapping[str, Platform]) -> Config:
    """The one way to read the config: parse the file, substitute ${ENV}, validate against `platforms`."""
    env = dict(os.environ if env is None else env)
    path = path or config_path(env)
    stamp = file_stamp(path)  # before the read: an edit landing during it shows as a change at the next look
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from None
    return replace(parse_config(text, env, platforms=platforms), path=path, file_stamp=stamp)


def file_stamp(path: str | None) -> tuple[int, int] | None:
    """The file's modification time (ns) and size: what tells the watcher it changed; None if it cannot be read."""
    try:
        info = os.stat(path) if path else None
    except OSError:
        return None
    return (info.st_mtime_ns, info.st_size) if info else None


def parse_config(text: str, env: Mapping[str, str], *, platforms: Mapping[str, Platform]) -> Config:
    """A Config from YAML text; ConfigError lists every problem, each destination judged by its platform."""
    try:
        raw = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError([_syntax_message(exc)]) from None
    problems: list[str] = []
    raw = _substitute(raw if raw is not None else {}, env, "", problems)
    if not isinstance(raw, dict):
        raise ConfigError(["(top level): must be a mapping"])
    # A key whose variable is unset was already reported; "required" on top would say it twice.
    config = _Validator(problems, platforms, quiet={p.split(": ", 1)[0] for p in problems}).config(raw)
    if problems:
        raise ConfigError(problems)
    if env.get("DATABASE_URL"):
        config = replace(config, database=env["DATABASE_URL"])
    if ":memory:" in config.database:
        # Each thread would get its own empty database: the group writer's commits would be invisible.
        raise ConfigError(["storage.database: an in-memory database cannot be shared between threads; use a file"])
    problem = _database_problem(config.database)
    if problem:
        raise ConfigError([f"storage.database: {problem}"])
    return config


def _database_problem(url: str) -> str | None:
    """An unknown scheme, or a known one whose driver is not installed: found now, not at the first request."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    drivers = DATABASE_DRIVERS.get(scheme.removesuffix("+pool"))
    if drivers is None:
        return f"unknown database scheme {scheme or url[:20]!r}; use sqlite:///path/to/postback.db"
    if not any(_installed(module) for module in drivers):
        return f"no driver for {scheme}:// is installed (it needs {' or '.join(drivers)})"
    return None


def _installed(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except ModuleNotFoundError:  # the parent of a dotted name (mysql of mysql.connector) is missing
        return False


def _syntax_message(exc: yaml.YAMLError) -> str:
    """One line with the position, instead of PyYAML's multi-line excerpt."""
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is None or not problem:
        return f"YAML syntax: {' '.join(str(exc).split())}"
    return f"YAML syntax: line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _substitute(value: Any, env: Mapping[str, str], path: str, problems: list[str]) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, env, _join(path, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, env, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match) -> str:
        name, fallback = match.group(1), match.group(2)
        if env.get(name):  # an empty variable counts as absent
            return env[name]
        if fallback is not None:
            return fallback
        problems.append(f"{path}: environment variable {name} is not set")
        return ""

    return _ENV_RE.sub(replace, value)


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


class _Validator:
    """Reads the raw mapping into a Config, appending one message per problem."""

    def __init__(self, problems: list[str], platforms: Mapping[str, Platform], quiet: set[str] | None = None):
        self.problems = problems
        self.platforms = platforms
        self.quiet = quiet or set()

    def fail(self, path: str, message: str) -> None:
        if path not in self.quiet:
            self.problems.append(f"{path}: {message}")

    def section(self, raw: dict, key: str) -> dict:
        value = raw.get(key) or {}
        if not isinstance(value, dict):
            self.fail(key, "must be a mapping")
            return {}
        return value

    def text(self, raw: dict, key: str, path: str, required: bool = False, default: str | None = None) -> str | None:
        value = raw.get(key)
        if value is None or value == "":
            if required:
                self.fail(_join(path, key), "required")
            return default
        if isinstance(value, bool):
            self.fail(_join(path, key), f"must be text, got {str(value).lower()}; quote it")
            return default
        if isinstance(value, (int, float)):
            return str(value)  # ids may be written as numbers; they compare as strings
        if not isinstance(value, str):
            self.fail(_join(path, key), "must be text")
            return default
        return value

    def number(self, raw: dict, key: str, path: str, default: float, kind: type = int, minimum: float = 0) -> Any:
        value = raw.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            return kind(default)  # an empty value counts as absent, like an empty ${VAR}
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        finite = not isinstance(value, float) or math.isfinite(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not finite:
            self.fail(_join(path, key), f"must be a number, got {raw.get(key)!r}")
            return default
        if kind is int and isinstance(value, float) and not value.is_integer():
            self.fail(_join(path, key), f"must be a whole number, got {raw.get(key)!r}")
            return default
        if value < minimum:
            self.fail(_join(path, key), f"must be at least {minimum}")
            return default
        return kind(value)

    def choice(self, raw: dict, key: str, path: str, choices: tuple[str, ...], default: str) -> str:
        value = raw.get(key, default)
        if value not in choices:
            self.fail(_join(path, key), f"must be one of {', '.join(choices)}, got {value!r}")
            return default
        return value

    def flag(self, raw: dict, key: str, path: str, default: bool) -> bool:
        value = raw.get(key, default)
        if not isinstance(value, bool):
            self.fail(_join(path, key), f"must be true or false, got {value!r}")
            return default
        return value

    def text_list(self, raw: dict, key: str, path: str) -> tuple[str, ...]:
        value = raw.get(key) or []
        if isinstance(value, (str, int)):
            value = [value]
        if not isinstance(value, list):
            self.fail(_join(path, key), "must be a list")
            return ()
        out = []
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, (str, int, float)) or item == "":
                self.fail(f"{path}.{key}[{i}]", "must be non-empty text")
            else:
                out.append(str(item))
        return tuple(out)

    def config(self, raw: dict) -> Config:
        server = self.section(raw, "server")
        storage = self.section(raw, "storage")
        privacy = self.section(raw, "privacy")
        dispatch = self.section(raw, "dispatch")
        admin = self.section(raw, "admin")
        server_out = {
            **server,
            "public_url": self.text(server, "public_url", "server", default="http://127.0.0.1:8000"),
            "max_body_bytes": self.number(server, "max_body_bytes", "server", 32768, minimum=1),
            "trusted_proxies": self.number(server, "trusted_proxies", "server", 0),
        }
        config = Config(
            server=server_out,
            admin_password=self.text(admin, "password", "admin", default="") or "",
            database=self.text(storage, "database", "storage", default="sqlite:///data/postback.db"),
            retention_days=self.number(storage, "retention_days", "storage", 90, minimum=1),
            ip_policy=self.choice(privacy, "ip", "privacy", IP_POLICIES, "truncate"),
            consent_default=self.choice(privacy, "consent_default", "privacy", CONSENT_DEFAULTS, "granted"),
            interval_seconds=self.number(dispatch, "interval_seconds", "dispatch", 2, float, minimum=0.1),
            max_attempts=self.number(dispatch, "max_attempts", "dispatch", 25, minimum=1),
            timeout_seconds=self.number(dispatch, "timeout_seconds", "dispatch", 10, float, minimum=0.1),
            sites=self.sites(raw.get("sites")),  # last, so problems come in the file's usual order
        )
        if raw.get("alerts") is not None:
            config = replace(config, alerts=self.alerts(raw["alerts"], config.sites))
        config._by_key.update({key: site for site in config.sites for key in site.keys})
        config._by_browser_key.update({b.key: (site, b) for site in config.sites for b in site.browser_keys})
        return config

    def sites(self, raw: Any) -> tuple[Site, ...]:
        if not isinstance(raw, list) or not raw:
            self.fail("sites", "required: a list with at least one site")
            return ()
        sites, seen_ids, seen_keys, seen_lists = [], set(), {}, {}
        for i, item in enumerate(raw):
            path = f"sites[{i}]"
            if not isinstance(item, dict):
                self.fail(path, "must be a mapping")
                continue
            site = self.site(item, path)
            if site.id in seen_ids:
                self.fail(f"{path}.id", f"duplicate site id {site.id!r}")
            seen_ids.add(site.id)
            for key in site.keys:
                if key in seen_keys:
                    self.fail(f"{path}.keys", f"key {key[:4]}… is also used by site {seen_keys[key]!r}; keys must be unique across sites")
                seen_keys[key] = site.id
            for j, browser in enumerate(site.browser_keys):
                if browser.key in seen_keys:
                    self.fail(f"{path}.browser_keys[{j}]", f"key {browser.key[:5]}… is also a key of site "
                                                         f"{seen_keys[browser.key]!r}; every key must be unique")
                seen_keys[browser.key] = site.id
            for list_id in site.lists:
                # An Octeth SessionID is not bound to a site: its ListID must name exactly one.
                if list_id in seen_lists:
                    self.fail(f"{path}.lists", f"list id {list_id!r} is also used by site {seen_lists[list_id]!r}; list ids must be unique across sites")
                seen_lists[list_id] = site.id
            sites.append(site)
        return tuple(sites)

    def site(self, raw: dict, path: str) -> Site:
        site_id = self.text(raw, "id", path, required=True) or ""
        keys = self.text_list(raw, "keys", path)
        if not keys:
            self.fail(f"{path}.keys", "required: at least one API key")
        country = self.text(raw, "default_country", path)
        if country and not country_code(country):
            self.fail(f"{path}.default_country", f"unknown country {country!r}; use an ISO code such as \"US\"")
            country = None
        currency = self.text(raw, "default_currency", path)
        if currency and not currency_code(currency):
            self.fail(f"{path}.default_currency", f"unknown currency {currency!r}; use ISO 4217 such as \"USD\"")
            currency = None
        event_map = raw.get("event_map") or {}
        if not isinstance(event_map, dict) or not all(isinstance(v, str) for v in event_map.values()):
            self.fail(f"{path}.event_map", "must map event names to standard event names")
            event_map = {}
        destinations = self.destinations(raw.get("destinations") or [], f"{path}.destinations", site_id)
        lists = self.lists(raw.get("lists"), f"{path}.lists")
        telegram = self.telegram(raw["telegram"], f"{path}.telegram") if raw.get("telegram") is not None else None
        return Site(
            id=site_id,
            name=self.text(raw, "name", path, default=site_id) or site_id,
            keys=keys,
            pixel_token=self.text(raw, "pixel_token", path),
            default_country=country_code(country) if country else None,
            default_currency=currency_code(currency) if currency else None,
            allowed_origins=self.text_list(raw, "allowed_origins", path),
            event_map={str(k): v for k, v in event_map.items()},
            destinations=destinations,
            lists=lists,
            telegram=telegram,
            timezone=self.zone(raw, path),
            coverage_alert_below=self.share(raw, "coverage_alert_below", path),
            browser_keys=self.browser_keys(raw.get("browser_keys"), f"{path}.browser_keys"),
            settings=raw,
        )

    def zone(self, raw: dict, path: str) -> str:
        """`timezone`: an IANA time zone name (Europe/Berlin), UTC when absent."""
        name = self.text(raw, "timezone", path, default="UTC") or "UTC"
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            self.fail(f"{path}.timezone", f"unknown time zone {name!r}; use an IANA name such as \"Europe/Berlin\"")
            return "UTC"
        return name

    def share(self, raw: dict, key: str, path: str) -> float | None:
        """An optional share between 0 and 1 (0.9 is 90 %)."""
        if raw.get(key) is None or raw.get(key) == "":
            return None
        value = self.number(raw, key, path, default=math.nan, kind=float)  # NaN: number() said what is wrong
        if math.isnan(value):
            return None
        if value > 1:
            self.fail(_join(path, key), f"must be a share between 0 and 1 (0.9 is 90 %), got {raw.get(key)!r}")
            return None
        return value

    def browser_keys(self, raw: Any, path: str) -> tuple[BrowserKey, ...]:
        """Each a `pk_…` string, or a mapping `{key, events?, rate_per_minute?}`."""
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.fail(path, "must be a list of keys (pk_…) or of {key, events, rate_per_minute}")
            return ()
        out = []
        for i, item in enumerate(raw):
            kpath = f"{path}[{i}]"
            item = {"key": item} if isinstance(item, str) else item
            if not isinstance(item, dict):
                self.fail(kpath, "must be a key (pk_…) or a mapping with key, events, rate_per_minute")
                continue
            unknown = sorted(str(k) for k in item if k not in ("key", "events", "rate_per_minute"))
            if unknown:
                self.fail(kpath, f"unknown setting(s) {', '.join(unknown)}; a browser key takes key, events, "
                                 "rate_per_minute")
            key = self.text(item, "key", kpath, required=True)
            if key is not None and not BROWSER_KEY_RE.fullmatch(key):
                self.fail(f"{kpath}.key", "must be pk_ followed by 8-128 letters, digits, _ or - "
                                          "(`python cli.py generate-key --browser` prints one)")
                continue
            events = self.text_list(item, "events", kpath) if "events" in item else None
            rate = self.number(item, "rate_per_minute", kpath, DEFAULT_BROWSER_RATE, minimum=1)
            if key is not None:
                if any(b.key == key for b in out):
                    self.fail(f"{kpath}.key", "listed twice")
                out.append(BrowserKey(key=key, events=events, rate_per_minute=rate))
        return tuple(out)

    def destinations(self, raw: Any, path: str, site_id: str) -> tuple[Destination, ...]:
        if not isinstance(raw, list):
            self.fail(path, "must be a list")
            return ()
        out, names = [], set()
        for i, item in enumerate(raw):
            dpath = f"{path}[{i}]"
            if not isinstance(item, dict):
                self.fail(dpath, "must be a mapping")
                continue
            name = self.text(item, "name", dpath, required=True) or ""
            if name in names:
                self.fail(f"{dpath}.name", f"duplicate destination name {name!r}")
            names.add(name)
            platform = self.text(item, "platform", dpath, required=True) or ""
            module = self.platforms.get(platform)
            if platform and module is None:
                self.fail(f"{dpath}.platform", f"unknown platform {platform!r}; built: {', '.join(sorted(self.platforms))}")
            mode = self.choice(item, "mode", dpath, MODES, "live")
            if item.get("mode", "live") not in MODES:
                mode = "dry"  # reported above; credentials judged against a guessed mode would add a false second message
            events = self.text_list(item, "events", dpath) if "events" in item else None
            dest = Destination(
                site_id=site_id,
                name=name,
                platform=platform,
                mode=mode,
                enabled=self.flag(item, "enabled", dpath, True),
                events=events,
                consent_category=self.text(item, "consent_category", dpath),
                settings={k: (str(v) if isinstance(v, int) and not isinstance(v, bool) else v) for k, v in item.items()},
            )
            if module is not None and dest.enabled:
                for key, message in module.check_settings(dest):
                    self.fail(f"{dpath}.{key}", message)
            out.append(dest)
        return tuple(out)

    def lists(self, raw: Any, path: str) -> dict[str, str]:
        if raw is None:
            return {}
        if not isinstance(raw, list):
            self.fail(path, "must be a list of {id, name}")
            return {}
        lists = {}
        for i, item in enumerate(raw):
            if not isinstance(item, dict):
                self.fail(f"{path}[{i}]", "must be a mapping with id and name")
                continue
            list_id = self.text(item, "id", f"{path}[{i}]", required=True)
            if list_id and not (list_id.isdecimal() and list_id.isascii()):
                self.fail(f"{path}[{i}].id", f"must be a whole number, got {list_id!r}")
                continue
            if list_id in lists:
                self.fail(f"{path}[{i}].id", f"duplicate list id {list_id!r}")
            if list_id:
                lists[list_id] = self.text(item, "name", f"{path}[{i}]", default=list_id) or list_id
        return lists

    def telegram(self, raw: Any, path: str) -> Telegram | None:
        if not isinstance(raw, dict):
            self.fail(path, "must be a mapping")
            return None
        channels, seen = [], set()
        for i, item in enumerate(raw.get("channels") or []):
            cpath = f"{path}.channels[{i}]"
            if not isinstance(item, dict):
                self.fail(cpath, "must be a mapping")
                continue
            channel = Channel(
                id=self.text(item, "id", cpath, required=True) or "",
                telegram_id=self.text(item, "telegram_id", cpath, required=True) or "",
                title=self.text(item, "title", cpath, default="") or "",
                username=self.text(item, "username", cpath),
                funnel_order=self.number(item, "funnel_order", cpath, 1),
                event_type=self.text(item, "event_type", cpath, default="Lead") or "Lead",
            )
            if channel.telegram_id and not re.fullmatch(r"-?\d+", channel.telegram_id):
                self.fail(f"{cpath}.telegram_id", "must be a numeric chat id such as \"-1001234567890\"")
            if channel.id in seen:
                self.fail(f"{cpath}.id", f"duplicate channel id {channel.id!r}")
            seen.add(channel.id)
            channels.append(channel)
        telegram = Telegram(
            bot_token=self.text(raw, "bot_token", path),
            api_base=(self.text(raw, "api_base", path, default="https://api.telegram.org") or "").rstrip("/"),
            webhook_secret=self.text(raw, "webhook_secret", path),
            channels=tuple(channels),
        )
        if telegram.bot_token and not BOT_TOKEN_RE.fullmatch(telegram.bot_token):
            self.fail(f"{path}.bot_token", "must be the token @BotFather gives: <digits>:<about 35 letters, digits, _ or ->")
        if telegram.webhook_secret and not WEBHOOK_SECRET_RE.fullmatch(telegram.webhook_secret):
            self.fail(f"{path}.webhook_secret", "must be 1-256 characters of A-Z, a-z, 0-9, _ and - "
                                                "(Telegram's rule: https://core.telegram.org/bots/api#setwebhook)")
        return telegram

    def alerts(self, raw: Any, sites: tuple[Site, ...]) -> Alerts:
        if not isinstance(raw, dict):
            self.fail("alerts", "must be a mapping")
            return Alerts()
        webhook = self.text(raw, "webhook", "alerts")
        if webhook and not re.match(r"https?://[^/\s]+", webhook):
            self.fail("alerts.webhook", "must be an http:// or https:// URL")
        site_id = chat_id = None
        telegram = raw.get("telegram")
        if telegram is not None and not isinstance(telegram, dict):
            self.fail("alerts.telegram", "must be a mapping")
        elif telegram is not None:
            site_id = self.text(telegram, "site", "alerts.telegram", required=True)
            chat_id = self.text(telegram, "chat_id", "alerts.telegram", required=True)
            site = next((s for s in sites if s.id == site_id), None)
            if site_id and (site is None or site.telegram is None or not site.telegram.bot_token):
                self.fail("alerts.telegram.site", f"must name a site with a telegram.bot_token; {site_id!r} has none")
            if chat_id and not re.fullmatch(r"-?\d+|@[A-Za-z0-9_]{5,}", chat_id):
                self.fail("alerts.telegram.chat_id", "must be a numeric chat id such as \"-1001234567890\" or an @channel")
        minutes = self.number(raw, "failing_minutes", "alerts", 15, float, minimum=1)
        return Alerts(webhook=webhook, telegram_site=site_id, telegram_chat_id=chat_id, failing_minutes=minutes)


@dataclass(frozen=True)
class ReloadResult:
    """The last reload the watcher tried: when (the caller's clock), whether it took, and every problem if not."""

    at: float
    ok: bool
    problems: tuple[str, ...] = ()
    wall: float = field(default_factory=time.time)  # when, for a person: `at` is the caller's clock


class ConfigWatch:
    """Re-reads the config file when it changes (docs/operations.md#config-reload); the old config stays on a bad edit.

    `start()` looks every `every` seconds in a thread; `check(now)`, the look itself, is safe to call from anywhere
    (tests call it with their own clock). The environment is the one captured at start: a process's cannot change.
    """

    def __init__(self, config: Config, apply: Callable[[Config], None], *, platforms: Mapping[str, Platform],
                 env: Mapping[str, str] | None = None, every: float = 3.0,
                 counted: Callable[[str], None] = lambda result: None):
        self.path = config.path
        self.database = config.database
        self.apply = apply
        self.platforms = platforms
        self.env = dict(os.environ if env is None else env)
        self.every = every
        self.counts = {"ok": 0, "error": 0}
        self.counted = counted  # told "ok" or "error" at each reload: /metrics counts them across processes
        self.last: ReloadResult | None = None
        self._stamp = config.file_stamp  # as it was when this config was read, not now: an edit may have come since
        self._checked_at: float | None = None
        self._lock = threading.Lock()

    def start(self) -> threading.Thread:
        """Look at the file every `every` seconds in a daemon thread of this process, whatever its traffic."""
        thread = threading.Thread(target=self._follow, name="config-watch", daemon=True)
        thread.start()
        return thread

    def _follow(self) -> None:
        while True:
            time.sleep(self.every)
            try:
                self.check(time.monotonic())
            except Exception:  # noqa: BLE001 - the config in force stays; the next look tries again
                log.exception("config check failed")

    def check(self, now: float) -> ReloadResult | None:
        """At time `now` (seconds, the caller's clock): reload if the file changed; the result of a reload tried."""
        if self.path is None or (self._checked_at is not None and now - self._checked_at < self.every):
            return None
        if not self._lock.acquire(blocking=False):
            return None  # another thread of this process is checking right now
        try:
            self._checked_at = now
            stamp = file_stamp(self.path)
            if stamp is None or stamp == self._stamp:
                return None
            self._stamp = stamp
            return self._reload(now)
        finally:
            self._lock.release()

    def _reload(self, now: float) -> ReloadResult:
        try:
            config = load_config(self.path, self.env, platforms=self.platforms)
            self._stamp = config.file_stamp
            if config.database != self.database:
                raise ConfigError(["storage.database: changed; a new database takes a restart"])
        except ConfigError as exc:
            self.counts["error"] += 1
            self.counted("error")
            self.last = ReloadResult(now, False, tuple(exc.problems))
            log.error("config reload refused, the config in force stays: %s", "; ".join(exc.problems),
                      extra={"path": self.path})
            return self.last
        self.apply(config)
        self.counts["ok"] += 1
        self.counted("ok")
        self.last = ReloadResult(now, True)
        log.info("config reloaded", extra={"path": self.path})
        return self.last
