"""A fake GA4 Measurement Protocol on 127.0.0.1: /mp/collect answers 204 to anything, like Google, but
records whether Google would have kept the request; /debug/mp/collect answers validationMessages."""
from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

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


def _check_script(answer) -> None:
    if answer in ("500", "429", "403"):
        return
    shapes = {("hang", 2), ("status", 3)}
    if not (isinstance(answer, tuple) and answer and (answer[0], len(answer)) in shapes):
        raise ValueError(f"unknown scripted answer: {answer!r}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):  # a client hanging up is expected; bugs in the fake are not
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format, *args):
        pass

    def setup(self):
        super().setup()
        self.server.fake._track(self.connection, True)

    def finish(self):
        self.server.fake._track(self.connection, False)
        super().finish()

    def do_POST(self):
        self.server.fake._handle(self)

    do_GET = do_PUT = do_DELETE = do_PATCH = do_POST

    def read_body(self) -> bytes:
        """The request body, Content-Length or chunked."""
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(chunks)


class FakeGA4:
    """A real HTTP server speaking the Measurement Protocol for the web streams it knows."""

    def __init__(self, streams: dict[str, str] | None = None):
        self.streams = dict(streams or {"G-TEST123": "ga4-secret"})  # measurement_id -> api_secret
        self.clock = time.time
        self.url: str | None = None
        self.requests: list[dict] = []
        self.accepted: list[dict] = []  # bodies Google would have kept
        self.events: list[dict] = []  # their events, in order
        self._script: list = []
        self._refused: dict[str, tuple[str, int | None]] = {}
        self._lock = threading.Lock()
        self._conns: set = set()
        self._server = self._thread = None
        self._stopping = threading.Event()

    def start(self) -> "FakeGA4":
        """Start serving on an OS-chosen port."""
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections and abandon hung handlers."""
        if not self._server:
            return
        self._stopping.set()
        self._server.shutdown()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # keep-alive handlers would otherwise keep answering after stop()
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()
        self._thread.join(timeout=2)
        self._server = None

    def __enter__(self) -> "FakeGA4":
        return self if self._server else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def script(self, *answers) -> None:
        """Queue answers for the next requests, one each, first in first out: "500", "429", "403",
        ("hang", seconds), ("status", http_status, body)."""
        for answer in answers:
            _check_script(answer)
        with self._lock:
            self._script.extend(answers)

    def refuse(self, transaction_id: str, description: str = "Invalid parameter value", status: int | None = None) -> None:
        """A request holding this transaction_id gets a VALUE_INVALID message (debug), and `status` (collect)."""
        self._refused[transaction_id] = (description, status)

    def set_secret(self, measurement_id: str, api_secret: str) -> None:
        """Accept only this api_secret for the stream from now on."""
        self.streams[measurement_id] = api_secret

    def _track(self, conn, alive: bool) -> None:
        with self._lock:
            (self._conns.add if alive else self._conns.discard)(conn)

    def _handle(self, h: _Handler) -> None:
        url = urlsplit(h.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        raw = h.read_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record = {
            "method": h.command, "path": url.path, "query": query, "body": body, "size": len(raw),
            "headers": dict(h.headers), "status": None, "answer": None, "accepted": None, "problems": None,
        }
        with self._lock:
            self.requests.append(record)
            scripted = self._script.pop(0) if self._script else None
        if isinstance(scripted, tuple) and scripted[0] == "hang":
            if self._stopping.wait(scripted[1]):
                h.close_connection = True
                return
            scripted = None
        headers: dict = {}
        if scripted:
            status, answer, headers = self._scripted(scripted)
        elif url.path not in (COLLECT, DEBUG):
            status, answer = 404, "<!DOCTYPE html><html><title>Error 404 (Not Found)!!1</title></html>"
        elif h.command != "POST":
            status, answer = 405, "<!DOCTYPE html><html><title>Error 405 (Method Not Allowed)!!1</title></html>"
        else:
            status, answer = self._answer(url.path, query, raw, body, record)
        record["status"], record["answer"] = status, answer
        payload = answer.encode() if isinstance(answer, str) else b"" if answer is None else json.dumps(answer).encode()
        h.send_response(status)
        if payload:
            h.send_header("Content-Type", "text/html; charset=UTF-8" if isinstance(answer, str) else "application/json")
        h.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(payload)

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
