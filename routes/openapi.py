"""`GET /openapi.json`: the API description kept in static/openapi.yaml, served as JSON (docs/api.md)."""
from __future__ import annotations

from pathlib import Path

import yaml
from flask import Blueprint, current_app, jsonify

bp = Blueprint("openapi", __name__)
DOCUMENT = Path(__file__).resolve().parent.parent / "static" / "openapi.yaml"


def document() -> dict:
    """The OpenAPI document, read once per app."""
    if "postback.openapi" not in current_app.extensions:
        current_app.extensions["postback.openapi"] = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    return current_app.extensions["postback.openapi"]


@bp.get("/openapi.json")
def openapi():
    return jsonify(document())
