"""ChannelStack `POST /v1/track` (docs/dialects/channelstack.md): checks in the documented order, answers in ChannelStack's shapes."""
from __future__ import annotations

from flask import Blueprint, Response, g, jsonify, request

from ingest import browser_keys, inspector
from ingest.canonical import utcnow
from dialects.channelstack import parse as channelstack
from dialects.errors import BadCredentials, BodyTooLarge, NotAnObject, Refused, StorageFault
from ingest.accept import accept, already_stored
from routes.common import allow_origin, client_context, current_config, dry_run, read_json
from ingest.fanout import preview

bp = Blueprint("channelstack", __name__)


@bp.errorhandler(Refused)
def refused(exc: Refused) -> tuple:
    """`{"error", "code"}`; the refusal is kept for the inspector (a dry run keeps nothing)."""
    if isinstance(exc, StorageFault):  # our failure, not the request's: nothing for the inspector, try again later
        return jsonify({"error": exc.reason, "code": exc.status}), exc.status, {"Retry-After": str(exc.retry_after)}
    status = STATUSES.get(type(exc), 401 if isinstance(exc, BadCredentials) else 400)
    if not dry_run():
        site = g.get("site")
        inspector.record(channelstack.DIALECT, site.id if site else None, exc.reason, g.get("body"))
    response = jsonify({"error": exc.reason, "code": status})
    if isinstance(exc, browser_keys.OverRate):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response, status


STATUSES = {BodyTooLarge: 413, browser_keys.EventNotAllowed: 403, browser_keys.OverRate: 429}


@bp.after_request
def cors(response: Response) -> Response:
    return allow_origin(response, request.headers.get("Origin"), g.get("site"), current_config())


@bp.route("/v1/track", methods=["OPTIONS"])
def preflight():
    return Response(status=204)


@bp.post("/v1/track")
def track():
    config = current_config()
    body = g.body = read_json(request, config.max_body_bytes)
    if not isinstance(body, dict):
        raise NotAnObject()  # the inspector still shows what came
    site = g.site = config.site_for_key(body.get("api_key"))
    browser = None
    if site is None:  # a page's browser key: from its site's origins only, within its events and rate
        site, browser = browser_keys.admit(config, body.get("api_key"), request.headers.get("Origin"))
        g.site = site
    now = utcnow()
    event = channelstack.parse(body, client_context(request, config.trusted_proxies), site, config.consent_default, now)
    if browser is not None:
        browser_keys.check_event(browser, event.event_name, event.standard_name)
        if not dry_run():
            browser_keys.count_call(browser, now)
    if dry_run():
        return jsonify({
            "success": True, "eventId": event.event_id, "message": answer(not already_stored(event)),
            "dry_run": True, "notes": event.notes, "destinations": preview(event, site),
        })
    row, created = accept(event, site, config)
    if created and event.notes:
        inspector.record(channelstack.DIALECT, site.id, "partly accepted: " + "; ".join(event.notes), body)
    return jsonify({"success": True, "eventId": row.event_id, "message": answer(created)})


def answer(created: bool) -> str:
    return "Event recorded successfully" if created else "Duplicate event ignored"
