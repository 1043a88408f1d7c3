"""GA4 Measurement Protocol: POST {api_base}/mp/collect?measurement_id=…&api_secret=…
(https://developers.google.com/analytics/devguides/collection/protocol/ga4)."""
from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import requests

import logs
from ingest.canonical import CanonicalEvent
from ingest.hashing import HASHED_RE
from config import Destination
from platforms.base import (
    REJECTED, RETRY, SENT, SETUP, THROTTLE, ClickId, Cookie, Flavour, Http, Outcome, Skip, Verdict, everyone,
    excerpt, google_email, missing_settings, network_failure, probe, retry_after_seconds,
)

NAME = "ga4"
LABEL = "GA4"
# 25 events per request (https://developers.google.com/analytics/devguides/collection/protocol/ga4/sending-events).
BATCH_LIMIT = 25
# A request carries one client's events (request_key), and conversions seldom share a client: one request at a
# time drains about one event per round trip (10 a second at 100 ms). Google states no rate limit for /mp/collect;
# eight at once stay far below the traffic of the browsers it serves. After a throttle or setup answer, up to seven
# requests already out may get the same answer and wait as it says, with no retry counted.
IN_FLIGHT = 8
# Events can be backdated up to 72 hours (https://developers.google.com/analytics/devguides/collection/protocol/ga4/reference).
MAX_AGE = timedelta(hours=72)
# The Google tag's `_ga` cookie, or the client id read from it
# (https://developers.google.com/analytics/devguides/collection/protocol/ga4/reference).
CLICK_IDS = (ClickId("ga_client_id", aliases=("client_id",), cookies=(Cookie("_ga"),), attribution=True),)
# The same email rule as Google Ads (https://developers.google.com/analytics/devguides/collection/ga4/uid-data).
FLAVOURS = (Flavour("em_google", "email", google_email),)
DEFAULT_API_BASE = "https://www.google-analytics.com"
COLLECT_PATH = "/mp/collect"
DEBUG_PATH = "/debug/mp/collect"  # the validation server: answers, records nothing
WEIGHTS = {
    "client_id": 3, "user_id": 2, "sha256_email_address": 3, "sha256_phone_number": 2,
    "sha256_first_name": 0.5, "sha256_last_name": 0.5, "city": 0.25, "region": 0.25,
    "postal_code": 0.25, "country": 0.25,
}
MAX_BODY_BYTES = 130_000  # "The post body must be smaller than 130kB"
MAX_PARAMS = 25
MAX_VALUE_CHARS = 100
# page_location may be longer than other values (https://support.google.com/analytics/answer/9234069).
MAX_PAGE_LOCATION_CHARS = 1000
MAX_USER_ID_CHARS = 256
ENGAGEMENT_TIME_MSEC = 100  # Realtime and engagement reports drop events without it
PERSONALIZATION = ("granted", "denied")
# https://developers.google.com/analytics/devguides/collection/protocol/ga4/reference#reserved_names;
# ad_impression, in_app_purchase and screen_view are allowed for app streams only.
RESERVED_EVENTS = frozenset((
    "ad_activeview", "ad_click", "ad_exposure", "ad_query", "ad_reward", "adunit_exposure", "app_clear_data",
    "app_exception", "app_install", "app_remove", "app_store_refund", "app_update", "app_upgrade",
    "dynamic_link_app_open", "dynamic_link_app_update", "dynamic_link_first_open", "error", "firebase_campaign",
    "firebase_in_app_message_action", "firebase_in_app_message_dismiss", "firebase_in_app_message_impression",
    "first_open", "first_visit", "notification_dismiss", "notification_foreground", "notification_open",
    "notification_receive", "notification_send", "os_update", "session_start", "user_engagement",
    "ad_impression", "in_app_purchase", "screen_view",
))
RESERVED_EVENT_PREFIXES = ("firebase_", "google_", "ga_")
RESERVED_PARAMS = frozenset(("firebase_conversion",))
RESERVED_PARAM_PREFIXES = ("_", "firebase_", "ga_", "google_", "gtag.")
EVENT_NAMES = {
    "Purchase": "purchase", "Lead": "generate_lead", "CompleteRegistration": "sign_up", "AddToCart": "add_to_cart",
    "InitiateCheckout": "begin_checkout", "ViewContent": "view_item", "PageView": "page_view", "Search": "search",
    # GA4 has no recommended event for these two: custom names.
    "Subscribe": "subscribe", "Contact": "contact",
}
# Letters (any script), digits and underscores, starting with a letter, at most 40
# (https://support.google.com/analytics/answer/13316687).
GA_NAME_RE = re.compile(r"[^\W\d_]\w{0,39}")
_SEPARATORS = re.compile(r"[\s\-.]+")
# The `_ga` cookie is GA1.<domain depth>.<random>.<first visit>; its client id is the last two numbers.
GA_COOKIE_RE = re.compile(r"(?:GA\d+\.\d+\.)?([0-9]+\.[0-9]+)")
SESSION_ID_RE = re.compile(r"[1-9][0-9]{0,18}")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


masked = logs.redact  # an answer may echo the URL, api_secret included


def check_settings(dest: Destination) -> list[tuple[str, str]]:
    problems = []
    s = dest.settings
    measurement_id = s.get("measurement_id")
    if not measurement_id:
        problems.append(("measurement_id", "required"))
    elif not re.fullmatch(r"G-[A-Za-z0-9]+", str(measurement_id)):
        problems.append(("measurement_id", "must be a web data stream's measurement id such as G-XXXXXXX"))
    problems += missing_settings(dest, credentials=("api_secret",))
    personalization = s.get("ad_personalization")
    if personalization is not None and str(personalization).lower() not in PERSONALIZATION:
        problems.append(("ad_personalization", "must be granted or denied"))
    return problems


def url(dest: Destination) -> str:
    """The endpoint as shown to people: the api_secret masked."""
    return f"{_endpoint(dest)}?measurement_id={quote(str(dest.settings['measurement_id']))}&api_secret=***"


def _endpoint(dest: Destination) -> str:
    base = str(dest.settings.get("api_base") or DEFAULT_API_BASE).rstrip("/")
    return base + (DEBUG_PATH if dest.mode == "test" else COLLECT_PATH)


def build(event: CanonicalEvent, dest: Destination) -> dict:
    """The one-event request body for this event, or Skip when GA4 could not take it."""
    client_id = _client_id(event)
    name = _event_name(event)
    # GA4 takes past events only; a client clock ahead of ours is not the future.
    moment = min(event.occurred_at, event.received_at)
    micros = (moment - _EPOCH) // timedelta(microseconds=1)
    item: dict = {"client_id": client_id}
    user_id = _user_id(event)
    if user_id:
        item["user_id"] = user_id
    item["timestamp_micros"] = micros
    item["consent"] = {
        "ad_user_data": "GRANTED",  # only consented events are sent at all (routing.skip_reason)
        "ad_personalization": str(dest.settings.get("ad_personalization") or "denied").upper(),
    }
    user_data = _user_data(event)
    if user_data:
        item["user_data"] = user_data
    # The event's own timestamp_micros keeps its time when it shares a request with others
    # (https://developers.google.com/analytics/devguides/collection/protocol/ga4/use-cases).
    item["events"] = [{"name": name, "timestamp_micros": micros, "params": _params(event)}]
    size = len(_encode(item))
    if size >= MAX_BODY_BYTES:
        raise Skip(f"the request would be {size} bytes: GA4 takes bodies under 130 kB")
    return item


def _client_id(event: CanonicalEvent) -> str:
    """The browser's `_ga` client id, else one derived from the visitor's own ids (same visitor, same id)."""
    cookie = event.click_ids.get("ga_client_id")
    match = GA_COOKIE_RE.fullmatch(cookie) if cookie else None
    if match:
        return match[1]
    visitor = event.anonymous_id or event.external_id
    if visitor:
        digest = hashlib.sha256(f"postback:{visitor}".encode("utf-8")).digest()
        first, second = (int.from_bytes(digest[i:i + 4], "big") % 2_147_483_647 + 1 for i in (0, 4))
        return f"{first}.{second}"
    if cookie:
        raise Skip("ga_client_id is not a GA client id (GA1.1.<digits>.<digits> or <digits>.<digits>) "
                   "and there is no anonymous or external id to derive one from")
    raise Skip("no client id for GA4: no ga_client_id (_ga cookie), anonymous id or external id")


def _event_name(event: CanonicalEvent) -> str:
    if event.standard_name in EVENT_NAMES:
        return EVENT_NAMES[event.standard_name]
    name = ga_name(event.display_name)
    if name is None:
        raise Skip(f"event name {event.display_name!r} cannot be a GA4 event name: at most 40 letters, "
                   "digits or underscores, starting with a letter")
    if name in RESERVED_EVENTS or name.startswith(RESERVED_EVENT_PREFIXES):
        raise Skip(f"event name {name!r} is reserved by GA4")
    return name


def ga_name(text: str) -> str | None:
    """GA4's form of an event or parameter name (separators become underscores), or None if it has none."""
    name = "_".join(part for part in _SEPARATORS.split(text) if part)
    return name if GA_NAME_RE.fullmatch(name) else None


def _user_id(event: CanonicalEvent) -> str | None:
    """The shop's own user id, plain; never an email address (GA4 forbids PII in user_id)."""
    # https://developers.google.com/analytics/devguides/collection/ga4/policy
    user_id = (event.external_id or "").strip()
    # A digest is an id ingest hashed because it was an email or phone (the event's notes say so): GA4 wants the
    # shop's plain id, and a hash of personal data is not one.
    if not user_id or "@" in user_id or HASHED_RE.match(user_id) or len(user_id) > MAX_USER_ID_CHARS:
        return None
    return user_id


def _user_data(event: CanonicalEvent) -> dict:
    """Hashed email, phone and names; the address in clear, as GA4 wants it."""
    # https://developers.google.com/analytics/devguides/collection/ga4/uid-data
    ids, loc = event.identity, event.location
    data: dict = {}
    if ids.get("em_google"):
        data["sha256_email_address"] = [ids["em_google"]]
    if ids.get("ph_e164"):
        data["sha256_phone_number"] = [ids["ph_e164"]]
    address = {key: ids[flavour] for key, flavour in (("sha256_first_name", "fn"), ("sha256_last_name", "ln"))
               if ids.get(flavour)}
    address.update({key: loc[field] for key, field in (("city", "city"), ("region", "state"), ("postal_code", "zip"))
                    if loc.get(field)})
    if address:  # a country alone (the site's default) identifies nobody
        if loc.get("country"):
            address["country"] = loc["country"].upper()
        data["address"] = [address]
    return data


def _params(event: CanonicalEvent) -> dict:
    params: dict = {}
    if event.order_id:
        params["transaction_id"] = event.order_id[:MAX_VALUE_CHARS]
    if event.value is not None:
        params["value"] = event.value
    if event.currency:
        params["currency"] = event.currency
    items = [
        {k: v for k, v in (("item_id", str(i["id"])[:MAX_VALUE_CHARS]), ("quantity", i.get("quantity")),
                           ("price", i.get("price"))) if v is not None}
        for i in event.items if i.get("id") is not None
    ]
    if items:
        params["items"] = items
    if event.source_url:
        params["page_location"] = event.source_url[:MAX_PAGE_LOCATION_CHARS]
    session = event.properties.get("session_id")
    if isinstance(session, (str, int)) and not isinstance(session, bool) and SESSION_ID_RE.fullmatch(str(session)):
        params["session_id"] = session
    params["engagement_time_msec"] = ENGAGEMENT_TIME_MSEC
    for key, value in event.shared_properties.items():  # custom properties last: our own fields win a clash
        if len(params) >= MAX_PARAMS:
            break
        name = ga_name(str(key))
        value = _param_value(value)
        if name is None or value is None or name in params or name == "session_id" or name in RESERVED_PARAMS \
                or name.startswith(RESERVED_PARAM_PREFIXES) or str(key).startswith(RESERVED_PARAM_PREFIXES):
            continue
        params[name] = value
    return params


def _param_value(value: object) -> str | int | float | None:
    """A scalar GA4 can store, strings cut to 100 characters; None for objects and lists."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str) and value:
        return value[:MAX_VALUE_CHARS]
    return None


def request_key(item: dict) -> str:
    """One request holds one client: client_id, user_id, consent and user_data are per request."""
    return json.dumps([item["client_id"], item.get("user_id"), item.get("consent"), item.get("user_data")],
                      sort_keys=True)


def identifiers(item: dict) -> list[str]:
    """GA4's own names of the identifiers an item carries, never their values."""
    user_data = item.get("user_data", {})
    address = (user_data.get("address") or [{}])[0]
    present = set(item) | set(user_data) | set(address)
    return [key for key in WEIGHTS if key in present]


def body(items: list[dict]) -> dict:
    """One request from items sharing a request key: the first one's user fields, everyone's events."""
    merged = {key: value for key, value in items[0].items() if key != "events"}
    merged["events"] = [event for item in items for event in item["events"]]
    return merged


def _encode(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def send(items: list[dict], dest: Destination, http: Http) -> list[Outcome]:
    """POST one request; test mode asks the validation server instead. The URL is never logged."""
    data = _encode(body(items))
    if len(data) >= MAX_BODY_BYTES:
        error = f"the request is {len(data)} bytes: GA4 takes bodies under 130 kB"
        return everyone(Outcome(REJECTED, error=error, whole_batch=len(items) > 1), len(items))
    s = dest.settings
    credentials = {"measurement_id": str(s["measurement_id"]), "api_secret": str(s["api_secret"])}
    try:
        response = http.post(_endpoint(dest), params=credentials, data=data,
                             headers={"Content-Type": "application/json"})
    except requests.RequestException as exc:
        return network_failure(exc, len(items), http.timeout)
    return classify(response, len(items), validating=dest.mode == "test")


def classify(response: requests.Response, count: int, validating: bool = False) -> list[Outcome]:
    """Sort GA4's answer into the five outcomes; `validating`: the answer came from /debug/mp/collect."""
    # /mp/collect answers 2xx whether or not the payload is valid; a non-2xx means the HTTP request
    # itself is wrong: fix it, do not retry it
    # (https://developers.google.com/analytics/devguides/collection/protocol/ga4/reference#response_codes).
    status, text = response.status_code, masked(response.text)
    common = {"status": status, "response": excerpt(text) or None}
    if 200 <= status < 300:
        if not validating:
            return everyone(Outcome(SENT, **common), count)
        messages = _validation_messages(text)
        if messages is None:
            error = f"GA4 validation server answered HTTP {status} without validationMessages"
            return everyone(Outcome(RETRY, error=error, **common), count)
        if not messages:
            return everyone(Outcome(SENT, **common), count)
        # Which event a message is about is not reliably given: split a batch to find it.
        error = "GA4 validation: " + "; ".join(map(_describe, messages))
        return everyone(Outcome(REJECTED, error=error, whole_batch=count > 1, **common), count)
    error = f"GA4 HTTP {status}: {_reason(response, text)}"
    if status == 429:
        wait = retry_after_seconds(response.headers)
        return everyone(Outcome(THROTTLE, error=error, retry_after=wait, **common), count)
    if status in (401, 403):
        return everyone(Outcome(SETUP, error=f"{error} (check measurement_id and api_secret)", **common), count)
    if status >= 500:
        return everyone(Outcome(RETRY, error=error, **common), count)
    return everyone(Outcome(REJECTED, error=error, whole_batch=count > 1, **common), count)


def _validation_messages(text: str) -> list | None:
    try:
        answer = json.loads(text)
    except ValueError:
        return None
    messages = answer.get("validationMessages") if isinstance(answer, dict) else None
    return messages if isinstance(messages, list) else None


def _describe(message: object) -> str:
    if not isinstance(message, dict):
        return str(message)
    code = message.get("validationCode") or "UNKNOWN"
    where = f" at {message['fieldPath']}" if message.get("fieldPath") else ""
    return f"{code}{where}: {message.get('description') or 'no description'}"


def _reason(response: requests.Response, text: str) -> str:
    """Google's JSON error message when there is one, else the HTTP reason phrase."""
    try:
        answer = json.loads(text)
    except ValueError:
        answer = None
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"]:
        return error["message"]
    return response.reason or "no message"


def verify(dest: Destination, http: Http) -> Verdict:
    """A test event to the validation server, /debug/mp/collect, which records nothing
    (https://developers.google.com/analytics/devguides/collection/protocol/ga4/validating-events)."""
    return probe(build, send, dest, http)
