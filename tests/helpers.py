"""What the platform tests share: posting events, reading their sends back, canned answers, golden payloads."""
from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime
from pathlib import Path

import requests
from requests.structures import CaseInsensitiveDict

from ingest.canonical import utcnow
from models import Event, Send, database
from tests.conftest import BROWSER

GOLDEN = Path(__file__).parent / "golden"
ROW_FIELDS = ("status", "reason", "attempts", "retries", "last_status", "last_error", "trace_id")


def every_table_text() -> str:
    """Every row of every table in the database, as text (SQLite or PostgreSQL), then every event's identity as
    the code reads it: digests are stored in base64url there, so a test looks for a hash in its hex form."""
    db = database.obj
    text = "\n".join(repr(row) for table in db.get_tables() for row in db.execute_sql(f'SELECT * FROM "{table}"'))
    return "\n".join([text, *(json.dumps(event.identity) for event in Event.select(Event.identity))])


def sha(text: str) -> str:
    """The SHA-256 hex digest of the text's UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def signup(event_id: str, **fields) -> dict:
    """A small website sign-up in the ChannelStack dialect; its identifiers are the user id, IP and UA."""
    return {"api_key": "key_demo_123", "event": "signed_up", "event_id": event_id,
            "distinct_id": f"user-{event_id}", "source_url": "https://shop.example/welcome", **fields}


def track(client, *bodies: dict, headers: dict | None = None, query: str = "", **kwargs) -> datetime:
    """Post each body as a browser would; returns a moment at which all of them are due."""
    for body in bodies:
        response = client.post(f"/v1/track{query}", json=body, headers=BROWSER if headers is None else headers, **kwargs)
        assert response.status_code == 200, response.get_json()
    return utcnow()


def dry_run(client, body: dict, headers: dict | None = None, **kwargs) -> dict:
    """The dry-run answer for one body posted as a browser would."""
    response = client.post("/v1/track?dry_run=1", json=body, headers=BROWSER if headers is None else headers, **kwargs)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def dry_run_entry(client, body: dict, headers: dict | None = None, **kwargs) -> dict:
    """The dry run's entry for the one destination there is."""
    [entry] = dry_run(client, body, headers, **kwargs)["destinations"]
    return entry


def send_of(event_id: str, destination: str) -> Send:
    return Send.select().join(Event).where((Event.event_id == event_id) & (Send.destination == destination)).get()


def row(event_id: str, destination: str, fields: tuple[str, ...] = ROW_FIELDS) -> dict:
    """The stored send's outcome fields, fresh from the database."""
    send = send_of(event_id, destination)
    return {key: getattr(send, key) for key in fields}


def received(fake) -> list[str]:
    return [event["event_id"] for event in fake.events]


def answer(status: int, body: dict | str = "", headers: dict | None = None, reason: str | None = None) -> requests.Response:
    """A response as requests would hand it over: a dict body is sent as JSON, a str as it is."""
    response = requests.Response()
    response.status_code = status
    response._content = (json.dumps(body) if isinstance(body, dict) else body).encode()
    response.headers = CaseInsensitiveDict(headers or {})
    response.reason = reason
    return response


def golden(name: str) -> dict:
    return json.loads((GOLDEN / name).read_text())


def check_golden(name: str, payload: dict) -> None:
    """Assert the payload is the golden file's; POSTBACK_UPDATE_GOLDEN=1 rewrites the file first."""
    if os.environ.get("POSTBACK_UPDATE_GOLDEN"):
        (GOLDEN / name).write_text(json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    assert payload == golden(name)


def store_in_every_dialect(client, tag: str) -> dict:
    """One request that stores an event (or a visit) in each dialect and the tracker, its ids made from `tag`."""
    return {
        "channelstack": client.post("/v1/track", json=signup(f"{tag}-1"), headers=BROWSER),
        "octeth": client.post("/api/v1/event", headers=BROWSER, json={
            "APIKey": "key_demo_123", "ListID": 94, "Event": "conversion", "Email": "jane@example.org",
            "Properties": {"conversion-id": f"order-{tag}", "conversion-name": "purchase", "conversion-value": 29.5}}),
        "commanders": client.post("/events?tc_s=shop", headers={"Authorization": "Bearer key_demo_123"}, json={
            "event_name": "purchase", "id": f"ord-{tag}", "revenue": 25, "currency": "USD",
            "context": {"event_id": f"tc-{tag}"}}),
        "adtarget": client.post("/api/v1/events/visit", headers={"Authorization": "Bearer atk_live_demo"}, json={
            "href": f"https://shop.example/vip?fbclid=Click{tag}", "tempId": "00000000-0000-4000-8000-000000000001",
            "clientIp": "203.0.113.42", "userAgent": BROWSER["User-Agent"]}),
        "tracker": client.post("/track/init", headers={**BROWSER, "Origin": "https://shop.example"},
                               json={"site": "shop", "href": f"https://shop.example/vip?fbclid=Tracked{tag}"}),
    }


def storage_fault_answers(message: str) -> dict:
    """What each of `store_in_every_dialect`'s requests answers while nothing can be stored: (status, body,
    Retry-After), a 503 in the dialect's own shape."""
    return {
        "channelstack": (503, {"error": message, "code": 503}, "30"),
        "octeth": (503, {"Errors": [{"Code": 0, "Message": message}]}, "30"),
        "commanders": (503, {"status": "error", "message": message}, "30"),
        "adtarget": (503, {"error": "STORAGE_UNAVAILABLE", "message": message}, "30"),
        "tracker": (503, {"error": "STORAGE_UNAVAILABLE", "message": message}, "30"),
    }


def as_kept(payload):
    """A payload as its send keeps it: the client IP the platform got (203.0.113.7) cut to its /24."""
    return json.loads(json.dumps(payload).replace('"203.0.113.7"', '"203.0.113.0"'))
