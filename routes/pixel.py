"""PitchTarget pixel `GET /{app_token}/{event|revenue}.gif` (docs/dialects/pixel.md): a GIF whatever happens to the event."""
from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, request

from ingest import inspector
from dialects.pixel import profiles as pixel_profiles
from ingest.canonical import utcnow
from config import Config, Site
from dialects.pixel import parse as pixel
from dialects.errors import Refused, StorageFault
from ingest import clickids
from ingest.accept import accept
from models import Event, Send
from routes.common import client_context, cookies_secure, current_config

bp = Blueprint("pixel", __name__)

# GIF89a, 1×1, one transparent pixel: the smallest GIF every browser renders (also served as /static/pixel.gif).
GIF = (Path(__file__).resolve().parent.parent / "static" / "pixel.gif").read_bytes()
COOKIE = "postback_uuid"
COOKIE_MAX_AGE = 400 * 24 * 3600  # browsers cap cookie lifetimes at 400 days
NO_STORE = {"Cache-Control": "no-store"}


def debug() -> bool:
    return request.args.get("debug") in ("1", "true")


def not_found() -> Response:
    """The vendor's docs: without a valid token and category "the GIF will not load"; no body worth parsing."""
    return Response(b"", status=404, mimetype="text/plain", headers=NO_STORE)


@bp.errorhandler(StorageFault)
def not_stored(exc: StorageFault) -> Response:
    """A page must still get its GIF (a broken image is the page owner's problem, not the visitor's); nothing is
    stored, and `debug=1` says why with a 503."""
    visitor = pixel.valid_visitor_id(request.cookies.get(COOKIE))
    response = _answer(visitor, {"accepted": False, "stored": False, "error": exc.reason})
    if debug():
        response.status_code = exc.status
    return response


# Only `<token>/<category>.gif`, two segments: `/static/…` and every other route's static prefix win over it.
@bp.get("/<app_token>/<category>.gif")
def hit(app_token: str, category: str):
    config = current_config()
    site = _site_for_token(config, app_token)
    if request.method == "HEAD":  # link checkers probe with HEAD; only a real load is an event
        return not_found() if site is None or category not in pixel.CATEGORIES else _answer(None, {})
    if site is None:
        inspector.record(pixel.DIALECT, None, "Unknown app token", {"category": category})
        return not_found()
    if category not in pixel.CATEGORIES:
        inspector.record(pixel.DIALECT, site.id, "Unknown category (use event.gif or revenue.gif)", {"category": category})
        return not_found()

    args = request.args.to_dict()
    params: Any = None
    try:
        params = pixel.decode_params(args.get("params"), config.max_body_bytes)
        call = pixel.parse(category, args, params, request.cookies.get(COOKIE),
                           client_context(request, config.trusted_proxies), site, config.consent_default, utcnow())
    except Refused as exc:
        inspector.record(pixel.DIALECT, site.id, exc.reason, _excerpt(category, args, params))
        visitor = pixel.valid_visitor_id(request.cookies.get(COOKIE)) or pixel.new_visitor_id()
        return _answer(visitor, {"accepted": False, "stored": False, "error": exc.reason, "uuid": visitor})

    event = call.event
    known = None if call.new_visitor else pixel_profiles.find(site.id, call.uuid)
    earlier = known.identity if known else {}
    event.identity = {**earlier, **event.identity}  # what the visitor said before; this call's values win
    fbid = call.fbid or (known.fbid if known else None)
    if fbid:  # kept in clear, as the click id of the platform that reads a pixel's `fbid`
        event.click_ids = {**event.click_ids, **clickids.read({"fbid": fbid}, (clickids.ALIAS,))[0]}
    # The visitor's profile is stored with the event, in its transaction: both or neither, and no commit of its own.
    profile = pixel_profiles.merging(site.id, call.uuid, call.identity, call.fbid, event.received_at, known)
    row, created = accept(event, site, config, also=profile)
    if created and event.notes:
        inspector.record(pixel.DIALECT, site.id, "partly accepted: " + "; ".join(event.notes), _excerpt(category, args, params))
    return _answer(call.uuid, _report(call, row, created, earlier) if debug() else {})


def _report(call: pixel.Hit, row: Event, created: bool, earlier: dict) -> dict:
    """What `debug=1` answers: the stored event's names and value, notes and sends; hashes never."""
    return {
        "accepted": True, "stored": created,
        "message": "Event recorded" if created else "Duplicate event ignored",
        "event_id": row.event_id, "event_name": row.event_name, "standard_name": row.standard_name,
        "value": row.value, "currency": row.currency, "uuid": call.uuid,
        "identity": call.identity_fields, "identity_from_profile": bool(set(earlier) - set(call.identity)),
        "notes": row.notes,
        "sends": [{"destination": s.destination, "status": s.status, "reason": s.reason}
                  for s in Send.select().where(Send.event == row).order_by(Send.id)],
    }


def _site_for_token(config: Config, token: str) -> Site | None:
    given = token.encode()  # compared in constant time: a token is the pixel's only credential
    return next((s for s in config.sites if s.pixel_token and hmac.compare_digest(s.pixel_token.encode(), given)), None)


def _answer(visitor: str | None, report: dict) -> Response:
    """The GIF, or with `debug=1` what happened as JSON; either way the visitor's cookie is (re)set."""
    response = jsonify(report) if report and debug() else Response(GIF, mimetype="image/gif")
    response.headers.update(NO_STORE)
    # Pages on any origin embed the pixel, including those that require CORP (COEP: require-corp).
    response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    if visitor:
        secure = cookies_secure(request)
        # SameSite=None lets the cookie ride along on other sites' pages; browsers accept it only with Secure.
        response.set_cookie(COOKIE, visitor, max_age=COOKIE_MAX_AGE, path="/", secure=secure, httponly=True,
                            samesite="None" if secure else "Lax")
    return response


def _excerpt(category: str, args: dict, params: Any) -> dict:
    """What the inspector may show: the query's fields and the decoded params' keys, never a token or raw params."""
    body: dict = {"category": category, **{k: v for k, v in args.items() if k != "params"}}
    if isinstance(params, dict):
        body["params_fields"] = {k: v for k, v in params.items() if k != "access_token"}
    elif "params" in args:
        body["params"] = args["params"]  # the inspector shows it as <str> only
    return body
