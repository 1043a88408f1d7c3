"""Personal data recognised by its value, whatever its key is called (docs/privacy.md): properties at any depth,
URL parameters and path segments, user ids."""
from __future__ import annotations

import hashlib
import json

import pytest

from dialects.adtarget.funnel import Visit
from dialects.common import url_without_pii
from ingest import personal
from models import Event
from tests.conftest import BROWSER, RAW_PII

# Raw values only this file sends, under names that say nothing: the session-end scan looks for them everywhere.
CUSTOMER_EMAIL = "jane.roe@example.com"
USER_EMAIL = "user.email@example.org"
CONTACT_EMAIL = "contact.person@example.net"
BILLING_PHONE = "+1 415 555 2671"
URL_EMAIL = "in.url@example.com"
ID_EMAIL = "Id.Person@Example.com"
VISIT_EMAIL = "visitor.link@example.com"
assert {CUSTOMER_EMAIL, USER_EMAIL, CONTACT_EMAIL, BILLING_PHONE, URL_EMAIL, ID_EMAIL, VISIT_EMAIL} <= set(RAW_PII)
PURCHASE = {"api_key": "key_demo_123", "event": "purchase", "value": 5, "fbp": "fb.1.1596403881668.1116446470",
            "source_url": "https://shop.example/checkout"}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def track(client, body: dict, query: str = ""):
    response = client.post(f"/v1/track{query}", data=json.dumps(body), content_type="application/json", headers=BROWSER)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@pytest.mark.parametrize("value, kind", [
    ("jane@example.com", personal.EMAIL),
    ("  Jane.Roe+shop@Example.CO.UK ", personal.EMAIL),
    ("write to jane@example.com please", personal.EMAIL),
    ("jane%40example.com", personal.EMAIL),
    ("+1 415 555 2671", personal.PHONE),
    ("+14155552671", personal.PHONE),
    ("+1 555 123 4567", personal.PHONE),  # a test range: possible, so it names someone in a test
    ("0044 20 7946 0958", personal.PHONE),
    ("(415) 555-2671", personal.PHONE),  # national, valid for the site's country (US)
    ("415-555-2671", personal.PHONE),
    ("415.555.2671", personal.PHONE),
    ("4155552671", None),  # bare digits: an id as much as a phone
    ("12345", None),
    ("94107", None),
    ("94107-1234", None),  # a US ZIP+4
    ("1234.56", None),
    ("1,234.56", None),
    ("2024-01-15", None),
    ("2024-01-15 10:30", None),
    ("ORD-2024-000123", None),
    ("+5", None),
    ("+100.00", None),
    ("12-34-56", None),
    ("user@localhost", None),
    ("@handle", None),
    ("", None),
    (12345678901, None),
    (None, None),
])
def test_a_value_is_an_email_or_phone_only_when_written_like_one(value, kind):
    assert personal.kind(value, "us") == kind


def test_custom_properties_whose_value_is_personal_data_are_dropped_whatever_their_name(client):
    nested = {"billing": {"contact_email": CONTACT_EMAIL, "tier": "gold"}, "notes": ["gift", BILLING_PHONE]}
    answer = track(client, {**PURCHASE, "customer_email": CUSTOMER_EMAIL, "userEmail": USER_EMAIL,
                            "billing_phone": BILLING_PHONE, "zip_code": "94107", "order_ref": "ORD-2024-000123",
                            **nested}, "?dry_run=1")
    notes = ["customer_email: dropped, its value is an email address",
             "userEmail: dropped, its value is an email address",
             "billing_phone: dropped, its value is a phone number",
             "billing.contact_email: dropped, its value is an email address",
             "notes[1]: dropped, its value is a phone number"]
    meta = answer["destinations"][0]["payload"]
    assert (answer["notes"], meta["custom_data"]) == (notes, {
        "value": 5.0, "currency": "USD", "zip_code": "94107", "order_ref": "ORD-2024-000123",
        "billing": {"tier": "gold"}, "notes": ["gift"]})
    track(client, {**PURCHASE, "customer_email": CUSTOMER_EMAIL, **nested})
    row = Event.get()
    assert (row.properties, row.notes) == ({"billing": {"tier": "gold"}, "notes": ["gift"]}, [
        "customer_email: dropped, its value is an email address", *notes[3:]])


def test_a_source_url_loses_the_parameters_and_path_segments_that_hold_an_email_or_phone(client):
    url = (f"https://shop.example/account/{URL_EMAIL}/orders?e={URL_EMAIL.replace('@', '%40')}"
           "&tel=%2B14155552671&utm_source=mail&fbclid=AbCd")
    track(client, {**PURCHASE, "source_url": url})
    row = Event.get()
    assert (row.page_url, row.notes) == ("https://shop.example/account/redacted/orders?utm_source=mail&fbclid=AbCd", [
        "source_url: query parameter 'e' dropped, its value is an email address",
        "source_url: query parameter 'tel' dropped, its value is a phone number",
        "source_url: a path segment that is an email address or phone number redacted"])


def test_a_referrer_and_a_url_property_lose_their_personal_parameters_too(client):
    headers = {**BROWSER, "Referer": f"https://mail.example/open?to={URL_EMAIL}"}
    client.post("/v1/track", data=json.dumps({**PURCHASE, "landing": f"https://shop.example/?who={URL_EMAIL}&a=1"}),
                content_type="application/json", headers=headers)
    row = Event.get()
    assert (row.referrer, row.properties, row.notes) == ("https://mail.example/open", {
        "landing": "https://shop.example/?a=1"}, [
        "landing: query parameter 'who' dropped, its value is an email address",
        "Referer: query parameter 'to' dropped, its value is an email address"])


def test_a_url_without_personal_data_is_kept_exactly_as_written():
    url = "https://shop.example/p/94107?q=a%20b&id=12345#top"
    notes: list[str] = []
    assert (url_without_pii(url, "source_url", notes, "us"), notes) == (url, [])


def test_a_user_name_in_a_url_is_dropped():
    notes: list[str] = []
    assert (url_without_pii(f"https://{URL_EMAIL}:secret@shop.example/", "href", notes), notes) == (
        "https://shop.example/", ["href: user name dropped from the URL"])


def test_a_user_id_that_is_an_email_is_hashed_like_the_email_and_meta_gets_it_hashed(client):
    answer = track(client, {**PURCHASE, "distinct_id": ID_EMAIL}, "?dry_run=1")
    digest = sha(ID_EMAIL.lower())
    assert answer["notes"] == [
        "distinct_id: hashed, its value is an email address; a destination that takes only a plain user id gets none"]
    assert answer["destinations"][0]["payload"]["user_data"]["external_id"] == [digest]
    track(client, {**PURCHASE, "distinct_id": ID_EMAIL})
    assert Event.get().external_id == digest


def test_a_plain_user_id_is_kept_in_clear(client):
    track(client, {**PURCHASE, "distinct_id": "user-42"})
    assert (Event.get().external_id, Event.get().notes) == ("user-42", [])


def test_ga4_gets_no_user_id_when_the_user_id_was_an_email_or_phone(raw_config, request):
    raw_config["sites"][0]["destinations"] = [
        {"name": "ga4", "platform": "ga4", "mode": "dry", "measurement_id": "G-TEST123", "api_secret": "s"}]
    client = request.getfixturevalue("client")
    hashed = track(client, {**PURCHASE, "distinct_id": BILLING_PHONE}, "?dry_run=1")
    plain = track(client, {**PURCHASE, "distinct_id": "user-42"}, "?dry_run=1")
    assert hashed["notes"] == [
        "distinct_id: hashed, its value is a phone number; a destination that takes only a plain user id gets none"]
    assert ("user_id" in hashed["destinations"][0]["payload"], plain["destinations"][0]["payload"]["user_id"]) == (
        False, "user-42")


def test_a_funnel_visit_keeps_neither_the_email_in_its_link_nor_a_user_id_that_is_one(client):
    response = client.post("/api/v1/events/visit", content_type="application/json",
                           headers={"Authorization": "Bearer atk_live_demo", "User-Agent": "server/1.0"},
                           data=json.dumps({"href": f"https://shop.example/vip?fbclid=AbCd&email={VISIT_EMAIL}",
                                            "clientIp": "203.0.113.42", "userAgent": BROWSER["User-Agent"],
                                            "externalUserId": VISIT_EMAIL}))
    assert response.status_code == 200, response.get_json()
    visit = Visit.get()
    assert (visit.href, visit.external_user_id, sorted(visit.click_ids)) == (
        "https://shop.example/vip?fbclid=AbCd", sha(VISIT_EMAIL.lower()), ["fbc"])
