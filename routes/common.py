"""Request plumbing every dialect's view shares: dry runs, bounded body reading, client context, CORS."""
from __future__ import annotations

import ipaddress
import json
from typing import Any

from flask import Request, Response, current_app, has_request_context, request

from config import Config, Site
from dialects.common import ClientContext
from outbound import Http
from dialects.errors import BodyTooLarge, InvalidJSON, NotAnObject

OVERRIDE_IP = "X-Postback-Client-IP"
OVERRIDE_UA = "X-Postback-Client-User-Agent"
CORS_HEADERS = ("Content-Type", OVERRIDE_IP, OVERRIDE_UA)


def current_config() -> Config:
    return current_app.config["POSTBACK"]


def outbound_http() -> Http:
    """The app's Http for the calls a request makes (Telegram's Bot API): its sessions outlive the request."""
    return current_app.extensions.setdefault("postback.outbound", Http(current_config().timeout_seconds))


def dry_run() -> bool:
    """`?dry_run=1` (or `true`): validate and answer, store nothing."""
    return request.args.get("dry_run") in ("1", "true")


def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing anything over `limit` bytes without reading it all into memory."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(limit)
    chunks, size = [], 0
    while size <= limit:  # a WSGI stream may return less than asked for before its end
        chunk = request.stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise BodyTooLarge(limit)
    return b"".join(chunks)


def read_json(request: Request, limit: int) -> Any:
    """A JSON body whatever its Content-Type: sendBeacon posts text/plain."""
    data = read_body(request, limit)
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack
        raise InvalidJSON() from None
    if b"\\u" in data and _has_lone_surrogate(body):
        raise InvalidJSON()
    return body


def read_object(request: Request, limit: int) -> dict:
    """A JSON body that must be an object."""
    body = read_json(request, limit)
    if not isinstance(body, dict):
        raise NotAnObject()
    return body


def _has_lone_surrogate(body: Any) -> bool:
    """A lone \\ud800 escape parses but cannot be encoded, hashed or stored as UTF-8."""
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):
        return True
    return False


def client_context(request: Request, trusted_proxies: int) -> ClientContext:
    """The customer's IP, user agent, referrer and language; a shop's server passes them in override headers."""
    user_agent = request.headers.get(OVERRIDE_UA) or request.headers.get("User-Agent")
    language = request.headers.get("Accept-Language", "").split(",")[0].split(";")[0].strip() or None
    return ClientContext(
        ip=valid_ip(request.headers.get(OVERRIDE_IP)) or _connection_ip(request, trusted_proxies),
        user_agent=user_agent or None,
        referrer=request.headers.get("Referer") or None,
        language=language,
    )


def cookies_secure(request: Request) -> bool:
    """Whether cookies get the Secure flag: when Postback is served over HTTPS (`server.public_url`), or the
    browser reached it so."""
    config = current_config()
    return str(config.server.get("public_url") or "").startswith("https://") or reached_over_https(
        request, config.trusted_proxies)


def reached_over_https(request: Request, trusted_proxies: int) -> bool:
    """Whether the browser reached us over HTTPS; X-Forwarded-Proto counts only behind trusted proxies."""
    if request.is_secure:
        return True
    hops = [h.strip().lower() for h in request.headers.get("X-Forwarded-Proto", "").split(",") if h.strip()]
    return trusted_proxies > 0 and bool(hops) and hops[-1] == "https"  # the nearest proxy sets or appends it last


def requester_ip(request: Request, trusted_proxies: int) -> str:
    """Who is asking, for throttling: the connection's address (never the client-IP override a caller sets)."""
    return _connection_ip(request, trusted_proxies) or "unknown"


def _connection_ip(request: Request, trusted_proxies: int) -> str | None:
    """The address `trusted_proxies` hops back in X-Forwarded-For; the socket's own when none is trusted."""
    if trusted_proxies > 0:
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
        if len(hops) >= trusted_proxies:
            return valid_ip(hops[-trusted_proxies])
    return valid_ip(request.remote_addr)


def valid_ip(value: str | None) -> str | None:
    """The address in its canonical spelling; None when `value` is not one."""
    try:
        return str(ipaddress.ip_address(value.strip())) if value else None
    except ValueError:
        return None


def allow_origin(response: Response, origin: str | None, site: Site | None, config: Config,
                 headers: tuple[str, ...] = CORS_HEADERS, credentials: bool = False) -> Response:
    """CORS for browser calls (docs/configuration.md#sites): the key's site decides (`origin_allowed`)."""
    preflight = has_request_context() and request.method == "OPTIONS"
    if origin_allowed(origin, site, config, credentials, preflight):
        response.headers["Access-Control-Allow-Origin"] = origin
        if credentials:  # cookies ride along; browsers then refuse `*`, hence the exact origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = ", ".join(headers)
        response.headers["Access-Control-Max-Age"] = "600"
        response.vary.add("Origin")
    return response


def origin_allowed(origin: str | None, site: Site | None, config: Config, credentials: bool, preflight: bool) -> bool:
    """Whether a browser at `origin` may read the answer.

    Once the key names the site, that site's `allowed_origins` decide. Before (a refusal, a preflight), only an
    origin some site lists by name: a site's `"*"` opens its own answers, not the refusals of everyone's, and
    lets only a preflight through (it tells nothing; the answer after it is the key's site's to allow). With
    credentials (cookies) only an origin listed by name, and never `null` (a sandboxed or local page), through
    `"*"`: browsers would send cookies to any page that asks.
    """
    if not origin:
        return False
    wildcard_ok = not credentials and origin != "null"
    if site is not None:
        return origin in site.allowed_origins or (wildcard_ok and "*" in site.allowed_origins)
    if any(origin in s.allowed_origins for s in config.sites):
        return True
    return preflight and wildcard_ok and any("*" in s.allowed_origins for s in config.sites)
