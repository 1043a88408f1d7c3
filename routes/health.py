"""`GET /healthz`: 200 while the database can be written, 503 with the reason while it cannot."""
from __future__ import annotations

from flask import Blueprint, jsonify

from models import database, storage_fault, write_fault

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """A read, then a small write rolled back: a full disk or a read-only database answers reads but stores nothing."""
    try:
        database.execute_sql("SELECT 1")
        fault = write_fault()
    except Exception as exc:  # noqa: BLE001 - any database failure means unhealthy
        return jsonify({"status": "error", "database": f"cannot read: {storage_fault(exc) or type(exc).__name__}"}), 503
    if fault is not None:
        return jsonify({"status": "error", "database": f"cannot write: {fault}"}), 503
    return jsonify({"status": "ok", "database": "ok"})
