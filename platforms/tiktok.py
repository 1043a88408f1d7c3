"""TikTok Events API 2.0: POST {api_base}/open_api/v1.3/event/track/
(https://business-api.tiktok.com/portal/docs?id=1771100865818625)."""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import requests

from ingest.canonical import CanonicalEvent
from config import Destination
from ingest.hashing import hashed, sha256
from platforms.base import (
    REJECTED, RETRY, SENT, SETUP, THROTTLE, ClickId, Cookie, Flavour, Http, Outcome, Skip, Verdict, everyone,
    excerpt, json_object, missing_settings, network_failure, probe, retry_after_seconds, unreadable,
)

NAME = "tiktok"
LABEL = "TikTok"
# One invalid event fails the whole request (https://hightouch.com/docs/destinations/tiktok).
BATCH_LIMIT = 1000
# TikTok publishes no age past which it refuses an event. Since one refused
# event fails its whole batch, stay inside the tightest bound its peers document: Meta's 7 days,
# which is also TikTok's longest view-through window; a week-old backlog is an outage, not traffic.
MAX_AGE = timedelta(days=7)
CLICK_IDS = (
    # The ttclid a TikTok ad click appends to the landing URL, and the TikTok Pixel's _ttp cookie: what TikTok's
    # own GTM template reads (https://github.com/tiktok/gtm-template-eapi/blob/main/template.js).
    ClickId("ttclid", params=("ttclid",), ad_click=True, attribution=True),
    ClickId("ttp", cookies=(Cookie("_ttp"),), attribution=True),
)
FLAVOURS: tuple[Flavour, ...] = ()
DEFAULT_API_BASE = "https://business-api.tiktok.com"
DEFAULT_API_VERSION = "v1.3"
WEIGHTS = {
    "email": 3, "phone": 3, "external_id": 1.5, "ttclid": 2, "ttp": 1, "ip": 0.5, "user_agent": 0.5,
    "first_name": 0.5, "last_name": 0.5, "city": 0.25, "state": 0.25, "zip_code": 0.25, "country": 0.25,
}
# What can match a person on its own; UA, names and coarse location only sharpen a match.
MATCHABLE = ("email", "phone", "external_id", "ttclid", "ttp", "ip")
# Standard names that differ from ours: TikTok's page view is "Pageview"
# (https://github.com/tiktok/gtm-template-eapi/blob/main/template.js).
EVENT_NAMES = {"PageView": "Pageview"}
SUCCESS = 0
PARTIAL_SUCCESS = 20001  # RudderStack counts it as accepted; no other source says
THROTTLED = 40100
NO_PERMISSION = 40001
INVALID_PARAMETER = 40002
BUSY = 40700  # RudderStack retries it as a server error (rudder-transformer tiktok_ads/networkHandler.js)
# 40001 is a setup error only when it is about access, not about an event's content.
ACCESS_WORDS = ("auth", "permission", "pixel", "token", "advertiser")
# A 40002 on these fields is about our config (the pixel code), not about any one event.
REQUEST_FIELDS = ("event_source_id", "test_event_code")


def check_settings(dest: Destination) -> list[tuple[str, str]]:
    return missing_settings(dest, always=("pixel_code",), credentials=("access_token",), in_test=("test_event_code",))


def url(dest: Destination) -> str:
    """The track endpoint; it carries no secret (the token goes in the Access-Token header)."""
    s = dest.settings
    base = str(s.get("api_base") or DEFAULT_API_BASE).rstrip("/")
    return f"{base}/open_api/{s.get('api_version') or DEFAULT_API_VERSION}/event/track/"


def build(event: CanonicalEvent, dest: Destination) -> dict:
    """The `data[]` item for one event, or Skip when TikTok could not accept it."""
    # TikTok has no messaging source (only web, app, offline, crm). A Telegram
    # join started on the landing page that holds the pixel, so it goes as that page's web event.
    if event.channel != "web" and not event.source_url:
        raise Skip("Telegram event without a landing page URL: TikTok has no messaging source, "
                   "so it takes such an event only as a website event of that page")
    user = _user(event)
    if not any(key in user for key in MATCHABLE):
        raise Skip("no usable identifier for TikTok (email, phone, external id, ttclid, ttp or IP)")
    item = {
        "event": EVENT_NAMES.get(event.standard_name, event.display_name),
        "event_time": int(event.occurred_at.timestamp()),
        "event_id": event.event_id,
        "user": user,
    }
    page = {key: value for key, value in (("url", event.source_url), ("referrer", event.referrer)) if value}
    if page:
        item["page"] = page
    properties = _properties(event)
    if properties:
        item["properties"] = properties
    return item


def _user(event: CanonicalEvent) -> dict:
    ids, loc = event.identity, event.location
    user: dict = {}
    # Email trimmed and lower-cased, phone as E.164 with "+", names without spaces.
    for key, flavour in (("email", "em"), ("phone", "ph_e164")):
        if flavour in ids:
            user[key] = ids[flavour]
    if event.external_id:
        # Hashed as given, trimmed, not lower-cased: what TikTok's own GTM template does, so it
        # matches what the Pixel sends (Segment's integration lower-cases it).
        user["external_id"] = hashed(event.external_id)
    for key, flavour in (("first_name", "fn_compact"), ("last_name", "ln_compact")):
        if flavour in ids:
            user[key] = ids[flavour]
    # City, state and country travel in clear; a value that reached us already hashed cannot be sent.
    for key in ("city", "state"):
        if loc.get(key):
            user[key] = loc[key]
    zip_code = ids.get("zp") or (sha256(loc["zip"]) if loc.get("zip") else None)
    if zip_code:
        user["zip_code"] = zip_code
    if loc.get("country"):
        user["country"] = loc["country"]
    for key in ("ttclid", "ttp"):
        if event.click_ids.get(key):
            user[key] = event.click_ids[key]
    if event.ip:
        user["ip"] = event.ip
    if event.user_agent:
        user["user_agent"] = event.user_agent
    if event.language and event.language != "*":  # "Accept-Language: *" names no locale
        user["locale"] = event.language
    return user


def _properties(event: CanonicalEvent) -> dict:
    data = event.shared_properties  # custom properties first: our own fields win a clash
    if event.value is not None:
        data["value"] = event.value
    if event.currency:
        data["currency"] = event.currency
    if event.order_id:
        data["order_id"] = event.order_id
    # TikTok's quantity is an integer; a fractional one (1.5 kg) is left out rather than failing the batch.
    contents = [
        {k: v for k, v in (("content_id", i.get("id")), ("quantity", i.get("quantity")), ("price", i.get("price")))
         if v is not None and not (k == "quantity" and not isinstance(v, int))}
        for i in event.items if i.get("id") is not None
    ]
    if contents:
        data["contents"] = contents
        data["content_type"] = "product"
    return data


def request_key(item: dict) -> None:
    """Any events may share a request."""
    return None


def identifiers(item: dict) -> list[str]:
    """TikTok's own names of the identifiers an item carries, never their values."""
    return [key for key in WEIGHTS if key in item.get("user", {})]


def send(items: list[dict], dest: Destination, http: Http) -> list[Outcome]:
    """POST one batch; the token travels in the Access-Token header, never in the URL."""
    s = dest.settings
    body: dict = {"event_source": "web", "event_source_id": str(s["pixel_code"])}
    if dest.mode == "test":
        body["test_event_code"] = str(s["test_event_code"])
    body["data"] = items
    # A plain Access-Token header, not Bearer (https://business-api.tiktok.com/portal/docs?id=1771100865818625).
    headers = {"Access-Token": str(s.get("access_token") or "")}
    try:
        response = http.post(url(dest), json=body, headers=headers)
    except requests.RequestException as exc:
        return network_failure(exc, len(items), http.timeout)
    return classify(response, len(items))


def classify(response: requests.Response, count: int) -> list[Outcome]:
    """Sort TikTok's answer into the five outcomes by its `code`: errors usually arrive as HTTP 200."""
    status, text = response.status_code, response.text
    answer = json_object(response)
    # Errors come as HTTP 200 with a non-zero `code` (https://business-api.tiktok.com/portal/docs?id=1771100865818625).
    code = answer.get("code") if answer is not None else None
    if not isinstance(code, int) or isinstance(code, bool):
        return _not_tiktok(response, count)
    message = f"TikTok error {code}: {answer.get('message') or 'no message'}"
    common = {"status": status, "trace_id": answer.get("request_id"), "response": excerpt(text)}
    if code in (SUCCESS, PARTIAL_SUCCESS) and status < 300:
        return everyone(Outcome(SENT, **common), count)
    common["error"] = message
    if code == THROTTLED or status == 429:
        return everyone(Outcome(THROTTLE, retry_after=retry_after_seconds(response.headers), **common), count)
    if code >= 50000 or code == BUSY or status >= 500:
        return everyone(Outcome(RETRY, **common), count)
    if _setup(code, str(answer.get("message") or "")) or status in (401, 403, 404):
        return everyone(Outcome(SETUP, **common), count)
    return everyone(Outcome(REJECTED, whole_batch=count > 1, **common), count)


def _setup(code: int, message: str) -> bool:
    """Token, permission or pixel problems: no event would pass until the config is fixed."""
    text = message.lower()
    if THROTTLED < code < 40200:  # the rest of the 401xx block is authentication: 40104 no token, 40105 bad token
        return True
    if code == NO_PERMISSION:
        return any(word in text for word in ACCESS_WORDS)
    if code == INVALID_PARAMETER:
        return any(text.startswith(field) or f" {field}" in text for field in REQUEST_FIELDS)
    return False


def _not_tiktok(response: requests.Response, count: int) -> list[Outcome]:
    """A gateway's or proxy's answer (an HTML 502 page, say): judged by the HTTP status alone."""
    outcome = unreadable(response, "TikTok's")  # a 4xx: a wrong api_base or a proxy refusing us
    if response.status_code < 400:  # TikTok's own answers are JSON even at HTTP 200: this one is a glitch
        outcome = replace(outcome, kind=RETRY)
    return everyone(outcome, count)


def verify(dest: Destination, http: Http) -> Verdict:
    """A test event under the destination's test_event_code: TikTok shows it only in Test Events
    (https://business-api.tiktok.com/portal/docs?id=1771100779668482)."""
    if not dest.settings.get("test_event_code"):
        return Verdict(False, "set test_event_code (Events Manager → Test Events) to verify TikTok credentials")
    return probe(build, send, dest, http)
