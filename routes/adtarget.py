"""AdTarget's API (docs/dialects/adtarget.md): `/api/v1/events/*`, `/api/v1/leads/*`, `/api/v1/channels`.

Checks in order: Bearer key (401), body size (413), JSON object (400), fields (400), then what the
funnel refuses (404, 409, Telegram's 502/503/429). Errors are `{"error": CODE, "message": …}`.
"""
from __future__ import annotations

from flask import Blueprint, Response, g, jsonify, request

from dialects.adtarget import funnel
from ingest import inspector
from dialects.adtarget import telegram as telegram_api
from ingest.canonical import utcnow
from config import Config, Site
from dialects.adtarget import parse as adtarget
from dialects.common import ClientContext
from dialects.errors import BadCredentials, Refused, StorageFault
from dialects.adtarget.funnel import ConversionResult, FunnelError
from routes.common import client_context, current_config, dry_run, outbound_http, read_object, valid_ip

bp = Blueprint("adtarget", __name__, url_prefix="/api/v1")
FORWARDED_IP = "X-Adtarget-Client-IP"
FORWARDED_UA = "X-Adtarget-Client-User-Agent"


@bp.errorhandler(Refused)
def refused(exc: Refused):
    """`{"error": CODE, "message"}`; the refusal is kept for the inspector (a dry run keeps nothing; a storage
    fault is ours, and the inspector could not keep it)."""
    stored = not isinstance(exc, StorageFault)
    exc = FunnelError.of(exc)
    if stored and not dry_run():
        site = g.get("site")
        inspector.record(adtarget.DIALECT, site.id if site else None, f"{exc.code}: {exc.reason}", g.get("body"))
    response = jsonify({"error": exc.code, "message": exc.reason})
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="Postback"'
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(int(exc.retry_after))
    return response, exc.status


def authenticate(config: Config) -> Site:
    """The site whose key is in `Authorization: Bearer <key>`."""
    header = request.headers.get("Authorization", "").strip()
    if not header:
        raise BadCredentials("Missing Authorization header: send Authorization: Bearer <API key>")
    scheme, _, key = header.partition(" ")
    site = config.site_for_key(key.strip()) if scheme.lower() == "bearer" else None
    if site is None:
        raise BadCredentials("Invalid API key")
    g.site = site
    return site


def authenticated_body() -> tuple[Config, Site, dict]:
    """Key first, then the body: the checks every POST makes, in order."""
    config = current_config()
    site = authenticate(config)
    body = g.body = read_object(request, config.max_body_bytes)
    return config, site, body


def forwarded() -> ClientContext:
    """The end user's IP and UA as a proxy forwards them; they win over the body's clientIp/userAgent."""
    return ClientContext(ip=valid_ip(request.headers.get(FORWARDED_IP)),
                         user_agent=request.headers.get(FORWARDED_UA, "").strip() or None)


def partly_accepted(site: Site, notes: list[str], body: dict) -> None:
    """What was dropped from an accepted request goes to the inspector."""
    if notes and not dry_run():
        inspector.record(adtarget.DIALECT, site.id, "partly accepted: " + "; ".join(notes), body)


def telegram_user(value: str) -> str:
    """The `{telegramUserId}` of a path."""
    return adtarget.read_telegram_user_id(value, "telegramUserId")


@bp.post("/events/visit")
def visit():
    """Record a landing-page visit (AdTarget's mirror of the tracker's /track/init)."""
    config, site, body = authenticated_body()
    now = utcnow()
    given = adtarget.parse_visit(body, forwarded(), client_context(request, config.trusted_proxies), site, now)
    result = funnel.start_visit(site, given, now, dry_run=dry_run())
    partly_accepted(site, given.notes, body)
    answer = {"visitId": result.visit_id, "sessionId": result.session_id, "tempId": result.temp_id,
              "clientSessionId": result.client_session_id, "cookies": result.cookies()}
    return jsonify({**answer, "dry_run": True} if dry_run() else answer)


@bp.post("/events/update-fbp")
def update_fbp():
    """Set fbp on the visitor's latest visit."""
    _, site, body = authenticated_body()
    temp_id, fbp = adtarget.parse_update_fbp(body)
    if dry_run():
        return jsonify({"success": funnel.latest_visit(site, temp_id) is not None, "dry_run": True})
    success = funnel.update_fbp(site, temp_id, fbp)
    if not success:
        inspector.record(adtarget.DIALECT, site.id, "update-fbp: no visit recorded for this tempId", body)
    return jsonify({"success": success})


@bp.post("/events/invite")
def invite():
    """The visitor's own invite link to a channel, as JSON (no redirect)."""
    config, site, body = authenticated_body()
    temp_id, client_session_id, channel_ref = adtarget.parse_invite(body)
    link = funnel.invite_link(site, channel_ref, temp_id, client_session_id,
                              lambda: telegram_api.bot_for(site, config.timeout_seconds, outbound_http()), utcnow(),
                              dry_run=dry_run())
    return jsonify({"inviteLink": link, "dry_run": True} if dry_run() else {"inviteLink": link})


@bp.post("/events/conversion")
def conversion():
    """A conversion of a Telegram user: warm or cold, dispatched or not (the vendor's answer)."""
    config, site, body = authenticated_body()
    now = utcnow()
    given = adtarget.parse_conversion(body, forwarded(), site, now)
    result = funnel.convert(site, config, given, now, dry_run=dry_run())
    partly_accepted(site, given.notes, body)
    return conversion_answer(result, site)


@bp.post("/leads/<telegram_user_id>/events")
def lead_event(telegram_user_id: str):
    """Another event on an existing lead; the channel defaults to its latest conversion's."""
    config, site, body = authenticated_body()
    user = telegram_user(telegram_user_id)
    now = utcnow()
    given = adtarget.parse_conversion(body, forwarded(), site, now, telegram_user_id=user)
    result = funnel.convert_lead(site, config, given, now, dry_run=dry_run())
    partly_accepted(site, given.notes, body)
    return conversion_answer(result, site)


@bp.post("/leads/<telegram_user_id>/conversions/<conversion_id>/value")
def conversion_value(telegram_user_id: str, conversion_id: str):
    """Give a waiting Purchase its value; it is dispatched now."""
    config, site, body = authenticated_body()
    user = telegram_user(telegram_user_id)
    given = adtarget.parse_value(body, site)
    result = funnel.submit_value(site, config, user, conversion_id, given, utcnow(), dry_run=dry_run())
    partly_accepted(site, given.identity.dropped, body)
    if dry_run():
        return jsonify({"success": True, "dry_run": True, "destinations": funnel.dry_run_destinations(result, site)})
    return jsonify({"success": True})


@bp.get("/leads/<telegram_user_id>")
def lead(telegram_user_id: str):
    """Everything known about a lead on this site."""
    site = authenticate(current_config())
    user = telegram_user(telegram_user_id)
    found, conversions = funnel.lead(site, user)
    answer = {"telegramUserId": int(user), "firstSeenAt": _millis(found.first_seen_at),
              "lastSeenAt": _millis(found.last_seen_at)}
    if found.external_user_id:
        answer["externalUserId"] = found.external_user_id
    answer["conversions"] = [_conversion(c) for c in conversions]
    return jsonify(answer)


@bp.get("/channels")
def channels():
    """The site's channels with both their ids."""
    site = authenticate(current_config())
    listed = sorted(site.telegram.channels if site.telegram else (), key=lambda c: c.funnel_order)
    return jsonify({"channels": [
        {k: v for k, v in (("channelId", c.id), ("telegramChannelId", c.telegram_id), ("title", c.title),
                           ("username", c.username), ("funnelOrder", c.funnel_order), ("eventType", c.event_type))
         if v is not None}
        for c in listed
    ]})


def conversion_answer(result: ConversionResult, site: Site) -> Response:
    """The vendor's conversion body; `warning` only when nothing was scheduled."""
    answer: dict = {"conversionId": result.conversion_id, "capiStatus": result.capi_status, "coldLead": result.cold_lead,
                    "dispatched": result.dispatched}
    if result.warning:
        answer["warning"] = result.warning
    if dry_run():
        answer.update(sends=[], dry_run=True, destinations=funnel.dry_run_destinations(result, site))
    else:
        answer["sends"] = [{"sendId": send_id, "platform": platform} for send_id, platform in result.sends]
    return jsonify(answer)


def _conversion(c: funnel.Conversion) -> dict:
    entry = {"conversionId": c.public_id, "channelId": c.channel, "eventType": c.event_type,
             "capiStatus": funnel.delivery_status(c), "attributedAt": _millis(c.attributed_at)}
    if c.value is not None:
        entry["eventValue"] = c.value
    if c.currency:
        entry["eventCurrency"] = c.currency
    entry["source"] = c.source
    return entry


def _millis(moment) -> int:
    return int(moment.timestamp()) * 1000 + moment.microsecond // 1000
