"""Google Ads API click conversions: POST {api_base}/{version}/customers/{id}:uploadClickConversions
(https://developers.google.com/google-ads/api/docs/conversions/upload-clicks)."""
from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

import requests

from ingest.canonical import CUSTOM, CanonicalEvent, fold
from config import Destination
from platforms.base import (
    REJECTED, RETRY, SENT, SETUP, THROTTLE, ClickId, Cookie, Flavour, Form, Http, Outcome, Rival, Skip, Verdict,
    everyone, excerpt, google_email, json_object, missing_settings, network_failure, retry_after_seconds, unreadable,
    verdict,
)

NAME = "google_ads"
LABEL = "Google Ads"
BATCH_LIMIT = 2000  # TOO_MANY_CONVERSIONS_IN_REQUEST above it; failures are per row
# The longest click-through window a conversion action can have; an older click is EXPIRED_EVENT
# (https://developers.google.com/google-ads/api/docs/conversions/upload-offline).
MAX_AGE = timedelta(days=90)
DEFAULT_API_BASE = "https://googleads.googleapis.com"
# v26 (October 2026) is the latest version and lives until about November 2027; Google advises new
# integrations to start on it (https://developers.google.com/google-ads/api/docs/sunset-dates).
DEFAULT_API_VERSION = "v26"
DEFAULT_TOKEN_URL = "https://oauth2.googleapis.com/token"
WEIGHTS = {"gclid": 7, "gbraid": 6, "wbraid": 6, "hashedEmail": 3, "hashedPhoneNumber": 2}
# The conversion linker's cookie keeps the gclid as GCL.<click time in seconds>.<gclid>.
GCL_AW = Cookie("_gcl_aw", Form(re.compile(r"GCL\.\d+\.(.+)", re.DOTALL), "GCL.<timestamp>.<gclid>"))
# The click ids a Google ad appends to its landing URL, in order of preference: Google takes one per conversion
# (https://developers.google.com/google-ads/api/docs/conversions/upload-clicks).
CLICK_IDS = (
    ClickId("gclid", params=("gclid",), cookies=(GCL_AW,), ad_click=True, attribution=True),
    ClickId("gbraid", params=("gbraid",), rival=Rival("wbraid", "both given but Google accepts only one"),
            ad_click=True, attribution=True),  # GBRAID_WBRAID_BOTH_SET: neither can be trusted
    ClickId("wbraid", params=("wbraid",), ad_click=True, attribution=True),
)
CLICK_KEYS = tuple(click.key for click in CLICK_IDS)
FLAVOURS = (Flavour("em_google", "email", google_email),)
MAX_USER_IDENTIFIERS = 5
CUSTOMER_ID_RE = re.compile(r"\A\d{3}-?\d{3}-?\d{4}\Z")
ACTION_RE = re.compile(r"\Acustomers/\d+/conversionActions/\d+\Z")
TOKEN_MARGIN = 300.0  # refresh five minutes early (https://developers.google.com/google-ads/api/docs/oauth/internals)
TOO_RECENT_WAIT = 6 * 3600.0  # "Retry after 6 hours have passed" (ConversionUploadError.TOO_RECENT_EVENT)
# https://developers.google.com/google-ads/api/reference/rpc/latest/ConversionUploadErrorEnum.ConversionUploadError
DUPLICATES = {
    "DUPLICATE_ORDER_ID", "ORDER_ID_ALREADY_IN_USE", "CLICK_CONVERSION_ALREADY_EXISTS",
    "DUPLICATE_CLICK_CONVERSION_IN_REQUEST",
}
TOO_RECENT = {"TOO_RECENT_EVENT", "TOO_RECENT_CONVERSION_ACTION"}
# Account or config problems that would fail every event alike: pause rather than fail them all.
SETUP_CODES = {
    "NO_CONVERSION_ACTION_FOUND", "INVALID_CONVERSION_ACTION_TYPE", "UNAUTHORIZED_CUSTOMER",
    "CUSTOMER_NOT_ACCEPTED_CUSTOMER_DATA_TERMS", "CLOUD_PROJECT_NOT_APPROVED_FOR_PRODUCTION",
    "USER_PERMISSION_DENIED",
}
SETUP_CATEGORIES = {"authenticationError", "authorizationError", "headerError"}
SETUP_STATUSES = {"UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND"}
RETRY_STATUSES = {"INTERNAL", "UNAVAILABLE", "DEADLINE_EXCEEDED"}
# https://developers.google.com/identity/protocols/oauth2/web-server#exchange-errors
TOKEN_SETUP_ERRORS = {"invalid_grant", "invalid_client", "unauthorized_client", "invalid_request", "invalid_scope"}


def check_settings(dest: Destination) -> list[tuple[str, str]]:
    s, problems = dest.settings, []
    digits = "must be a 10-digit customer id such as \"123-456-7890\""
    if not s.get("customer_id"):
        problems.append(("customer_id", "required"))
    elif not CUSTOMER_ID_RE.match(str(s["customer_id"])):
        problems.append(("customer_id", digits))
    if s.get("login_customer_id") and not CUSTOMER_ID_RE.match(str(s["login_customer_id"])):
        problems.append(("login_customer_id", digits))
    actions = s.get("conversion_actions")
    if not actions:
        problems.append(("conversion_actions", "required: map event names to conversion actions"))
    elif not isinstance(actions, dict):
        problems.append(("conversion_actions", "must map event names to customers/<id>/conversionActions/<id>"))
    else:
        problems += [(f"conversion_actions.{name}", "must be a resource name customers/<id>/conversionActions/<id>")
                     for name, action in actions.items() if not isinstance(action, str) or not ACTION_RE.match(action)]
    # The developer token is optional: Google sunset it on 9 September 2026 and ignores the header
    # (https://developers.google.com/google-ads/api/docs/api-policy/developer-token).
    return problems + missing_settings(dest, credentials=("client_id", "client_secret", "refresh_token"),
                                       optional=("developer_token",))


def url(dest: Destination) -> str:
    """The upload endpoint; it carries no secret (the access token goes in a header)."""
    s = dest.settings
    base = str(s.get("api_base") or DEFAULT_API_BASE).rstrip("/")
    version = str(s.get("api_version") or DEFAULT_API_VERSION)
    version = f"v{version}" if version.isdigit() else version  # `api_version: 26` in YAML
    return f"{base}/{version}/customers/{_digits(s['customer_id'])}:uploadClickConversions"


def build(event: CanonicalEvent, dest: Destination) -> dict:
    """One ClickConversion for the event, or Skip when Google could not accept it."""
    action = _conversion_action(event, dest)
    if action is None:
        raise Skip(f"no conversion action configured for {event.display_name}")
    click = next(((key, event.click_ids[key]) for key in CLICK_KEYS if event.click_ids.get(key)), None)
    # Identifiers ride along with a gclid, never with a braid.
    identifiers = _user_identifiers(event) if click is None or click[0] == "gclid" else []
    if click is None and not identifiers:
        raise Skip("no Google click id (gclid, gbraid, wbraid) and no email or phone for enhanced conversions for leads")
    item: dict = {"conversionAction": action, "conversionDateTime": conversion_date_time(event.occurred_at)}
    if event.value is not None:
        item["conversionValue"] = event.value
        if event.currency:
            item["currencyCode"] = event.currency
    # The event id stands in for a missing order id, so a conversion sent twice (a lost lease) is
    # recognised by Google as DUPLICATE_ORDER_ID instead of being counted twice.
    item["orderId"] = event.order_id or event.event_id
    if click:
        item[click[0]] = click[1]
    if identifiers:
        item["userIdentifiers"] = identifiers
    # Routing only lets consented events through (ingest/fanout.py).
    item["consent"] = {"adUserData": "GRANTED"}
    return item


def conversion_date_time(moment: datetime) -> str:
    """Google's `yyyy-mm-dd hh:mm:ss+00:00`, in UTC."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return aware.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S+00:00")


def _conversion_action(event: CanonicalEvent, dest: Destination) -> str | None:
    actions = dest.settings.get("conversion_actions") or {}
    names = [event.event_name] if event.standard_name == CUSTOM else [event.standard_name, event.event_name]
    for name in names:
        if name in actions:
            return actions[name]
    folded = {fold(str(key)): action for key, action in actions.items()}
    return next((folded[fold(name)] for name in names if fold(name) in folded), None)


def _user_identifiers(event: CanonicalEvent) -> list[dict]:
    # One field per UserIdentifier: it is a oneof. Email with Google's Gmail
    # rule, phone as E.164 with '+' (https://developers.google.com/google-ads/api/docs/conversions/upload-identifiers).
    ids = event.identity
    found = [{"hashedEmail": ids["em_google"]} if "em_google" in ids else None,
             {"hashedPhoneNumber": ids["ph_e164"]} if "ph_e164" in ids else None]
    return [uid for uid in found if uid][:MAX_USER_IDENTIFIERS]


def _digits(customer_id: object) -> str:
    return str(customer_id).replace("-", "")


def request_key(item: dict) -> None:
    """Any conversions may share a request."""
    return None


def identifiers(item: dict) -> list[str]:
    """Google's own names of the identifiers a conversion carries, never their values."""
    present = {key for key in CLICK_KEYS if key in item}
    present |= {key for uid in item.get("userIdentifiers", ()) for key in uid}
    return [key for key in WEIGHTS if key in present]


# --- OAuth2: one access token per destination and credentials, shared by its drain threads ---

@dataclass(frozen=True)
class _Token:
    value: str
    fresh_until: float
    credentials: tuple  # what it was made for: new credentials need a new token


class _NoToken(Exception):
    """The token endpoint did not give us a token; `outcome` says why."""

    def __init__(self, outcome: Outcome):
        super().__init__(outcome.error)
        self.outcome = outcome


class AccessTokens:
    """One destination's access token, kept by the dispatcher between sends; `clock` counts seconds (monotonic)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._token: _Token | None = None
        self._lock = threading.Lock()

    def get(self, dest: Destination, http: Http, stale: str | None = None) -> str:
        """The kept token, refreshed when it is near expiry, was made for other credentials, or is `stale` (a 401)."""
        credentials = _credentials(dest)
        with self._lock:  # one refresh at a time; the other drain threads wait and reuse it
            token = self._token
            if token and token.credentials == credentials and token.value != stale and self.clock() < token.fresh_until:
                return token.value
            self._token = _refresh(dest, http, self.clock(), credentials)
            return self._token.value


def cache(clock: Callable[[], float]) -> AccessTokens:
    """What the dispatcher keeps for one destination between sends: its access token."""
    return AccessTokens(clock)


def _credentials(dest: Destination) -> tuple:
    s = dest.settings
    secrets = "\0".join(str(s.get(k) or "") for k in ("client_id", "client_secret", "refresh_token"))
    return _token_url(dest), hashlib.sha256(secrets.encode()).hexdigest()


def _token_url(dest: Destination) -> str:
    return str(dest.settings.get("token_url") or DEFAULT_TOKEN_URL)


def _refresh(dest: Destination, http: Http, started: float, credentials: tuple) -> _Token:
    s = dest.settings
    form = {"grant_type": "refresh_token", "client_id": s.get("client_id"),
            "client_secret": s.get("client_secret"), "refresh_token": s.get("refresh_token")}
    try:
        response = http.post(_token_url(dest), data=form)
    except requests.RequestException as exc:
        raise _NoToken(network_failure(exc, 1, http.timeout)[0]) from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code == 200 and isinstance(answer, dict) and answer.get("access_token"):
        lifetime = float(answer.get("expires_in") or 3600)
        return _Token(answer["access_token"], started + lifetime - TOKEN_MARGIN, credentials)
    raise _NoToken(classify_token(response))


def classify_token(response: requests.Response) -> Outcome:
    """Sort a failed answer of Google's token endpoint into the five outcomes."""
    status = response.status_code
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        code = answer["error"]
        error = f"Google OAuth error {code}: {answer.get('error_description') or 'no description'}"
    else:
        code, error = None, f"Google OAuth token endpoint answered HTTP {status} without a token"
    common = {"status": status, "error": error, "response": excerpt(response.text)}
    if status == 429:
        return Outcome(THROTTLE, retry_after=retry_after_seconds(response.headers), **common)
    if status >= 500 and code not in TOKEN_SETUP_ERRORS:
        return Outcome(RETRY, **common)
    return Outcome(SETUP, **common)  # invalid_grant: refresh token revoked or expired; invalid_client: wrong id/secret


# --- Upload ---

def send(items: list[dict], dest: Destination, http: Http, cache: AccessTokens | None = None) -> list[Outcome]:
    """POST one batch with a Bearer token; a 401 refreshes the token once and tries again.

    `cache` keeps the token between sends (the dispatcher's, one per destination); without it one is fetched.
    """
    tokens = cache or AccessTokens()
    try:
        token = tokens.get(dest, http)
        response = _upload(items, dest, http, token)
        if response.status_code == 401 and not _developer_token_refused(response):
            response = _upload(items, dest, http, tokens.get(dest, http, stale=token))
    except _NoToken as failure:
        return everyone(failure.outcome, len(items))
    except requests.RequestException as exc:
        return network_failure(exc, len(items), http.timeout)
    return classify(response, items)


def _upload(items: list[dict], dest: Destination, http: Http, token: str) -> requests.Response:
    s = dest.settings
    # partialFailure must be true or the whole request fails; validateOnly checks without writing
    # (https://developers.google.com/google-ads/api/reference/rpc/latest/UploadClickConversionsRequest).
    body: dict = {"conversions": items, "partialFailure": True}
    if dest.mode == "test":
        body["validateOnly"] = True
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if s.get("developer_token"):
        headers["developer-token"] = str(s["developer_token"])
    if s.get("login_customer_id"):
        headers["login-customer-id"] = _digits(s["login_customer_id"])
    return http.post(url(dest), json=body, headers=headers)


def _developer_token_refused(response: requests.Response) -> bool:
    """A 401 about the developer token: a fresh access token would not help."""
    return "DEVELOPER_TOKEN_" in response.text


def classify(response: requests.Response, items: list[dict]) -> list[Outcome]:
    """Sort Google's answer into one outcome per conversion: whole-request errors, then partial failures."""
    status, text, count = response.status_code, response.text, len(items)
    trace_id = response.headers.get("request-id")
    answer = json_object(response)
    if answer is None:
        return everyone(unreadable(response, "Google Ads'", trace_id), count)
    if isinstance(answer.get("error"), dict) or status >= 300:
        return everyone(_whole_request(response, answer.get("error") or {}, trace_id, count), count)
    failure = answer.get("partialFailureError") or {}
    trace_id = trace_id or _request_id(failure)
    by_row = _errors_by_row(failure, answer.get("results"), count)
    common = {"status": status, "trace_id": trace_id, "response": excerpt(text)}
    return [_row(item, by_row.get(i, []), common) for i, item in enumerate(items)]


def _whole_request(response: requests.Response, error: dict, trace_id: str | None, count: int) -> Outcome:
    """A whole-request error: auth, quota, server, or a body Google could not read."""
    status = response.status_code
    errors = _failures(error)
    codes = {code for _, code, _ in errors}
    categories = {category for category, _, _ in errors}
    state = error.get("status")
    if errors:
        text = "; ".join(dict.fromkeys(f"Google Ads error {code}: {message}" for _, code, message in errors))
    else:
        text = f"Google Ads {state or f'HTTP {status}'}: {error.get('message') or 'no message'}"
    common = {"status": status, "error": text, "trace_id": trace_id or _request_id(error),
              "response": excerpt(response.text)}
    if status == 429 or state == "RESOURCE_EXHAUSTED" or "quotaError" in categories:
        wait = retry_after_seconds(response.headers) or _retry_delay(error)
        return Outcome(THROTTLE, retry_after=wait, **common)
    if status >= 500 or state in RETRY_STATUSES or "internalError" in categories:
        return Outcome(RETRY, **common)
    if (status in (401, 403, 404) or state in SETUP_STATUSES or categories & SETUP_CATEGORIES
            or codes & SETUP_CODES or any(code.startswith("DEVELOPER_TOKEN_") for code in codes)):
        return Outcome(SETUP, **common)
    # Google could not read the request (INVALID_ARGUMENT, TOO_MANY_CONVERSIONS_IN_REQUEST):
    # one conversion may be the cause, so the dispatcher splits the batch to find it.
    return Outcome(REJECTED, whole_batch=count > 1, **common)


def _row(item: dict, errors: list[tuple[str, str, str]], common: dict) -> Outcome:
    """One conversion's verdict from its partial-failure errors (none: it was accepted)."""
    if not errors:
        return Outcome(SENT, **common)
    category, code, _ = errors[0]
    text = "; ".join(dict.fromkeys(f"Google Ads error {c}: {m}" for _, c, m in errors))
    if code in DUPLICATES:
        return Outcome(SENT, **common)  # Google has it already: this is a repeat
    if code == "CLICK_NOT_FOUND" and not any(key in item for key in CLICK_KEYS):
        # A lead matched by email/phone that did not come from a Google ad: Google says to upload every
        # lead and that this "can safely be ignored" (ConversionUploadError.CLICK_NOT_FOUND). It was delivered.
        return Outcome(SENT, **common)
    if code in TOO_RECENT:
        return Outcome(RETRY, error=text, retry_after=TOO_RECENT_WAIT, **common)
    if code in SETUP_CODES or category in SETUP_CATEGORIES or code.startswith("DEVELOPER_TOKEN_"):
        return Outcome(SETUP, error=text, **common)
    if category == "quotaError":
        return Outcome(THROTTLE, error=text, **common)
    if category == "internalError":
        return Outcome(RETRY, error=text, **common)
    return Outcome(REJECTED, error=text, **common)


def _failures(failure: dict) -> list[tuple[str, str, str]]:
    """(category, code, message) of every GoogleAdsError in a status's details."""
    return [(category, code, message) for category, code, message, _ in _indexed_failures(failure)]


def _indexed_failures(failure: dict) -> list[tuple[str, str, str, int | None]]:
    out = []
    for detail in failure.get("details") or ():
        for error in (detail.get("errors") or ()) if isinstance(detail, dict) else ():
            code_field = error.get("errorCode") or {}
            category, code = next(iter(code_field.items()), ("unknown", "UNKNOWN"))
            out.append((category, str(code), error.get("message") or "no message", _row_index(error)))
    return out


def _row_index(error: dict) -> int | None:
    """The N of `conversions[N]` in an error's location."""
    for element in (error.get("location") or {}).get("fieldPathElements") or ():
        if element.get("fieldName") == "conversions" and isinstance(element.get("index"), int):
            return element["index"]
    return None


def _errors_by_row(failure: dict, results: list | None, count: int) -> dict[int, list]:
    by_row: dict[int, list] = {}
    unplaced = []
    for category, code, message, index in _indexed_failures(failure):
        if index is not None and 0 <= index < count:
            by_row.setdefault(index, []).append((category, code, message))
        else:
            unplaced.append((category, code, message))
    if unplaced:
        # No row named: it belongs to the rows Google did not accept (an empty result), or to all
        # when there are no results (validateOnly answers carry none).
        failed = [i for i in range(count) if not isinstance(results, list) or i >= len(results) or not results[i]]
        for i in failed:
            by_row.setdefault(i, []).extend(unplaced)
    return by_row


def _request_id(failure: dict) -> str | None:
    return next((d["requestId"] for d in failure.get("details") or () if isinstance(d, dict) and d.get("requestId")), None)


def _retry_delay(error: dict) -> float | None:
    """QuotaErrorDetails.retryDelay, a protobuf Duration such as "30s"."""
    for detail in error.get("details") or ():
        for item in (detail.get("errors") or ()) if isinstance(detail, dict) else ():
            delay = ((item.get("details") or {}).get("quotaErrorDetails") or {}).get("retryDelay")
            if isinstance(delay, str) and delay.endswith("s"):
                try:
                    return max(0.0, float(delay[:-1]))
                except ValueError:
                    return None
    return None


def verify(dest: Destination, http: Http) -> Verdict:
    """The OAuth token refresh alone: it proves the client id, secret and refresh token and uploads nothing
    (https://developers.google.com/identity/protocols/oauth2/web-server#offline)."""
    try:
        _refresh(dest, http, time.monotonic(), _credentials(dest))
    except _NoToken as failure:
        return verdict(failure.outcome)
    return Verdict(True, "OK")
