"""CORS that means what the config says (docs/configuration.md#sites): a site's `"*"` opens its own answers only;
refusals and preflights answer only origins some site allows; credentials never ride on `*` or `null`."""
from __future__ import annotations

import json

import pytest

from tests.conftest import BROWSER

SHOP = "https://shop.example"
ANYWHERE = "https://anywhere.example"


@pytest.fixture
def raw_config(raw_config):
    raw_config["sites"].append({"id": "open", "name": "Open", "keys": ["key_open_456"], "allowed_origins": ["*"],
                                "destinations": [{"name": "meta", "platform": "meta", "mode": "dry", "pixel_id": "9"}]})
    return raw_config


def allowed(response) -> str | None:
    return response.headers.get("Access-Control-Allow-Origin")


def track(client, key: str, origin: str):
    return client.post("/v1/track", data=json.dumps({"api_key": key, "event": "signup"}),
                       content_type="application/json", headers={**BROWSER, "Origin": origin})


def test_a_refusal_answers_cors_only_to_an_origin_some_site_lists_by_name(client):
    unknown_key_from_anywhere = track(client, "key_guess", ANYWHERE)
    unknown_key_from_shop = track(client, "key_guess", SHOP)
    assert [(r.status_code, allowed(r)) for r in (unknown_key_from_anywhere, unknown_key_from_shop)] == [
        (401, None), (401, SHOP)]


def test_once_the_key_is_known_only_its_sites_origins_count(client):
    answers = [track(client, "key_demo_123", ANYWHERE), track(client, "key_open_456", ANYWHERE),
               track(client, "key_demo_123", SHOP), track(client, "key_open_456", "null")]
    assert [(r.status_code, allowed(r)) for r in answers] == [(200, None), (200, ANYWHERE), (200, SHOP), (200, None)]


def test_a_preflight_passes_for_a_wildcard_site_but_never_for_null(client):
    answers = [client.options("/v1/track", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
               for origin in (ANYWHERE, SHOP, "null")]
    assert [allowed(r) for r in answers] == [ANYWHERE, SHOP, None]


def test_without_a_wildcard_site_a_preflight_from_an_unlisted_origin_gets_no_cors(raw_config, request):
    raw_config["sites"].pop()
    client = request.getfixturevalue("client")
    response = client.options("/v1/track", headers={"Origin": ANYWHERE, "Access-Control-Request-Method": "POST"})
    assert (allowed(response), allowed(track(client, "key_guess", ANYWHERE))) == (None, None)
