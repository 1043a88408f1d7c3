"""A fake TikTok Events API 2.0 on 127.0.0.1 that validates like TikTok and can be scripted to fail."""
from __future__ import annotations

import random
import re
import time
from urllib.parse import urlsplit

from tests.fakes.server import Handler, PixelFake, json_or_none

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


class FakeTikTok(PixelFake):
    """A real HTTP server speaking the Events API 2.0: POST /open_api/{version}/event/track/."""

    SCRIPT_WORDS = ("500", "html502")
    SCRIPT_SHAPES = (("hang", 2), ("code", 2), ("code", 3))

    def __init__(self, token: str = "tiktok-token", pixels: tuple[str, ...] = ("C123",), api_version: str = "v1.3"):
        super().__init__(token, pixels)
        self.api_version = api_version
        self.test_events: list[dict] = []

    def reject_event(self, event_id: str, message: str = "Invalid parameter.") -> None:
        """Fail any batch that contains this event_id with code 40002 and this message."""
        self._rejected[event_id] = message

    def _handle(self, h: Handler) -> None:
        path = urlsplit(h.path).path
        body = json_or_none(h.read_body())
        record = {
            "method": h.command, "path": path, "query": urlsplit(h.path).query, "headers": dict(h.headers),
            "token": h.headers.get("Access-Token"), "body": body, "status": None, "answer": None,
        }
        self._serve(h, record, lambda: self._answer(h.command, path, record["token"], body))

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
