"""A fake Snapchat Conversions API v3 on 127.0.0.1 that validates like Snap and can be scripted to fail."""
from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

# https://developers.snap.com/api/marketing-api/Conversions-API/Parameters
EVENT_NAMES = {
    "PAGE_VIEW", "VIEW_CONTENT", "ADD_CART", "ADD_TO_WISHLIST", "START_CHECKOUT", "ADD_BILLING", "PURCHASE",
    "SIGN_UP", "SUBSCRIBE", "SEARCH", "SAVE", "SHARE", "INVITE", "LOGIN", "RESERVE", "START_TRIAL", "LIST_VIEW",
    "RATE", "AD_CLICK", "AD_VIEW", "COMPLETE_TUTORIAL", "LEVEL_COMPLETE", "ACHIEVEMENT_UNLOCKED",
    "SPEND_CREDITS", "CUSTOM_EVENT_1", "CUSTOM_EVENT_2", "CUSTOM_EVENT_3", "CUSTOM_EVENT_4", "CUSTOM_EVENT_5",
}
# Snap's own taxonomy (https://developers.snap.com/api/marketing-api/Conversions-API/OfflineEvents)
ACTION_SOURCES = {"WEB", "MOBILE_APP", "OFFLINE"}
HASHED_FIELDS = ("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id")
SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_AGE = 37 * 86400
FUTURE_SKEW = 3600  # catches milliseconds sent as seconds
MAX_BATCH = 2000


def _check_script(answer) -> None:
    if answer in ("429", "401", "500"):
        return
    shapes = {("invalid", 2), ("hang", 2), ("status", 3)}
    if not (isinstance(answer, tuple) and answer and (answer[0], len(answer)) in shapes):
        raise ValueError(f"unknown scripted answer: {answer!r}")


class _Invalid(Exception):
    """Validation failed: answer with this status and body."""

    def __init__(self, status: int, reason: str, param: str | None = None):
        super().__init__(reason)
        self.status, self.reason, self.param = status, reason, param

    def answer(self) -> dict:
        body = {"status": "INVALID", "reason": self.reason}
        if self.param:
            body["param"] = self.param
        return body


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
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))


class FakeSnapchat:
    """A real HTTP server speaking Snap's CAPI v3: POST /v3/{pixel_id}/events[/validate]?access_token=…"""

    def __init__(self, token: str = "snap-token", pixels: tuple[str, ...] = ("px-1",)):
        self.token, self.pixels = token, tuple(pixels)
        self.clock = time.time
        self.url: str | None = None
        self.requests: list[dict] = []
        self.events: list[dict] = []      # accepted by /events
        self.validated: list[dict] = []   # judged valid by /events/validate (never recorded as events)
        self._script: list = []
        self._rejected: dict[str, str] = {}
        self._lock = threading.Lock()
        self._conns: set = set()
        self._server = self._thread = None
        self._stopping = threading.Event()

    def start(self) -> "FakeSnapchat":
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
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()
        self._thread.join(timeout=2)
        self._server = None

    def __enter__(self) -> "FakeSnapchat":
        return self if self._server else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def script(self, *answers) -> None:
        """Queue answers for the next requests, one each, first in first out:
        "429", "401", "500", ("invalid", reason), ("hang", seconds), ("status", http_status, body)."""
        for answer in answers:
            _check_script(answer)
        with self._lock:
            self._script.extend(answers)

    def reject_event(self, event_id: str, reason: str = "Invalid event") -> None:
        """Answer INVALID for any request that contains this event_id."""
        self._rejected[event_id] = reason

    def accept_event(self, event_id: str) -> None:
        self._rejected.pop(event_id, None)

    def set_token(self, token: str) -> None:
        """Accept only this access token from now on."""
        self.token = token

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
        match = re.fullmatch(r"/v3/([^/]+)/events(/validate)?/?", url.path)
        record = {
            "method": h.command, "path": url.path, "pixel_id": match[1] if match else None,
            "validate": bool(match and match[2]), "query": query, "body": body, "headers": dict(h.headers),
            "status": None, "answer": None,
        }
        with self._lock:
            self.requests.append(record)
            scripted = self._script.pop(0) if self._script else None
        if isinstance(scripted, tuple) and scripted[0] == "hang":
            if self._stopping.wait(scripted[1]):
                h.close_connection = True
                return
            scripted = None
        if scripted:
            status, answer, headers = self._scripted(scripted)
        else:
            status, answer, headers = self._answer(h.command, url.path, match, query, body)
        record["status"], record["answer"] = status, answer
        payload = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
        h.send_response(status)
        h.send_header("Content-Type", "text/html; charset=utf-8" if isinstance(answer, str) else "application/json")
        h.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(payload)

    def _scripted(self, scripted) -> tuple[int, object, dict]:
        kind, *args = scripted if isinstance(scripted, tuple) else (scripted,)
        if kind == "429":
            return 429, {"status": "INVALID", "reason": "Too many requests"}, {"Retry-After": "1"}
        if kind == "401":
            return 401, {"status": "INVALID", "reason": "Unauthorized: the access token is invalid or expired"}, {}
        if kind == "500":
            return 500, {"status": "INVALID", "reason": "Internal server error"}, {}
        if kind == "invalid":
            return 400, {"status": "INVALID", "reason": args[0]}, {}
        return args[0], args[1], {}  # ("status", http_status, body): dict -> JSON, str -> raw text

    def _answer(self, method, path, match, query, body) -> tuple[int, dict, dict]:
        try:
            data = self._check_request(method, path, match, query, body)
        except _Invalid as invalid:
            return invalid.status, invalid.answer(), {}
        now = self.clock()
        verdicts = []
        for event in data:
            try:
                self._check_event(event, now)
            except _Invalid as invalid:
                verdicts.append(invalid)
            else:
                verdicts.append(None)
        if match[2]:  # /validate: a verdict per event, nothing recorded as an event
            logs = [{"event": i, "status": "INVALID" if v else "VALID", "warnings": [],
                     **({"errors": {"codes": ["INVALID_PARAMETER"], "error_msgs": [v.reason]}} if v else {})}
                    for i, v in enumerate(verdicts)]
            with self._lock:
                self.validated.extend(e for e, v in zip(data, verdicts) if v is None)
            valid = not any(verdicts)
            answer = {"status": "VALID" if valid else "INVALID", "test_event": True, "event_logs": logs}
            if not valid:
                answer["reason"] = "Some events are invalid"
            return (200 if valid else 400), answer, {}
        first = next((v for v in verdicts if v), None)
        if first:
            return first.status, first.answer(), {}  # one status for the whole request
        with self._lock:
            self.events.extend(data)
        return 200, {"status": "VALID"}, {}

    def _check_request(self, method, path, match, query, body) -> list:
        if method != "POST" or not match:
            raise _Invalid(404, f"Not found: {method} {path}")
        token = query.get("access_token")
        if not token:
            raise _Invalid(401, "Unauthorized: missing access_token")
        if token != self.token:
            raise _Invalid(401, "Unauthorized: the access token is invalid or expired")
        if match[1] not in self.pixels:
            raise _Invalid(403, f"Forbidden: the access token has no access to pixel {match[1]}")
        if not isinstance(body, dict):
            raise _Invalid(400, "Request body must be a JSON object")
        data = body.get("data")
        if not isinstance(data, list) or not data:
            raise _Invalid(400, "data must be a non-empty array", "data")
        if len(data) > MAX_BATCH:
            raise _Invalid(400, f"data must hold at most {MAX_BATCH} events", "data")
        return data

    def _check_event(self, event, now: float) -> None:
        """Raise _Invalid for the first problem in one data[] item."""
        if not isinstance(event, dict):
            raise _Invalid(400, "each event must be an object", "data")
        for key in ("event_name", "event_time", "action_source"):
            if event.get(key) in (None, ""):
                raise _Invalid(400, f"Missing required field {key}", key)
        name, source, when = event["event_name"], event["action_source"], event["event_time"]
        if not isinstance(name, str) or name.upper() not in EVENT_NAMES:
            raise _Invalid(400, f"Invalid event_name {name!r}", "event_name")
        if source not in ACTION_SOURCES:
            raise _Invalid(400, f"Invalid action_source {source!r}: one of {', '.join(sorted(ACTION_SOURCES))}",
                           "action_source")
        if source == "WEB" and not event.get("event_source_url"):
            raise _Invalid(400, "Missing required field event_source_url for WEB events", "event_source_url")
        if type(when) is not int or when > now + FUTURE_SKEW or now - when > MAX_AGE:
            raise _Invalid(400, "Timestamp invalid or out of range (Unix seconds, at most 37 days old)", "event_time")
        user_data = event.get("user_data")
        if not isinstance(user_data, dict):
            raise _Invalid(400, "Insufficient PII", "user_data")
        for key in HASHED_FIELDS:
            values = user_data.get(key)
            if values is None:
                continue
            values = [values] if isinstance(values, str) else values
            if not (isinstance(values, list) and all(isinstance(v, str) and SHA256.fullmatch(v) for v in values)):
                raise _Invalid(400, f"Unhashed PII in user_data.{key}", f"user_data.{key}")
        ip = user_data.get("client_ip_address")
        if isinstance(ip, str) and SHA256.fullmatch(ip.lower()):
            raise _Invalid(400, "Invalid hashed IP address", "user_data.client_ip_address")
        if not (user_data.get("em") or user_data.get("ph") or user_data.get("madid")
                or (user_data.get("client_ip_address") and user_data.get("client_user_agent"))):
            raise _Invalid(400, "Insufficient PII", "user_data")
        custom = event.get("custom_data") if isinstance(event.get("custom_data"), dict) else {}
        value, currency = custom.get("value"), custom.get("currency")
        has_value = isinstance(value, (int, float)) and not isinstance(value, bool)
        if name.upper() == "PURCHASE" and not (has_value and isinstance(currency, str) and currency):
            raise _Invalid(400, "Missing price and/or currency in Purchase event", "custom_data")
        event_id = event.get("event_id")
        if isinstance(event_id, str) and event_id in self._rejected:
            raise _Invalid(400, self._rejected[event_id])
