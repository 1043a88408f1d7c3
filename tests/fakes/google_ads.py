"""A fake Google Ads API (uploadClickConversions over REST) and OAuth2 token endpoint on 127.0.0.1.

It checks like the real service where Google's docs say how (https://developers.google.com/google-ads/api/docs/conversions/upload-clicks) and can be scripted to fail.
Where Google's exact error for a rule is not documented, the code used is marked "(guess)".
"""
from __future__ import annotations

import json
import random
import re
import time
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.server import HUNG, FakeServer, Handler, opaque_id

MAX_CONVERSIONS = 2000
MAX_USER_IDENTIFIERS = 5
SHA256 = re.compile(r"[0-9a-f]{64}")
CLICK_ID = re.compile(r"[A-Za-z0-9_-]+")
DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d+)?[+-]\d{2}:\d{2}")
ACTION = re.compile(r"customers/(\d+)/conversionActions/(\d+)")
ONEOF_IDENTIFIER = ("hashedEmail", "hashedPhoneNumber", "mobileId", "thirdPartyUserId", "addressInfo")
SUPPORTED_IDENTIFIERS = ("hashedEmail", "hashedPhoneNumber")
CONSENT_VALUES = ("GRANTED", "DENIED", "UNSPECIFIED", "UNKNOWN")
CONVERSION_FIELDS = {
    "gbraid", "wbraid", "externalAttributionData", "gclid", "conversionAction", "conversionDateTime",
    "conversionValue", "currencyCode", "orderId", "cartData", "customVariables", "userIdentifiers",
    "conversionEnvironment", "consent", "sessionAttributesEncoded", "sessionAttributesKeyValuePairs",
}
REQUEST_FIELDS = {"conversions", "partialFailure", "validateOnly", "jobId", "customerId"}
SCOPE = "https://www.googleapis.com/auth/adwords"
# Error texts: quoted from the enum reference where it has them, else paraphrased
# (https://developers.google.com/google-ads/api/reference/rpc/latest/ConversionUploadErrorEnum.ConversionUploadError).
MESSAGES = {
    "UNPARSEABLE_GCLID": "The imported gclid could not be decoded.",
    "UNPARSEABLE_GBRAID": "The imported gbraid could not be decoded.",
    "UNPARSEABLE_WBRAID": "The imported wbraid could not be decoded.",
    "CONVERSION_PRECEDES_EVENT": "The imported event has a conversion_date_time that precedes the click. "
                                 "Make sure your conversion_date_time is correct and try again.",
    "EXPIRED_EVENT": "The imported event can't be recorded because its click occurred before this conversion's "
                     "click-through window. Make sure you import the most recent data.",
    "TOO_RECENT_EVENT": "The click associated with the given identifier or iOS URL parameter occurred less than "
                        "6 hours ago. Retry after 6 hours have passed.",
    "TOO_RECENT_CONVERSION_ACTION": "Can't import events to a conversion action that was just created. "
                                    "Try importing again in 6 hours.",
    "CLICK_NOT_FOUND": "The email address or phone number for this event can't be matched to a click. This may be "
                       "because it didn't come from a Google Ads campaign, and you can safely ignore this warning.",
    "NO_CONVERSION_ACTION_FOUND": "The conversion action specified in the upload request cannot be found. "
                                  "Make sure it's available in this account.",
    "INVALID_CONVERSION_ACTION_TYPE": "The conversion action specified in the upload request isn't set up for uploading.",
    "CUSTOMER_NOT_ACCEPTED_CUSTOMER_DATA_TERMS": "The customer has not accepted the customer data terms in the "
                                                "conversion settings page.",
    "UNAUTHORIZED_CUSTOMER": "The click ID or call is associated with an Ads account you don't have access to.",
    "DUPLICATE_ORDER_ID": "The conversion has already been uploaded with this order ID.",
    "ORDER_ID_ALREADY_IN_USE": "The order ID is already in use by another conversion.",
    "CLICK_CONVERSION_ALREADY_EXISTS": "The imported event has the same click and conversion_date_time as an "
                                       "existing conversion. Use a unique conversion_date_time or order ID for "
                                       "each unique event and try again.",
    "DUPLICATE_CLICK_CONVERSION_IN_REQUEST": "This conversion has the same click and conversion_date_time as "
                                             "another conversion in this request.",
    "GBRAID_WBRAID_BOTH_SET": "Both gbraid and wbraid are set. Only one of them may be set.",
    "INVALID_USER_IDENTIFIER": "The user identifier is not a valid SHA-256 hash (64 lowercase hex characters).",
    "UNSUPPORTED_USER_IDENTIFIER": "Only hashed_email and hashed_phone_number are supported for conversion uploads.",
}
CATEGORY = {"INTERNAL_ERROR": "internalError", "TRANSIENT_ERROR": "internalError", "RESOURCE_EXHAUSTED": "quotaError"}
UNAUTHENTICATED = ("Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
                   "other valid authentication credential. See "
                   "https://developers.google.com/identity/sign-in/web/devconsole-project.")
MISSING_CREDENTIAL = ("Request is missing required authentication credential. Expected OAuth 2 access token, login "
                      "cookie or other valid authentication credential. See "
                      "https://developers.google.com/identity/sign-in/web/devconsole-project.")
PERMISSION = ("User doesn't have permission to access customer. Note: If you're accessing a client customer, the "
              "manager's customer ID must be set in the 'login-customer-id' header. See "
              "https://developers.google.com/google-ads/api/docs/concepts/call-structure#cid")
REVOKED = "Token has been expired or revoked."


def request_id() -> str:
    return opaque_id(22)


class _Whole(Exception):
    """The whole request fails: answer with this status and google.rpc.Status."""

    def __init__(self, status: int, state: str, message: str, errors: list | None = None, version: str = "v26"):
        super().__init__(message)
        error: dict = {"code": status, "message": message, "status": state}
        if errors:
            error["details"] = [{"@type": f"type.googleapis.com/google.ads.googleads.{version}.errors.GoogleAdsFailure",
                                 "errors": errors, "requestId": request_id()}]
        self.status, self.answer = status, {"error": error}


def ads_error(category: str, code: str, message: str, path: list | None = None, **extra) -> dict:
    """One GoogleAdsError as REST JSON."""
    error: dict = {"errorCode": {category: code}, "message": message}
    if path:
        error["location"] = {"fieldPathElements": path}
    error.update(extra)
    return error


def _row_path(index: int, field: str | None = None) -> list:
    path = [{"fieldName": "conversions", "index": index}]
    return path + [{"fieldName": field}] if field else path


def _snake_to_camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


class FakeGoogleAds(FakeServer):
    """Google's token endpoint (POST /token) and ConversionUploadService (POST /{version}/customers/{id}:uploadClickConversions).

    `developer_token=None` ignores the developer-token header, as Google has since its sunset on
    9 September 2026; a value makes it required, as before. `login_customer_id` makes that header required.
    """

    # Scripts the upload requests: "401" expires the access tokens issued so far (the upload then fails as
    # Google would); ("row_error", index or gclid, CODE[, message]) fails that row.
    SCRIPT_WORDS = ("401", "429", "500", "503")
    SCRIPT_SHAPES = (("hang", 2), ("status", 3), ("row_error", 3), ("row_error", 4))
    TEXT_TYPE, JSON_TYPE = "text/html; charset=UTF-8", "application/json; charset=UTF-8"

    def __init__(self, client_id: str = "gads-client", client_secret: str = "gads-secret",
                 refresh_token: str = "gads-refresh", developer_token: str | None = None,
                 login_customer_id: str | None = None, customers: tuple[str, ...] = ("1234567890",),
                 conversion_actions: tuple[str, ...] = ("customers/1234567890/conversionActions/42",),
                 api_version: str = "v26", expires_in: int = 3599):
        super().__init__()
        self.client_id, self.client_secret, self.refresh_token = client_id, client_secret, refresh_token
        self.developer_token, self.login_customer_id = developer_token, login_customer_id
        self.customers, self.api_version, self.expires_in = tuple(customers), api_version, expires_in
        self.action_ids = {ACTION.fullmatch(a)[2] for a in conversion_actions}
        self.clock = time.time
        self.revoked = False
        self.conversions: list[dict] = []  # accepted uploads
        self.validated: list[dict] = []  # accepted validateOnly uploads (not stored)
        self._tokens: dict[str, float] = {}  # access token -> expiry (clock seconds)
        self._orders: set[tuple[str, str]] = set()  # (action id, orderId)
        self._clicks: set[tuple[str, str, str]] = set()  # (action id, click id, conversionDateTime)

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    # --- control ---

    def revoke(self) -> None:
        """The refresh token is revoked: invalid_grant from now on, and its access tokens stop working."""
        with self._lock:
            self.revoked = True
            self._tokens.clear()

    def grant(self, refresh_token: str) -> None:
        """Accept only this refresh token from now on (the admin authorised again)."""
        with self._lock:
            self.refresh_token, self.revoked = refresh_token, False

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    @property
    def token_requests(self) -> list[dict]:
        return [r for r in self.requests if r["kind"] == "token"]

    @property
    def uploads(self) -> list[dict]:
        return [r for r in self.requests if r["kind"] == "upload"]

    # --- serving ---

    def _handle(self, h: Handler) -> None:
        path = urlsplit(h.path).path
        raw = h.read_body()
        if path == "/token":
            form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
            record = {"kind": "token", "method": h.command, "path": path, "form": form, "headers": dict(h.headers)}
            with self._lock:
                self.requests.append(record)
            status, answer = self._token(h.command, form)
            return self._reply(h, record, status, answer, {})
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        match = re.fullmatch(rf"/{re.escape(self.api_version)}/customers/([^/:]+):uploadClickConversions", path)
        record = {"kind": "upload", "method": h.command, "path": path, "customer_id": match[1] if match else None,
                  "headers": dict(h.headers), "body": body}
        scripted = self._record(h, record)
        if scripted is HUNG:
            return
        if scripted == "401":
            self.expire_tokens()
            scripted = None
        row_error = scripted if isinstance(scripted, tuple) and scripted[0] == "row_error" else None
        if scripted and not row_error:
            status, answer, headers = self._scripted(scripted)
        else:
            status, answer, headers = self._upload(h.command, match, h.headers, body, row_error)
        self._reply(h, record, status, answer, headers)

    def _headers(self, record: dict) -> dict:
        if record["kind"] != "upload":
            return {}
        record["request_id"] = request_id()
        return {"request-id": record["request_id"]}

    def _token(self, method: str, form: dict) -> tuple[int, dict]:
        """Google's refresh-token grant (https://developers.google.com/identity/protocols/oauth2/web-server#offline)."""
        if method != "POST":
            return 405, {"error": "invalid_request", "error_description": "Only POST is supported."}
        if form.get("grant_type") != "refresh_token":
            return 400, {"error": "unsupported_grant_type", "error_description": f"Invalid grant_type: {form.get('grant_type', '')}"}
        if form.get("client_id") != self.client_id:
            return 401, {"error": "invalid_client", "error_description": "The OAuth client was not found."}
        if form.get("client_secret") != self.client_secret:
            return 401, {"error": "invalid_client", "error_description": "Unauthorized"}
        if self.revoked or form.get("refresh_token") != self.refresh_token:
            return 400, {"error": "invalid_grant", "error_description": REVOKED}
        token = "ya29." + opaque_id(40)
        with self._lock:
            self._tokens[token] = self.clock() + self.expires_in
        return 200, {"access_token": token, "expires_in": self.expires_in, "scope": SCOPE, "token_type": "Bearer"}

    def _scripted(self, scripted) -> tuple[int, object, dict]:
        kind, *args = scripted if isinstance(scripted, tuple) else (scripted,)
        v = self.api_version
        if kind == "429":
            details = {"quotaErrorDetails": {"rateScope": "DEVELOPER", "rateName": "Number of operations for basic access",
                                             "retryDelay": "30s"}}
            error = ads_error("quotaError", "RESOURCE_EXHAUSTED", "Too many requests. Retry in 30 seconds.", details=details)
            whole = _Whole(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", [error], v)
            return whole.status, whole.answer, {}
        if kind == "500":
            error = ads_error("internalError", "INTERNAL_ERROR", "An internal error has occurred.")
            whole = _Whole(500, "INTERNAL", "Internal error encountered.", [error], v)
            return whole.status, whole.answer, {}
        if kind == "503":
            whole = _Whole(503, "UNAVAILABLE", "The service is currently unavailable.")
            return whole.status, whole.answer, {}
        return args[0], args[1], {}  # ("status", http_status, body): dict -> JSON, str -> raw text

    def _upload(self, method, match, headers, body, row_error) -> tuple[int, dict | str, dict]:
        try:
            return 200, self._validate(method, match, headers, body, row_error), {}
        except _Whole as whole:
            return whole.status, whole.answer, {}

    def _validate(self, method, match, headers, body, row_error) -> dict:
        v = self.api_version
        if method != "POST" or not match:
            raise _Whole(404, "NOT_FOUND", "Method not found.")
        auth = headers.get("Authorization") or ""
        if not auth.startswith("Bearer "):
            raise _Whole(401, "UNAUTHENTICATED", MISSING_CREDENTIAL)
        with self._lock:
            expiry = self._tokens.get(auth[len("Bearer "):])
        if expiry is None or self.clock() >= expiry:
            raise _Whole(401, "UNAUTHENTICATED", UNAUTHENTICATED)
        if self.developer_token is not None and headers.get("developer-token") != self.developer_token:
            error = ads_error("authenticationError", "DEVELOPER_TOKEN_INVALID", "The developer token is not valid.")
            raise _Whole(401, "UNAUTHENTICATED", "Request is missing required authentication credential.", [error], v)
        login = headers.get("login-customer-id")
        if login is not None and not re.fullmatch(r"\d{10}", login):
            error = ads_error("headerError", "INVALID_LOGIN_CUSTOMER_ID", "The login customer ID could not be validated.")
            raise _Whole(400, "INVALID_ARGUMENT", "Request contains an invalid argument.", [error], v)
        if match[1] not in self.customers or (self.login_customer_id and login != self.login_customer_id):
            error = ads_error("authorizationError", "USER_PERMISSION_DENIED", PERMISSION)
            raise _Whole(403, "PERMISSION_DENIED", "The caller does not have permission", [error], v)
        if not isinstance(body, dict):
            raise _Whole(400, "INVALID_ARGUMENT", "Invalid JSON payload received. Expected an object.")
        body = {_snake_to_camel(k): value for k, value in body.items()}
        unknown = sorted(set(body) - REQUEST_FIELDS)
        if unknown:
            raise _Whole(400, "INVALID_ARGUMENT", f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.')
        conversions = body.get("conversions")
        if not isinstance(conversions, list) or not conversions:
            error = ads_error("fieldError", "REQUIRED", "The required field was not present.", [{"fieldName": "conversions"}])
            raise _Whole(400, "INVALID_ARGUMENT", "Request contains an invalid argument.", [error], v)
        if body.get("partialFailure") is not True:
            # Omitting partial_failure or setting it false fails the whole request (UploadClickConversionsRequest).
            error = ads_error("fieldError", "REQUIRED", "partial_failure must be true for conversion uploads.",
                              [{"fieldName": "partial_failure"}])
            raise _Whole(400, "INVALID_ARGUMENT", "Request contains an invalid argument.", [error], v)
        if len(conversions) > MAX_CONVERSIONS:
            error = ads_error("conversionUploadError", "TOO_MANY_CONVERSIONS_IN_REQUEST",
                              "Upload fewer than 2001 events in a single request.", [{"fieldName": "conversions"}])
            raise _Whole(400, "INVALID_ARGUMENT", "Request contains an invalid argument.", [error], v)
        rows = [self._parse_row(i, row) for i, row in enumerate(conversions)]
        validate_only = body.get("validateOnly") is True
        errors, results, accepted, seen_clicks, seen_orders = [], [], [], set(), set()
        with self._lock:
            for i, row in enumerate(rows):
                error = self._check_row(i, row, seen_clicks, seen_orders)
                if error is None and row_error and self._targets(row_error[1], i, row):
                    code = row_error[2]
                    message = row_error[3] if len(row_error) > 3 else MESSAGES.get(code, code.replace("_", " ").capitalize())
                    error = ads_error(CATEGORY.get(code, "conversionUploadError"), code, message, _row_path(i))
                if error is not None:
                    errors.append(error)
                    results.append({})
                    continue
                action_id = ACTION.fullmatch(row["conversionAction"])[2]
                click = next((row[k] for k in ("gclid", "gbraid", "wbraid") if row.get(k)), None)
                seen_orders.add((action_id, row.get("orderId")))
                if click:
                    seen_clicks.add((action_id, click, row["conversionDateTime"]))
                accepted.append(row)
                result = {k: row[k] for k in ("gclid", "gbraid", "wbraid", "userIdentifiers") if k in row}
                results.append({**result, "conversionAction": row["conversionAction"],
                                "conversionDateTime": row["conversionDateTime"]})
            if validate_only:
                self.validated.extend(accepted)
            else:
                self.conversions.extend(accepted)
                self._orders |= {o for o in seen_orders if o[1]}
                self._clicks |= seen_clicks
        answer: dict = {} if validate_only else {"results": results, "jobId": str(random.randrange(1, 2**31))}
        if errors:
            answer["partialFailureError"] = {
                "code": 3,
                "message": "; ".join(f"{e['message']}, at conversions[{e['location']['fieldPathElements'][0]['index']}]"
                                     for e in errors),
                "details": [{"@type": f"type.googleapis.com/google.ads.googleads.{v}.errors.GoogleAdsFailure",
                             "errors": errors, "requestId": request_id()}],
            }
        return answer

    @staticmethod
    def _targets(target, index: int, row: dict) -> bool:
        return target == index if isinstance(target, int) else target == row.get("gclid")

    def _parse_row(self, i: int, row) -> dict:
        """What the JSON parser refuses fails the whole request, as with Google's REST front end."""
        if not isinstance(row, dict):
            raise _Whole(400, "INVALID_ARGUMENT", f"Invalid value at 'conversions[{i}]': expected an object.")
        row = {_snake_to_camel(k): value for k, value in row.items()}
        unknown = sorted(set(row) - CONVERSION_FIELDS)
        if unknown:
            raise _Whole(400, "INVALID_ARGUMENT",
                         f"Invalid JSON payload received. Unknown name \"{unknown[0]}\" at 'conversions[{i}]': Cannot find field.")
        consent = row.get("consent")
        if consent is not None:
            if not isinstance(consent, dict) or set(consent) - {"adUserData", "adPersonalization"}:
                raise _Whole(400, "INVALID_ARGUMENT", f"Invalid value at 'conversions[{i}].consent'.")
            for key, value in consent.items():
                if value not in CONSENT_VALUES:
                    raise _Whole(400, "INVALID_ARGUMENT",
                                 f"Invalid value at 'conversions[{i}].consent.{key}' (type.googleapis.com/"
                                 f"google.ads.googleads.{self.api_version}.enums.ConsentStatusEnum.ConsentStatus), \"{value}\"")
        uids = row.get("userIdentifiers")
        if uids is not None:
            if not isinstance(uids, list) or not all(isinstance(u, dict) for u in uids):
                raise _Whole(400, "INVALID_ARGUMENT", f"Invalid value at 'conversions[{i}].user_identifiers'.")
            for j, uid in enumerate(uids):
                uid = {_snake_to_camel(k): value for k, value in uid.items()}
                set_fields = [k for k in ONEOF_IDENTIFIER if k in uid]
                if len(set_fields) > 1:
                    # A oneof takes one field; the JSON parser refuses a second.
                    raise _Whole(400, "INVALID_ARGUMENT",
                                 f"Invalid JSON payload received. Oneof field 'identifier' is already set. "
                                 f"Cannot set '{set_fields[1]}' at 'conversions[{i}].user_identifiers[{j}]'.")
        value = row.get("conversionValue")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise _Whole(400, "INVALID_ARGUMENT", f"Invalid value at 'conversions[{i}].conversion_value' (TYPE_DOUBLE), \"{value}\"")
        return row

    def _check_row(self, i: int, row: dict, seen_clicks: set, seen_orders: set) -> dict | None:
        """The first problem of one conversion as a partial-failure error, or None."""
        def bad(category, code, message, field=None):
            return ads_error(category, code, message, _row_path(i, field))

        action = row.get("conversionAction")
        if not action:
            return bad("fieldError", "REQUIRED", "The required field was not present.", "conversion_action")
        match = ACTION.fullmatch(action) if isinstance(action, str) else None
        if not match:
            return bad("requestError", "RESOURCE_NAME_MALFORMED", "Resource name is malformed.", "conversion_action")
        if match[2] not in self.action_ids:  # Google validates only the action id (https://developers.google.com/google-ads/api/docs/conversions/upload-clicks)
            return bad("conversionUploadError", "NO_CONVERSION_ACTION_FOUND", MESSAGES["NO_CONVERSION_ACTION_FOUND"],
                       "conversion_action")
        when = row.get("conversionDateTime")
        if not when:
            return bad("fieldError", "REQUIRED", "The required field was not present.", "conversion_date_time")
        if not isinstance(when, str) or not DATE_TIME.fullmatch(when):
            return bad("dateError", "INVALID_STRING_DATE_TIME_SECONDS_WITH_OFFSET",
                       "The string date time's format should be yyyy-mm-dd hh:mm:ss+|-hh:mm.", "conversion_date_time")
        currency = row.get("currencyCode")
        if currency is not None and not (isinstance(currency, str) and re.fullmatch(r"[A-Z]{3}", currency)):
            return bad("currencyCodeError", "UNSUPPORTED", "The currency code is not supported.", "currency_code")
        if (row.get("consent") or {}).get("adPersonalization") is not None:
            # ad_personalization is only for user lists, not click conversions (https://developers.google.com/google-ads/api/docs/conversions/upload-clicks).
            return bad("fieldError", "VALUE_MUST_BE_UNSET", "The field's value must be unset.", "consent")
        clicks = [k for k in ("gclid", "gbraid", "wbraid") if row.get(k)]
        uids = row.get("userIdentifiers") or []
        if "gbraid" in clicks and "wbraid" in clicks:
            return bad("conversionUploadError", "GBRAID_WBRAID_BOTH_SET", MESSAGES["GBRAID_WBRAID_BOTH_SET"], "wbraid")
        if len(clicks) > 1:  # Google's samples set exactly one of the three (guess: code)
            return bad("fieldError", "VALUE_MUST_BE_UNSET", "Set only one of gclid, gbraid or wbraid.", clicks[1])
        if clicks and clicks[0] != "gclid" and uids:  # (1 source: RudderStack; guess: code)
            return bad("fieldError", "VALUE_MUST_BE_UNSET", "user_identifiers can't be used with gbraid or wbraid.",
                       "user_identifiers")
        if not clicks and not uids:
            return bad("fieldError", "REQUIRED", "One of gclid, gbraid, wbraid or user_identifiers is required.", "gclid")
        for key in clicks:
            if not isinstance(row[key], str) or not CLICK_ID.fullmatch(row[key]):
                return bad("conversionUploadError", f"UNPARSEABLE_{key.upper()}", MESSAGES[f"UNPARSEABLE_{key.upper()}"], key)
        if len(uids) > MAX_USER_IDENTIFIERS:
            return bad("collectionSizeError", "TOO_MANY", "Too many elements.", "user_identifiers")
        for uid in uids:
            uid = {_snake_to_camel(k): value for k, value in uid.items()}
            fields = [k for k in ONEOF_IDENTIFIER if k in uid]
            if not fields or fields[0] not in SUPPORTED_IDENTIFIERS:
                return bad("conversionUploadError", "UNSUPPORTED_USER_IDENTIFIER", MESSAGES["UNSUPPORTED_USER_IDENTIFIER"],
                           "user_identifiers")
            if not (isinstance(uid[fields[0]], str) and SHA256.fullmatch(uid[fields[0]])):
                return bad("conversionUploadError", "INVALID_USER_IDENTIFIER", MESSAGES["INVALID_USER_IDENTIFIER"],
                           "user_identifiers")
        order = row.get("orderId")
        if order and ((match[2], order) in self._orders or (match[2], order) in seen_orders):
            return bad("conversionUploadError", "DUPLICATE_ORDER_ID", MESSAGES["DUPLICATE_ORDER_ID"], "order_id")
        if clicks:
            key = (match[2], row[clicks[0]], when)
            if key in self._clicks:
                return bad("conversionUploadError", "CLICK_CONVERSION_ALREADY_EXISTS",
                           MESSAGES["CLICK_CONVERSION_ALREADY_EXISTS"])
            if key in seen_clicks:
                return bad("conversionUploadError", "DUPLICATE_CLICK_CONVERSION_IN_REQUEST",
                           MESSAGES["DUPLICATE_CLICK_CONVERSION_IN_REQUEST"])
        return None
