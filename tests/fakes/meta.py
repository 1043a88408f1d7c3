"""A fake Meta Graph API (Conversions API) on 127.0.0.1 that validates like Graph and can be scripted to fail."""
from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.server import Handler, PixelFake, json_or_none, opaque_id

ACTION_SOURCES = {
    "website", "app", "email", "phone_call", "chat", "physical_store",
    "system_generated", "business_messaging", "other",
}
MESSAGING_CHANNELS = {"whatsapp", "messenger", "instagram"}
HASHED_FIELDS = ("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id")
PLAIN_IDS = (
    "client_ip_address", "client_user_agent", "fbc", "fbp", "subscription_id", "lead_id",
    "fb_login_id", "anon_id", "madid", "page_id", "ctwa_clid",
)
# Meta treats events carrying only one of these identifier sets as unmatchable (https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters).
WEAK_SETS = (
    {"ct", "country", "st", "zp", "ge", "client_user_agent"}, {"db", "client_user_agent"},
    {"fn", "ge"}, {"ln", "ge"},
)
SHA256 = re.compile(r"[0-9a-f]{64}")
CLICK_ID = re.compile(r"fb\.\d\.\d+\..+")
MAX_AGE = 7 * 86400
STORE_MAX_AGE = 62 * 86400
FUTURE_SKEW = 3600  # Meta's limit is unverified; an hour still catches milliseconds sent as seconds
MAX_BATCH = 1000
THROTTLES = {  # code -> (message, subcode)
    4: ("(#4) Application request limit reached", None),
    17: ("(#17) User request limit reached", 2446079),
    341: ("(#341) Application limit reached", None),
    368: ("(#368) The action attempted has been deemed abusive or is otherwise disallowed", None),
    613: ("(#613) Calls to this api have exceeded the rate limit.", 1487742),
}
EXPIRED = (
    "Error validating access token: Session has expired on Tuesday, 01-Sep-26 10:00:00 PDT. "
    "The current time is Wednesday, 02-Sep-26 09:00:00 PDT."
)


def trace_id() -> str:
    """A random 11-character fbtrace_id."""
    return opaque_id(11)


def graph_error(code, message, subcode=None, title=None, user_msg=None, transient=False) -> dict:
    """Graph's error envelope."""
    error = {"message": message, "type": "OAuthException", "code": code}
    if subcode is not None:
        error["error_subcode"] = subcode
    error["is_transient"] = transient
    if title:
        error["error_user_title"] = title
        error["error_user_msg"] = user_msg or message
    error["fbtrace_id"] = trace_id()
    return {"error": error}


class _Reject(Exception):
    """Validation failed: answer with this status and body."""

    def __init__(self, status: int, answer: dict):
        super().__init__(answer["error"]["message"])
        self.status, self.answer = status, answer


def _bad(message, **kwargs) -> _Reject:
    return _Reject(400, graph_error(100, message, **kwargs))


def _hashed(values) -> bool:
    """True for a SHA-256 hex string or a list of them."""
    values = [values] if isinstance(values, str) else values
    return isinstance(values, list) and all(isinstance(v, str) and SHA256.fullmatch(v) for v in values)


def _parse_body(raw: bytes, content_type: str):
    if raw and "application/x-www-form-urlencoded" in content_type:
        fields = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        try:
            fields["data"] = json.loads(fields["data"])
        except (KeyError, ValueError):
            pass
        return fields
    return json_or_none(raw)


class FakeMeta(PixelFake):
    """A real HTTP server speaking the Conversions API: POST /{api_version}/{pixel_id}/events."""

    SCRIPT_WORDS = ("500", "429", "invalid_token")
    SCRIPT_SHAPES = (("throttle", 2), ("hang", 2), ("status", 3))
    TEXT_TYPE, JSON_TYPE = "text/html; charset=utf-8", "application/json; charset=UTF-8"

    def __init__(self, token: str = "meta-token", pixels: tuple[str, ...] = ("123",), api_version: str = "v25.0"):
        super().__init__(token, pixels)
        self.api_version = api_version
        self.test_events: list[dict] = []

    def reject_event(self, event_id: str, message: str = "Invalid parameter") -> None:
        """Fail any batch that contains this event_id."""
        self._rejected[event_id] = message

    def _handle(self, h: Handler) -> None:
        url = urlsplit(h.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        body = _parse_body(h.read_body(), h.headers.get("Content-Type", ""))
        match = re.fullmatch(rf"/{re.escape(self.api_version)}/([^/]+)/events/?", url.path)
        record = {
            "method": h.command, "path": url.path, "pixel_id": match[1] if match else None,
            "query": query, "body": body, "headers": dict(h.headers),
            "token_in_query": "access_token" in query, "status": None, "answer": None,
        }
        pixel = re.fullmatch(rf"/{re.escape(self.api_version)}/([^/]+)/?", url.path)
        if h.command == "GET" and pixel:
            bearer = h.headers.get("Authorization", "").removeprefix("Bearer ").removeprefix("OAuth ")
            self._serve(h, record, lambda: self._pixel(pixel[1], query.get("access_token") or bearer))
            return
        self._serve(h, record, lambda: self._answer(h.command, url.path, match, query, body))

    def _pixel(self, pixel_id: str, token: str) -> tuple[int, dict, dict]:
        """GET /{api_version}/{pixel_id}: the pixel's id and name, as Graph reads an Ads Pixel node."""
        if token != self.token:
            return 400, graph_error(190, "Invalid OAuth access token - Cannot parse access token"), {}
        if pixel_id not in self.pixels:
            return 400, graph_error(100, f"Unsupported get request. Object with ID '{pixel_id}' does not exist, "
                                         "cannot be loaded due to missing permissions, or does not support this "
                                         "operation.", subcode=33), {}
        return 200, {"id": pixel_id, "name": f"Pixel {pixel_id}"}, {}

    def _headers(self, record: dict) -> dict:
        return {"facebook-api-version": self.api_version}

    def _scripted(self, scripted) -> tuple[int, object, dict]:
        kind, *args = scripted if isinstance(scripted, tuple) else (scripted,)
        if kind == "500":
            return 500, graph_error(1, "An unknown error occurred", transient=True), {}
        if kind == "429":
            return 429, graph_error(4, THROTTLES[4][0], transient=True), {"Retry-After": "1"}
        if kind == "invalid_token":
            return 400, graph_error(190, EXPIRED, subcode=463), {}
        if kind == "throttle":
            code = args[0]
            default = f"(#{code}) There have been too many calls to this ad-account. Wait a bit and try again."
            message, subcode = THROTTLES.get(code, (default, None))
            return 400, graph_error(code, message, subcode=subcode), {}
        return args[0], args[1], {}  # ("status", http_status, body): dict -> JSON, str -> raw text

    def _answer(self, method, path, match, query, body) -> tuple[int, dict, dict]:
        try:
            accepted, is_test = self._validate(method, path, match, query, body)
        except _Reject as reject:
            return reject.status, reject.answer, {}
        with self._lock:
            (self.test_events if is_test else self.events).extend(accepted)
        return 200, {"events_received": len(accepted), "messages": [], "fbtrace_id": trace_id()}, {}

    def _validate(self, method, path, match, query, body) -> tuple[list, bool]:
        if method != "POST" or not match:
            raise _Reject(404, graph_error(803, f"(#803) Some of the aliases you requested do not exist: {path}"))
        fields = body if isinstance(body, dict) else {}
        token = query.get("access_token") or fields.get("access_token")
        if not token:
            message = "An active access token must be used to query information about the current user."
            raise _Reject(400, graph_error(190, message))
        if token != self.token:
            raise _Reject(400, graph_error(190, "Invalid OAuth access token - Cannot parse access token"))
        if match[1] not in self.pixels:
            raise _bad(
                f"Unsupported post request. Object with ID '{match[1]}' does not exist, cannot be loaded due to "
                "missing permissions, or does not support this operation.", subcode=33)
        data = fields.get("data")
        if data is None:
            raise _bad("(#100) The parameter data is required")
        if not isinstance(data, list) or not data:
            raise _bad("(#100) param data must be a non-empty array")
        if len(data) > MAX_BATCH:
            raise _bad(f"(#100) param data must be an array with at most {MAX_BATCH} elements")
        now = self.clock()
        for event in data:
            self._check_event(event, now)
        code = fields.get("test_event_code")
        if code is not None and not isinstance(code, str):
            raise _bad("(#100) param test_event_code must be a string")
        return data, bool(code)

    def _check_event(self, event, now: float) -> None:
        """Raise _Reject for the first problem in one data[] item."""
        if not isinstance(event, dict):
            raise _bad("(#100) each item of param data must be an object")
        for key in ("event_name", "event_time", "action_source", "user_data"):
            if event.get(key) in (None, ""):
                raise _bad(f"(#100) The parameter {key} is required")
        if not isinstance(event["event_name"], str):
            raise _bad("(#100) param event_name must be a string")
        when = event["event_time"]
        if type(when) is not int:
            raise _bad("(#100) param event_time must be an integer (Unix seconds)")
        source = event["action_source"]
        if source not in ACTION_SOURCES:
            raise _bad(f"(#100) param action_source must be one of {{{', '.join(sorted(ACTION_SOURCES))}}}")
        user_data = event["user_data"]
        if not isinstance(user_data, dict):
            raise _bad("(#100) param user_data must be an object")
        if source == "website" and not event.get("event_source_url"):
            raise _bad("(#100) The parameter event_source_url is required for website events")
        if source == "website" and not user_data.get("client_user_agent"):
            raise _bad("(#100) The parameter user_data.client_user_agent is required for website events")
        if source == "app" and not isinstance(event.get("app_data"), dict):
            raise _bad("(#100) The parameter app_data is required for app events")
        if source == "business_messaging" and event.get("messaging_channel") not in MESSAGING_CHANNELS:
            raise _bad("Invalid parameter", title="Missing Messaging Channel Parameter",
                       user_msg="business_messaging events need messaging_channel whatsapp, messenger or instagram.")
        for key in HASHED_FIELDS:
            if user_data.get(key) is not None and not _hashed(user_data[key]):
                raise _bad(f"(#100) The parameter user_data.{key} is not hashed properly",
                           title="Unhashed User Data", user_msg=f"user_data.{key} must be SHA-256, 64 lowercase hex characters.")
        for key in ("fbc", "fbp"):
            value = user_data.get(key)
            if value is not None and not (isinstance(value, str) and CLICK_ID.match(value)):
                raise _bad(f"(#100) The parameter user_data.{key} is not formatted properly",
                           title=f"Invalid {key} Parameter", user_msg=f"user_data.{key} must look like fb.1.<ms>.<value>.")
        present = {key for key in HASHED_FIELDS + PLAIN_IDS if user_data.get(key) not in (None, "", [])}
        if not present or any(present <= weak for weak in WEAK_SETS):
            raise _bad("(#100) user_data does not contain enough customer information parameters to match this event")
        if now - when > (STORE_MAX_AGE if source == "physical_store" else MAX_AGE):
            raise _bad("Invalid parameter", subcode=2804003, title="Event Timestamp Too Old",
                       user_msg="The timestamp for this event is too far in the past. "
                                "Events need to be sent within 7 days of when they occurred.")
        if when > now + FUTURE_SKEW:
            raise _bad("(#100) param event_time must not be in the future (send Unix seconds, not milliseconds)")
        custom = event.get("custom_data") if isinstance(event.get("custom_data"), dict) else {}
        value, currency = custom.get("value"), custom.get("currency")
        has_value = isinstance(value, (int, float)) and not isinstance(value, bool)
        if event["event_name"] == "Purchase" and not (has_value and isinstance(currency, str) and currency):
            raise _bad("Invalid parameter", subcode=2804009, title="Missing Value for Purchase Event",
                       user_msg="Purchase events need custom_data.value and custom_data.currency.")
        event_id = event.get("event_id")
        if isinstance(event_id, str) and event_id in self._rejected:
            message = self._rejected[event_id]
            raise _bad(message, subcode=2804019, title="Invalid Parameter", user_msg=message)
