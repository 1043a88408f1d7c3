"""Octeth `POST /api/v1/event` and `POST /api/v1/website_events.properties` (docs/dialects/octeth.md)."""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pytest

from dialects.octeth import store as octeth_store
from ingest.canonical import utcnow
from delivery.dispatcher import Dispatcher
from ingest.inspector import Refusal
from models import Event, Send
from dialects.octeth.store import OctethProperty, OctethSubscriber
from tests.conftest import BROWSER, RAW_PII, build_config, meta_destination, with_destinations
from tests.helpers import sha

EVENT_URL = "/api/v1/event"
PROPERTIES_URL = "/api/v1/website_events.properties"
KEY = "key_demo_123"
UA = BROWSER["User-Agent"]
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
NOW = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
SENT_AT = "2026-03-01T12:00:00.123Z"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
PASSWORD = "s3cret-admin"

# The seed's examples as printed, `//` comment lines included; only the key placeholder is filled in.
SEED_TRACK = """// Track "test" event
{
// "SessionID": "{{sessionid}}"
"APIKey": "key_demo_123",
"ListID": 94,
"id": "user-id-2006",
"event": "test",
"email": "2006@test.com",
"properties": {
"number-of-subscribers-imported": 100
}
}"""
SEED_PROPERTIES = """{
// "SessionID":"{{sessionid}}",
"APIKey": "key_demo_123",
"ListID": 3
}"""
EMAIL = "2006@test.com"
CONVERSION = {
    "APIKey": KEY, "ListID": 94, "ID": "user-id-2006", "Event": "conversion", "Email": EMAIL,
    "Properties": {"conversion-id": "my-order-234", "conversion-name": "purchase", "conversion-value": 290.50},
}
MINIMAL = {"APIKey": KEY, "ListID": 94, "event": "pageView", "email": EMAIL}
# Raw personal values only this file sends; the session-end scan looks for them in every database.
PERSON = {"firstName": "Ada", "lastName": "Lovelace", "phone": "+1 415 555 0199"}
OTHER_EMAIL = "ada.lovelace@example.org"
RAW_PII.extend([EMAIL, OTHER_EMAIL, "ADA.Lovelace@Example.org", *PERSON.values(), "Ada Lovelace"])


def post(client, url: str, body, query: str = "", headers: dict | None = None, **kwargs):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    kwargs.setdefault("content_type", "application/json")
    return client.post(f"{url}{query}", data=data, headers=BROWSER if headers is None else headers, **kwargs)


def track(client, body, query: str = "", headers: dict | None = None, **kwargs):
    return post(client, EVENT_URL, body, query, headers, **kwargs)


def catalogue(client, body):
    return post(client, PROPERTIES_URL, body)


def stored() -> dict[str, int]:
    """Rows of every table an event request writes."""
    return {"events": Event.select().count(), "sends": Send.select().count(),
            "subscribers": OctethSubscriber.select().count(), "properties": OctethProperty.select().count()}


NOTHING = {"events": 0, "sends": 0, "subscribers": 0, "properties": 0}


def sends() -> list[tuple]:
    return [(s.destination, s.platform, s.status, s.reason) for s in Send.select().order_by(Send.id)]


def errors(*problems: tuple[int, str]) -> dict:
    return {"Errors": [{"Code": code, "Message": message} for code, message in problems]}


def ok(event_uuid: str, external_id: str | None = "user-id-2006", identified: bool = True) -> dict:
    return {"status": "success", "uuid": event_uuid, "external_id": external_id, "identify_event_sent": identified}


def chrome(**more) -> dict:
    """The `$` properties the server adds for the test browser, without a Referer."""
    return {"$browser": "Chrome", "$browser_version": "126.0", "$os": "Mac OS X", "$device": "Mac",
            "$device_type": "Desktop", "$sent_at": SENT_AT, "$list_id": "94", **more}


@pytest.fixture
def frozen(monkeypatch):
    monkeypatch.setattr("routes.octeth.utcnow", lambda: NOW)


@pytest.fixture
def make_client(request):
    """The test client built from `raw_config` as the test has edited it so far."""
    return lambda: request.getfixturevalue("client")


def add_list(raw: dict, list_id, name: str = "Another list") -> None:
    raw["sites"][0]["lists"].append({"id": list_id, "name": name})


def add_blog_site(raw: dict, lists=({"id": 7, "name": "Blog readers"},)) -> None:
    raw["sites"].append({
        "id": "blog", "name": "Blog", "keys": ["key_blog_456"], "default_country": "US", "default_currency": "EUR",
        "allowed_origins": ["https://blog.example"], "lists": list(lists),
        "destinations": [{"name": "meta", "platform": "meta", "mode": "dry", "pixel_id": "456"}],
    })


# --- the seed's examples ------------------------------------------------------------------------

def test_the_seeds_track_example_is_stored_once_in_canonical_form(client, frozen):
    response = track(client, SEED_TRACK)

    body = response.get_json()
    assert response.status_code == 200 and UUID_RE.fullmatch(body["uuid"])
    assert body == ok(body["uuid"])
    row = Event.get()
    assert row.__data__ == {
        "id": row.id, "site": "shop", "dialect": "octeth", "channel": "web",
        "event_name": "test", "standard_name": "Custom", "event_id": body["uuid"],
        "occurred_at": NOW, "received_at": NOW,
        "external_id": "user-id-2006", "anonymous_id": None,
        "identity": {"em": sha(EMAIL), "em_google": sha(EMAIL)},
        "location": {"country": "us"}, "click_ids": {},
        "ip": "203.0.113.7", "user_agent": UA, "page_url": None, "referrer": None, "language": None,
        "value": None, "currency": None, "order_id": None, "items": [],
        "consent": True, "consent_categories": None,
        "properties": chrome(**{"$id": "user-id-2006", "$uuid": body["uuid"], "number-of-subscribers-imported": 100}),
        "notes": [], "is_bot": False,
    }
    assert sends() == [("shop/meta", "meta", "pending", None)]
    assert [(s.site, s.list_id, s.email_hash, s.external_id, s.first_event_id) for s in OctethSubscriber.select()] == [
        ("shop", "94", sha(EMAIL), "user-id-2006", body["uuid"])]
    assert EMAIL not in json.dumps(row.__data__, default=str)


def test_the_seeds_properties_example_answers_the_catalogue_in_the_seed_shape(raw_config, make_client):
    add_list(raw_config, 3)
    client = make_client()
    tracker = {"$lib": "octeth-js", "$lib_version": "1.4.0", "$screen_width": 1440, "$screen_height": 900,
               "$current_url": "https://shop.example/welcome"}
    for body in (
        {"APIKey": KEY, "ListID": 3, "ID": "user-id-2006", "Event": "test", "Email": EMAIL,
         "Properties": {"number-of-subscribers-imported": 100}},
        {"APIKey": KEY, "ListID": "3", "Event": "pageView", "Email": EMAIL, "Properties": {**tracker, "url": "https://shop.example/"}},
        {"APIKey": KEY, "ListID": 3, "Event": "identify", "Email": EMAIL,
         "Properties": {**tracker, "emailAddress": EMAIL, **PERSON}},
        {"APIKey": KEY, "ListID": 94, "Event": "elsewhere", "Email": EMAIL},  # another list: not in list 3's catalogue
    ):
        assert track(client, body, headers={**BROWSER, "Accept-Language": "en-GB,en;q=0.9"}).status_code == 200

    response = catalogue(client, SEED_PROPERTIES)

    ua = ["$browser", "$browser_language", "$browser_version", "$device", "$device_type", "$os"]
    page = ["$current_url", "$host", "$pathname"]
    common = sorted([*ua, *page, "$lib", "$lib_version", "$list_id", "$screen_height", "$screen_width", "$sent_at", "$uuid"])
    assert (response.status_code, response.get_json()) == (200, {
        "ListID": "3",
        "Properties": {
            "identify": sorted([*common, "emailAddress", "firstName", "lastName", "phone"]),
            "pageView": sorted([*common, "url"]),
            "test": ["$browser", "$browser_language", "$browser_version", "$device", "$device_type", "$id", "$list_id",
                     "$os", "$sent_at", "$uuid", "number-of-subscribers-imported"],
        },
    })


def test_a_list_without_events_has_an_empty_catalogue(client):
    response = catalogue(client, {"APIKey": KEY, "ListID": 94})
    assert (response.status_code, response.get_json()) == (200, {"ListID": "94", "Properties": {}})


# --- conversions: dispatch and dedup ------------------------------------------------------------

@pytest.fixture
def live_meta(raw_config, fake_meta, make_client):
    """A client whose site's only destination is a live Meta at the fake, and a dispatcher for it."""
    raw = with_destinations(raw_config, meta_destination(fake_meta.url))
    raw_config.clear()
    raw_config.update(raw)
    dispatcher = Dispatcher(lambda: build_config(raw))
    yield make_client(), dispatcher
    dispatcher.close()


def test_a_conversion_reaches_meta_as_a_purchase_with_its_value_and_order_id(live_meta, fake_meta):
    client, dispatcher = live_meta
    page = {"Referer": "https://shop.example/checkout/thanks"}
    response = track(client, CONVERSION, headers={**BROWSER, **page})
    assert response.get_json() == ok(response.get_json()["uuid"])
    row = Event.get()

    assert dispatcher.drain_once(now=utcnow()) == {"shop/meta": 1}

    assert row.properties["$current_url"] == "https://shop.example/checkout/thanks"  # stored, never sent
    assert fake_meta.events == [{
        "event_name": "Purchase",
        "event_time": int(row.occurred_at.timestamp()),
        "event_id": "my-order-234",
        "action_source": "website",
        "event_source_url": "https://shop.example/checkout/thanks",
        "user_data": {
            "em": [sha(EMAIL)], "external_id": [sha("user-id-2006")], "country": [sha("us")],
            "client_ip_address": "203.0.113.7", "client_user_agent": UA,
        },
        "custom_data": {  # the server-side $ context stays home
            "value": 290.5, "currency": "USD", "order_id": "my-order-234", "conversion-name": "purchase",
        },
    }]
    assert sends() == [("shop/meta", "meta", "sent", None)]


def test_a_repeated_conversion_id_is_stored_and_dispatched_once(client):
    first = track(client, CONVERSION)
    again = track(client, {**CONVERSION, "Properties": {**CONVERSION["Properties"], "conversion-value": 1}})

    assert first.status_code == again.status_code == 200
    assert again.get_json() == first.get_json() == ok(first.get_json()["uuid"])
    assert stored() == {"events": 1, "sends": 1, "subscribers": 1, "properties": 12}
    assert (Event.get().event_id, Event.get().order_id, Event.get().value) == ("my-order-234", "my-order-234", 290.5)


def test_a_repeated_tracker_uuid_is_stored_once_and_answered_alike(client):
    body = {**MINIMAL, "Properties": {"$uuid": "13f8e79a-f063-4b80-10e4-b65a699a2f56"}}
    first = track(client, body)
    track(client, MINIMAL)  # a later event makes the subscriber known: the repeat must still answer as the first
    again = track(client, body)

    body = first.get_json()
    assert body == again.get_json() == ok("13f8e79a-f063-4b80-10e4-b65a699a2f56", body["external_id"], identified=True)
    assert stored()["events"] == 2
    assert Event.select().where(Event.event_id == "13f8e79a-f063-4b80-10e4-b65a699a2f56").count() == 1


def test_events_without_a_dedup_id_are_separate_events_each_with_a_new_uuid(client):
    first, second = track(client, MINIMAL).get_json(), track(client, MINIMAL).get_json()
    assert first["uuid"] != second["uuid"] and UUID_RE.fullmatch(first["uuid"]) and UUID_RE.fullmatch(second["uuid"])
    assert [e.event_id for e in Event.select().order_by(Event.id)] == [first["uuid"], second["uuid"]]


@pytest.mark.parametrize("conversion_name, event_map, standard", [
    ("purchase", {}, "Purchase"),
    ("Order Completed", {}, "Purchase"),
    ("trial-upgrade", {}, "Purchase"),
    ("signup", {}, "CompleteRegistration"),
    ("generate_lead", {}, "Lead"),
    ("webinar", {"webinar": "Lead"}, "Lead"),
    ("purchase", {"conversion": "Subscribe"}, "Subscribe"),
])
def test_a_conversion_is_a_purchase_unless_the_event_map_or_its_name_says_otherwise(raw_config, make_client, conversion_name, event_map, standard):
    raw_config["sites"][0]["event_map"] = event_map
    track(make_client(), {**CONVERSION, "Properties": {**CONVERSION["Properties"], "conversion-name": conversion_name}})
    assert (Event.get().event_name, Event.get().standard_name) == ("conversion", standard)


@pytest.mark.parametrize("properties, value, currency", [
    ({"conversion-value": "19.90"}, 19.9, "USD"),
    ({"conversion-value": 0}, 0.0, "USD"),
    ({"conversion-value": 5, "conversion-currency": " eur "}, 5.0, "EUR"),
    ({"CONVERSION-VALUE": 7, "Conversion-Currency": "gbp"}, 7.0, "GBP"),
])
def test_conversion_value_and_currency_are_read_leniently(client, properties, value, currency):
    props = {k: v for k, v in CONVERSION["Properties"].items() if k != "conversion-value"}
    response = track(client, {**CONVERSION, "Properties": {**props, **properties}})
    assert response.status_code == 200, response.get_json()
    assert (Event.get().value, Event.get().currency) == (value, currency)
    assert not {"conversion-value", "conversion-currency", "conversion-id"} & {k.lower() for k in Event.get().properties}


def test_a_conversion_id_may_be_a_number(client):
    track(client, {**CONVERSION, "Properties": {**CONVERSION["Properties"], "conversion-id": 234}})
    assert (Event.get().event_id, Event.get().order_id) == ("234", "234")


@pytest.mark.parametrize("event, standard", [("pageView", "PageView"), ("identify", "Custom"), ("test", "Custom"),
                                             ("signed_up", "CompleteRegistration")])
def test_every_other_event_is_dispatched_under_its_standard_or_own_name(client, event, standard):
    response = track(client, {**MINIMAL, "event": event}, headers={**BROWSER, "Referer": "https://shop.example/"})
    assert response.status_code == 200
    assert (Event.get().event_name, Event.get().standard_name, Event.get().value) == (event, standard, None)
    assert sends() == [("shop/meta", "meta", "pending", None)]


def test_a_dry_run_answers_the_success_body_with_the_meta_preview_and_stores_nothing(client, frozen):
    response = track(client, {**CONVERSION, "Properties": {**CONVERSION["Properties"], "$current_url": "https://shop.example/thanks"}},
                     query="?dry_run=1")
    body = response.get_json()
    [meta] = body.pop("destinations")

    assert (response.status_code, body) == (200, {**ok(body["uuid"]), "dry_run": True, "notes": []})
    assert (meta["status"], meta["mode"], meta["payload"]["event_name"], meta["payload"]["event_id"]) == (
        "would_send", "dry", "Purchase", "my-order-234")
    assert meta["payload"]["custom_data"]["value"] == 290.5
    assert meta["payload"]["event_source_url"] == "https://shop.example/thanks"
    assert stored() == NOTHING and Refusal.select().count() == 0


# --- identify_event_sent and the subscriber's external id ---------------------------------------

def test_identify_event_sent_is_true_for_the_first_event_of_an_email_on_a_list_and_for_identify(raw_config, make_client):
    add_list(raw_config, 95)
    client = make_client()
    answers = [track(client, body).get_json()["identify_event_sent"] for body in (
        MINIMAL,
        MINIMAL,
        {**MINIMAL, "event": "identify"},
        {**MINIMAL, "event": "IDENTIFY"},
        {**MINIMAL, "ListID": 95},
        {**MINIMAL, "email": OTHER_EMAIL},
        {**MINIMAL, "email": OTHER_EMAIL.upper()},  # the same subscriber: addresses are compared normalized
    )]
    assert answers == [True, False, True, True, True, True, False]
    assert OctethSubscriber.select().count() == 3


def test_a_dry_run_says_whether_it_would_identify_but_remembers_nothing(client):
    assert track(client, MINIMAL, query="?dry_run=1").get_json()["identify_event_sent"] is True
    assert track(client, MINIMAL, query="?dry_run=1").get_json()["identify_event_sent"] is True
    track(client, MINIMAL)
    assert track(client, MINIMAL, query="?dry_run=1").get_json()["identify_event_sent"] is False


def test_without_an_id_the_subscriber_gets_one_generated_id_kept_until_an_id_is_sent(client):
    first = track(client, MINIMAL).get_json()
    second = track(client, MINIMAL).get_json()
    given = track(client, {**MINIMAL, "ID": "crm-42"}).get_json()
    after = track(client, MINIMAL).get_json()

    assert UUID_RE.fullmatch(first["external_id"]) and second["external_id"] == first["external_id"]
    assert (given["external_id"], after["external_id"]) == ("crm-42", "crm-42")
    assert [e.external_id for e in Event.select().order_by(Event.id)] == [first["external_id"]] * 2 + ["crm-42"] * 2
    assert "$id" not in Event.select().order_by(Event.id).first().properties


# --- credentials --------------------------------------------------------------------------------

MISSING = (1, "Missing APIKey or SessionID parameter")
INVALID = (2, "Invalid APIKey or SessionID parameter")
BAD_FIELDS = {"ListID": "nope", "event": 5, "email": "x", "Properties": "junk"}


@pytest.mark.parametrize("url", [EVENT_URL, PROPERTIES_URL])
@pytest.mark.parametrize("credentials, problem", [
    ({}, MISSING),
    ({"APIKey": ""}, MISSING),
    ({"APIKey": "  ", "SessionID": None}, MISSING),
    ({"APIKey": None, "SessionID": ""}, MISSING),
    ({"APIKey": "key_nope"}, INVALID),
    ({"APIKey": "KEY_DEMO_123"}, INVALID),
    ({"APIKey": 123}, INVALID),
    ({"APIKey": [KEY]}, INVALID),
    ({"APIKey": {KEY: 1}}, INVALID),
    ({"SessionID": "not-a-session"}, INVALID),
    ({"SessionID": 7}, INVALID),
    ({"APIKey": "key_nope", "SessionID": "not-a-session"}, INVALID),
])
def test_credentials_are_checked_first_and_answer_401(client, url, credentials, problem):
    response = post(client, url, {**BAD_FIELDS, **credentials})
    assert (response.status_code, response.get_json()) == (401, errors(problem))
    assert stored() == NOTHING


@pytest.fixture
def admin_client(raw_config, make_client):
    raw_config["admin"]["password"] = PASSWORD
    return make_client()


def login(client) -> str:
    response = client.post("/admin/api/login", json={"password": PASSWORD})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["session_id"]


def test_an_admin_session_id_works_on_both_endpoints_with_the_lists_site(admin_client):
    session = login(admin_client)
    body = {"SessionID": session, "ListID": 94, "event": "test", "email": EMAIL}

    event = track(admin_client, body)
    listing = catalogue(admin_client, {"sessionid": session, "listid": "94"})

    assert (event.status_code, event.get_json()) == (200, ok(event.get_json()["uuid"], event.get_json()["external_id"]))
    assert Event.get().site == "shop"
    assert (listing.status_code, listing.get_json()["ListID"], list(listing.get_json()["Properties"])) == (200, "94", ["test"])


def test_a_wrong_api_key_beside_a_valid_session_id_still_passes(admin_client):
    response = track(admin_client, {**MINIMAL, "APIKey": "key_nope", "SessionID": login(admin_client)})
    assert response.status_code == 200


def test_an_expired_session_id_is_invalid(admin_client):
    session = login(admin_client)
    from console.sessions import AdminSession
    from ingest.hashing import sha256
    AdminSession.update(expires_at=datetime(2020, 1, 1, tzinfo=timezone.utc)).where(AdminSession.id == sha256(session)).execute()
    response = track(admin_client, {**MINIMAL, "APIKey": None, "SessionID": session})
    assert (response.status_code, response.get_json()) == (401, errors(INVALID))


def test_a_key_only_reaches_its_own_sites_lists(raw_config, make_client):
    add_blog_site(raw_config)
    client = make_client()
    response = track(client, {**MINIMAL, "ListID": 7})
    blog = track(client, {**MINIMAL, "APIKey": "key_blog_456", "ListID": 7})
    assert (response.status_code, response.get_json()) == (422, errors((4, "Invalid ListID parameter")))
    assert blog.status_code == 200 and Event.get().site == "blog"


# --- field names and values ---------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    {"APIKey": KEY, "ListID": 94, "ID": "u1", "Event": "test", "Email": EMAIL, "Properties": {"plan": "pro"}},
    {"apikey": KEY, "listid": 94, "id": "u1", "event": "test", "email": EMAIL, "properties": {"plan": "pro"}},
    {"APIKEY": KEY, "LISTID": "94", "Id": "u1", "EVENT": "test", "EmailAddress": EMAIL, "PROPERTIES": {"plan": "pro"}},
    {"apiKey": KEY, "listId": 94.0, "iD": "u1", "evenT": "test", "eMail": EMAIL, "propertieS": {"plan": "pro"}},
])
def test_field_names_are_matched_case_insensitively(client, body):
    response = track(client, body)
    assert response.status_code == 200, response.get_json()
    row = Event.get()
    assert (row.event_name, row.external_id, row.identity["em"], row.properties["plan"], row.properties["$list_id"]) == (
        "test", "u1", sha(EMAIL), "pro", "94")


@pytest.mark.parametrize("list_id", [94, "94", " 94 ", 94.0])
def test_list_ids_compare_as_strings(client, list_id):
    assert track(client, {**MINIMAL, "ListID": list_id}).status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain;charset=UTF-8", "application/x-www-form-urlencoded", None])
def test_a_json_body_is_parsed_whatever_its_content_type(client, content_type):
    response = track(client, MINIMAL, content_type=content_type)
    assert response.status_code == 200 and stored()["events"] == 1


def test_an_empty_properties_array_from_a_php_client_counts_as_no_properties(client):
    assert track(client, {**MINIMAL, "Properties": []}).status_code == 200


def test_unknown_top_level_keys_are_kept_as_properties_and_properties_win_a_clash(client):
    track(client, {**MINIMAL, "campaign": "spring", "plan": "top", "Properties": {"plan": "inner"}})
    assert (Event.get().properties["campaign"], Event.get().properties["plan"]) == ("spring", "inner")


# --- refusals -----------------------------------------------------------------------------------

EVENT_REFUSALS = [
    ({"APIKey": KEY, "event": "test", "email": EMAIL}, [(4, "Missing ListID parameter")]),
    ({**MINIMAL, "ListID": 95}, [(4, "Invalid ListID parameter")]),
    ({**MINIMAL, "ListID": "newsletter"}, [(4, "Invalid ListID parameter")]),
    ({**MINIMAL, "ListID": True}, [(4, "Invalid ListID parameter")]),
    ({**MINIMAL, "ListID": [94]}, [(4, "Invalid ListID parameter")]),
    ({**MINIMAL, "ListID": 94.5}, [(4, "Invalid ListID parameter")]),
    ({**MINIMAL, "ListID": ""}, [(4, "Missing ListID parameter")]),
    ({**MINIMAL, "event": None}, [(5, "Missing event parameter.")]),
    ({**MINIMAL, "event": "  "}, [(5, "Missing event parameter.")]),
    ({**MINIMAL, "event": 5}, [(5, "Invalid event parameter: must be a non-empty string")]),
    ({**MINIMAL, "event": {"name": "x"}}, [(5, "Invalid event parameter: must be a non-empty string")]),
    ({**MINIMAL, "event": "e" * 256}, [(5, "Invalid event parameter: must be at most 255 characters")]),
    ({k: v for k, v in MINIMAL.items() if k != "email"}, [(6, "Missing email parameter.")]),
    ({**MINIMAL, "email": " "}, [(6, "Missing email parameter.")]),
    ({**MINIMAL, "email": "not-an-address"}, [(7, "Invalid email parameter.")]),
    ({**MINIMAL, "email": "2006(at)test.com"}, [(7, "Invalid email parameter.")]),
    ({**MINIMAL, "email": 2006}, [(7, "Invalid email parameter.")]),
    ({**MINIMAL, "email": [EMAIL]}, [(7, "Invalid email parameter.")]),
    ({**CONVERSION, "Properties": {}}, [
        (8, "Missing conversion-id event property."), (9, "Missing conversion-name event property."),
        (10, "Missing conversion-value event property.")]),
    ({**CONVERSION, "Properties": {"conversion-id": "o1", "conversion-name": "purchase"}},
     [(10, "Missing conversion-value event property.")]),
    ({**CONVERSION, "Properties": {"conversion-id": {}, "conversion-name": ["x"], "conversion-value": "abc"}}, [
        (8, "Invalid conversion-id event property: must be a string or number"),
        (9, "Invalid conversion-name event property: must be a string or number"),
        (10, "Invalid conversion-value event property: must be a number")]),
    ({**CONVERSION, "Properties": {**CONVERSION["Properties"], "conversion-value": -1}},
     [(10, "Invalid conversion-value event property: must not be negative")]),
    ({**CONVERSION, "Properties": {**CONVERSION["Properties"], "conversion-value": True}},
     [(10, "Invalid conversion-value event property: must be a number")]),
    ({**CONVERSION, "Properties": {**CONVERSION["Properties"], "conversion-id": "o" * 256}},
     [(8, "Invalid conversion-id event property: must be at most 255 characters")]),
    ({**CONVERSION, "Properties": {**CONVERSION["Properties"], "conversion-currency": "XYZ"}},
     [(13, "Invalid conversion-currency event property: must be an ISO 4217 currency code such as USD")]),
    ({**CONVERSION, "Properties": "purchase"}, [
        (8, "Missing conversion-id event property."), (9, "Missing conversion-name event property."),
        (10, "Missing conversion-value event property."), (11, "Invalid Properties parameter: must be an object")]),
    ({**MINIMAL, "Properties": [1, 2]}, [(11, "Invalid Properties parameter: must be an object")]),
    ({**MINIMAL, "Properties": 5}, [(11, "Invalid Properties parameter: must be an object")]),
    ({**MINIMAL, "ID": {"id": 1}}, [(12, "Invalid ID parameter: must be a string or number")]),
    ({**MINIMAL, "ID": "u" * 256}, [(12, "Invalid ID parameter: must be at most 255 characters")]),
    ({"APIKey": KEY, "ListID": 95, "event": 5, "email": "x", "ID": [], "Properties": "junk"}, [
        (4, "Invalid ListID parameter"), (5, "Invalid event parameter: must be a non-empty string"),
        (7, "Invalid email parameter."), (11, "Invalid Properties parameter: must be an object"),
        (12, "Invalid ID parameter: must be a string or number")]),
    ({"APIKey": KEY}, [(4, "Missing ListID parameter"), (5, "Missing event parameter."), (6, "Missing email parameter.")]),
]


@pytest.mark.parametrize("body, problems", EVENT_REFUSALS)
def test_a_refused_event_lists_every_problem_with_the_seeds_codes_and_stores_nothing(client, body, problems):
    response = track(client, body)
    assert (response.status_code, response.get_json()) == (422, errors(*problems))
    assert stored() == NOTHING


@pytest.mark.parametrize("body, problem", [
    ({"APIKey": KEY}, (1, "Missing ListID parameter")),
    ({"APIKey": KEY, "ListID": None}, (1, "Missing ListID parameter")),
    ({"APIKey": KEY, "ListID": " "}, (1, "Missing ListID parameter")),
    ({"APIKey": KEY, "ListID": True}, (2, "Invalid ListID parameter")),
    ({"APIKey": KEY, "ListID": {"id": 94}}, (2, "Invalid ListID parameter")),
    ({"APIKey": KEY, "ListID": 94.5}, (2, "Invalid ListID parameter")),
    ({"APIKey": KEY, "ListID": 3}, (3, "List not found")),
    ({"APIKey": KEY, "ListID": "newsletter"}, (2, "Invalid ListID parameter")),
])
def test_the_properties_endpoint_answers_its_own_listid_codes(client, body, problem):
    response = catalogue(client, body)
    assert (response.status_code, response.get_json()) == (422, errors(problem))


DEEP_PROPERTIES = {**MINIMAL, "Properties": json.loads("{\"a\":" * 40 + "1" + "}" * 40)}


@pytest.mark.parametrize("url", [EVENT_URL, PROPERTIES_URL])
@pytest.mark.parametrize("body, status, message", [
    ("{not json", 422, "Invalid JSON body"),
    ("", 422, "Invalid JSON body"),
    ('{"APIKey": "key_demo_123", "ListID": 94', 422, "Invalid JSON body"),
    (b'{"APIKey": "key_demo_123", "event": "\xff"}', 422, "Invalid JSON body"),
    ("[" * 10000 + "]" * 10000, 422, "Invalid JSON body"),
    ('{"APIKey": "key_demo_123", "ListID": 94, "event": "x", "email": "\\ud800@test.com"}', 422, "Invalid JSON body"),
    ('{"APIKey": "key_demo_123" /* unclosed', 422, "Invalid JSON body"),
    ('[{"APIKey": "key_demo_123"}]', 422, "Request body must be a JSON object"),
    ('"key_demo_123"', 422, "Request body must be a JSON object"),
    ("null", 422, "Request body must be a JSON object"),
    (json.dumps(DEEP_PROPERTIES), 422, "Request body nested deeper than 32 levels"),
    (json.dumps({**MINIMAL, "x": "y" * 40000}), 413, "Request body too large"),
])
def test_an_unreadable_body_answers_code_0_and_stores_nothing(client, url, body, status, message):
    response = post(client, url, body)
    assert (response.status_code, response.get_json()) == (status, errors((0, message)))
    assert stored() == NOTHING


@pytest.mark.parametrize("text, event", [
    ('// a comment line\n{"APIKey": "key_demo_123", "ListID": 94, "event": "test", "email": "2006@test.com"}', "test"),
    ('{"APIKey": "key_demo_123", /* inline */ "ListID": 94, "event": "test", "email": "2006@test.com"}', "test"),
    ('{"APIKey": "key_demo_123", "ListID": 94, "event": "a // b", "email": "2006@test.com"} // trailing', "a // b"),
    ('{"APIKey": "key_demo_123", "ListID": 94, "event": "say \\"/*hi*/\\"", "email": "2006@test.com"}', 'say "/*hi*/"'),
])
def test_comments_as_in_the_seeds_examples_are_ignored_outside_strings(client, text, event):
    response = track(client, text)
    assert response.status_code == 200, response.get_json()
    assert Event.get().event_name == event


GARBAGE = [
    {**MINIMAL, "event": "čaj ☕ 日本語"},
    {**MINIMAL, "Properties": {"deep": {"a": [{"b": {"c": [1, 2, {"d": None}]}}]}, "n": 1e308, "neg": -5}},
    {**MINIMAL, "Properties": {"": "empty key", " ": None, "$uuid": {"not": "an id"}}},
    {**MINIMAL, "Properties": {"$current_url": "javascript:alert(1)", "url": 5, "fbc": "not a cookie", "gclid": ["x"]}},
    {**MINIMAL, "Properties": {"k" * 300: "long key", "v": "x" * 20000}},
    {**MINIMAL, "Properties": {"firstName": {"nested": True}, "phone": "123", "gender": "other", "country": "Atlantis"}},
    {**MINIMAL, "ID": 12345678901234567890, "extra": [[[[]]]]},
    {**CONVERSION, "Properties": {**CONVERSION["Properties"], "conversion-value": "1e999"}},
    {**CONVERSION, "Properties": {**CONVERSION["Properties"], "conversion-value": 10 ** 400}},
]


@pytest.mark.parametrize("body", GARBAGE)
def test_garbage_never_gives_a_500_nor_half_an_event(client, body):
    response = track(client, body)
    assert response.status_code in (200, 422), response.get_json()
    counts = stored()
    if response.status_code == 200:
        assert (counts["events"], counts["sends"], counts["subscribers"]) == (1, 1, 1)
    else:
        assert counts == NOTHING and set(response.get_json()) == {"Errors"}


def test_the_garbage_is_kept_or_dropped_with_a_reason(client):
    track(client, GARBAGE[3])
    track(client, GARBAGE[5])
    track(client, GARBAGE[2])
    first, second, third = Event.select().order_by(Event.id)
    assert first.notes == ["fbc: dropped, not a click id (text without spaces expected)",
                           "gclid: dropped, not a click id (text without spaces expected)"]
    assert (first.page_url, first.click_ids, first.properties["url"]) == (None, {}, 5)
    assert second.notes == ["first_name: must be text", "country: not a known country",
                            "phone: not a possible phone number for US", "gender: not one of f, m, female, male"]
    assert (second.identity, second.location) == ({"em": sha(EMAIL), "em_google": sha(EMAIL)}, {"country": "us"})
    assert third.notes == ["$uuid: dropped, must be a string or number; a new one was generated"]
    assert UUID_RE.fullmatch(third.event_id) and third.properties["$uuid"] == third.event_id
    assert (third.properties[""], third.properties[" "]) == ("empty key", None)


# --- identity and personal data -----------------------------------------------------------------

def test_the_subscribers_email_and_identity_properties_are_hashed_never_stored_raw(client, frozen):
    response = track(client, {**MINIMAL, "event": "identify", "email": " ADA.Lovelace@Example.org ",
                              "Properties": {"emailAddress": OTHER_EMAIL, **PERSON, "Full Name": "Ada Lovelace", "plan": "pro"}})

    assert response.status_code == 200
    row = Event.get()
    assert row.identity == {
        "em": sha(OTHER_EMAIL), "em_google": sha(OTHER_EMAIL), "fn": sha("ada"), "fn_compact": sha("ada"),
        "ln": sha("lovelace"), "ln_compact": sha("lovelace"), "ph": sha("14155550199"), "ph_e164": sha("+14155550199"),
    }
    assert row.notes == ["Full Name: dropped, a custom property named like personal data is never stored"]
    assert {k: v for k, v in row.properties.items() if not k.startswith("$")} == {"plan": "pro"}
    assert OctethSubscriber.get().email_hash == sha(OTHER_EMAIL)
    assert [p.key for p in OctethProperty.select().order_by(OctethProperty.key) if not p.key.startswith("$")] == [
        "emailAddress", "firstName", "lastName", "phone", "plan"]
    text = json.dumps(row.__data__, default=str)
    assert [v for v in (OTHER_EMAIL, "Lovelace", "Ada", "555 0199") if v.lower() in text.lower()] == []


def test_an_email_property_that_differs_from_the_subscribers_is_dropped_with_a_reason(client):
    track(client, {**MINIMAL, "Properties": {"EmailAddress": OTHER_EMAIL}})
    assert (Event.get().identity["em"], Event.get().notes) == (
        sha(EMAIL), ["EmailAddress: dropped, differs from the email parameter (the subscriber's address)"])


def test_a_hashed_email_is_kept_as_it_is(client):
    digest = sha(EMAIL).upper()
    track(client, {**MINIMAL, "email": digest})
    assert (Event.get().identity["em"], OctethSubscriber.get().email_hash) == (sha(EMAIL), sha(EMAIL))


# --- server-side `$` properties -----------------------------------------------------------------

def test_server_properties_describe_the_browser_page_and_call(client, frozen):
    headers = {"User-Agent": IPHONE, "Referer": "https://shop.example/blog/post?utm_source=x",
               "Accept-Language": "de-CH,de;q=0.9", "X-Postback-Client-IP": "198.51.100.4"}
    track(client, MINIMAL, headers=headers)
    row = Event.get()
    assert row.properties == {
        "$browser": "Mobile Safari", "$browser_version": "17.5", "$os": "iOS", "$device": "iPhone",
        "$device_type": "Mobile", "$browser_language": "de-CH",
        "$current_url": "https://shop.example/blog/post?utm_source=x", "$host": "shop.example", "$pathname": "/blog/post",
        "$referrer": "https://shop.example/blog/post?utm_source=x",
        "$sent_at": SENT_AT, "$list_id": "94", "$uuid": row.event_id,
    }
    assert (row.page_url, row.referrer, row.language) == (None, "https://shop.example/blog/post?utm_source=x", "de-CH")


def test_a_trackers_own_dollar_properties_win_and_its_current_url_is_the_page(client, frozen):
    sent = {"$current_url": "https://shop.example/pricing", "$referrer": "https://www.google.com/",
            "$browser": "Firefox", "$list_id": "999", "$uuid": "abc-1"}
    track(client, {**MINIMAL, "Properties": sent}, headers={**BROWSER, "Referer": "https://shop.example/pricing"})
    row = Event.get()
    assert row.properties == chrome(**{
        **sent, "$host": "shop.example", "$pathname": "/pricing", "$list_id": "94", "$uuid": "abc-1"})
    assert (row.page_url, row.event_id) == ("https://shop.example/pricing", "abc-1")


def test_a_page_views_url_property_is_its_page(client):
    track(client, {**MINIMAL, "Properties": {"url": "https://shop.example/landing"}})
    assert (Event.get().page_url, Event.get().properties["$pathname"]) == ("https://shop.example/landing", "/landing")


def test_without_a_user_agent_no_browser_properties_are_invented(client, frozen):
    track(client, MINIMAL, headers={"User-Agent": ""})
    row = Event.get()
    assert row.properties == {"$sent_at": SENT_AT, "$list_id": "94", "$uuid": row.event_id}


def test_a_bot_is_stored_described_and_its_sends_skipped(client):
    track(client, MINIMAL, headers={**BROWSER, "User-Agent": GOOGLEBOT})
    assert (Event.get().is_bot, Event.get().properties["$device_type"]) == (True, "Bot")
    assert sends() == [("shop/meta", "meta", "skipped", "bot")]


def test_click_ids_in_properties_are_read_byte_for_byte(client):
    track(client, {**MINIMAL, "Properties": {"_fbc": "fb.1.1554763741205.AbCdEf", "fbp": "fb.1.1596403881668.1116446470",
                                             "gclid": "Cj0KCQ"}})
    assert Event.get().click_ids == {"fbc": "fb.1.1554763741205.AbCdEf", "fbp": "fb.1.1596403881668.1116446470", "gclid": "Cj0KCQ"}
    assert not {"_fbc", "fbp", "gclid"} & set(Event.get().properties)


def test_consent_default_denied_stores_the_event_and_skips_every_destination(raw_config, make_client):
    raw_config["privacy"]["consent_default"] = "denied"
    track(make_client(), MINIMAL)
    assert (Event.get().consent, sends()) == (False, [("shop/meta", "meta", "skipped", "no consent")])


# --- the catalogue's bounds ---------------------------------------------------------------------

def test_the_catalogue_is_bounded_per_event_and_per_list(client, monkeypatch):
    monkeypatch.setattr(octeth_store, "MAX_KEYS_PER_EVENT", 12)
    monkeypatch.setattr(octeth_store, "MAX_EVENTS_PER_LIST", 2)
    for name in ("one", "two", "three"):
        track(client, {**MINIMAL, "event": name, "Properties": {f"p{i}": i for i in range(10)}})
    listing = catalogue(client, {"APIKey": KEY, "ListID": 94}).get_json()["Properties"]
    assert (sorted(listing), [len(keys) for keys in listing.values()]) == (["one", "two"], [12, 12])
    assert stored()["events"] == 3


def test_a_property_name_longer_than_255_characters_is_kept_on_the_event_but_not_catalogued(client):
    track(client, {**MINIMAL, "Properties": {"k" * 256: 1}})
    assert "k" * 256 in Event.get().properties
    assert OctethProperty.select().where(OctethProperty.key == "k" * 256).count() == 0


# --- inspector, CORS, HTTP ----------------------------------------------------------------------

def test_refusals_and_partial_acceptances_reach_the_inspector_without_personal_data(client):
    track(client, {**MINIMAL, "APIKey": "key_nope"})
    track(client, {**MINIMAL, "event": None, "email": "nope"})
    track(client, {**MINIMAL, "Properties": {"e-mail": OTHER_EMAIL}})
    track(client, {**MINIMAL, "event": None}, query="?dry_run=1")

    entries = [(r.site, r.dialect, r.reason, r.excerpt) for r in Refusal.select().order_by(Refusal.id)]
    assert entries == [
        (None, "octeth", "Code 2: Invalid APIKey or SessionID parameter",
         {"APIKey": "key_…", "ListID": 94, "event": "pageView", "email": "<str>"}),
        ("shop", "octeth", "Code 5: Missing event parameter.; Code 7: Invalid email parameter.",
         {"APIKey": "key_…", "ListID": 94, "event": None, "email": "<str>"}),
        ("shop", "octeth", "partly accepted: e-mail: dropped, differs from the email parameter (the subscriber's address)",
         {"APIKey": "key_…", "ListID": 94, "event": "pageView", "email": "<str>", "Properties": {"e-mail": "<str>"}}),
    ]


CORS = {
    "Access-Control-Allow-Origin": "https://shop.example",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, X-Postback-Client-IP, X-Postback-Client-User-Agent",
    "Access-Control-Max-Age": "600",
    "Vary": "Origin",
}


def cors_headers(response) -> dict:
    return {k: v for k, v in response.headers.items() if k.startswith("Access-Control-") or k == "Vary"}


@pytest.mark.parametrize("url", [EVENT_URL, PROPERTIES_URL])
def test_browsers_on_an_allowed_origin_may_call_both_endpoints(client, url):
    preflight = client.options(url, headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"})
    answer = post(client, url, MINIMAL, headers={**BROWSER, "Origin": "https://shop.example"})
    refused = post(client, url, {"APIKey": "key_nope"}, headers={**BROWSER, "Origin": "https://shop.example"})
    evil = post(client, url, MINIMAL, headers={**BROWSER, "Origin": "https://evil.example"})
    assert (preflight.status_code, cors_headers(preflight)) == (204, CORS)
    assert (answer.status_code, cors_headers(answer)) == (200, CORS)
    assert (refused.status_code, cors_headers(refused)) == (401, CORS)
    assert cors_headers(evil) == {}


def test_get_on_the_event_url_is_a_json_405(client):
    response = client.get(EVENT_URL)
    assert (response.status_code, response.content_type) == (405, "application/json")
