"""Snapchat Conversions API v3: POST {api_base}/v3/{pixel_id}/events?access_token=…
(https://developers.snap.com/api/marketing-api/Conversions-API)."""
from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta
from typing import Mapping

import requests

from ingest.canonical import CUSTOM, CanonicalEvent, fold
from config import Destination
from platforms.base import (
    REJECTED, RETRY, SENT, SETUP, THROTTLE, ClickId, Cookie, Flavour, Http, Outcome, Skip, Verdict, everyone,
    excerpt, hashed_user_data, json_object, missing_settings, network_failure, probe, retry_after_seconds, unreadable,
)

NAME = "snapchat"
LABEL = "Snapchat"
# https://developers.snap.com/api/marketing-api/Conversions-API/UsingTheAPI (2,000 per request: Snap's
# OpenAPI description and RudderStack's MAX_BATCH_SIZE).
BATCH_LIMIT = 2000
# Snap: "events can have a date (timestamp) of maximum 37 days back"
# (https://developers.snap.com/api/marketing-api/Conversions-API/Introduction). RudderStack's 7-day check
# is its own choice, not Snap's rule: the vendor's number wins.
MAX_AGE = timedelta(days=37)
CLICK_IDS = (
    # The ScCid a Snap ad click appends to the landing URL; the Conversions API calls it sc_click_id
    # (https://developers.snap.com/api/marketing-api/Conversions-API/Parameters).
    ClickId("sccid", params=("ScCid", "sccid"), aliases=("sc_click_id",), ad_click=True, attribution=True),
    ClickId("scid", cookies=(Cookie("_scid"),), attribution=True),  # the Snap Pixel's cookie (sc_cookie1)
)
FLAVOURS: tuple[Flavour, ...] = ()
DEFAULT_API_BASE = "https://tr.snapchat.com"
API_VERSION = "v3"
WEIGHTS = {
    "em": 3, "ph": 3, "sc_click_id": 2, "sc_cookie1": 1, "external_id": 1, "client_ip_address": 0.5,
    "client_user_agent": 0.5, "fn": 0.5, "ln": 0.5, "ge": 0.25, "db": 0.25, "ct": 0.25, "st": 0.25,
    "zp": 0.25, "country": 0.25,
}
# https://developers.snap.com/api/marketing-api/Conversions-API/Parameters
EVENT_NAMES = (
    "PAGE_VIEW", "VIEW_CONTENT", "ADD_CART", "ADD_TO_WISHLIST", "START_CHECKOUT", "ADD_BILLING", "PURCHASE",
    "SIGN_UP", "SUBSCRIBE", "SEARCH", "SAVE", "SHARE", "INVITE", "LOGIN", "RESERVE", "START_TRIAL", "LIST_VIEW",
    "RATE", "AD_CLICK", "AD_VIEW", "COMPLETE_TUTORIAL", "LEVEL_COMPLETE", "ACHIEVEMENT_UNLOCKED",
    "SPEND_CREDITS", "CUSTOM_EVENT_1", "CUSTOM_EVENT_2", "CUSTOM_EVENT_3", "CUSTOM_EVENT_4", "CUSTOM_EVENT_5",
)
# Snap has no LEAD and no CONTACT: a Lead is a SIGN_UP; Contact goes only where the
# admin maps it to a CUSTOM_EVENT_n under `event_names`.
STANDARD = {
    "Purchase": "PURCHASE", "Lead": "SIGN_UP", "CompleteRegistration": "SIGN_UP", "Subscribe": "SUBSCRIBE",
    "AddToCart": "ADD_CART", "InitiateCheckout": "START_CHECKOUT", "ViewContent": "VIEW_CONTENT",
    "PageView": "PAGE_VIEW", "Search": "SEARCH",
}
# action_source casing disagrees between sources. Snap's own taxonomy is upper case:
# its example sends MOBILE_APP (https://developers.snap.com/api/marketing-api/Conversions-API/UsingTheAPI),
# RudderStack sends WEB / MOBILE_APP / OFFLINE, and the offline guide calls OFFLINE "Snap's internal
# taxonomy" and lists chat-based sales among offline events
# (https://developers.snap.com/api/marketing-api/Conversions-API/OfflineEvents): the Telegram funnel is OFFLINE.
WEB, OFFLINE = "WEB", "OFFLINE"
# Snap documents 401/403 for credentials but not its 400 texts
# (https://developers.snap.com/api/marketing-api/Conversions-API/VerifySetUp). An INVALID that names the
# token or the pixel is about the destination, not the event: pausing (visible, resumable) beats failing
# every event for good.
SETUP_REASON = re.compile(r"access[ _]?token|unauthori[sz]ed|pixel", re.IGNORECASE)


def check_settings(dest: Destination) -> list[tuple[str, str]]:
    problems = missing_settings(dest, always=("pixel_id",), credentials=("access_token",))
    names = dest.settings.get("event_names") or {}
    if not isinstance(names, Mapping):
        return problems + [("event_names", "must be a mapping of event name to Snapchat event name")]
    problems += [(f"event_names.{key}", f"{value!r} is not a Snapchat event; one of {', '.join(EVENT_NAMES)}")
                 for key, value in names.items() if value not in EVENT_NAMES]
    return problems


def url(dest: Destination) -> str:
    """The events endpoint (the validate endpoint in test mode), token masked: it is shown in dry runs."""
    return _endpoint(dest) + "?access_token=***"


def _endpoint(dest: Destination) -> str:
    s = dest.settings
    base = str(s.get("api_base") or DEFAULT_API_BASE).rstrip("/")
    path = f"{base}/{API_VERSION}/{s['pixel_id']}/events"
    # https://developers.snap.com/api/marketing-api/Conversions-API/VerifySetUp: same body, nothing recorded.
    return f"{path}/validate" if dest.mode == "test" else path


def event_name(event: CanonicalEvent, dest: Destination) -> str | None:
    """Snap's event name: the destination's `event_names` first (by name as sent, then standard name)."""
    names = dest.settings.get("event_names") or {}
    wanted = {fold(event.event_name)} | ({fold(event.standard_name)} if event.standard_name != CUSTOM else set())
    for key, value in names.items():
        if fold(str(key)) in wanted and value in EVENT_NAMES:
            return value
    return STANDARD.get(event.standard_name)


def build(event: CanonicalEvent, dest: Destination) -> dict:
    """The `data[]` item for one event, or Skip when Snap could not accept it."""
    name = event_name(event, dest)
    if name is None and event.standard_name == CUSTOM:
        raise Skip(f"custom event {event.event_name!r}: Snapchat takes no custom event names "
                   "(map it to one of CUSTOM_EVENT_1..5 under event_names)")
    if name is None:
        raise Skip(f"{event.standard_name} has no Snapchat event "
                   "(map it to one of CUSTOM_EVENT_1..5 under event_names)")
    website = event.channel == "web"
    if website and not event.source_url:
        raise Skip("no page URL or referrer: Snapchat needs event_source_url for web events")
    if name == "PURCHASE" and (event.value is None or not event.currency):
        raise Skip("PURCHASE without value and currency: Snapchat rejects it")
    user_data = _user_data(event)
    # https://developers.snap.com/api/marketing-api/Conversions-API/UsingTheAPI: "At least one of" these.
    if not ("em" in user_data or "ph" in user_data
            or ("client_ip_address" in user_data and "client_user_agent" in user_data)):
        raise Skip("no usable identifier for Snapchat (email, phone, or IP address with user agent)")
    item = {
        "event_name": name,
        "event_time": int(event.occurred_at.timestamp()),  # seconds, as Snap's own example (§10.5)
        "event_id": event.event_id,
        "action_source": WEB if website else OFFLINE,
        "user_data": user_data,
    }
    if event.source_url:
        item["event_source_url"] = event.source_url
    custom_data = _custom_data(event)
    if custom_data:
        item["custom_data"] = custom_data
    return item


def _user_data(event: CanonicalEvent) -> dict:
    data = hashed_user_data(event)  # its IP never hashed: a hashed IP is INVALID at Snap
    if event.click_ids.get("sccid"):
        data["sc_click_id"] = event.click_ids["sccid"]
    if event.click_ids.get("scid"):
        data["sc_cookie1"] = event.click_ids["scid"]
    return data


def _custom_data(event: CanonicalEvent) -> dict:
    data: dict = {}
    if event.value is not None:
        data["value"] = event.value
    if event.currency:
        data["currency"] = event.currency
    if event.order_id:
        data["order_id"] = event.order_id
    contents = [
        {k: v for k, v in (("id", str(i["id"])), ("quantity", i.get("quantity")), ("item_price", i.get("price")))
         if v is not None}
        for i in event.items if i.get("id") is not None
    ]
    if contents:
        data["contents"] = contents
        data["num_items"] = sum(int(c.get("quantity") or 1) for c in contents)
    return data


def request_key(item: dict) -> None:
    """Any events may share a request."""
    return None


def identifiers(item: dict) -> list[str]:
    """Snap's own names of the identifiers an item carries, never their values."""
    return [key for key in WEIGHTS if key in item.get("user_data", {})]


def send(items: list[dict], dest: Destination, http: Http) -> list[Outcome]:
    """POST one batch; the token goes in the query string, as Snap requires, and is never logged."""
    try:
        response = http.post(_endpoint(dest), params={"access_token": dest.settings.get("access_token")},
                             json={"data": items})
    except requests.RequestException as exc:
        return network_failure(exc, len(items), http.timeout)
    return classify(response, len(items))


def classify(response: requests.Response, count: int) -> list[Outcome]:
    """Sort Snap's answer into the five outcomes by its `status`, per-event logs and the HTTP status."""
    status, text = response.status_code, response.text
    answer = json_object(response)
    if answer is None:
        if 200 <= status < 300:
            return everyone(Outcome(SENT, status, response=excerpt(text)), count)
        if status == 413:  # a front end's body limit: smaller requests get through
            return everyone(replace(unreadable(response, "Snapchat's"), kind=REJECTED, whole_batch=count > 1), count)
        return everyone(unreadable(response, "Snapchat's"), count)
    common = {"status": status, "response": excerpt(text)}
    message = _message(status, answer)
    if status == 429:
        return everyone(Outcome(THROTTLE, error=message, retry_after=retry_after_seconds(response.headers), **common),
                        count)
    if status >= 500:
        return everyone(Outcome(RETRY, error=message, **common), count)
    if status in (401, 403, 404) or (status >= 400 and SETUP_REASON.search(str(answer.get("reason") or ""))):
        return everyone(Outcome(SETUP, error=message, **common), count)
    logs = answer.get("event_logs")
    if isinstance(logs, list) and len(logs) == count and all(isinstance(log, dict) for log in logs):
        # The validate endpoint's verdict per event, in request order: each lands on its own row.
        return [Outcome(REJECTED, error=_log_message(log), **common) if log.get("status") == "INVALID"
                else Outcome(SENT, **common) for log in logs]
    if 200 <= status < 300 and answer.get("status") != "INVALID":
        return everyone(Outcome(SENT, **common), count)
    # One status for the whole request and no event named: split the batch to find the bad one.
    return everyone(Outcome(REJECTED, error=message, whole_batch=count > 1, **common), count)


def _message(status: int, answer: dict) -> str:
    head = f"Snapchat {answer['status']}" if isinstance(answer.get("status"), str) else "Snapchat"
    text = f"{head} (HTTP {status}): {answer.get('reason') or 'no reason given'}"
    return f"{text} (param {answer['param']})" if answer.get("param") else text


def _log_message(log: dict) -> str:
    errors = log.get("errors") if isinstance(log.get("errors"), dict) else {}
    messages = [str(m) for m in errors.get("error_msgs") or []]
    codes = [str(c) for c in errors.get("codes") or []]
    detail = "; ".join(messages) or "no reason given"
    return f"Snapchat INVALID{' ' + ', '.join(codes) if codes else ''}: {detail}"


def verify(dest: Destination, http: Http) -> Verdict:
    """A test event to the validate endpoint, which checks the token and the pixel and records nothing
    (https://developers.snap.com/api/marketing-api/Conversions-API/VerifySetUp)."""
    return probe(build, send, dest, http)
