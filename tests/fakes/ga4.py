"""A fake GA4 Measurement Protocol on 127.0.0.1: /mp/collect answers 204 to anything, like Google, but
records whether Google would have kept the request; /debug/mp/collect answers validationMessages."""
from __future__ import annotations

import re
import time
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.server import FakeServer, Handler, json_or_none

COLLECT, DEBUG = "/mp/collect", "/debug/mp/collect"
MAX_EVENTS = 25
MAX_PARAMS = 25
MAX_BODY = 130_000
MAX_AGE = 72 * 3600
FUTURE_SKEW = 60
VALUE_LIMITS = {"page_location": 1000, "page_referrer": 420, "page_title": 300}
NAME = re.compile(r"[^\W\d_]\w{0,39}")
CLIENT_ID = re.compile(r"\d+\.\d+")
SHA256 = re.compile(r"[0-9a-f]{64}")
RESERVED_EVENTS = {
    "ad_activeview", "ad_click", "ad_exposure", "ad_query", "ad_reward", "adunit_exposure", "app_clear_data",
    "app_exception", "app_install", "app_remove", "app_store_refund", "app_update", "app_upgrade",
    "dynamic_link_app_open", "dynamic_link_app_update", "dynamic_link_first_open", "error", "firebase_campaign",
    "first_open", "first_visit", "notification_dismiss", "notification_foreground", "notification_open",
    "notification_receive", "notification_send", "os_update", "session_start", "user_engagement",
    "ad_impression", "in_app_purchase", "screen_view",  # app streams only
}
RESERVED_PARAM_PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")
CONSENT = {"GRANTED", "DENIED"}
SERVER_ERROR = "<!DOCTYPE html><html><title>Error 500 (Server Error)!!1</title><p>That's an error.</p></html>"


def message(path: str, description: str, code: str) -> dict:
    """One entry of validationMessages, as the validation server writes it."""
    return {"fieldPath": path, "description": description, "validationCode": code}


class FakeGA4(FakeServer):
    """A real HTTP server speaking the Measurement Protocol for the web streams it knows."""

    SCRIPT_WORDS = ("500", "429", "403")
    SCRIPT_SHAPES = (("hang", 2), ("status", 3))
    TEXT_TYPE = "text/html; charset=UTF-8"

    def __init__(self, streams: dict[str, str] | None = None):
        super().__init__()
        self.streams = dict(streams or {"G-TEST123": "ga4-secret"})  # measurement_id -> api_secret
        self.clock = time.time
        self.accepted: list[dict] = []  # bodies Google would have kept
        self.events: list[dict] = []  # their events, in order
        self._refused: dict[str, tuple[str, int | None]] = {}

    def refuse(self, transaction_id: str, description: str = "Invalid parameter value", status: int | None = None) -> None:
        """A request holding this transaction_id gets a VALUE_INVALID message (debug), and `status` (collect)."""
        self._refused[transaction_id] = (description, status)

    def set_secret(self, measurement_id: str, api_secret: str) -> None:
        """Accept only this api_secret for the stream from now on."""
        self.streams[measurement_id] = api_secret

    def _handle(self, h: Handler) -> None:
        url = urlsplit(h.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        raw = h.read_body()
        body = json_or_none(raw)
        record = {
            "method": h.command, "path": url.path, "query": query, "body": body, "size": len(raw),
            "headers": dict(h.headers), "status": None, "answer": None, "accepted": None, "problems": None,
        }
        self._serve(h, record, lambda: self._route(h.command, url.path, query, raw, body, record))

    def _route(self, method, path, query, raw, body, record) -> tuple[int, object]:
        if path not in (COLLECT, DEBUG):
            return 404, "<!DOCTYPE html><html><title>Error 404 (Not Found)!!1</title></html>"
        if method != "POST":
            return 405, "<!DOCTYPE html><html><title>Error 405 (Method Not Allowed)!!1</title></html>"
        return self._answer(path, query, raw, body, record)

    def _content_type(self, answer) -> str | None:
        return super()._content_type(answer) if answer not in (None, "") else None

    def _scripted(self, scripted) -> tuple[int, object, dict]:
        kind, *args = scripted if isinstance(scripted, tuple) else (scripted,)
        if kind == "500":
            return 500, SERVER_ERROR, {}
        if kind == "429":
            return 429, "Too Many Requests", {"Retry-After": "1"}
        if kind == "403":
            return 403, "<!DOCTYPE html><html><title>Error 403 (Forbidden)!!1</title></html>", {}
        return args[0], args[1], {}  # ("status", http_status, body): dict -> JSON, str -> raw text

    def _answer(self, path, query, raw, body, record) -> tuple[int, object]:
        collect = path == COLLECT
        # The validation server checks the payload, not the keys: a wrong api_secret validates
        # (https://developers.google.com/analytics/devguides/collection/protocol/ga4/validating-events).
        problems = (self._credentials(query) if collect else []) + self._validate(raw, body)
        refused = self._refusal(body)
        if refused:
            description, status = refused
            problems.append(message("events.params.transaction_id", description, "VALUE_INVALID"))
            if collect and status:
                record["accepted"], record["problems"] = False, problems
                return status, {"error": {"code": status, "message": description}}
        record["problems"] = problems
        if not collect:
            return 200, {"validationMessages": problems}
        record["accepted"] = not problems
        if not problems:
            with self._lock:
                self.accepted.append(body)
                self.events.extend(body["events"])
        return 204, None  # real GA4 says nothing about validity here

    def _refusal(self, body):
        events = body.get("events") if isinstance(body, dict) else None
        for event in events if isinstance(events, list) else []:
            params = event.get("params") if isinstance(event, dict) else None
            transaction = params.get("transaction_id") if isinstance(params, dict) else None
            if isinstance(transaction, str) and transaction in self._refused:
                return self._refused[transaction]
        return None

    def _credentials(self, query) -> list[dict]:
        measurement_id, secret = query.get("measurement_id"), query.get("api_secret")
        if not measurement_id:
            return [message("measurement_id", "measurement_id is required", "VALUE_REQUIRED")]
        if measurement_id not in self.streams:
            return [message("measurement_id", f"Unknown measurement_id [{measurement_id}]", "VALUE_INVALID")]
        if secret != self.streams[measurement_id]:
            return [message("api_secret", "api_secret is not a secret of this data stream", "VALUE_INVALID")]
        return []

    def _validate(self, raw: bytes, body) -> list[dict]:
        """Every problem Google would find, as validationMessages."""
        if len(raw) >= MAX_BODY:
            return [message("", f"The post body must be smaller than 130kB; it is {len(raw)} bytes.", "VALUE_OUT_OF_BOUNDS")]
        if not isinstance(body, dict):
            return [message("", "Unable to parse Measurement Protocol JSON payload.", "VALUE_INVALID")]
        problems = []
        client_id = body.get("client_id")
        if client_id is None:
            problems.append(message("client_id", "client_id is required for web streams", "VALUE_REQUIRED"))
        elif not (isinstance(client_id, str) and CLIENT_ID.fullmatch(client_id)):
            problems.append(message("client_id", f"Invalid client_id [{client_id}]: two numbers joined by a period",
                                    "VALUE_INVALID"))
        user_id = body.get("user_id")
        if user_id is not None and not (isinstance(user_id, str) and 0 < len(user_id) <= 256):
            problems.append(message("user_id", "user_id must be a string of at most 256 characters", "VALUE_INVALID"))
        if "timestamp_micros" in body:
            problems += self._time(body["timestamp_micros"], "timestamp_micros")
        consent = body.get("consent", {})
        if not isinstance(consent, dict) or any(k not in ("ad_user_data", "ad_personalization") or v not in CONSENT
                                                for k, v in consent.items()):
            problems.append(message("consent", "consent values must be GRANTED or DENIED", "VALUE_INVALID"))
        if "user_data" in body:
            problems += self._user_data(body["user_data"])
        events = body.get("events")
        if not isinstance(events, list) or not events:
            return problems + [message("events", "events is required", "VALUE_REQUIRED")]
        if len(events) > MAX_EVENTS:
            problems.append(message("events", f"A request may hold at most {MAX_EVENTS} events; it holds {len(events)}.",
                                    "EXCEEDED_MAX_ENTITIES"))
        for i, event in enumerate(events):
            problems += self._event(i, event)
        return problems

    def _time(self, value, path: str) -> list[dict]:
        if type(value) is not int or not 10**15 <= value < 10**16:
            return [message(path, f"{path} must be a Unix time in microseconds (16 digits)", "VALUE_INVALID")]
        seconds = value / 1e6
        if self.clock() - seconds > MAX_AGE:
            return [message(path, f"{path} is more than 72 hours in the past", "VALUE_OUT_OF_BOUNDS")]
        if seconds > self.clock() + FUTURE_SKEW:
            return [message(path, f"{path} is in the future", "VALUE_OUT_OF_BOUNDS")]
        return []

    def _user_data(self, data) -> list[dict]:
        if not isinstance(data, dict):
            return [message("user_data", "user_data must be an object", "VALUE_INVALID")]
        problems = []
        for key in ("sha256_email_address", "sha256_phone_number"):
            values = data.get(key, [])
            values = [values] if isinstance(values, str) else values
            if not isinstance(values, list) or len(values) > 3 or not all(isinstance(v, str) and SHA256.fullmatch(v) for v in values):
                problems.append(message(f"user_data.{key}", "up to 3 SHA-256 values, 64 lowercase hex", "VALUE_INVALID"))
        addresses = data.get("address", [])
        addresses = [addresses] if isinstance(addresses, dict) else addresses
        if not isinstance(addresses, list) or len(addresses) > 2:
            return problems + [message("user_data.address", "up to 2 addresses", "VALUE_INVALID")]
        for i, address in enumerate(addresses):
            if not isinstance(address, dict):
                problems.append(message(f"user_data.address[{i}]", "an address must be an object", "VALUE_INVALID"))
                continue
            for key, value in address.items():
                hashed = key.startswith("sha256_")
                if key not in ("sha256_first_name", "sha256_last_name", "sha256_street", "city", "region",
                               "postal_code", "country"):
                    problems.append(message(f"user_data.address[{i}].{key}", "unknown address field", "NAME_INVALID"))
                elif not isinstance(value, str) or (hashed and not SHA256.fullmatch(value)) or \
                        (not hashed and SHA256.fullmatch(value)) or (key == "country" and not re.fullmatch(r"[A-Za-z]{2}", value)):
                    problems.append(message(f"user_data.address[{i}].{key}",
                                            "sha256_ fields are 64 lowercase hex; the others plain text; country alpha-2",
                                            "VALUE_INVALID"))
        return problems

    def _event(self, i: int, event) -> list[dict]:
        path = f"events[{i}]"
        if not isinstance(event, dict):
            return [message(path, f"Event at index: [{i}] must be an object", "VALUE_INVALID")]
        name = event.get("name")
        problems = []
        if not isinstance(name, str) or not name:
            problems.append(message(f"{path}.name", f"Event at index: [{i}] has no name", "VALUE_REQUIRED"))
        elif not NAME.fullmatch(name):
            problems.append(message(f"{path}.name", f"Event at index: [{i}] has invalid name [{name}]. Names must "
                                    "start with an alphabetic character.", "NAME_INVALID"))
        elif name in RESERVED_EVENTS or name.startswith(("firebase_", "google_", "ga_")):
            problems.append(message(f"{path}.name", f"Event at index: [{i}] has name [{name}] which is reserved.",
                                    "NAME_RESERVED"))
        if "timestamp_micros" in event:
            problems += self._time(event["timestamp_micros"], f"{path}.timestamp_micros")
        params = event.get("params", {})
        if not isinstance(params, dict):
            return problems + [message(f"{path}.params", "params must be an object", "VALUE_INVALID")]
        if len(params) > MAX_PARAMS:
            problems.append(message(f"{path}.params", f"Event at index: [{i}] has {len(params)} params; at most "
                                    f"{MAX_PARAMS}.", "EXCEEDED_MAX_ENTITIES"))
        for key, value in params.items():
            where = f"{path}.params.{key}"
            if not NAME.fullmatch(key):
                problems.append(message(where, f"Param [{key}] has an invalid name.", "NAME_INVALID"))
            elif key.startswith(RESERVED_PARAM_PREFIXES) or key == "firebase_conversion":
                problems.append(message(where, f"Param [{key}] has a reserved name.", "NAME_RESERVED"))
            if key == "items":
                problems += self._items(where, value)
            elif isinstance(value, str):
                if len(value) > VALUE_LIMITS.get(key, 100):
                    problems.append(message(where, f"Value of param [{key}] is too long.", "VALUE_OUT_OF_BOUNDS"))
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append(message(where, f"Value of param [{key}] must be a string or a number.", "VALUE_INVALID"))
        return problems

    def _items(self, where: str, items) -> list[dict]:
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            return [message(where, "items must be a list of objects", "VALUE_INVALID")]
        return [message(f"{where}[{j}]", "An item needs item_id or item_name.", "VALUE_REQUIRED")
                for j, item in enumerate(items) if not (item.get("item_id") or item.get("item_name"))]
