"""ChannelStack `POST /v1/track` (seed 000): checks in SPEC §6's order, answers in the seed's shapes."""
from __future__ import annotations

from flask import Blueprint, Response, g, jsonify, request

from ingest import inspector
from ingest.canonical import utcnow
from dialects.channelstack import parse as channelstack
from dialects.common import FieldError
from ingest.accept import accept
from routes.common import BodyTooLarge, InvalidJSON, allow_origin, client_context, current_config, dry_run, read_json
from ingest.fanout import preview

bp = Blueprint("channelstack", __name__)


def error(message: str, status: int, body: object = None) -> tuple[Response, int]:
    """The seed's error shape; the refusal is kept for the inspector (a dry run keeps nothing)."""
    if not dry_run():
        site = g.get("site")
        inspector.record(channelstack.DIALECT, site.id if site else None, message, body)
    return jsonify({"error": message, "code": status}), status


@bp.after_request
def cors(response: Response) -> Response:
    return allow_origin(response, request.headers.get("Origin"), g.get("site"), current_config())


@bp.route("/v1/track", methods=["OPTIONS"])
def preflight():
    return Response(status=204)


@bp.post("/v1/track")
def track():
    config = current_config()
    try:
        body = read_json(request, config.max_body_bytes)
    except BodyTooLarge:
        return error("Request body too large", 413)
    except InvalidJSON:
        return error("Invalid JSON body", 400)
    if not isinstance(body, dict):
        return error("Request body must be a JSON object", 400, body)
    site = g.site = config.site_for_key(body.get("api_key"))
    if site is None:
        return error("Invalid API key", 401, body)
    try:
        event = channelstack.parse(body, client_context(request, config.trusted_proxies), site, config.consent_default, utcnow())
    except FieldError as exc:
        if exc.why is None:
            return error(f"Missing required field: {exc.field}", 400, body)
        return error(f"Invalid field: {exc.field} ({exc.why})", 400, body)
    if dry_run():
        return jsonify({
            "success": True, "eventId": event.event_id, "message": "Event recorded successfully",
            "dry_run": True, "notes": event.notes, "destinations": preview(event, site),
        })
    row, created = accept(event, site, config)
    if created and event.notes:
        inspector.record(channelstack.DIALECT, site.id, "partly accepted: " + "; ".join(event.notes), body)
    message = "Event recorded successfully" if created else "Duplicate event ignored"
    return jsonify({"success": True, "eventId": row.event_id, "message": message})
