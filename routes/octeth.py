"""Octeth `POST /api/v1/event` and `POST /api/v1/website_events.properties` (docs/dialects/octeth.md).

Checks in order: body readable, credentials (401, Code 1/2), then every field problem at once (422).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from flask import Blueprint, Response, g, jsonify, request

from ingest import inspector
from dialects.octeth import store as octeth_store
from ingest.canonical import utcnow
from config import Config, Site
from dialects.octeth import parse as octeth
from dialects.errors import BodyTooLarge, Refused, StorageFault
from ingest.accept import accept
from console.sessions import valid_session
from routes.common import allow_origin, client_context, current_config, dry_run, read_body
from ingest.fanout import preview

bp = Blueprint("octeth", __name__)
EVENT_URL = "/api/v1/event"
PROPERTIES_URL = "/api/v1/website_events.properties"


@bp.errorhandler(Refused)
def refused(exc: Refused):
    """The vendor's `{"Errors": [...]}`; the refusal is kept for the inspector (a dry run keeps nothing)."""
    if isinstance(exc, StorageFault):  # ours, not the request's: the same Code 0 outside the vendor's numbers
        answer = octeth.ErrorList(exc.status, [octeth.Problem(0, exc.reason)])
        return jsonify(answer.body()), answer.status, {"Retry-After": str(exc.retry_after)}
    if not isinstance(exc, octeth.ErrorList):  # an unreadable body: Code 0 is outside the vendor's numbered errors
        exc = octeth.ErrorList(413 if isinstance(exc, BodyTooLarge) else 422, [octeth.Problem(0, exc.reason)])
    if not dry_run():
        site = g.get("site")
        inspector.record(octeth.DIALECT, site.id if site else None, exc.reason, g.get("body"))
    return jsonify(exc.body()), exc.status


@bp.after_request
def cors(response: Response) -> Response:
    return allow_origin(response, request.headers.get("Origin"), g.get("site"), current_config())


@bp.route(EVENT_URL, methods=["OPTIONS"])
@bp.route(PROPERTIES_URL, methods=["OPTIONS"])
def preflight():
    return Response(status=204)


def decoded_body(config: Config) -> dict:
    """The body as a JSON object, read the vendor's lenient way (comments allowed, any Content-Type)."""
    body = g.body = octeth.decode(read_body(request, config.max_body_bytes))
    return body


def authenticate(body: dict, config: Config) -> Sequence[Site]:
    """The sites the credentials may use: the APIKey's own, or every site for an admin SessionID."""
    api_key, session_id = octeth.credentials(body)
    site = config.site_for_key(api_key)
    if site is not None:
        g.site = site
        return (site,)
    if valid_session(session_id):
        return config.sites
    raise octeth.invalid_credentials()


@bp.post(EVENT_URL)
def track():
    config = current_config()
    body = decoded_body(config)
    sites = authenticate(body, config)
    now = utcnow()
    accepted = octeth.parse_event(body, client_context(request, config.trusted_proxies), sites, config.consent_default, now)
    site = g.site = accepted.site
    known = octeth_store.subscriber(site.id, accepted.list_id, accepted.email_hash)
    event = accepted.event
    if event.external_id is None:  # the vendor's docs: "the system will generate a unique ID"; stable per subscriber
        event = replace(event, external_id=known.external_id if known else octeth.new_uuid())
    if dry_run():
        return jsonify({
            **success(accepted.uuid, event.external_id, accepted.identify or known is None),
            "dry_run": True, "notes": event.notes, "destinations": preview(event, site),
        })
    row, created = accept(event, site, config)
    if not created:  # a repeat answers as the first call did
        first = known is not None and known.first_event_id == row.event_id
        identified = octeth.is_identify(row.event_name) or first
        return jsonify(success(row.properties.get("$uuid", row.event_id), row.external_id, identified))
    first = octeth_store.remember(site.id, accepted.list_id, accepted.email_hash, event.external_id, event.event_id,
                                  accepted.given_id, now)
    octeth_store.learn(site.id, accepted.list_id, event.event_name, accepted.catalogue)
    if event.notes:
        inspector.record(octeth.DIALECT, site.id, "partly accepted: " + "; ".join(event.notes), body)
    return jsonify(success(accepted.uuid, event.external_id, accepted.identify or first))


def success(event_uuid: str, external_id: str | None, identify_event_sent: bool) -> dict:
    return {"status": "success", "uuid": event_uuid, "external_id": external_id, "identify_event_sent": identify_event_sent}


@bp.post(PROPERTIES_URL)
def properties():
    config = current_config()
    body = decoded_body(config)
    site, list_id = octeth.catalogue_request(body, authenticate(body, config))
    g.site = site
    return jsonify({"ListID": list_id, "Properties": octeth_store.catalogue(site.id, list_id)})
