"""`GET /healthz`: 200 while the database answers, 503 when it does not."""
from __future__ import annotations

from flask import Blueprint, jsonify

from models import database

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    try:
        database.execute_sql("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any database failure means unhealthy
        return jsonify({"status": "error", "database": type(exc).__name__}), 503
    return jsonify({"status": "ok", "database": "ok"})
