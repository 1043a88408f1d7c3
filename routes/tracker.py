"""The tracker (docs/dialects/adtarget.md): `POST /track/init` and `GET /track/invite`, the Telegram funnel served to a browser.

A page names its site by `site`, the site's id: it is public already (the webhook path, Commanders'
`tc_s`), while a site's keys also authorize the server APIs — a key in a page would let anyone fire
Purchases through `/api/v1/events/conversion`. The visitor's ids live in first-party cookies set
here; the rules (visits, one invite link per visitor and channel) are funnel.py's, shared with the
AdTarget API, so a visit made here is the same row `POST /api/v1/events/visit` makes.
"""
from __future__ import annotations

import re
from datetime import datetime

from flask import Blueprint, Response, g, jsonify, redirect, render_template, request

from dialects.adtarget import funnel
from ingest import inspector
from dialects.adtarget import telegram as telegram_api
from ingest.canonical import utcnow
from config import Channel, Config, Site
from dialects.adtarget import parse as adtarget
from dialects.adtarget.parse import VisitInput
from dialects.common import ClientContext, clean_url, present, read_id, split_url
from dialects.errors import FieldError, Refused, StorageFault
from ingest import browser_keys, clickids
from dialects.adtarget.funnel import SESSION_COOKIE, SESSION_COOKIE_MAX_AGE, TEMP_COOKIE, TEMP_COOKIE_MAX_AGE, FunnelError
from routes.common import allow_origin, client_context, cookies_secure, current_config, dry_run, outbound_http, read_object

bp = Blueprint("tracker", __name__, url_prefix="/track")
DIALECT = "tracker"
# RFC 6265 cookie-octets: an id kept in a cookie must be storable there byte for byte.
COOKIE_ID_RE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]{1,255}")
MAX_REFERER_CHARS = adtarget.MAX_TEXT_CHARS
TITLES = {
    "VALIDATION_ERROR": "This link is incomplete",
    "SITE_NOT_FOUND": "Unknown site",
    "CHANNEL_NOT_FOUND": "Unknown channel",
    "TELEGRAM_RATE_LIMITED": "Telegram is busy",
}


@bp.errorhandler(Refused)
def refused(exc: Refused):
    """JSON for /track/init (AdTarget's error body); a small page for /track/invite, which a person follows."""
    keep = not isinstance(exc, StorageFault)  # ours, not the request's: and the inspector could not keep it
    exc = FunnelError.of(exc)
    if keep and not (request.endpoint == "tracker.init" and dry_run()):  # an invite a person follows is never a dry run
        site = g.get("site")
        step = request.endpoint.rpartition(".")[2] if request.endpoint else "tracker"
        inspector.record(DIALECT, site.id if site else None, f"{step}: {exc.code}: {exc.reason}", g.get("body"))
    if request.endpoint == "tracker.invite" and not wants_json():
        response = Response(error_page(exc, g.get("channel")), status=exc.status, mimetype="text/html")
    else:
        response = jsonify({"error": exc.code, "message": exc.reason})
        response.status_code = exc.status
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(int(exc.retry_after))
    if request.endpoint == "tracker.invite":
        response.headers["Cache-Control"] = "no-store"
        if g.get("visitor"):
            keep_visitor(response, *g.visitor)
    return response


@bp.after_request
def cors(response: Response) -> Response:
    """CORS with credentials for /track/init: the exact origin echoed, never `*` (browsers refuse it with cookies)."""
    if request.endpoint not in ("tracker.init", "tracker.preflight"):
        return response
    allow_origin(response, request.headers.get("Origin"), g.get("site"), current_config(), headers=("Content-Type",),
                 credentials=True)
    response.vary.add("Origin")
    return response


@bp.route("/init", methods=["OPTIONS"])
def preflight():
    """A preflight names no body; `?site=` lets it be answered for that site alone."""
    name = request.args.get("site")
    if name:
        g.site = current_config().site(name)
    return Response(status=204)


@bp.post("/init")
def init():
    """Record a landing-page visit (as `POST /api/v1/events/visit`) and keep the visitor's ids in cookies."""
    config = current_config()
    body = g.body = read_object(request, config.max_body_bytes)
    site = site_named(config, site_of(body))
    check_origin(site)
    now = utcnow()
    key = body.pop("key", None) or request.args.get("key")
    if present(key):  # postback.js sends its browser key; the site's id alone still works, as it always did
        if request.headers.get("Origin") is None:
            raise FunnelError("UNAUTHORIZED", 401, browser_keys.INVALID_KEY)
        count_browser_call(config, site, key, now)
    given = parse_init(body, client_context(request, config.trusted_proxies), site, now)
    result = funnel.start_visit(site, given, now, dry_run=dry_run())
    if given.notes and not dry_run():
        inspector.record(DIALECT, site.id, "init: partly accepted: " + "; ".join(given.notes), body)
    answer = {"visitId": result.visit_id, "sessionId": result.session_id, "tempId": result.temp_id,
              "clientSessionId": result.client_session_id, "cookies": result.cookies()}
    if dry_run():  # a dry run stores nothing, cookies included
        return jsonify({**answer, "dry_run": True})
    return keep_visitor(jsonify(answer), result.temp_id, result.client_session_id)


@bp.get("/invite")
def invite():
    """302 to the visitor's own invite link; a visitor the tracker has not seen yet gets a visit first."""
    config = current_config()
    g.body = request.args.to_dict()
    site = site_named(config, request.args.get("site"))
    channel_ref = request.args.get("channel", "").strip()
    if not channel_ref:
        raise FieldError("channel")
    channel = g.channel = channel_named(site, channel_ref)
    if request.method == "HEAD":  # link checkers probe with HEAD: only a real visit may record one or ask Telegram
        return Response(status=200, headers={"Cache-Control": "no-store"})
    now = utcnow()
    if present(request.args.get("key")):  # a link a person follows carries no Origin: the key and its rate only
        count_browser_call(config, site, request.args.get("key"), now)
    temp_id = cookie_id(TEMP_COOKIE) or valid_id(request.args.get("tempId"))
    session_id = cookie_id(SESSION_COOKIE)
    if temp_id is None or from_ad() or funnel.latest_visit(site, temp_id) is None:
        given = landing_visit(client_context(request, config.trusted_proxies), temp_id, session_id, site, now)
        started = funnel.start_visit(site, given, now)
        temp_id, session_id = started.temp_id, started.client_session_id
        g.visitor = (temp_id, session_id)  # kept even if Telegram then fails: a retry is the same visitor
    link = funnel.invite_link(site, channel.id, temp_id, session_id,
                              lambda: telegram_api.bot_for(site, config.timeout_seconds, outbound_http()), now)
    response = redirect(link, 302)
    response.headers["Cache-Control"] = "no-store"  # each visitor has its own link: no cache may share one
    return keep_visitor(response, temp_id, session_id)


# --- the request --------------------------------------------------------------------------------------------


def site_of(body: dict) -> object:
    """`site` from the query string or the body (taken out of the body: it is not a visit field)."""
    in_body = body.pop("site", None)
    in_query = request.args.get("site")
    if present(in_query) and present(in_body) and in_body != in_query:
        raise FieldError("site", "the query string and the body name different sites")
    return in_query if present(in_query) else in_body


def site_named(config: Config, name: object) -> Site:
    """The site a page names by its id."""
    if not present(name):
        raise FieldError("site")
    if not isinstance(name, str):
        raise FieldError("site", "must be a string")
    site = config.site(name.strip())
    if site is None:
        raise FunnelError("SITE_NOT_FOUND", 404, f"No site {name.strip()[:100]!r} (sites[].id)")
    g.site = site
    return site


def check_origin(site: Site) -> None:
    """A page on an origin the site does not list is refused before anything is stored or any cookie set."""
    origin = request.headers.get("Origin")
    parts = split_url(origin) if origin is not None else None
    if origin is None or (parts is not None and parts.netloc == request.host) or site.allows_origin(origin):
        return
    raise FunnelError("ORIGIN_NOT_ALLOWED", 403,
                      f"Origin {origin[:200]} is not in the allowed_origins of site {site.id!r} "
                      "(sites[].allowed_origins)")


def count_browser_call(config: Config, site: Site, key: object, now: datetime) -> None:
    """A browser key of this very site, counted against its rate; refused in the tracker's shape."""
    browser = browser_keys.of_site(config, site, key)
    if dry_run() and request.endpoint == "tracker.init":
        return
    try:
        browser_keys.count_call(browser, now)
    except browser_keys.OverRate as exc:
        raise FunnelError("RATE_LIMITED", 429, exc.reason, exc.retry_after) from None


def parse_init(body: dict, connection: ClientContext, site: Site, now: datetime) -> VisitInput:
    """The visit fields of `/api/v1/events/visit`; the cookies name the visitor, and the request itself its browser."""
    body = dict(body)
    for key, cookie in (("tempId", TEMP_COOKIE), ("clientSessionId", SESSION_COOKIE)):
        kept, sent = cookie_id(cookie), read_id(body, key)
        if kept:
            body[key] = kept
        elif sent is not None and valid_id(sent) is None:
            raise FieldError(key, "must be printable ASCII without spaces, quotes, commas, semicolons or "
                                  "backslashes: it is kept in a cookie")
    if isinstance(body.get("href"), str):
        earlier = earlier_clicks(site, body.get("tempId"), body["href"])
        body = {**body, **{key: value for key, value in earlier.items() if not present(body.get(key))}}
    # The browser itself is calling: its own IP and user agent win over clientIp/userAgent in the body.
    return adtarget.parse_visit(body, ClientContext(ip=connection.ip, user_agent=connection.user_agent), connection,
                                site, now)


def landing_visit(connection: ClientContext, temp_id: str | None, session_id: str | None, site: Site,
                  now: datetime) -> VisitInput:
    """The visit an invite records itself: the page that linked here (Referer), or this very URL when an ad
    points straight at it (it then carries the click id) or no Referer came."""
    referer = connection.referrer if connection.referrer and len(connection.referrer) <= MAX_REFERER_CHARS else None
    referer = clean_url(referer, "Referer", [])
    href, referrer = (request.url, referer) if from_ad() or referer is None else (referer, None)
    body = {"href": href, "referrer": referrer, "tempId": temp_id, "clientSessionId": session_id,
            **earlier_clicks(site, temp_id, href)}
    return adtarget.parse_visit({k: v for k, v in body.items() if v}, ClientContext(), connection, site, now)


def earlier_clicks(site: Site, temp_id: object, href: str) -> dict[str, str]:
    """The click ids the visitor already has that ingest made for the clicks in `href`: a reload of the ad's
    page is the same click, and keeps its first-seen time instead of being minted anew."""
    query = adtarget.url_parameters(href) if isinstance(temp_id, str) else {}
    visit = funnel.latest_visit(site, temp_id) if clickids.mints_from(query) else None
    return clickids.made_for(query, visit.click_ids) if visit is not None else {}


def from_ad() -> bool:
    """Whether the invite URL itself carries a parameter an ad click appends, or a utm_ one."""
    ad_parameters = clickids.url_parameters()
    return any(key in ad_parameters or key.startswith("utm_") for key in request.args)


def channel_named(site: Site, ref: str) -> Channel:
    """A channel by config id or Telegram id (funnel's rule), else by its public username: a page's
    `https://t.me/<username>` link can then be rewritten without knowing the config."""
    try:
        return funnel.channel_for(site, ref)
    except FunnelError:
        username = ref.removeprefix("@").lower()
        channels = site.telegram.channels if site.telegram else ()
        found = next((c for c in channels if c.username and c.username.lower() == username), None)
        if found is None:
            raise
        return found


def cookie_id(name: str) -> str | None:
    return valid_id(request.cookies.get(name))


def valid_id(value: str | None) -> str | None:
    """An id the tracker can keep in a cookie as it is; anything else is treated as absent."""
    value = value.strip() if isinstance(value, str) else None
    return value if value and COOKIE_ID_RE.fullmatch(value) else None


# --- the answer ---------------------------------------------------------------------------------------------


def keep_visitor(response: Response, temp_id: str, session_id: str | None) -> Response:
    """(Re)set the visitor's cookies, renewing their lifetimes: the session lasts 30 minutes after the last call.

    HttpOnly: the page learns tempId from /track/init's answer, and the cookie belongs to the tracker's
    host, which the page's own document.cookie cannot read anyway; script on the page never needs it.
    SameSite=Lax (as AdTarget's docs set it): sent on the visitor's click to /track/invite and on same-site fetches.
    """
    secure = cookies_secure(request)
    response.set_cookie(TEMP_COOKIE, temp_id, max_age=TEMP_COOKIE_MAX_AGE, path="/", secure=secure, httponly=True,
                        samesite="Lax")
    if session_id:
        response.set_cookie(SESSION_COOKIE, session_id, max_age=SESSION_COOKIE_MAX_AGE, path="/", secure=secure,
                            httponly=True, samesite="Lax")
    return response


def wants_json() -> bool:
    return request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json"


def error_page(exc: FunnelError, channel: Channel | None) -> str:
    """A page a person can read; when Telegram fails, the channel's public link still lets them in."""
    way_in = channel if exc.code.startswith("TELEGRAM") and channel is not None and channel.username else None
    return render_template("tracker_error.html", title=TITLES.get(exc.code, "Could not open the Telegram channel"),
                           message=exc.reason, channel=way_in)
