"""`GET /metrics`: Prometheus' text format, behind the admin credentials (docs/operations.md#metrics)."""
from __future__ import annotations

from flask import Blueprint, Response

from console.metrics import exposition
from ingest.canonical import utcnow
from routes.admin import admin_required
from routes.common import current_config

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@admin_required
def metrics() -> Response:
    body, content_type = exposition(current_config(), utcnow())
    return Response(body, content_type=content_type)
