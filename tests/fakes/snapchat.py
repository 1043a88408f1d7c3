"""A fake Snapchat Conversions API v3 on 127.0.0.1 that validates like Snap and can be scripted to fail."""
from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.server import Handler, PixelFake, json_or_none

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


class FakeSnapchat(PixelFake):
    """A real HTTP server speaking Snap's CAPI v3: POST /v3/{pixel_id}/events[/validate]?access_token=…"""

    SCRIPT_WORDS = ("429", "401", "500")
    SCRIPT_SHAPES = (("invalid", 2), ("hang", 2), ("status", 3))
    TEXT_TYPE = "text/html; charset=utf-8"

    def __init__(self, token: str = "snap-token", pixels: tuple[str, ...] = ("px-1",)):
        super().__init__(token, pixels)
        self.validated: list[dict] = []  # judged valid by /events/validate; only /events adds to self.events

    def reject_event(self, event_id: str, reason: str = "Invalid event") -> None:
        """Answer INVALID for any request that contains this event_id."""
        self._rejected[event_id] = reason

    def _handle(self, h: Handler) -> None:
        url = urlsplit(h.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        body = json_or_none(h.read_body())
        match = re.fullmatch(r"/v3/([^/]+)/events(/validate)?/?", url.path)
        record = {
            "method": h.command, "path": url.path, "pixel_id": match[1] if match else None,
            "validate": bool(match and match[2]), "query": query, "body": body, "headers": dict(h.headers),
            "status": None, "answer": None,
        }
        self._serve(h, record, lambda: self._answer(h.command, url.path, match, query, body))

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
