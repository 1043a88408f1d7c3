"""Commanders Act (docs/dialects/commanders.md): `POST /events`, the User API and the Product API, each `?tc_s={siteId}` with a
Bearer source key. As the vendor's docs say of all its API requests: 400 only for an oversize body or invalid JSON,
200 for everything else, the refusal kept for the inspector."""
from __future__ import annotations

import hmac
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from dialects.commanders import catalog
from ingest import inspector
from dialects.commanders import profiles
from ingest.canonical import utcnow
from config import Config, Site
from dialects.commanders import parse as commanders
from dialects.common import MAX_ID_CHARS
from dialects.errors import BadCredentials, BodyTooLarge, FieldError, InvalidJSON, NotAnObject, Refused, StorageFault
from ingest.accept import accept
from routes.common import CORS_HEADERS, allow_origin, client_context, current_config, dry_run, read_json
from ingest.fanout import preview

bp = Blueprint("commanders", __name__)
OK = {"status": "ok"}


@bp.errorhandler(Refused)
def refused(exc: Refused) -> Response | tuple:
    """An oversize or non-JSON body is the vendor's only 400; any other refusal still answers 200, the events
    endpoint silently and the User and Product APIs with a body that tells the truth. The inspector keeps each,
    with the body the view kept in `g.body`. A storage fault is ours, not the request's: 503, and the silent 200
    would tell the tag its event was kept."""
    if isinstance(exc, StorageFault):
        return jsonify({"status": "error", "message": exc.reason}), exc.status, {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, (BodyTooLarge, InvalidJSON)):
        g.site = current_config().site(request.args.get("tc_s", "").strip())  # unauthenticated, but names where to look
        record(exc.reason)
        return jsonify({"status": "error", "message": exc.reason}), 400
    record(exc.reason, g.get("body"))
    if request.endpoint == "commanders.events":
        return jsonify({**OK, "dry_run": True, "refused": exc.reason} if dry_run() else OK)
    answer = {"status": "error", "message": exc.reason}
    return jsonify({**answer, "dry_run": True} if dry_run() else answer)


def record(reason: str, body: Any = None) -> None:
    """Keep a refused or partly accepted request for the inspector; a dry run keeps nothing."""
    if not dry_run():
        site = g.get("site")
        inspector.record(commanders.DIALECT, site.id if site else None, reason, body)


def authenticate(config: Config) -> Site:
    """The `tc_s` site, if the source key (Bearer header, or the `token` parameter) is one of its keys."""
    site_id = request.args.get("tc_s", "").strip()
    if not site_id:
        raise Refused("Missing tc_s (site id)")
    site = g.site = config.site(site_id)
    if site is None:
        raise Refused("Unknown site (tc_s)")
    key = source_key()
    if not key:
        raise BadCredentials("Missing source key")
    if not any(hmac.compare_digest(key.encode(), known.encode()) for known in site.keys):
        # One answer for every unusable key: telling "another site's" apart would confirm a guessed key.
        raise BadCredentials("Invalid source key")
    return site


def source_key() -> str | None:
    """The Bearer token, else the `token` parameter."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.args.get("token", "").strip() or None  # the vendor's newer docs put the key in the URL


@bp.after_request
def cors(response: Response) -> Response:
    """Browsers may post events; the `tc_s` site's allowed origins decide, and the key travels in Authorization."""
    if request.endpoint not in ("commanders.events", "commanders.events_preflight"):
        return response
    config = current_config()
    site = g.get("site") or config.site(request.args.get("tc_s", "").strip())
    return allow_origin(response, request.headers.get("Origin"), site, config, headers=(*CORS_HEADERS, "Authorization"))


@bp.route("/events", methods=["OPTIONS"])
def events_preflight():
    """CORS preflight for browsers posting events."""
    return Response(status=204)


@bp.post("/events")
def events():
    """One event; always `{"status":"ok"}` unless the body is too large or not JSON."""
    config = current_config()
    body = g.body = read_json(request, config.max_body_bytes)
    site = authenticate(config)
    if not isinstance(body, dict):
        raise NotAnObject()
    known = profiles.known(site.id, commanders.user_id(body, site))
    event = commanders.parse(body, client_context(request, config.trusted_proxies), site, config.consent_default,
                             utcnow(), known)
    event.items = catalog.enrich(event.items, site.id, event.currency)
    if dry_run():
        return jsonify({**OK, "dry_run": True, "notes": event.notes, "destinations": preview(event, site)})
    _, created = accept(event, site, config)
    if created and event.notes:
        record("partly accepted: " + "; ".join(event.notes), body)
    return jsonify(OK)


@bp.post("/users")
def upsert_user():
    """Create or update a user profile, identity hashed at ingest."""
    config = current_config()
    body = read_json(request, config.max_body_bytes)
    shown = g.body = _without_user_id(body)
    site = authenticate(config)
    if not isinstance(body, dict):
        raise NotAnObject()
    user = commanders.parse_profile(body, site)
    if dry_run():
        return jsonify({**OK, "dry_run": True, "notes": user.notes, "identity": sorted(user.hashes), "location": sorted(user.location)})
    profiles.upsert(site.id, user.user_id, user.hashes, user.location, user.anonymous_id, utcnow())
    if user.notes:
        record("partly accepted: " + "; ".join(user.notes), shown)
    return jsonify(OK)


@bp.delete("/users/<path:user_id>")
def erase_user(user_id: str):
    """Erase a user's profile and every personal field of their events and sends (GDPR)."""
    site = authenticate(current_config())
    if not user_id.strip() or len(user_id) > MAX_ID_CHARS:
        raise Refused(f"Invalid user id (1 to {MAX_ID_CHARS} characters)")
    erased = profiles.erase(site.id, commanders.stored_user_id(user_id.strip(), site), utcnow())
    return jsonify({**OK, "erased": {"profile": erased.profile, "events": erased.events, "sends": erased.sends}})


@bp.post("/products")
def upsert_products():
    """Upsert one catalogue item or a list of them; each bad one is refused on its own."""
    config = current_config()
    body = g.body = read_json(request, config.max_body_bytes)
    site = authenticate(config)
    if not isinstance(body, (dict, list)):
        raise NotAnObject("Request body must be a product object or a list of them")
    products, rejected, notes = [], [], []
    for index, raw in enumerate(body if isinstance(body, list) else [body]):
        try:
            products.append(commanders.parse_product(raw, notes, f"products[{index}]."))
        except FieldError as exc:
            rejected.append({"index": index, "message": exc.reason})
    upserted = len(products) if dry_run() else catalog.upsert(site.id, products, utcnow())
    if rejected or notes:
        reasons = [f"products[{r['index']}]: {r['message']}" for r in rejected] + notes
        record(("refused: " if not products else "partly accepted: ") + "; ".join(reasons), body)
    answer: dict = {**OK, "upserted": upserted}
    if rejected:
        answer = {"status": "error", "message": f"{len(rejected)} of {len(rejected) + len(products)} products refused",
                  "upserted": upserted, "rejected": rejected}
    return jsonify({**answer, "dry_run": True} if dry_run() else answer)


def _without_user_id(body: Any) -> Any:
    """The inspector shows `id` values; a user id names a person, so it is masked before recording."""
    return {**body, "id": "<user id>"} if isinstance(body, dict) and "id" in body else body
