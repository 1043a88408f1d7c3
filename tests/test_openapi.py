"""`GET /openapi.json`: a valid OpenAPI 3 document that describes every route the API serves (schemathesis
checks the answers against it in tests/test_fuzz.py)."""
from __future__ import annotations

import re

import yaml
from openapi_spec_validator import validate

from routes.openapi import DOCUMENT

NOT_API = ("static", "dashboard.")  # files, and the console's HTML pages (docs/console.md)
PIXEL_CATEGORIES = ("event", "revenue")


def described(app) -> dict:
    return app.test_client().get("/openapi.json").get_json()


def served_routes(app) -> set[tuple[str, str]]:
    """(OpenAPI path, method) of every route but files and the console's pages; OPTIONS only where a view answers it."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(NOT_API):
            continue
        path = re.sub(r"<(?:[^:>]+:)?(\w+)>", r"{\1}", rule.rule)
        paths = [path.replace("{category}", c) for c in PIXEL_CATEGORIES] if "{category}" in path else [path]
        methods = rule.methods - {"HEAD"} if rule.provide_automatic_options is False else rule.methods - {"HEAD", "OPTIONS"}
        routes |= {(p, method.lower()) for p in paths for method in methods}
    return routes


def test_the_served_document_is_the_one_in_the_repository_and_valid_openapi_3(app):
    response = app.test_client().get("/openapi.json")
    assert (response.status_code, response.mimetype) == (200, "application/json")
    document = response.get_json()
    assert document == yaml.safe_load(DOCUMENT.read_text())
    assert document["openapi"].startswith("3.")
    validate(document)


def test_every_route_of_the_api_is_described_and_nothing_else(app):
    paths = described(app)["paths"]
    documented = {(path, method) for path, operations in paths.items() for method in operations
                  if method in ("get", "post", "delete", "options", "put", "patch")}
    assert documented == served_routes(app)


def test_every_operation_has_an_id_and_every_answer_a_described_shape(app):
    operations = [op for item in described(app)["paths"].values() for op in item.values() if isinstance(op, dict)]
    ids = [op.get("operationId") for op in operations if op.get("operationId")]
    assert len(ids) == len(set(ids)) == len(operations)
    bare = [(op["operationId"], status) for op in operations for status, answer in op["responses"].items()
            if "$ref" not in answer and "content" not in answer and status not in ("204", "302")]
    assert bare == []


def test_the_admin_api_and_metrics_name_the_admin_credentials_and_the_key_apis_theirs(app):
    paths = described(app)["paths"]
    schemes = {(path, method): {name for option in op.get("security", []) for name in option}
               for path, item in paths.items() for method, op in item.items()}
    assert schemes[("/metrics", "get")] == {"adminBasic", "adminBearer"}
    assert all(schemes[key] == {"adminBasic", "adminBearer"} for key in schemes
               if key[0].startswith("/admin/api/") and key[0] not in ("/admin/api/login", "/admin/api/logout"))
    assert schemes[("/events", "post")] == {"siteKey", "commandersToken"}
    assert schemes[("/api/v1/channels", "get")] == {"siteKey"}
    assert schemes[("/telegram/webhook/{site_id}", "post")] == {"telegramSecret"}
