"""A fake TikTok Events API 2.0 on 127.0.0.1 that validates like TikTok and can be scripted to fail."""
from __future__ import annotations

import json
import random
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

EVENT_SOURCES = {"web", "app", "offline", "crm"}
HASHED_FIELDS = ("email", "phone", "external_id", "first_name", "last_name", "zip_code")
PLAIN_FIELDS = ("city", "state", "country", "ttclid", "ttp", "ip", "user_agent", "locale")
SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_BATCH = 1000
SECONDS_CEILING = 10**11  # year 5138: a larger event_time is milliseconds sent as seconds
MESSAGES = {  # code -> TikTok's message, for scripted answers without one
    0: "OK",
    40001: "No permission to operate pixel code.",
    40002: "Invalid parameter.",
    40100: "Too many requests. Please retry in some time.",
    40104: "Access token is null, please include it in the Access-Token header.",
    40105: "Access token is incorrect or has been revoked.",
    50000: "Internal service error. Please retry later.",
}
GATEWAY_PAGE = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)


def request_id() -> str:
    """TikTok's request_id: a UTC timestamp followed by 18 upper-case hex characters."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime()) + "".join(random.choices("0123456789ABCDEF", k=18))


def envelope(code: int, message: str | None = None) -> dict:
    """TikTok's answer body, success or error: HTTP 200 either way."""
    return {"code": code, "message": message or MESSAGES.get(code, "Error."), "request_id": request_id(), "data": {}}


class _Reject(Exception):
    """Validation failed: answer with this code and message."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _bad(message: str) -> _Reject:
    return _Reject(40002, message)


def _hashed(value) -> bool:
    """True for a SHA-256 hex string or a list of them."""
    values = [value] if isinstance(value, str) else value
    return isinstance(values, list) and bool(values) and all(isinstance(v, str) and SHA256.fullmatch(v) for v in values)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_script(answer) -> None:
    if answer in ("500", "html502"):
        return
    if isinstance(answer, tuple) and answer and answer[0] == "hang" and len(answer) == 2:
        return
    if isinstance(answer, tuple) and answer and answer[0] == "code" and len(answer) in (2, 3):
        return
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
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))


class FakeTikTok:
    """A real HTTP server speaking the Events API 2.0: POST /open_api/{version}/event/track/."""

    def __init__(self, token: str = "tiktok-token", pixels: tuple[str, ...] = ("C123",), api_version: str = "v1.3"):
        self.token, self.pixels, self.api_version = token, tuple(pixels), api_version
        self.clock = time.time
        self.url: str | None = None
        self.requests: list[dict] = []
        self.events: list[dict] = []
        self.test_events: list[dict] = []
        self._script: list = []
        self._rejected: dict[str, str] = {}
        self._lock = threading.Lock()
        self._conns: set = set()
        self._server = self._thread = None
        self._stopping = threading.Event()

    def start(self) -> "FakeTikTok":
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

    def __enter__(self) -> "FakeTikTok":
        return self if self._server else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def script(self, *answers) -> None:
        """Queue answers for the next requests, one each, first in first out."""
        for answer in answers:
            _check_script(answer)
        with self._lock:
            self._script.extend(answers)

    def reject_event(self, event_id: str, message: str = "Invalid parameter.") -> None:
        """Fail any batch that contains this event_id with code 40002 and this message."""
        self._rejected[event_id] = message

    def accept_event(self, event_id: str) -> None:
        """Stop failing batches that contain this event_id."""
        self._rejected.pop(event_id, None)

    def set_token(self, token: str) -> None:
        """Accept only this access token from now on."""
        self.token = token

    def _track(self, conn, alive: bool) -> None:
        with self._lock:
            (self._conns.add if alive else self._conns.discard)(conn)

    def _handle(self, h: _Handler) -> None:
        path = urlsplit(h.path).path
        raw = h.read_body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record = {
            "method": h.command, "path": path, "query": urlsplit(h.path).query, "headers": dict(h.headers),
            "token": h.headers.get("Access-Token"), "body": body, "status": None, "answer": None,
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
            status, answer = self._scripted(scripted)
        else:
            status, answer = self._answer(h.command, path, record["token"], body)
        record["status"], record["answer"] = status, answer
        text = isinstance(answer, str)
        payload = answer.encode() if text else json.dumps(answer).encode()
        h.send_response(status)
        h.send_header("Content-Type", "text/html" if text else "application/json")
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        h.wfile.write(payload)

    def _scripted(self, scripted) -> tuple[int, object]:
        if scripted == "500":
            return 500, envelope(50000)
        if scripted == "html502":
            return 502, GATEWAY_PAGE
        _, code, *message = scripted  # ("code", 40100) or ("code", 40002, "Batch.0.…: Not a valid string")
        return 200, envelope(code, *message)

    def _answer(self, method, path, token, body) -> tuple[int, object]:
        if method != "POST" or path != f"/open_api/{self.api_version}/event/track/":
            return 404, "404 page not found"
        try:
            accepted, is_test = self._validate(token, body)
        except _Reject as reject:
            return 200, envelope(reject.code, reject.message)
        with self._lock:
            (self.test_events if is_test else self.events).extend(accepted)
        return 200, envelope(0)

    def _validate(self, token, body) -> tuple[list, bool]:
        if not token:
            raise _Reject(40104, MESSAGES[40104])
        if token != self.token:
            raise _Reject(40105, MESSAGES[40105])
        if not isinstance(body, dict):
            raise _bad("Request body must be a JSON object.")
        if body.get("event_source") not in EVENT_SOURCES:
            raise _bad("Invalid value for event_source: must be one of app, crm, offline, web.")
        source_id = body.get("event_source_id")
        if not isinstance(source_id, str) or not source_id:
            raise _bad("Invalid value for event_source_id: not a valid string.")
        if source_id not in self.pixels:
            raise _Reject(40001, f"No permission to operate pixel code: {source_id}.")
        code = body.get("test_event_code")
        if code is not None and not isinstance(code, str):
            raise _bad("Invalid value for test_event_code: not a valid string.")
        data = body.get("data")
        if not isinstance(data, list) or not data:
            raise _bad("data: Missing data for required field.")
        if len(data) > MAX_BATCH:
            raise _bad(f"data: Length must be between 1 and {MAX_BATCH}.")
        for i, event in enumerate(data):
            self._check_event(i, event)
        return data, code is not None

    def _check_event(self, i: int, event) -> None:
        """Raise _Reject for the first problem in data[i]: one bad event fails the whole batch."""
        at = f"Batch.{i}"
        if not isinstance(event, dict):
            raise _bad(f"{at}: Not a valid object.")
        if not isinstance(event.get("event"), str) or not event["event"]:
            raise _bad(f"{at}.event: Missing data for required field.")
        when = event.get("event_time")
        if when is None:
            raise _bad(f"{at}.event_time: Missing data for required field.")
        if type(when) is not int:
            raise _bad(f"{at}.event_time: Not a valid integer.")
        if when >= SECONDS_CEILING:
            raise _bad(f"{at}.event_time: Must be a Unix timestamp in seconds.")
        if "event_id" in event and not isinstance(event["event_id"], str):
            raise _bad(f"{at}.event_id: Not a valid string.")
        user = event.get("user", {})
        if not isinstance(user, dict):
            raise _bad(f"{at}.user: Not a valid object.")
        for key in HASHED_FIELDS:
            if key in user and not _hashed(user[key]):
                raise _bad(f"{at}.user.{key}: Must be SHA-256 hashed (64 lowercase hex characters).")
        for key in PLAIN_FIELDS:
            if key in user and not isinstance(user[key], str):
                raise _bad(f"{at}.user.{key}: Not a valid string.")
        page = event.get("page", {})
        if not isinstance(page, dict):
            raise _bad(f"{at}.page: Not a valid object.")
        for key in ("url", "referrer"):
            if key in page and not isinstance(page[key], str):
                raise _bad(f"{at}.page.{key}: Not a valid string.")
        self._check_properties(at, event.get("properties", {}))
        event_id = event.get("event_id")
        if event_id in self._rejected:
            raise _bad(self._rejected[event_id])

    def _check_properties(self, at: str, properties) -> None:
        if not isinstance(properties, dict):
            raise _bad(f"{at}.properties: Not a valid object.")
        if "value" in properties and not _number(properties["value"]):
            raise _bad(f"{at}.properties.value: Not a valid number.")
        for key in ("currency", "content_type", "order_id"):
            if key in properties and not isinstance(properties[key], str):
                raise _bad(f"{at}.properties.{key}: Not a valid string.")
        contents = properties.get("contents", [])
        if not isinstance(contents, list):
            raise _bad(f"{at}.properties.contents: Not a valid list.")
        for j, content in enumerate(contents):
            where = f"{at}.properties.contents.{j}"
            if not isinstance(content, dict):
                raise _bad(f"{where}: Not a valid object.")
            if "content_id" in content and not isinstance(content["content_id"], str):
                raise _bad(f"{where}.content_id: Not a valid string")
            if "quantity" in content and type(content["quantity"]) is not int:
                raise _bad(f"{where}.quantity: Not a valid integer.")
            if "price" in content and not _number(content["price"]):
                raise _bad(f"{where}.price: Not a valid number.")
