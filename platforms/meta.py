"""Meta Conversions API: POST {api_base}/{version}/{pixel_id}/events
(https://developers.facebook.com/docs/marketing-api/conversions-api/)."""
from __future__ import annotations

import re
from datetime import datetime, timedelta

import requests

from ingest.canonical import CanonicalEvent
from config import Destination
from platforms.base import (
    REJECTED, RETRY, SENT, SETUP, THROTTLE, ClickId, Cookie, Flavour, Form, Http, Minted, Outcome, Skip, Verdict,
    everyone, excerpt, hashed_user_data, json_object, missing_settings, network_failure, probe, retry_after_seconds,
    unreadable, verdict,
)

NAME = "meta"
LABEL = "Meta"
BATCH_LIMIT = 1000  # one invalid event rejects the whole request
MAX_AGE = timedelta(days=7)  # an older event fails Meta's whole batch (subcode 2804003)
DEFAULT_API_BASE = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v25.0"
WEIGHTS = {
    "em": 3, "ph": 3, "external_id": 1.5, "fbc": 2, "fbp": 1, "client_ip_address": 0.5,
    "client_user_agent": 0.5, "fn": 0.5, "ln": 0.5, "ge": 0.25, "db": 0.25, "ct": 0.25,
    "st": 0.25, "zp": 0.25, "country": 0.25, "fb_login_id": 2,
}
# Identifiers that can match a person; UA and coarse location alone cannot
# (https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters).
MATCHABLE = ("em", "ph", "external_id", "fbc", "fbp", "client_ip_address", "fn", "ln", "db", "fb_login_id")
# https://developers.facebook.com/docs/graph-api/guides/error-handling
THROTTLE_CODES = {4, 17, 341, 613, 368} | set(range(80000, 80015))
TRANSIENT_CODES = {1, 2}
SETUP_CODES = {190, 10, 803} | set(range(200, 300))  # 803: the path (pixel, version) does not exist
PIXEL_MISSING_SUBCODE = 33
POLICY_BLOCK_WAIT = 3600.0  # code 368: temporarily blocked for policy; wait long
# `fb.<subdomain index>.<creation time in ms>.<value>`
# (https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/fbp-and-fbc/)
FB_COOKIE = Form(re.compile(r"fb\.\d\.\d+\.\S+"), "fb.<digit>.<digits>.<value>")


def mint_fbc(fbclid: str, seen_at: datetime) -> str:
    """`_fbc` for a click first seen at `seen_at`: `fb.1.<ms>.<fbclid>`, the fbclid byte for byte."""
    millis = int(seen_at.timestamp()) * 1000 + seen_at.microsecond // 1000  # exact: float ms math can land 1 ms low
    return f"fb.1.{millis}.{fbclid}"


def carries_fbclid(fbc: str, fbclid: str) -> bool:
    """Whether an `fb.1.<ms>.<fbclid>[.<appendix>]` cookie is for this very click."""
    value = fbc.split(".", 3)[3] if fbc and fbc.count(".") >= 3 else None
    return value is not None and (value == fbclid or value.startswith(fbclid + "."))


CLICK_IDS = (
    # The fbclid of an ad's URL becomes fbc when the click is first seen; a reload of the page keeps that time
    # (https://developers.facebook.com/docs/marketing-api/conversions-api/parameters/fbp-and-fbc/).
    ClickId("fbc", cookies=(Cookie("_fbc"),), form=FB_COOKIE, minted=Minted("fbclid", mint_fbc, carries_fbclid),
            ad_click=True, attribution=True),
    ClickId("fbp", cookies=(Cookie("_fbp"),), form=FB_COOKIE, attribution=True),
    # The numeric id of a person logged in with Facebook, sent in clear; a pixel's `fbid` carries it.
    ClickId("fb_login_id", aliases=("fbid",), form=Form(re.compile(r"[0-9]{1,20}"), "<digits>")),
)
FLAVOURS: tuple[Flavour, ...] = ()


def check_settings(dest: Destination) -> list[tuple[str, str]]:
    return missing_settings(dest, always=("pixel_id",), credentials=("access_token",), in_test=("test_event_code",))


def url(dest: Destination) -> str:
    """The events endpoint; it carries no secret (the token goes in the body)."""
    s = dest.settings
    base = str(s.get("api_base") or DEFAULT_API_BASE).rstrip("/")
    return f"{base}/{s.get('api_version') or DEFAULT_API_VERSION}/{s['pixel_id']}/events"


def build(event: CanonicalEvent, dest: Destination) -> dict:
    """The `data[]` item for one event, or Skip when Meta could not accept it."""
    website = event.channel == "web"
    if website and not event.user_agent:
        raise Skip("no user agent: Meta needs client_user_agent for website events")
    if website and not event.source_url:
        raise Skip("no page URL or referrer: Meta needs event_source_url for website events")
    if event.standard_name == "Purchase" and (event.value is None or not event.currency):
        raise Skip("Purchase without value and currency: Meta rejects it (subcode 2804009)")
    user_data = _user_data(event)
    if not any(key in user_data for key in MATCHABLE):
        raise Skip("no usable identifier for Meta (email, phone, external id, fbc, fbp or IP)")
    item = {
        "event_name": event.display_name,
        "event_time": int(event.occurred_at.timestamp()),
        "event_id": event.event_id,
        "action_source": "website" if website else "chat",
        "user_data": user_data,
    }
    if event.source_url:
        item["event_source_url"] = event.source_url
    custom_data = _custom_data(event)
    if custom_data:
        item["custom_data"] = custom_data
    return item


def _user_data(event: CanonicalEvent) -> dict:
    data = hashed_user_data(event)
    for key in ("fbc", "fbp", "fb_login_id"):
        if event.click_ids.get(key):
            data[key] = event.click_ids[key]
    return data


def _custom_data(event: CanonicalEvent) -> dict:
    data = event.shared_properties  # custom properties first: our own fields win a clash
    if event.value is not None:
        data["value"] = event.value
    if event.currency:
        data["currency"] = event.currency
    if event.order_id:
        data["order_id"] = event.order_id
    contents = [
        {k: v for k, v in (("id", i.get("id")), ("quantity", i.get("quantity")), ("item_price", i.get("price"))) if v is not None}
        for i in event.items if i.get("id") is not None
    ]
    if contents:
        data["contents"] = contents
        data["content_ids"] = [c["id"] for c in contents]
        data["content_type"] = "product"
        data["num_items"] = sum(int(c.get("quantity") or 1) for c in contents)
        # Meta has one name and one category per event: given only when every item agrees.
        for key, field in (("content_name", "name"), ("content_category", "category")):
            values = {i.get(field) for i in event.items if i.get("id") is not None}
            if len(values) == 1 and None not in values:
                data[key] = values.pop()
    return data


def request_key(item: dict) -> None:
    """Any events may share a request."""
    return None


def identifiers(item: dict) -> list[str]:
    """Meta's own names of the identifiers an item carries, never their values."""
    return [key for key in WEIGHTS if key in item.get("user_data", {})]


def send(items: list[dict], dest: Destination, http: Http) -> list[Outcome]:
    """POST one batch; the token travels in the body, never in the URL."""
    body: dict = {"data": items, "access_token": dest.settings.get("access_token")}
    if dest.mode == "test":
        body["test_event_code"] = str(dest.settings["test_event_code"])
    try:
        response = http.post(url(dest), json=body)
    except requests.RequestException as exc:
        return network_failure(exc, len(items), http.timeout)
    return classify(response, len(items))


def classify(response: requests.Response, count: int) -> list[Outcome]:
    """Sort Meta's answer into the five outcomes by its error code, not the HTTP status alone."""
    status, text = response.status_code, response.text
    answer = json_object(response)
    if answer is None:
        return everyone(unreadable(response, "Meta's"), count)
    if status == 200 and "events_received" in answer:
        return everyone(Outcome(SENT, status, trace_id=answer.get("fbtrace_id"), response=excerpt(text)), count)
    error = answer.get("error") if isinstance(answer.get("error"), dict) else {}
    code, subcode = error.get("code"), error.get("error_subcode")
    message = _message(status, error)
    common = {"status": status, "error": message, "trace_id": error.get("fbtrace_id"), "response": excerpt(text)}
    if code in THROTTLE_CODES or status == 429:
        wait = POLICY_BLOCK_WAIT if code == 368 else retry_after_seconds(response.headers)
        return everyone(Outcome(THROTTLE, retry_after=wait, **common), count)
    if code in SETUP_CODES or (code == 100 and subcode == PIXEL_MISSING_SUBCODE) or status in (401, 403, 404):
        return everyone(Outcome(SETUP, **common), count)
    if code in TRANSIENT_CODES or error.get("is_transient") or status >= 500:
        return everyone(Outcome(RETRY, **common), count)
    return everyone(Outcome(REJECTED, whole_batch=count > 1, **common), count)


def _message(status: int, error: dict) -> str:
    code = error.get("code")
    label = f"{code}/{error['error_subcode']}" if error.get("error_subcode") else f"{code}"
    head = f"Meta error {label}" if code is not None else f"HTTP {status}"
    text = f"{head}: {error.get('message') or 'no message'}"
    # Graph often repeats the message as the user title or text: say each thing once.
    detail = [p for p in (error.get("error_user_title"), error.get("error_user_msg"))
              if isinstance(p, str) and p and p.casefold() not in text.casefold()]
    return f"{text}: {' — '.join(detail)}" if detail else text


def verify(dest: Destination, http: Http) -> Verdict:
    """A test event when the destination has a test_event_code (Meta shows it only in Test Events); else a read
    of the pixel with the token (https://developers.facebook.com/docs/marketing-api/reference/ads-pixel/)."""
    if dest.settings.get("test_event_code"):
        return probe(build, send, dest, http)
    s = dest.settings
    base = str(s.get("api_base") or DEFAULT_API_BASE).rstrip("/")
    node = f"{base}/{s.get('api_version') or DEFAULT_API_VERSION}/{s['pixel_id']}"
    try:
        response = http.session.get(node, params={"fields": "id,name"}, timeout=http.timeout,
                                    headers={"Authorization": f"Bearer {s.get('access_token') or ''}"})
    except requests.RequestException as exc:
        return verdict(network_failure(exc, 1, http.timeout)[0])
    answer = json_object(response)
    if response.status_code == 200 and answer and answer.get("id"):
        return Verdict(True, "OK")
    return verdict(classify(response, 1)[0])
