"""Concurrent traffic on every writing endpoint never answers 5xx, and every acknowledged write is stored.

A real gunicorn with the repository's settings (gunicorn.conf.py: gthread workers, the dispatcher in each
worker) serves a temporary config and database; 16 clients, each a thread with its own `requests`
session (cookies kept like a browser), walk every writing endpoint family at once: ChannelStack,
Octeth, a Commanders event and its User and Product APIs, the pixel GIF, AdTarget's visit, invite,
conversion and lead value, the tracker's `/track/init` and `/track/invite`, the Telegram join webhook
(Telegram is tests/fakes/telegram.py) and the admin login. Meta is tests/fakes/meta.py, sent to live.
"""
from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest
import requests
import yaml
from playhouse.db_url import connect

from tests.conftest import RAW_PII, ROOT, base_config, meta_destination, remember_database
from tests.fakes.meta import FakeMeta
from tests.fakes.telegram import VIP, FakeTelegram, chat_member, telegram_section

CLIENTS = 16
ROUNDS = 2  # per client: 15 requests a round, 480 in all
SECRET = "whsec_Test-Secret_1"
PASSWORD = "change-me"
KEY = {"Authorization": "Bearer key_demo_123"}
ADTARGET = {"Authorization": "Bearer atk_live_demo"}
BROWSER = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"}
ORIGIN = {"Origin": "https://shop.example"}
PIXEL = "52fb5565a7b23ec66fad3988"
RAW_PII.extend(f"walker{client}.{round_}@example.com" for client in range(CLIENTS) for round_ in range(ROUNDS))

# What one round stores, table by table (events by dialect): the rows every client's rounds must add up to.
PER_ROUND = {
    "events/channelstack": 1, "events/octeth": 1, "events/commanders": 1, "events/pixel": 1,
    "events/adtarget": 3,  # the API's Lead, the Purchase once it has its value, the join through the tracker's link
    "octeth_subscribers": 1, "funnel_visits": 2, "funnel_sessions": 2, "funnel_invite_links": 2,
    "funnel_conversions": 3, "funnel_leads": 2, "admin_sessions": 1,
    "pixel_profiles": 1,  # a new visitor each round: the tracker's round starts without cookies
}
SHARED_USERS, SHARED_PRODUCTS = 4, 3  # every client updates the same profiles and products: they race


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def fakes():
    meta = FakeMeta(token="meta-token", pixels=("123",)).start()
    telegram = FakeTelegram(chats=(VIP,)).start()
    yield meta, telegram
    telegram.stop()
    meta.stop()


@pytest.fixture
def server(tmp_path, fakes):
    """gunicorn on a free port with gunicorn.conf.py, serving a config of its own; its base URL and database URL."""
    meta, telegram = fakes
    raw = base_config(tmp_path)
    site = raw["sites"][0]
    site["destinations"] = [meta_destination(meta.url)]
    site["telegram"] = telegram_section(telegram.url, telegram.token, SECRET)
    raw["admin"] = {"password": PASSWORD}
    raw["dispatch"]["interval_seconds"] = 1
    with gunicorn(tmp_path, raw) as (base, log):
        yield base, raw["storage"]["database"], log


@contextmanager
def gunicorn(folder: Path, raw: dict, name: str = "gunicorn") -> Iterator[tuple[str, Path]]:
    """A gunicorn on a free port with gunicorn.conf.py serving this config; its base URL and log, stopped after."""
    config = folder / f"{name}.yaml"
    config.write_text(yaml.safe_dump(raw))
    remember_database(raw["storage"]["database"])
    port = free_port()
    env = {**os.environ, "POSTBACK_CONFIG": str(config), "HOST": "127.0.0.1", "PORT": str(port),
           "ACCESS_LOG": str(folder / f"{name}.access.log")}
    path = folder / f"{name}.log"
    log = path.open("w")
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    base = f"http://{env['HOST']}:{env['PORT']}"
    try:
        _wait_until_up(base, process, path)
        yield base, path
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def _wait_until_up(base: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited: {log.read_text()}")
        try:
            if requests.get(f"{base}/healthz", timeout=5).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):  # still booting
            pass
        time.sleep(0.1)
    raise AssertionError(f"gunicorn did not answer within 60 s: {log.read_text()}")


class Walker:
    """One client: its own session, walking every writing endpoint; every answer kept as (what, status)."""

    def __init__(self, base: str, number: int):
        self.base, self.number = base, number
        self.http = requests.Session()
        self.answers: list[tuple[str, int, int]] = []  # (what, status, the status expected)

    def call(self, what: str, method: str, path: str, expected: int = 200, **kwargs) -> requests.Response:
        response = self.http.request(method, self.base + path, timeout=60, allow_redirects=False, **kwargs)
        self.answers.append((what, response.status_code, expected))
        return response

    def walk(self) -> list[tuple[str, int, int]]:
        for round_ in range(ROUNDS):
            self.round(round_)
        return self.answers

    def round(self, round_: int) -> None:
        me = f"{self.number}-{round_}"
        email = f"walker{self.number}.{round_}@example.com"
        telegram_user = 600000000 + self.number * 100 + round_
        self.call("channelstack", "POST", "/v1/track", headers=BROWSER, json={
            "api_key": "key_demo_123", "event": "purchase_completed", "event_id": f"cs-{me}", "email": email,
            "value": 10, "currency": "USD"})
        self.call("octeth event", "POST", "/api/v1/event", headers=BROWSER, json={
            "APIKey": "key_demo_123", "ListID": 94, "Event": "conversion", "Email": email,
            "Properties": {"conversion-id": f"order-{me}", "conversion-name": "purchase", "conversion-value": 29.5}})
        self.call("commanders event", "POST", "/events?tc_s=shop", headers=KEY, json={
            "event_name": "purchase", "id": f"ord-{me}", "revenue": 25, "currency": "USD",
            "items": [{"id": f"SKU_{round_ % SHARED_PRODUCTS}", "quantity": 1}],
            "user": {"id": f"user-{self.number % SHARED_USERS}", "email": email},
            "context": {"event_id": f"tc-{me}", "page": {"url": "https://shop.example/thanks"}}})
        self.call("user api", "POST", "/users?tc_s=shop", headers=KEY, json={
            "id": f"user-{(self.number + round_) % SHARED_USERS}", "email": email, "country": "FR"})
        self.call("product api", "POST", "/products?tc_s=shop", headers=KEY, json=[
            {"id": f"SKU_{n}", "name": f"Shirt {n}", "price": 12.5 + self.number, "currency": "USD"}
            for n in range(SHARED_PRODUCTS)])
        params = base64.b64encode(json.dumps({"email": email}).encode()).decode()
        self.call("pixel", "GET", f"/{PIXEL}/event.gif?event_token=signup&params={params}",
                  headers={**BROWSER, "Referer": "https://shop.example/signup.html"})
        self.funnel(me, telegram_user)
        self.tracker(me, telegram_user + 50)
        self.call("admin login", "POST", "/admin/api/login", json={"password": PASSWORD})

    def funnel(self, me: str, telegram_user: int) -> None:
        """AdTarget's API: a visit, its invite link, a Lead, then a Purchase that waits for its value and gets it."""
        temp_id = f"00000000-0000-4000-8000-{self.number:06d}{me[-1]:0>6}"
        self.call("adtarget visit", "POST", "/api/v1/events/visit", headers=ADTARGET, json={
            "href": f"https://shop.example/vip?fbclid=Click{me}", "tempId": temp_id, "clientIp": "203.0.113.42",
            "userAgent": BROWSER["User-Agent"]})
        self.call("adtarget invite", "POST", "/api/v1/events/invite", headers=ADTARGET,
                  json={"tempId": temp_id, "channelId": "vip"})
        self.call("adtarget conversion", "POST", "/api/v1/events/conversion", headers=ADTARGET, json={
            "telegramUserId": telegram_user, "channelId": "vip", "eventType": "Lead", "clientIp": "203.0.113.42"})
        waiting = self.call("adtarget purchase", "POST", "/api/v1/events/conversion", headers=ADTARGET, json={
            "telegramUserId": telegram_user, "channelId": "vip", "eventType": "Purchase"}).json()
        self.call("adtarget lead value", "POST",
                  f"/api/v1/leads/{telegram_user}/conversions/{waiting.get('conversionId')}/value",
                  headers=ADTARGET, json={"value": 49.9, "currency": "USD"})

    def tracker(self, me: str, telegram_user: int) -> None:
        """The tracker's visit and invite redirect, then Telegram's webhook: the visitor joined through that link."""
        self.http.cookies.clear()  # a new visitor each round
        self.call("tracker init", "POST", "/track/init", headers={**BROWSER, **ORIGIN},
                  json={"site": "shop", "href": f"https://shop.example/vip?fbclid=Tracked{me}"})
        link = self.call("tracker invite", "GET", "/track/invite?site=shop&channel=vip", expected=302,
                         headers=BROWSER).headers.get("Location")
        update = chat_member(700000000 + self.number * 100 + int(me[-1]), VIP, telegram_user, link, int(time.time()))
        self.call("telegram webhook", "POST", "/telegram/webhook/shop", json=update,
                  headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})


def stored(database: str) -> Counter:
    """Rows per table, events per dialect."""
    db = connect(database)
    rows = Counter({f"events/{dialect}": n for dialect, n in
                    db.execute_sql("SELECT dialect, count(*) FROM events GROUP BY dialect").fetchall()})
    for table in ("octeth_subscribers", "funnel_visits", "funnel_sessions", "funnel_invite_links",
                  "funnel_conversions", "funnel_leads", "admin_sessions", "user_profiles", "products",
                  "pixel_profiles"):
        rows[table] = db.execute_sql(f"SELECT count(*) FROM {table}").fetchone()[0]
    db.close()
    return rows


def test_sixteen_clients_on_every_writing_endpoint_get_no_5xx_and_every_acknowledged_write_is_stored(server):
    base, database, log = server
    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = [answer for walked in pool.map(lambda n: Walker(base, n).walk(), range(CLIENTS)) for answer in walked]

    assert len(answers) == CLIENTS * ROUNDS * 15
    assert [a for a in answers if a[1] >= 500] == []
    assert Counter((what, status) for what, status, expected in answers if status != expected) == Counter()
    assert "database is locked" not in log.read_text()
    assert stored(database) == Counter({
        **{table: n * CLIENTS * ROUNDS for table, n in PER_ROUND.items()},
        "user_profiles": SHARED_USERS, "products": SHARED_PRODUCTS})
