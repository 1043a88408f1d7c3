"""Ingest's one family of refusals, the route helpers every dialect shares, and the assets under static/."""
from __future__ import annotations

import pytest
from flask import Response

from config import Channel
from dialects.adtarget.funnel import FunnelError
from dialects.errors import BadCredentials, BodyTooLarge, FieldError, InvalidJSON, NotAnObject, Refused
from ingest.inspector import Refusal
from models import Event
from routes.common import allow_origin, dry_run
from routes.pixel import GIF
from routes.tracker import error_page


def test_the_static_pixel_gif_is_the_pixels_gif_and_no_pixel_call(client):
    response = client.get("/static/pixel.gif")

    assert (response.status_code, response.content_type, response.data) == (200, "image/gif", GIF)
    response.close()  # a static file is streamed from its open file
    assert (Event.select().count(), Refusal.select().count()) == (0, 0)


def test_the_tracker_error_page_escapes_what_it_shows_and_links_the_channel_when_telegram_fails(app):
    channel = Channel(id="vip", telegram_id="-100", title="<b>VIP</b> & co", username="vipchan", funnel_order=1,
                      event_type="Lead")
    failure = FunnelError("TELEGRAM_ERROR", 502, "Telegram said <no>")

    with app.test_request_context("/track/invite"):
        page = error_page(failure, channel)
        unknown = error_page(FunnelError("SITE_NOT_FOUND", 404, "No site 'x'"), channel)

    assert page == ('<!doctype html><html lang="en"><meta charset="utf-8">'
                    '<meta name="viewport" content="width=device-width, initial-scale=1">'
                    "<title>Could not open the Telegram channel</title>"
                    '<body style="font-family: system-ui, sans-serif; max-width: 34rem; margin: 3rem auto; '
                    'padding: 0 1rem"><h1>Could not open the Telegram channel</h1><p>Telegram said &lt;no&gt;</p>'
                    '<p>You can still <a href="https://t.me/vipchan">open &lt;b&gt;VIP&lt;/b&gt; &amp; co on '
                    "Telegram</a>.</p></body></html>\n")
    assert "t.me" not in unknown and "<p>No site &#39;x&#39;</p>" in unknown


def test_cors_with_credentials_echoes_the_origin_and_names_only_the_headers_asked_for(config):
    plain = allow_origin(Response(), "https://shop.example", None, config)
    with_cookies = allow_origin(Response(), "https://shop.example", None, config, headers=("Content-Type",),
                                credentials=True)
    elsewhere = allow_origin(Response(), "https://evil.example", None, config)

    cors = [(k, v) for k, v in plain.headers.items() if k.startswith("Access-Control") or k == "Vary"]
    assert cors == [
        ("Access-Control-Allow-Origin", "https://shop.example"),
        ("Access-Control-Allow-Methods", "POST, OPTIONS"),
        ("Access-Control-Allow-Headers", "Content-Type, X-Postback-Client-IP, X-Postback-Client-User-Agent"),
        ("Access-Control-Max-Age", "600"),
        ("Vary", "Origin"),
    ]
    assert (with_cookies.headers["Access-Control-Allow-Credentials"],
            with_cookies.headers["Access-Control-Allow-Headers"]) == ("true", "Content-Type")
    assert "Access-Control-Allow-Credentials" not in plain.headers
    assert not any(k.startswith("Access-Control") or k == "Vary" for k in elsewhere.headers.keys())


def test_a_field_error_says_whether_the_field_is_missing_or_what_is_wrong_with_it():
    missing, invalid = FieldError("event"), FieldError("value", "must be a number")

    assert (missing.reason, missing.field, missing.why) == ("Missing required field: event", "event", None)
    assert (invalid.reason, invalid.field, invalid.why) == ("Invalid field: value (must be a number)", "value",
                                                            "must be a number")
    assert isinstance(missing, Refused) and str(invalid) == invalid.reason


@pytest.mark.parametrize("refusal, answer", [
    (FieldError("tempId"), ("VALIDATION_ERROR", 400, "Missing required field: tempId")),
    (Refused("Something else is wrong"), ("VALIDATION_ERROR", 400, "Something else is wrong")),
    (BadCredentials("Invalid API key"), ("UNAUTHORIZED", 401, "Invalid API key")),
    (BodyTooLarge(1024), ("PAYLOAD_TOO_LARGE", 413, "Request body is larger than 1024 bytes")),
    (InvalidJSON(), ("INVALID_JSON", 400, "Request body is not valid JSON")),
    (NotAnObject(), ("INVALID_JSON", 400, "Request body must be a JSON object")),
    (FunnelError("LEAD_NOT_FOUND", 404, "No lead"), ("LEAD_NOT_FOUND", 404, "No lead")),
], ids=["field", "plain", "credentials", "too large", "not json", "not an object", "funnel's own"])
def test_every_refusal_has_an_adtarget_code_status_and_message(refusal, answer):
    error = FunnelError.of(refusal)

    assert (error.code, error.status, error.reason) == answer


@pytest.mark.parametrize("query, expected", [
    ("?dry_run=1", True), ("?dry_run=true", True), ("?dry_run=0", False), ("?dry_run=yes", False), ("", False),
])
def test_a_dry_run_is_asked_for_with_1_or_true(app, query, expected):
    with app.test_request_context(f"/v1/track{query}"):
        assert dry_run() is expected
