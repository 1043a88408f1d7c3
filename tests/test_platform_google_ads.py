"""Google Ads click conversions: payloads, answer classification, OAuth, and delivery through the dispatcher."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from functools import partial

import pytest
import requests

from ingest.canonical import CanonicalEvent, utcnow
from config import Config, ConfigError, Destination
from delivery.dispatcher import Dispatcher
from models import DestinationState, Event, Send
from platforms import google_ads
from platforms.base import REJECTED, RETRY, SENT, SETUP, THROTTLE, Outcome, Skip
from tests import helpers
from tests.conftest import RAW_PII, SEED_EXAMPLE, at, build_config, with_destinations
from tests.fakes.google_ads import MESSAGES, PERMISSION, REVOKED, UNAUTHENTICATED, FakeGoogleAds
from tests.helpers import answer, check_golden, dry_run, dry_run_entry, golden, sha, track

SECOND = timedelta(seconds=1)
PURCHASE_ACTION = "customers/1234567890/conversionActions/42"
LEAD_ACTION = "customers/1234567890/conversionActions/43"
QUIZ_ACTION = "customers/1234567890/conversionActions/44"
GCLID = "Cj0KCQjw-4XFBhCBARIsAAdNOksZ1vqgAKFLf9HQr0H4E3v6Qp_8YzLmT7wCgS1ZrQ2u9aXhB3Y0MEaAmUxEALw_wcB"
GRANTED = {"adUserData": "GRANTED"}
NO_IDENTIFIER = "no Google click id (gclid, gbraid, wbraid) and no email or phone for enhanced conversions for leads"
OCCURRED = "2026-03-01T12:00:00Z"  # five minutes before the frozen ingest
SEED_PURCHASE = {**SEED_EXAMPLE, "gclid": GCLID, "occurred_at": OCCURRED}
LEAD_EMAILS = ["lead.one@example.org", "Jane.Roe@GoogleMail.com", "buyer.two@example.org"]
RAW_PII.extend(LEAD_EMAILS)


@pytest.fixture
def fake():
    actions = (PURCHASE_ACTION, LEAD_ACTION, QUIZ_ACTION)
    with FakeGoogleAds(developer_token="dev-token", login_customer_id="9876543210", conversion_actions=actions) as fake:
        yield fake


def gads_destination(fake: FakeGoogleAds, **overrides) -> dict:
    dest = {
        "name": "gads", "platform": "google_ads", "mode": "live",
        "customer_id": "123-456-7890", "login_customer_id": "987-654-3210",
        "conversion_actions": {"Purchase": PURCHASE_ACTION, "Lead": LEAD_ACTION, "quiz_done": QUIZ_ACTION},
        "developer_token": "dev-token", "client_id": "gads-client", "client_secret": "gads-secret",
        "refresh_token": "gads-refresh", "token_url": fake.token_url, "api_base": fake.url, "api_version": "v26",
    }
    return {key: value for key, value in {**dest, **overrides}.items() if value is not None}


@pytest.fixture
def gads_settings() -> dict:
    return {}


@pytest.fixture
def raw(raw_config, fake, gads_settings, dispatch_settings) -> dict:
    raw = with_destinations(raw_config, gads_destination(fake, **gads_settings))
    raw["dispatch"].update(dispatch_settings)
    return raw


@pytest.fixture
def config(raw) -> Config:
    return build_config(raw)


def purchase(event_id: str, gclid: str | None = None, **fields) -> dict:
    """A purchase with its own click (Google counts one click at one second once)."""
    body = {"api_key": "key_demo_123", "event": "purchase", "event_id": event_id, "value": 25, "currency": "EUR",
            "order_id": f"ord-{event_id}", "gclid": gclid or f"{GCLID}-{event_id}", **fields}
    return {key: value for key, value in body.items() if value is not None}


def lead(event_id: str, **fields) -> dict:
    return {"api_key": "key_demo_123", "event": "lead", "event_id": event_id, **fields}


send_of = partial(helpers.send_of, destination="shop/gads")
row = partial(helpers.row, destination="shop/gads")


def when(event_id: str) -> str:
    """The event's conversionDateTime, from its stored occurred_at."""
    return google_ads.conversion_date_time(Event.get(Event.event_id == event_id).to_canonical().occurred_at)


def sent_row(upload: dict, attempts: int = 1, retries: int = 0) -> dict:
    return {"status": "sent", "reason": None, "attempts": attempts, "retries": retries, "last_status": 200,
            "last_error": None, "trace_id": upload["request_id"]}


def received(fake: FakeGoogleAds) -> list[str]:
    return [c["orderId"] for c in fake.conversions]


# --- Payloads ---------------------------------------------------------------------------------

def test_the_seed_purchase_with_a_gclid_is_the_golden_conversion(client, frozen_ingest):
    entry = dry_run_entry(client, SEED_PURCHASE)

    check_golden("google_ads_purchase.json", entry["payload"])
    # The golden's hashes, by hand: not a Gmail address, so the dots stay; the phone as E.164 with '+'.
    assert entry["payload"] == {
        "conversionAction": PURCHASE_ACTION,
        "conversionDateTime": "2026-03-01 12:00:00+00:00",
        "conversionValue": 149.99,
        "currencyCode": "USD",
        "orderId": "ord_abc123",
        "gclid": GCLID,
        "userIdentifiers": [{"hashedEmail": sha("john.doe@example.com")}, {"hashedPhoneNumber": sha("+15551234567")}],
        "consent": GRANTED,
    }


def test_a_minimal_lead_is_the_golden_conversion_with_googles_gmail_rule(client, frozen_ingest):
    body = {"api_key": "key_demo_123", "event": "generate_lead", "event_id": "lead-1", "email": " Jane.Roe@GoogleMail.com ",
            "occurred_at": OCCURRED}
    entry = dry_run_entry(client, body)

    check_golden("google_ads_lead.json", entry["payload"])
    assert entry["payload"] == {
        "conversionAction": LEAD_ACTION,
        "conversionDateTime": "2026-03-01 12:00:00+00:00",
        "orderId": "lead-1",  # no order id: the event id, so a repeat is Google's DUPLICATE_ORDER_ID
        "userIdentifiers": [{"hashedEmail": sha("janeroe@googlemail.com")}],
        "consent": GRANTED,
    }


def test_a_dry_run_lists_google_ads_with_its_payload_masked_url_and_match_quality(client, fake, frozen_ingest):
    answer = dry_run(client, SEED_PURCHASE)

    assert answer["destinations"] == [{
        "name": "gads", "platform": "google_ads", "mode": "live", "status": "would_send",
        "url": f"{fake.url}/v26/customers/1234567890:uploadClickConversions",
        "payload": golden("google_ads_purchase.json"),
        "match_quality": {"score": 10.0, "identifiers": ["gclid", "hashedEmail", "hashedPhoneNumber"]},
    }]
    text = json.dumps(answer)
    assert [secret for secret in ("gads-secret", "gads-refresh", "dev-token") if secret in text] == []
    assert fake.requests == []


def destination(mode: str = "live", **settings) -> Destination:
    base = {"customer_id": "1234567890", "conversion_actions": {"Purchase": PURCHASE_ACTION, "Lead": LEAD_ACTION},
            "client_id": "id", "client_secret": "secret", "refresh_token": "refresh"}
    return Destination("shop", "gads", "google_ads", mode, True, None, None, {**base, **settings})


def event(**fields) -> CanonicalEvent:
    base = {"site_id": "shop", "dialect": "channelstack", "event_name": "purchase", "standard_name": "Purchase",
            "event_id": "e1", "occurred_at": at("2026-03-01T12:00:00"), "received_at": at("2026-03-01T12:00:01")}
    return CanonicalEvent(**{**base, **fields})


IDENTITY = {"em_google": sha("jane@example.org"), "ph_e164": sha("+15551234567")}


@pytest.mark.parametrize("click_ids, expected", [
    ({"gclid": "G1", "wbraid": "W1"}, {"gclid": "G1", "userIdentifiers": [
        {"hashedEmail": IDENTITY["em_google"]}, {"hashedPhoneNumber": IDENTITY["ph_e164"]}]}),
    ({"wbraid": "W1"}, {"wbraid": "W1"}),  # no userIdentifiers beside a braid (docs/platforms/google-ads.md)
    ({"gbraid": "B1"}, {"gbraid": "B1"}),
    ({}, {"userIdentifiers": [{"hashedEmail": IDENTITY["em_google"]}, {"hashedPhoneNumber": IDENTITY["ph_e164"]}]}),
])
def test_a_conversion_carries_one_click_id_preferring_the_gclid(click_ids, expected):
    item = google_ads.build(event(click_ids=click_ids, identity=IDENTITY), destination())

    assert item == {"conversionAction": PURCHASE_ACTION, "conversionDateTime": "2026-03-01 12:00:00+00:00",
                    "orderId": "e1", "consent": GRANTED, **expected}


def test_a_telegram_lead_needs_only_its_stored_click_id():
    chat = event(event_name="Lead", standard_name="Lead", channel="chat", click_ids={"gclid": "G1"})

    assert google_ads.build(chat, destination()) == {
        "conversionAction": LEAD_ACTION, "conversionDateTime": "2026-03-01 12:00:00+00:00", "orderId": "e1",
        "gclid": "G1", "consent": GRANTED}


def test_value_currency_and_order_id_are_sent_and_a_currency_without_value_is_left_out():
    priced = google_ads.build(event(click_ids={"gclid": "G1"}, value=49.5, currency="EUR", order_id="o-7"), destination())
    unpriced = google_ads.build(event(click_ids={"gclid": "G1"}, currency="EUR"), destination())

    assert (priced["conversionValue"], priced["currencyCode"], priced["orderId"]) == (49.5, "EUR", "o-7")
    assert ("conversionValue" in unpriced, "currencyCode" in unpriced) == (False, False)


@pytest.mark.parametrize("actions, name, standard, expected", [
    ({"quiz_done": QUIZ_ACTION}, "quiz_done", "Custom", QUIZ_ACTION),  # a custom event by its own name
    ({"quiz_done": QUIZ_ACTION}, "Quiz-Done", "Custom", QUIZ_ACTION),  # case and separators ignored
    ({"generate_lead": LEAD_ACTION}, "generate_lead", "Lead", LEAD_ACTION),  # a standard event by its own name
    ({"Lead": LEAD_ACTION, "generate_lead": QUIZ_ACTION}, "generate_lead", "Lead", LEAD_ACTION),  # canonical first
])
def test_the_conversion_action_is_found_by_canonical_name_or_the_events_own_name(actions, name, standard, expected):
    item = google_ads.build(event(event_name=name, standard_name=standard, click_ids={"gclid": "G1"}),
                            destination(conversion_actions=actions))

    assert item["conversionAction"] == expected


@pytest.mark.parametrize("fields, reason", [
    ({"event_name": "search", "standard_name": "Search", "click_ids": {"gclid": "G1"}},
     "no conversion action configured for Search"),
    ({"event_name": "quiz_done", "standard_name": "Custom", "click_ids": {"gclid": "G1"}},
     "no conversion action configured for quiz_done"),
    ({"identity": {"em": sha("x@example.org"), "ph": sha("15551234567")}, "external_id": "u1",
      "click_ids": {"fbc": "fb.1.1.x"}}, NO_IDENTIFIER),
    ({"channel": "chat", "external_id": "tg-42"}, NO_IDENTIFIER),
])
def test_events_google_cannot_take_are_skipped_with_the_reason(fields, reason):
    with pytest.raises(Skip) as skip:
        google_ads.build(event(**fields), destination(conversion_actions={"Purchase": PURCHASE_ACTION, "Custom": QUIZ_ACTION}))
    assert skip.value.reason == reason


@pytest.mark.parametrize("mode, settings, problems", [
    ("live", {}, []),
    ("live", {"developer_token": None, "login_customer_id": None}, []),  # both optional
    ("live", {"customer_id": None, "conversion_actions": None}, [
        ("customer_id", "required"), ("conversion_actions", "required: map event names to conversion actions")]),
    ("live", {"customer_id": "12345", "login_customer_id": "abc"}, [
        ("customer_id", 'must be a 10-digit customer id such as "123-456-7890"'),
        ("login_customer_id", 'must be a 10-digit customer id such as "123-456-7890"')]),
    ("live", {"conversion_actions": {"Purchase": "42", "Lead": LEAD_ACTION}}, [
        ("conversion_actions.Purchase", "must be a resource name customers/<id>/conversionActions/<id>")]),
    ("live", {"conversion_actions": [PURCHASE_ACTION]}, [
        ("conversion_actions", "must map event names to customers/<id>/conversionActions/<id>")]),
    ("test", {"client_id": None, "client_secret": "", "refresh_token": None}, [
        ("client_id", "required in test mode"), ("client_secret", "required in test mode"),
        ("refresh_token", "required in test mode")]),
    ("dry", {"client_id": None, "client_secret": None, "refresh_token": None}, []),
])
def test_settings_are_checked_and_credentials_are_needed_unless_dry(mode, settings, problems):
    dest = destination(mode)
    dest = Destination("shop", "gads", "google_ads", mode, True, None, None,
                       {k: v for k, v in {**dest.settings, **settings}.items() if v is not None})
    assert google_ads.check_settings(dest) == problems


def test_a_live_destination_without_credentials_is_a_config_error(raw_config):
    raw = with_destinations(raw_config, {"name": "gads", "platform": "google_ads", "customer_id": "1234567890",
                                         "conversion_actions": {"Purchase": PURCHASE_ACTION}})
    with pytest.raises(ConfigError) as error:
        build_config(raw)
    assert error.value.problems == [
        "sites[0].destinations[0].client_id: required in live mode",
        "sites[0].destinations[0].client_secret: required in live mode",
        "sites[0].destinations[0].refresh_token: required in live mode",
    ]


def test_the_url_names_the_customer_without_dashes_and_no_secret():
    assert google_ads.url(destination(customer_id="123-456-7890")) == \
        "https://googleads.googleapis.com/v26/customers/1234567890:uploadClickConversions"
    assert google_ads.url(destination(api_version="25")) == \
        "https://googleads.googleapis.com/v25/customers/1234567890:uploadClickConversions"


@pytest.mark.parametrize("moment, text", [
    (datetime(2026, 3, 1, 15, 5, 9, 123456, tzinfo=timezone(timedelta(hours=3))), "2026-03-01 12:05:09+00:00"),
    (datetime(2026, 3, 1, 12, 5, 9), "2026-03-01 12:05:09+00:00"),  # naive: already UTC
])
def test_the_conversion_time_is_googles_format_in_utc(moment, text):
    assert google_ads.conversion_date_time(moment) == text


# --- Classification (docs/platforms/google-ads.md) --------------------------------------------------------

REQUEST_ID = {"request-id": "req-1"}  # the header Google puts on every answer


def failure(*errors: dict, status: int | None = None, state: str | None = None, message: str = "Request failed") -> dict:
    """google.rpc.Status with GoogleAdsFailure details, or partialFailureError when no HTTP status is given."""
    detail = {"@type": "type.googleapis.com/google.ads.googleads.v26.errors.GoogleAdsFailure", "errors": list(errors),
              "requestId": "req-2"}
    if status is None:
        return {"code": 3, "message": message, "details": [detail]}
    return {"error": {"code": status, "message": message, "status": state, "details": [detail] if errors else []}}


def ads_error(code: str, message: str = "Google says no", index: int | None = None, category: str = "conversionUploadError",
              **extra) -> dict:
    error = {"errorCode": {category: code}, "message": message, **extra}
    if index is not None:
        error["location"] = {"fieldPathElements": [{"fieldName": "conversions", "index": index}, {"fieldName": "gclid"}]}
    return error


ITEMS = [{"gclid": "G0"}, {"userIdentifiers": [{"hashedEmail": "0" * 64}]}, {"gbraid": "B2"}]


@pytest.mark.parametrize("index, code, category, kind, retry_after", [
    # per-row rejections
    (0, "UNPARSEABLE_GCLID", "conversionUploadError", REJECTED, None),
    (0, "EXPIRED_EVENT", "conversionUploadError", REJECTED, None),
    (0, "CONVERSION_PRECEDES_EVENT", "conversionUploadError", REJECTED, None),
    (1, "INVALID_USER_IDENTIFIER", "conversionUploadError", REJECTED, None),
    (2, "UNPARSEABLE_GBRAID", "conversionUploadError", REJECTED, None),
    (0, "CLICK_NOT_FOUND", "conversionUploadError", REJECTED, None),  # a click id Google does not know
    # duplicates: Google has it already
    (0, "DUPLICATE_ORDER_ID", "conversionUploadError", SENT, None),
    (0, "ORDER_ID_ALREADY_IN_USE", "conversionUploadError", SENT, None),
    (0, "CLICK_CONVERSION_ALREADY_EXISTS", "conversionUploadError", SENT, None),
    (2, "DUPLICATE_CLICK_CONVERSION_IN_REQUEST", "conversionUploadError", SENT, None),
    # identifier-only lead not from a Google ad: "you can safely ignore this warning"
    (1, "CLICK_NOT_FOUND", "conversionUploadError", SENT, None),
    # too early: retry after 6 h
    (0, "TOO_RECENT_EVENT", "conversionUploadError", RETRY, 21600.0),
    (1, "TOO_RECENT_CONVERSION_ACTION", "conversionUploadError", RETRY, 21600.0),
    # the account or config: pause
    (0, "NO_CONVERSION_ACTION_FOUND", "conversionUploadError", SETUP, None),
    (0, "INVALID_CONVERSION_ACTION_TYPE", "conversionUploadError", SETUP, None),
    (1, "CUSTOMER_NOT_ACCEPTED_CUSTOMER_DATA_TERMS", "conversionUploadError", SETUP, None),
    (0, "UNAUTHORIZED_CUSTOMER", "conversionUploadError", SETUP, None),
    # Google's own trouble with one row
    (0, "INTERNAL_ERROR", "internalError", RETRY, None),
    (0, "RESOURCE_EXHAUSTED", "quotaError", THROTTLE, None),
])
def test_a_partial_failure_is_classified_on_the_row_it_names(index, code, category, kind, retry_after):
    body = {"results": [{} if i == index else {"conversionAction": PURCHASE_ACTION} for i in range(3)],
            "partialFailureError": failure(ads_error(code, "Google says no", index, category))}
    text = json.dumps(body)

    outcomes = google_ads.classify(answer(200, body, REQUEST_ID), ITEMS)

    error = None if kind == SENT else f"Google Ads error {code}: Google says no"
    named = Outcome(kind, 200, error, "req-1", text, retry_after)
    others = Outcome(SENT, 200, None, "req-1", text)
    assert outcomes == [named if i == index else others for i in range(3)]


def test_an_answer_without_partial_failures_sends_every_row():
    body = {"results": [{"gclid": "G0"}, {"userIdentifiers": []}, {"gbraid": "B2"}], "jobId": "7"}
    assert google_ads.classify(answer(200, body, REQUEST_ID), ITEMS) == [Outcome(SENT, 200, None, "req-1", json.dumps(body))] * 3


def test_an_error_without_a_row_lands_on_the_rows_google_did_not_accept():
    body = {"results": [{"gclid": "G0"}, {}, {"gbraid": "B2"}], "partialFailureError": failure(ads_error("EXPIRED_EVENT"))}
    kinds = [o.kind for o in google_ads.classify(answer(200, body, REQUEST_ID), ITEMS)]
    assert kinds == [SENT, REJECTED, SENT]


QUOTA = ads_error("RESOURCE_EXHAUSTED", "Too many requests. Retry in 30 seconds.", category="quotaError",
                  details={"quotaErrorDetails": {"rateScope": "DEVELOPER", "retryDelay": "30s"}})


@pytest.mark.parametrize("status, body, headers, kind, error, retry_after", [
    # throttle
    (429, failure(QUOTA, status=429, state="RESOURCE_EXHAUSTED"), None, THROTTLE,
     "Google Ads error RESOURCE_EXHAUSTED: Too many requests. Retry in 30 seconds.", 30.0),
    (429, failure(status=429, state="RESOURCE_EXHAUSTED", message="Resource has been exhausted"),
     {"request-id": "req-1", "Retry-After": "7"}, THROTTLE, "Google Ads RESOURCE_EXHAUSTED: Resource has been exhausted", 7.0),
    (429, "Too Many Requests", {"Retry-After": "9"}, THROTTLE, "HTTP 429 with a body that is not Google Ads' JSON", 9.0),
    # retry
    (500, failure(ads_error("INTERNAL_ERROR", "An internal error has occurred.", category="internalError"),
                  status=500, state="INTERNAL"), None, RETRY, "Google Ads error INTERNAL_ERROR: An internal error has occurred.", None),
    (503, failure(status=503, state="UNAVAILABLE", message="The service is currently unavailable."), None, RETRY,
     "Google Ads UNAVAILABLE: The service is currently unavailable.", None),
    (502, "<html>Bad Gateway</html>", {}, RETRY, "HTTP 502 with a body that is not Google Ads' JSON", None),
    # setup: the 401 that survived one token refresh, the developer token, permissions, the endpoint
    (401, failure(status=401, state="UNAUTHENTICATED", message=UNAUTHENTICATED), None, SETUP,
     f"Google Ads UNAUTHENTICATED: {UNAUTHENTICATED}", None),
    (401, failure(ads_error("DEVELOPER_TOKEN_INVALID", "The developer token is not valid.", category="authenticationError"),
                  status=401, state="UNAUTHENTICATED"), None, SETUP,
     "Google Ads error DEVELOPER_TOKEN_INVALID: The developer token is not valid.", None),
    (403, failure(ads_error("USER_PERMISSION_DENIED", PERMISSION, category="authorizationError"),
                  status=403, state="PERMISSION_DENIED"), None, SETUP, f"Google Ads error USER_PERMISSION_DENIED: {PERMISSION}", None),
    (403, failure(ads_error("DEVELOPER_TOKEN_NOT_APPROVED", "Only approved for test accounts.", category="authorizationError"),
                  status=403, state="PERMISSION_DENIED"), None, SETUP,
     "Google Ads error DEVELOPER_TOKEN_NOT_APPROVED: Only approved for test accounts.", None),
    (403, failure(ads_error("CLOUD_PROJECT_NOT_APPROVED_FOR_PRODUCTION", "Apply for Explorer access.",
                            category="authorizationError"), status=403, state="PERMISSION_DENIED"), None, SETUP,
     "Google Ads error CLOUD_PROJECT_NOT_APPROVED_FOR_PRODUCTION: Apply for Explorer access.", None),
    (400, failure(ads_error("NO_CONVERSION_ACTION_FOUND", "The conversion action cannot be found."),
                  status=400, state="INVALID_ARGUMENT"), None, SETUP,
     "Google Ads error NO_CONVERSION_ACTION_FOUND: The conversion action cannot be found.", None),
    (404, "<html>The requested URL was not found on this server.</html>", {}, SETUP,
     "HTTP 404 with a body that is not Google Ads' JSON", None),
    # rejected as a whole: the dispatcher splits the batch to find the conversion Google could not read
    (400, failure(status=400, state="INVALID_ARGUMENT", message='Invalid JSON payload received. Unknown name "x"'), None,
     REJECTED, 'Google Ads INVALID_ARGUMENT: Invalid JSON payload received. Unknown name "x"', None),
    (400, failure(ads_error("TOO_MANY_CONVERSIONS_IN_REQUEST", "Upload fewer than 2001 events in a single request."),
                  status=400, state="INVALID_ARGUMENT"), None, REJECTED,
     "Google Ads error TOO_MANY_CONVERSIONS_IN_REQUEST: Upload fewer than 2001 events in a single request.", None),
])
def test_a_whole_request_error_is_classified_on_googles_status_and_codes(status, body, headers, kind, error, retry_after):
    outcomes = google_ads.classify(answer(status, body, REQUEST_ID if headers is None else headers), ITEMS)

    text = body if isinstance(body, str) else json.dumps(body)
    trace = "req-1" if headers is None else headers.get("request-id")
    expected = Outcome(kind, status, error, trace, text, retry_after, whole_batch=kind == REJECTED)
    assert outcomes == [expected] * 3


def test_a_whole_request_rejection_of_a_single_conversion_is_not_split_further():
    body = failure(status=400, state="INVALID_ARGUMENT", message="Invalid JSON payload received.")
    [outcome] = google_ads.classify(answer(400, body, REQUEST_ID), ITEMS[:1])
    assert (outcome.kind, outcome.whole_batch) == (REJECTED, False)


@pytest.mark.parametrize("status, body, headers, kind, error, retry_after", [
    (400, {"error": "invalid_grant", "error_description": REVOKED}, {}, SETUP,
     f"Google OAuth error invalid_grant: {REVOKED}", None),
    (401, {"error": "invalid_client", "error_description": "The OAuth client was not found."}, {}, SETUP,
     "Google OAuth error invalid_client: The OAuth client was not found.", None),
    (500, "<html>Server Error</html>", {}, RETRY, "Google OAuth token endpoint answered HTTP 500 without a token", None),
    (503, {"error": "temporarily_unavailable", "error_description": "Try again"}, {}, RETRY,
     "Google OAuth error temporarily_unavailable: Try again", None),
    (429, "Rate Limit Exceeded", {"Retry-After": "5"}, THROTTLE,
     "Google OAuth token endpoint answered HTTP 429 without a token", 5.0),
])
def test_a_token_endpoint_failure_is_classified_on_its_oauth_error(status, body, headers, kind, error, retry_after):
    text = body if isinstance(body, str) else json.dumps(body)
    assert google_ads.classify_token(answer(status, body, headers)) == Outcome(kind, status, error, None, text, retry_after)


# --- Through the dispatcher against the fake --------------------------------------------------

def test_a_purchase_reaches_google_ads_as_exactly_this_conversion(client, fake, dispatcher):
    now = track(client, {**SEED_EXAMPLE, "gclid": GCLID})

    assert dispatcher.drain_once(now=now) == {"shop/gads": 1}

    expected = {
        "conversionAction": PURCHASE_ACTION, "conversionDateTime": when("evt_unique123"),
        "conversionValue": 149.99, "currencyCode": "USD", "orderId": "ord_abc123", "gclid": GCLID,
        "userIdentifiers": [{"hashedEmail": sha("john.doe@example.com")}, {"hashedPhoneNumber": sha("+15551234567")}],
        "consent": GRANTED,
    }
    [token] = fake.token_requests
    assert token["form"] == {"grant_type": "refresh_token", "client_id": "gads-client",
                             "client_secret": "gads-secret", "refresh_token": "gads-refresh"}
    [upload] = fake.uploads
    assert (upload["method"], upload["path"]) == ("POST", "/v26/customers/1234567890:uploadClickConversions")
    assert upload["body"] == {"conversions": [expected], "partialFailure": True}
    headers = upload["headers"]
    assert (headers["Authorization"], headers["developer-token"], headers["login-customer-id"], headers["Content-Type"]) == \
        (f"Bearer {token['answer']['access_token']}", "dev-token", "9876543210", "application/json")
    assert fake.conversions == [expected]
    assert row("evt_unique123") == sent_row(upload)
    send = send_of("evt_unique123")
    assert send.payload == expected
    assert send.match_quality == {"score": 10.0, "identifiers": ["gclid", "hashedEmail", "hashedPhoneNumber"]}
    assert json.loads(send.response_excerpt) == upload["answer"]


def test_a_500_is_retried_after_the_backoff_and_delivered_on_the_retry(client, fake, dispatcher):
    fake.script("500")
    now = track(client, purchase("p1"))

    dispatcher.drain_once(now=now)

    first = fake.uploads[0]
    assert row("p1") == {"status": "pending", "reason": None, "attempts": 1, "retries": 1, "last_status": 500,
                         "last_error": "Google Ads error INTERNAL_ERROR: An internal error has occurred.",
                         "trace_id": first["request_id"]}
    assert now + 8 * SECOND <= send_of("p1").next_attempt_at <= now + 12 * SECOND

    dispatcher.drain_once(now=now + 12 * SECOND)

    assert received(fake) == ["ord-p1"]
    assert row("p1") == sent_row(fake.uploads[1], attempts=2, retries=1)


def test_a_throttled_upload_waits_googles_retry_delay_without_counting_a_retry(client, fake, dispatcher):
    fake.script("429")
    now = track(client, purchase("p1"))

    dispatcher.drain_once(now=now)

    assert row("p1") == {"status": "pending", "reason": None, "attempts": 1, "retries": 0, "last_status": 429,
                         "last_error": "Google Ads error RESOURCE_EXHAUSTED: Too many requests. Retry in 30 seconds.",
                         "trace_id": fake.uploads[0]["request_id"]}
    assert send_of("p1").next_attempt_at == now + 30 * SECOND
    assert dispatcher.drain_once(now=now + 29 * SECOND) == {"shop/gads": 0}

    dispatcher.drain_once(now=now + 30 * SECOND)

    assert received(fake) == ["ord-p1"]
    assert row("p1") == sent_row(fake.uploads[1], attempts=2, retries=0)


def test_a_401_refreshes_the_token_exactly_once_and_the_conversion_is_delivered(client, fake, dispatcher):
    fake.script("401")  # the access token dies between the token request and the upload
    now = track(client, purchase("p1"))

    assert dispatcher.drain_once(now=now) == {"shop/gads": 1}

    first, second = fake.token_requests
    assert [u["status"] for u in fake.uploads] == [401, 200]
    assert [u["headers"]["Authorization"] for u in fake.uploads] == [
        f"Bearer {first['answer']['access_token']}", f"Bearer {second['answer']['access_token']}"]
    assert received(fake) == ["ord-p1"]
    assert row("p1") == sent_row(fake.uploads[1])
    assert DestinationState.select().count() == 0


def test_a_401_that_survives_the_refresh_pauses_the_destination(client, fake, dispatcher):
    refused = {"error": {"code": 401, "message": UNAUTHENTICATED, "status": "UNAUTHENTICATED"}}
    fake.script(("status", 401, refused), ("status", 401, refused))
    now = track(client, purchase("p1"))

    dispatcher.drain_once(now=now)

    assert (len(fake.token_requests), len(fake.uploads)) == (2, 2)  # one refresh, one more try, no loop
    message = f"Google Ads UNAUTHENTICATED: {UNAUTHENTICATED}"
    assert DestinationState.get().paused_reason == message
    assert row("p1") == {"status": "pending", "reason": None, "attempts": 0, "retries": 0, "last_status": 401,
                         "last_error": message, "trace_id": fake.uploads[1]["request_id"]}


def test_one_token_serves_two_drains(client, fake, dispatcher):
    dispatcher.drain_once(now=track(client, purchase("p1")))
    dispatcher.drain_once(now=track(client, purchase("p2")))

    assert len(fake.token_requests) == 1
    assert [u["status"] for u in fake.uploads] == [200, 200]
    assert received(fake) == ["ord-p1", "ord-p2"]


def test_the_token_is_refreshed_five_minutes_before_it_expires(client, fake, live):
    moment = [1000.0]
    dispatcher = Dispatcher(live, monotonic=lambda: moment[0])
    dispatcher.drain_once(now=track(client, purchase("p1")))  # expires_in 3599 s: fresh until 1000 + 3299

    moment[0] = 1000 + 3299 - 1
    dispatcher.drain_once(now=track(client, purchase("p2")))
    assert len(fake.token_requests) == 1

    moment[0] = 1000 + 3299
    dispatcher.drain_once(now=track(client, purchase("p3")))
    dispatcher.close()
    assert len(fake.token_requests) == 2
    assert received(fake) == ["ord-p1", "ord-p2", "ord-p3"]


def test_each_dispatcher_keeps_its_own_token(client, fake, live, dispatcher):
    dispatcher.drain_once(now=track(client, purchase("p1")))
    other = Dispatcher(live)
    other.drain_once(now=track(client, purchase("p2")))
    other.close()

    assert len(fake.token_requests) == 2
    assert received(fake) == ["ord-p1", "ord-p2"]


def test_a_revoked_refresh_token_pauses_with_googles_message_until_the_config_changes(client, fake, raw, live, dispatcher):
    dispatcher.drain_once(now=track(client, purchase("p1")))
    fake.revoke()  # the user removed the app's access; its access tokens die with it
    now = track(client, purchase("p2"))

    dispatcher.drain_once(now=now)

    message = f"Google OAuth error invalid_grant: {REVOKED}"
    assert DestinationState.get().paused_reason == message
    assert row("p2") == {"status": "pending", "reason": None, "attempts": 0, "retries": 0, "last_status": 400,
                         "last_error": message, "trace_id": None}
    assert [u["status"] for u in fake.uploads] == [200, 401]
    assert dispatcher.drain_once(now=now + timedelta(hours=1)) == {"shop/gads": 0}

    fake.grant("gads-refresh-2")
    live.config = build_config(with_destinations(raw, gads_destination(fake, refresh_token="gads-refresh-2")))
    assert dispatcher.drain_once(now=now + timedelta(hours=1)) == {"shop/gads": 1}

    assert fake.token_requests[-1]["form"]["refresh_token"] == "gads-refresh-2"
    assert received(fake) == ["ord-p1", "ord-p2"]
    assert row("p2") == sent_row(fake.uploads[-1])
    assert DestinationState.select().count() == 0


@pytest.mark.parametrize("gads_settings", [{"login_customer_id": None}])
def test_a_missing_login_customer_id_pauses_the_destination_until_it_is_configured(client, fake, raw, live, dispatcher):
    now = track(client, purchase("p1"))

    dispatcher.drain_once(now=now)

    message = f"Google Ads error USER_PERMISSION_DENIED: {PERMISSION}"
    assert DestinationState.get().paused_reason == message
    assert row("p1") == {"status": "pending", "reason": None, "attempts": 0, "retries": 0, "last_status": 403,
                         "last_error": message, "trace_id": fake.uploads[0]["request_id"]}
    assert "login-customer-id" not in fake.uploads[0]["headers"]
    assert dispatcher.drain_once(now=now + SECOND) == {"shop/gads": 0}

    live.config = build_config(with_destinations(raw, gads_destination(fake)))
    assert dispatcher.drain_once(now=now + SECOND) == {"shop/gads": 1}

    assert fake.uploads[-1]["headers"]["login-customer-id"] == "9876543210"
    assert row("p1") == sent_row(fake.uploads[-1])


UNKNOWN_ACTION = "customers/1234567890/conversionActions/99"


@pytest.mark.parametrize("gads_settings", [{"conversion_actions": {"Purchase": PURCHASE_ACTION, "Lead": UNKNOWN_ACTION}}])
def test_an_unknown_conversion_action_pauses_the_destination_and_its_neighbour_still_goes(client, fake, raw, live, dispatcher):
    now = track(client, purchase("p1"), lead("l1", gclid="G-lead-1"))

    dispatcher.drain_once(now=now)

    message = f"Google Ads error NO_CONVERSION_ACTION_FOUND: {MESSAGES['NO_CONVERSION_ACTION_FOUND']}"
    assert DestinationState.get().paused_reason == message
    assert row("p1") == sent_row(fake.uploads[0])
    assert (row("l1")["status"], row("l1")["attempts"], row("l1")["last_error"]) == ("pending", 0, message)

    live.config = build_config(with_destinations(raw, gads_destination(fake)))
    dispatcher.drain_once(now=now + SECOND)

    assert received(fake) == ["ord-p1", "l1"]
    assert row("l1") == sent_row(fake.uploads[-1])


def test_a_partial_failure_lands_on_its_row_and_the_others_are_sent_in_the_same_request(client, fake, dispatcher):
    fake.script(("row_error", "gclid-3", "UNPARSEABLE_GCLID"))
    ids = [f"p{i}" for i in range(5)]
    now = track(client, *(purchase(i, gclid=f"gclid-{i[1]}") for i in ids))

    assert dispatcher.drain_once(now=now) == {"shop/gads": 5}

    [upload] = fake.uploads  # no split: Google answers per row
    assert [c["gclid"] for c in upload["body"]["conversions"]] == [f"gclid-{i}" for i in range(5)]
    assert received(fake) == ["ord-p0", "ord-p1", "ord-p2", "ord-p4"]
    error = "Google Ads error UNPARSEABLE_GCLID: The imported gclid could not be decoded."
    assert row("p3") == {"status": "failed", "reason": error, "attempts": 1, "retries": 0, "last_status": 200,
                         "last_error": error, "trace_id": upload["request_id"]}
    assert [row(i) for i in ids if i != "p3"] == [sent_row(upload)] * 4


def test_a_gclid_google_cannot_decode_fails_that_event_alone(client, fake, dispatcher):
    now = track(client, purchase("p1"), {**SEED_EXAMPLE, "order_id": "seed"}, purchase("p2"))  # the seed's "CjwKCAjw..."

    dispatcher.drain_once(now=now)

    assert received(fake) == ["ord-p1", "ord-p2"]
    assert (row("evt_unique123")["status"], row("evt_unique123")["reason"]) == \
        ("failed", "Google Ads error UNPARSEABLE_GCLID: The imported gclid could not be decoded.")


def test_a_repeated_order_id_is_counted_as_sent(client, fake, dispatcher):
    dispatcher.drain_once(now=track(client, purchase("p1", order_id="ord-1")))
    now = track(client, purchase("p2", order_id="ord-1", gclid="another-click"))

    dispatcher.drain_once(now=now)

    answer = fake.uploads[1]["answer"]
    assert answer["results"] == [{}]
    assert answer["partialFailureError"]["details"][0]["errors"][0]["errorCode"] == \
        {"conversionUploadError": "DUPLICATE_ORDER_ID"}
    assert received(fake) == ["ord-1"]
    assert row("p2") == sent_row(fake.uploads[1])


def test_the_same_click_twice_in_one_request_is_counted_as_sent(client, fake, dispatcher):
    moment = (utcnow() - timedelta(hours=1)).isoformat()
    now = track(client, purchase("p1", gclid=GCLID, occurred_at=moment), purchase("p2", gclid=GCLID, occurred_at=moment))

    dispatcher.drain_once(now=now)

    [upload] = fake.uploads
    assert upload["answer"]["partialFailureError"]["details"][0]["errors"][0]["errorCode"] == \
        {"conversionUploadError": "DUPLICATE_CLICK_CONVERSION_IN_REQUEST"}
    assert received(fake) == ["ord-p1"]
    assert [row("p1"), row("p2")] == [sent_row(upload)] * 2


@pytest.mark.parametrize("code", ["ORDER_ID_ALREADY_IN_USE", "CLICK_CONVERSION_ALREADY_EXISTS"])
def test_every_duplicate_code_counts_as_sent(client, fake, dispatcher, code):
    fake.script(("row_error", 0, code))
    now = track(client, purchase("p1"))

    dispatcher.drain_once(now=now)

    assert row("p1") == sent_row(fake.uploads[0])


def test_a_click_under_six_hours_old_is_retried(client, fake, dispatcher):
    fake.script(("row_error", 0, "TOO_RECENT_EVENT"))
    now = track(client, purchase("p1"))

    dispatcher.drain_once(now=now)

    error = f"Google Ads error TOO_RECENT_EVENT: {MESSAGES['TOO_RECENT_EVENT']}"
    assert row("p1") == {"status": "pending", "reason": None, "attempts": 1, "retries": 1, "last_status": 200,
                         "last_error": error, "trace_id": fake.uploads[0]["request_id"]}
    waited = Send.get().next_attempt_at - now
    assert timedelta(hours=6) <= waited <= timedelta(hours=6, seconds=1)  # Google's six hours, not our 10 s backoff


def test_a_lead_google_cannot_match_to_a_click_is_delivered_and_a_gclid_it_cannot_find_fails(client, fake, dispatcher):
    fake.script(("row_error", 0, "CLICK_NOT_FOUND"))
    dispatcher.drain_once(now=track(client, lead("l1", email="lead.one@example.org")))
    fake.script(("row_error", 0, "CLICK_NOT_FOUND"))
    dispatcher.drain_once(now=track(client, lead("l2", gclid="G-unknown")))

    assert row("l1") == sent_row(fake.uploads[0])
    assert (row("l2")["status"], row("l2")["reason"]) == ("failed", f"Google Ads error CLICK_NOT_FOUND: {MESSAGES['CLICK_NOT_FOUND']}")


def test_an_event_past_the_90_day_window_fails_without_being_sent(client, fake, dispatcher):
    old = (utcnow() - timedelta(days=91)).isoformat()
    now = track(client, purchase("old", occurred_at=old), purchase("fresh"))

    assert dispatcher.drain_once(now=now) == {"shop/gads": 2}

    assert row("old") == {"status": "failed", "reason": "older than Google Ads's 90-day window: not sent", "attempts": 0,
                          "retries": 0, "last_status": None, "last_error": None, "trace_id": None}
    assert [c["orderId"] for u in fake.uploads for c in u["body"]["conversions"]] == ["ord-fresh"]


@pytest.mark.parametrize("gads_settings", [{"mode": "test"}])
def test_a_test_destination_only_validates_its_uploads(client, fake, dispatcher):
    now = track(client, purchase("p1"))

    dispatcher.drain_once(now=now)

    [upload] = fake.uploads
    assert upload["body"] == {"conversions": [send_of("p1").payload], "partialFailure": True, "validateOnly": True}
    assert (fake.validated, fake.conversions) == ([send_of("p1").payload], [])
    assert upload["answer"] == {}
    assert row("p1") == sent_row(upload)


@pytest.mark.parametrize("gads_settings", [{"mode": "dry"}])
def test_a_dry_destination_records_the_payload_and_asks_google_for_nothing(client, fake, dispatcher):
    now = track(client, lead("l1", email="Jane.Roe@GoogleMail.com"))

    assert dispatcher.drain_once(now=now) == {"shop/gads": 1}

    assert fake.requests == []  # not even a token
    assert row("l1") == {"status": "skipped", "reason": "dry mode", "attempts": 0, "retries": 0, "last_status": None,
                         "last_error": None, "trace_id": None}
    send = send_of("l1")
    assert send.payload == {"conversionAction": LEAD_ACTION, "conversionDateTime": when("l1"), "orderId": "l1",
                            "userIdentifiers": [{"hashedEmail": sha("janeroe@googlemail.com")}], "consent": GRANTED}
    assert send.match_quality == {"score": 3.0, "identifiers": ["hashedEmail"]}


def test_events_google_cannot_take_are_skipped_with_their_reasons(client, fake, dispatcher):
    now = track(client, {"api_key": "key_demo_123", "event": "search", "event_id": "s1", "gclid": GCLID},
                lead("l1", distinct_id="user-1"), lead("l2", email="buyer.two@example.org"))

    dispatcher.drain_once(now=now)

    assert (row("s1")["status"], row("s1")["reason"]) == ("skipped", "no conversion action configured for Search")
    assert (row("l1")["status"], row("l1")["reason"]) == ("skipped", NO_IDENTIFIER)
    assert [c["orderId"] for c in fake.conversions] == ["l2"]


@pytest.mark.parametrize("dispatch_settings", [{"timeout_seconds": 0.1}])  # the hang is cut short soon
def test_a_hung_upload_is_retried(client, fake, dispatcher):
    fake.script(("hang", 5))
    now = track(client, purchase("p1"))

    dispatcher.drain_once(now=now)

    assert (row("p1")["status"], row("p1")["retries"], row("p1")["last_error"]) == ("pending", 1, "no answer within 0.1 s")


# --- The fake checks like Google ------------------------------------------------------------

def token(fake: FakeGoogleAds, **form) -> requests.Response:
    fields = {"grant_type": "refresh_token", "client_id": "gads-client", "client_secret": "gads-secret",
              "refresh_token": "gads-refresh", **form}
    return requests.post(fake.token_url, data=fields, timeout=5)


def upload(fake: FakeGoogleAds, conversions: list, access: str | None = None, headers: dict | None = None,
           timeout: float = 5, **fields) -> requests.Response:
    access = access or token(fake).json()["access_token"]
    base = {"Authorization": f"Bearer {access}", "developer-token": "dev-token", "login-customer-id": "9876543210"}
    body = {"conversions": conversions, "partialFailure": True, **fields}
    return requests.post(f"{fake.url}/v26/customers/1234567890:uploadClickConversions", json=body,
                         headers={**base, **(headers or {})}, timeout=timeout)


def conversion(**fields) -> dict:
    base = {"conversionAction": PURCHASE_ACTION, "conversionDateTime": "2026-03-01 12:00:00+00:00", "gclid": "G1"}
    return {key: value for key, value in {**base, **fields}.items() if value is not None}


def row_code(response: requests.Response) -> str:
    [error] = response.json()["partialFailureError"]["details"][0]["errors"]
    return next(iter(error["errorCode"].values()))


def test_the_fake_token_endpoint_checks_the_client_and_the_refresh_token(fake):
    good = token(fake)
    assert (good.status_code, good.json()["expires_in"], good.json()["token_type"]) == (200, 3599, "Bearer")
    assert (token(fake, client_secret="wrong").status_code, token(fake, client_secret="wrong").json()["error"]) == \
        (401, "invalid_client")
    assert token(fake, refresh_token="other").json() == {"error": "invalid_grant", "error_description": REVOKED}
    fake.revoke()
    assert token(fake).json()["error"] == "invalid_grant"


def test_the_fake_refuses_a_missing_or_expired_access_token(fake):
    access = token(fake).json()["access_token"]
    assert upload(fake, [conversion()], headers={"Authorization": ""}).json()["error"]["status"] == "UNAUTHENTICATED"
    fake.clock = lambda: 4e9  # long after the token's expires_in
    expired = upload(fake, [conversion()], access=access)
    assert (expired.status_code, expired.json()["error"]["message"]) == (401, UNAUTHENTICATED)


@pytest.mark.parametrize("headers, status, code", [
    ({"developer-token": "wrong"}, 401, {"authenticationError": "DEVELOPER_TOKEN_INVALID"}),
    ({"login-customer-id": "1111111111"}, 403, {"authorizationError": "USER_PERMISSION_DENIED"}),
])
def test_the_fake_checks_the_developer_token_and_login_customer_id_it_was_told_to(fake, headers, status, code):
    response = upload(fake, [conversion()], headers=headers)
    assert (response.status_code, response.json()["error"]["details"][0]["errors"][0]["errorCode"]) == (status, code)


def test_the_fake_needs_partial_failure_and_at_most_2000_conversions(fake):
    assert upload(fake, [conversion()], partialFailure=False).status_code == 400
    too_many = upload(fake, [conversion(gclid=f"G{i}") for i in range(2001)])
    assert too_many.json()["error"]["details"][0]["errors"][0]["errorCode"] == \
        {"conversionUploadError": "TOO_MANY_CONVERSIONS_IN_REQUEST"}


@pytest.mark.parametrize("fields, code", [
    ({"gbraid": "B1", "wbraid": "W1", "gclid": None}, "GBRAID_WBRAID_BOTH_SET"),
    ({"gbraid": "B1"}, "VALUE_MUST_BE_UNSET"),  # a gclid and a braid
    ({"gclid": None, "wbraid": "W1", "userIdentifiers": [{"hashedEmail": "a" * 64}]}, "VALUE_MUST_BE_UNSET"),
    ({"gclid": None}, "REQUIRED"),
    ({"gclid": "Cj0...x"}, "UNPARSEABLE_GCLID"),
    ({"conversionDateTime": "2026-03-01 12:00:00"}, "INVALID_STRING_DATE_TIME_SECONDS_WITH_OFFSET"),
    ({"conversionDateTime": "2026-03-01T12:00:00Z"}, "INVALID_STRING_DATE_TIME_SECONDS_WITH_OFFSET"),
    ({"conversionAction": "customers/1234567890/conversionActions/99"}, "NO_CONVERSION_ACTION_FOUND"),
    ({"userIdentifiers": [{"hashedEmail": "jane@example.org"}]}, "INVALID_USER_IDENTIFIER"),
    ({"userIdentifiers": [{"hashedPhoneNumber": "A" * 64}]}, "INVALID_USER_IDENTIFIER"),
    ({"userIdentifiers": [{"thirdPartyUserId": "x"}]}, "UNSUPPORTED_USER_IDENTIFIER"),
    ({"userIdentifiers": [{"hashedEmail": "a" * 64}] * 6}, "TOO_MANY"),
])
def test_the_fake_fails_a_bad_conversion_on_its_own_row(fake, fields, code):
    response = upload(fake, [conversion(gclid="G0"), conversion(**fields)])

    assert response.status_code == 200
    assert response.json()["results"][0] != {} and response.json()["results"][1] == {}
    [error] = response.json()["partialFailureError"]["details"][0]["errors"]
    assert (next(iter(error["errorCode"].values())), error["location"]["fieldPathElements"][0]) == \
        (code, {"fieldName": "conversions", "index": 1})


def test_the_fake_refuses_two_identifiers_in_one_user_identifier_like_googles_json_parser(fake):
    response = upload(fake, [conversion(userIdentifiers=[{"hashedEmail": "a" * 64, "hashedPhoneNumber": "b" * 64}])])
    assert (response.status_code, response.json()["error"]["status"]) == (400, "INVALID_ARGUMENT")


def test_a_hang_longer_than_the_client_timeout_times_out_the_client(fake):
    fake.script(("hang", 2))
    with pytest.raises(requests.Timeout):
        upload(fake, [conversion()], access="x", timeout=0.2)
