"""The platform seams: no module outside platforms/ names a platform, and adding one is a module plus one line."""
from __future__ import annotations

import ast
import re
import subprocess
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import pytest

from config import Destination
from dialects.adtarget.funnel import Visit
from ingest import clickids
from ingest.canonical import CanonicalEvent, utcnow
from ingest.fanout import missing_attribution
from ingest.hashing import sha256
from models import Event, Send
from platforms import REGISTRY
from platforms.base import ClickId, Flavour, Platform, Verdict
from tests.conftest import RAW_PII, with_destinations
from tests.fakes.telegram import chat_member, telegram_section

ROOT = Path(__file__).resolve().parent.parent
# What the application is made of; tests/ and bench/ drive fake platforms by name, and platforms/ is their place.
APPLICATION = sorted(ROOT.glob("*.py")) + sorted(
    path for folder in ROOT.iterdir() if folder.is_dir() and folder.name not in ("platforms", "tests", "bench")
    and not folder.name.startswith(".") for path in folder.rglob("*.py"))
BRANDS = ("facebook", "fb", "instagram", "google", "gmail", "googlemail", "snap", "bytedance")
# The CLI's help shows a destination as the example config names it: `shop/meta` is a site and a name.
EXAMPLE_NAMES = ("shop/meta",)
# Each exception is a fact of a dialect's own wire format, not a platform rule at ingest.
EXCEPTIONS = {
    # AdTarget's API has an endpoint named for Meta's browser cookie, `POST /api/v1/events/update-fbp {tempId, fbp}`:
    # its route, its parser and the funnel's verb keep that vendor's name.
    ("routes/adtarget.py", "fbp"), ("dialects/adtarget/parse.py", "fbp"), ("dialects/adtarget/funnel.py", "fbp"),
    # PitchTarget's pixel documents its `fbid` and `access_token` parameters as Facebook's; its notes say so.
    ("dialects/pixel/parse.py", "facebook"),
}


def platform_words() -> set[str]:
    """Every name that spells a platform: its registry name and label, the vendors' brands, and every click id,
    URL parameter, cookie and identity flavour a platform declares (aliases aside: `client_id` is anyone's)."""
    words = set(BRANDS)
    for module in REGISTRY.values():
        words |= {module.NAME, module.LABEL}
        words |= {flavour.key for flavour in module.FLAVOURS}
        for click in module.CLICK_IDS:
            words |= {click.key, *click.params, *(cookie.name for cookie in click.cookies)}
            words |= {click.minted.param} if click.minted else set()
    return {word.lower() for word in words}


def spoken_names(source: str) -> list[tuple[int, str]]:
    """(line, text) of every identifier and string in the code, docstrings and comments aside; camelCase split
    into words. Peewee's own `class Meta` options and `Model._meta` are peewee's, not the platform's."""
    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant) and isinstance(node.body[0].value.value, str)}
    peewee_options = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
                      for inner in node.body if isinstance(inner, ast.ClassDef) and inner.name == "Meta"}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found.append((node.lineno, node.value))
        elif isinstance(node, ast.Name):
            found.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute) and node.attr != "_meta":
            found.append((node.lineno, node.attr))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or (
                isinstance(node, ast.ClassDef) and id(node) not in peewee_options):
            found.append((node.lineno, node.name))
        elif isinstance(node, ast.arg):
            found.append((node.lineno, node.arg))
        elif isinstance(node, ast.keyword) and node.arg:
            found.append((node.lineno, node.arg))
        elif isinstance(node, ast.alias):
            found.append((node.lineno, node.asname or node.name))
    return [(line, re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text)) for line, text in found]


def test_the_scan_reads_the_application_and_knows_every_platform_name():
    names = {path.relative_to(ROOT).as_posix() for path in APPLICATION}
    assert {"app.py", "config.py", "ingest/identity.py", "ingest/clickids.py", "routes/tracker.py",
            "dialects/common.py", "dialects/adtarget/funnel.py", "delivery/dispatcher.py"} <= names
    assert not any(name.startswith(("platforms/", "tests/")) for name in names)
    assert {"meta", "google_ads", "ga4", "tiktok", "snapchat", "facebook", "google", "gclid", "fbclid", "ttclid",
            "fbc", "_fbp", "sccid", "_scid", "_ga", "em_google"} <= platform_words()


def test_no_module_outside_platforms_names_a_platform():
    """Identifiers and strings (f-strings' text included) of every application module outside platforms/.

    Not checked: comments and docstrings, which cite the vendors' pages (developers.facebook.com, …) and may name
    a platform to say why; the example config; tests/ and bench/. A `<meta` HTML element is not the platform.
    EXCEPTIONS lists each dialect whose own wire format names a platform, and the example config's names.
    """
    words = platform_words()
    pattern = re.compile(r"(?<![a-z0-9])(" + "|".join(map(re.escape, sorted(words, key=len, reverse=True)))
                         + r")(?![a-z0-9])")
    named = []
    for path in APPLICATION:
        where = path.relative_to(ROOT).as_posix()
        for line, text in spoken_names(path.read_text()):
            for match in pattern.finditer(text.lower()):
                word = match[1]
                html_element = word == "meta" and text[:match.start()].endswith("<")
                example = any(name in text for name in EXAMPLE_NAMES)
                if not (html_element or example or (where, word) in EXCEPTIONS):
                    named.append(f"{where}:{line}: {word} in {text!r}")
    assert named == []


# --- adding a platform is one module plus one registry line ------------------------------------------------------

XY_EMAIL = "xy.buyer@example.com"
LEAD_ID = 555000333
SIGNED = {"X-Telegram-Bot-Api-Secret-Token": "whsec_Test-Secret_1"}
RAW_PII.append(XY_EMAIL)


def xy_platform() -> ModuleType:
    """XY Ads, a whole platform in one module: its ad clicks append `xyclid`, and it hashes emails upper-cased."""
    module = ModuleType("platforms.xy")
    module.NAME, module.LABEL, module.BATCH_LIMIT, module.MAX_AGE = "xy", "XY Ads", 100, timedelta(days=7)
    module.WEIGHTS = {"xyclid": 5}
    module.CLICK_IDS = (ClickId("xyclid", params=("xyclid",), ad_click=True, attribution=True),)
    module.FLAVOURS = (Flavour("em_xy", "email", str.upper),)
    module.check_settings = lambda dest: []
    module.url = lambda dest: "https://xy.example/events"
    module.build = lambda event, dest: {"xyclid": event.click_ids.get("xyclid")}
    module.identifiers = lambda item: ["xyclid"] if item.get("xyclid") else []
    module.request_key = lambda item: None
    module.send = lambda items, dest, http: []
    module.verify = lambda dest, http: Verdict(True, "OK")
    return module


@pytest.fixture
def xy(monkeypatch) -> ModuleType:
    """The registry line: nothing else is changed."""
    module = xy_platform()
    monkeypatch.setitem(REGISTRY, "xy", module)
    return module


@pytest.fixture
def raw_config(raw_config, xy, fake_telegram):
    raw = with_destinations(raw_config, {"name": "xy", "platform": "xy", "mode": "dry"})
    raw["sites"][0]["telegram"] = telegram_section(fake_telegram.url, fake_telegram.token)
    return raw


def test_the_new_module_has_the_one_platform_shape(xy):
    assert isinstance(xy, Platform)
    assert clickids.attribution_keys(xy) == ("xyclid",)


def test_a_channelstack_body_field_carries_the_new_click_id_and_the_email_gets_the_new_form(client):
    response = client.post("/v1/track", json={"api_key": "key_demo_123", "event": "signed_up", "distinct_id": "u1",
                                              "email": XY_EMAIL, "xyclid": "xy-1"})

    assert response.status_code == 200, response.get_json()
    event = Event.get()
    assert (event.click_ids, event.properties, event.notes) == ({"xyclid": "xy-1"}, {}, [])
    assert event.identity["em_xy"] == sha256(XY_EMAIL.upper())
    assert [(s.destination, s.status) for s in Send.select()] == [("shop/xy", "pending")]


def land_through_the_api(client, href: str) -> str:
    response = client.post("/api/v1/events/visit", json={"href": href}, headers={"Authorization": "Bearer atk_live_demo"})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["tempId"]


def land_through_the_tracker(client, href: str) -> str:
    response = client.post("/track/init?site=shop", json={"href": href})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["tempId"]


@pytest.mark.parametrize("land", [land_through_the_api, land_through_the_tracker])
def test_the_new_click_id_in_a_landing_url_reaches_the_funnels_event_and_routes_it(client, land):
    temp_id = land(client, "https://shop.example/vip?utm_source=xy&xyclid=xy-2")
    assert Visit.get().click_ids == {"xyclid": "xy-2"}
    link = client.post("/api/v1/events/invite", json={"tempId": temp_id, "channelId": "vip"},
                       headers={"Authorization": "Bearer atk_live_demo"}).get_json()["inviteLink"]

    joined = client.post("/telegram/webhook/shop", json=chat_member(9001, "-1001234567890", LEAD_ID, link,
                                                                     int(utcnow().timestamp())), headers=SIGNED)

    assert joined.status_code == 200, joined.get_json()
    event = Event.get()
    assert (event.channel, event.click_ids) == ("chat", {"xyclid": "xy-2"})
    assert [(s.destination, s.status, s.reason) for s in Send.select()] == [("shop/xy", "pending", None)]


def test_an_invite_url_carrying_the_new_click_id_is_an_ads_landing_page(client):
    land_through_the_tracker(client, "https://shop.example/vip")

    response = client.get("/track/invite?site=shop&channel=vip&xyclid=xy-3")

    assert response.status_code == 302
    assert [visit.click_ids for visit in Visit.select().order_by(Visit.id)] == [{}, {"xyclid": "xy-3"}]


def test_a_telegram_conversion_without_the_new_click_id_is_not_sent_to_the_new_platform(xy):
    dest = Destination(site_id="shop", name="xy", platform="xy", mode="dry", enabled=True, events=None,
                       consent_category=None, settings={})
    now = utcnow()
    chat = CanonicalEvent(site_id="shop", dialect="adtarget", event_name="Lead", standard_name="Lead",
                          event_id="e1", occurred_at=now, received_at=now, channel="chat")

    assert missing_attribution(chat, dest) == "no XY Ads attribution signal (xyclid) on this Telegram conversion"
    chat.click_ids = {"xyclid": "xy-4"}
    assert missing_attribution(chat, dest) is None


def test_no_file_of_the_repository_points_at_a_document_outside_it():
    """A user who clones Postback has docs/ and the vendors' pages, not the notes the product was specified in."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    outside = re.compile(r"\bSPEC\.md|\bSPEC\s§|\bplatforms\.md|\bRECIPES\.md|\bSTYLE\.md|\bseeds?/\d|\(seed \d")
    pointing = [path for path in tracked if path.endswith((".py", ".md", ".yaml", ".txt", ".html", "Makefile", ".ini"))
                and (ROOT / path).is_file() and outside.search((ROOT / path).read_text(errors="replace"))]
    assert pointing == []
