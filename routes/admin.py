"""The admin JSON API: login sessions, the inspector and the console's lookups. Authenticated by `admin.password`,
or by the password generated beside the database when that is empty."""
from __future__ import annotations

import hmac
import secrets
import sys
from functools import wraps
from typing import Callable

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from config import Config
from console import accuracy, destinations as dests, dialect_pages, kept
from console.events import Filters, listing
from console.overview import overview
from console import throttle
from console.sessions import end_session, open_session, valid_session
from console.settings import shown_config
from console.story import replay, story
from delivery.backfill import BackfillError, backfill, destination_to_backfill, parse_since
from dialects.errors import BodyTooLarge, FieldError, Refused, StorageFault
from ingest import inspector
from ingest.canonical import utcnow
from models import MAX_ROW_ID  # a larger id in a path is no route (404), not a 500
from routes.common import current_config, read_json, read_object, requester_ip

bp = Blueprint("admin", __name__, url_prefix="/admin/api")
SESSION_HOURS = 12
PASSWORD_FILE = "admin-password"


@bp.errorhandler(Refused)
def refused(exc: Refused):
    """A body that cannot be read, storage that cannot be written, or a dialect's own refusal (404, 409): the admin
    API's `{"error", "code"}`."""
    status = 503 if isinstance(exc, StorageFault) else 413 if isinstance(exc, BodyTooLarge) else getattr(exc, "status", 400)
    return jsonify({"error": exc.reason, "code": status}), status


def password_file(config: Config) -> str:
    """Where the generated admin password is kept: beside the database (on PostgreSQL, a copy of the database's)."""
    return kept.path_of(config.database, PASSWORD_FILE)


def _new_password() -> str:
    return secrets.token_urlsafe(18)


def admin_password() -> str:
    """`admin.password`, or when it is empty the one generated once and kept in `password_file`."""
    config = current_config()
    if config.admin_password:
        return config.admin_password
    path = password_file(config)
    generated = current_app.extensions.setdefault("postback.generated_passwords", {})
    if path not in generated:
        generated[path] = kept.keep(config.database, PASSWORD_FILE, _new_password)[0]
    return generated[path]


def configure(app: Flask, config: Config) -> None:
    """At start-up, with `admin.password` empty: make the password (one for all workers) and print it once."""
    if config.admin_password:
        return
    path = password_file(config)
    password, made = kept.keep(config.database, PASSWORD_FILE, _new_password)
    if made:  # printed, not logged: it is for the person starting Postback, and logs carry no secrets
        print(f"Postback: admin.password is empty, so one was generated: {password}\n"
              f"  It is kept in {path}. To choose your own, set admin.password (or POSTBACK_ADMIN_PASSWORD).",
              file=sys.stderr, flush=True)


def password_matches(given: str | None) -> bool:
    expected = admin_password()
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class Throttled(Exception):
    """Too many wrong admin credentials from this client: it must wait `seconds` before its next try counts."""

    def __init__(self, seconds: int):
        super().__init__(f"Too many failed attempts: retry in {seconds} s")
        self.seconds = seconds


def guarded(check: Callable[[], bool]) -> bool:
    """One try of an admin credential from this client, through the throttle (console/throttle.py): raises
    Throttled while it must wait, whatever the credential; else whether `check` accepts it, counted."""
    client, now = requester_ip(request, current_config().trusted_proxies), utcnow()
    wait = throttle.retry_after(client, now)
    if wait:
        raise Throttled(wait)
    if check():
        throttle.succeeded(client)
        return True
    throttle.failed(client, now)
    return False


def throttled(exc: Throttled) -> Response:
    """429 with `Retry-After`, in the admin API's `{"error", "code"}`."""
    response = jsonify({"error": str(exc), "code": 429})
    response.status_code = 429
    response.headers["Retry-After"] = str(exc.seconds)
    return response


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    return header[len("Bearer "):] if header.startswith("Bearer ") else None


def _authorized() -> bool:
    """A credential is given and right (no credential at all is not a failed try)."""
    token = _bearer()
    if token is not None:
        return guarded(lambda: password_matches(token) or valid_session(token))
    if request.authorization and request.authorization.type == "basic":
        return guarded(lambda: password_matches(request.authorization.password))
    return False


def admin_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        try:
            authorized = _authorized()
        except Throttled as exc:
            return throttled(exc)
        if not authorized:
            response = jsonify({"error": "Authentication required", "code": 401})
            response.headers["WWW-Authenticate"] = 'Basic realm="Postback admin"'
            return response, 401
        return view(*args, **kwargs)
    return wrapper


@bp.post("/login")
def login():
    """Exchange the admin password for a session id (also usable as Octeth's SessionID)."""
    body = read_json(request, current_config().max_body_bytes)  # bounded, as every dialect reads its body
    password = body.get("password") if isinstance(body, dict) else None
    try:
        right = isinstance(password, str) and guarded(lambda: password_matches(password))
    except Throttled as exc:
        return throttled(exc)
    if not right:
        return jsonify({"error": "Wrong password", "code": 401}), 401
    session = open_session(SESSION_HOURS)
    return jsonify({"session_id": session.id, "expires_at": session.expires_at.isoformat()})


@bp.post("/logout")
def logout():
    """End the session whose id is the Bearer token: it no longer signs anyone in."""
    token = _bearer()
    if token is None or not end_session(token):
        return jsonify({"error": "No such session", "code": 404}), 404
    return jsonify({"logged_out": True})


@bp.get("/inspector")
@admin_required
def inspector_listing():
    """Refused and partly accepted requests, newest first; `site`, `dialect` and `limit` filter."""
    try:
        limit = min(1000, max(1, int(request.args.get("limit", 100))))
    except ValueError:
        return jsonify({"error": "Invalid field: limit (must be a whole number)", "code": 400}), 400
    entries = inspector.listing(site=request.args.get("site"), dialect=request.args.get("dialect"), limit=limit)
    return jsonify({"entries": entries})


@bp.get("/overview")
@admin_required
def overview_lookup():
    """What the console's overview shows: events per day per site, delivery per destination, the backlog."""
    return jsonify(overview(current_config(), utcnow()))


@bp.get("/events")
@admin_required
def events_lookup():
    """Events newest first; `site`, `dialect`, `event`, `status`, `q` (event_id or order id) and `page` filter."""
    page = request.args.get("page", 1, type=int) or 1
    return jsonify(listing(current_config(), Filters.from_args(request.args), page))


@bp.get(f"/events/<int(max={MAX_ROW_ID}):event_pk>")
@admin_required
def event_lookup(event_pk: int):
    """One event's whole story: how it arrived, the decisions, each send with its payload and answer."""
    found = story(current_config(), event_pk)
    if found is None:
        return jsonify({"error": f"No event #{event_pk}", "code": 404}), 404
    return jsonify(found)


@bp.post(f"/sends/<int(max={MAX_ROW_ID}):send_pk>/replay")
@admin_required
def replay_send(send_pk: int):
    """Queue a failed send again (as `cli.py replay --send`); `queued` is 0 when it was not failed."""
    return jsonify({"queued": replay(send_pk)})


@bp.post("/destinations/<site>/<name>/backfill")
@admin_required
def backfill_destination(site: str, name: str):
    """Queue sends to a destination added later for the stored events it would have taken (as `cli.py backfill`).

    The body is optional: `{"since": "7d", "dry_run": true}`; the answer counts what was queued and what was left out.
    """
    config = current_config()
    has_body = request.content_length or request.headers.get("Transfer-Encoding")
    body = read_object(request, config.max_body_bytes) if has_body else {}
    since, dry = body.get("since"), body.get("dry_run", False)
    if not isinstance(dry, bool):
        raise FieldError("dry_run", "must be true or false")
    try:
        window = parse_since(since) if since is not None else None
    except ValueError as exc:
        raise FieldError("since", str(exc)) from None
    try:
        dest = destination_to_backfill(config, f"{site}/{name}")
    except BackfillError as exc:
        return jsonify({"error": str(exc), "code": 404}), 404
    return jsonify(backfill(dest, utcnow(), window, dry).as_json())


@bp.post("/erase")
@admin_required
def erase_person():
    """Erase a person (GDPR) by `email` or `phone` from every store, on one `site` or all; rows erased per site."""
    from storage import retention

    config = current_config()
    body = read_json(request, config.max_body_bytes)
    if not isinstance(body, dict):
        return jsonify({"error": "Request body must be a JSON object", "code": 400}), 400
    email, phone, site_id = (body.get(key) for key in ("email", "phone", "site"))
    if not all(value is None or isinstance(value, str) for value in (email, phone, site_id)) or bool(email) == bool(phone):
        return jsonify({"error": "Give one of email or phone (text), and optionally site", "code": 400}), 400
    sites = [site for site in config.sites if site_id in (None, site.id)]
    if not sites:
        return jsonify({"error": "Unknown site", "code": 404}), 404
    try:  # every site's person first: a value one site's country refuses erases nothing anywhere
        people = [retention.person_named(site, "admin API", email, phone) for site in sites]
    except ValueError as exc:  # the reason never quotes the value
        return jsonify({"error": f"Nothing erased: {exc}", "code": 400}), 400
    return jsonify({"erased": {person.site: retention.erase(person, utcnow()) for person in people}})


@bp.get("/config")
@admin_required
def config_lookup():
    """The config in force, every secret masked."""
    return jsonify(shown_config(current_config()))


@bp.get("/destinations")
@admin_required
def destinations_lookup():
    """Every destination with its mode, state (active, backing off, paused with the error, disabled) and counts."""
    return jsonify(dests.destinations(current_config(), utcnow()))


@bp.post("/destinations/<site>/<name>/<action>")
@admin_required
def destination_action(site: str, name: str, action: str):
    """`resume`, `retry-now`, `replay-failed` or `verify` on an enabled destination, as the console's buttons."""
    config, key = current_config(), f"{site}/{name}"
    dest = dests.find(config, key)
    if dest is None:
        return jsonify({"error": f"No enabled destination {key}", "code": 404}), 404
    if action == "resume":
        return jsonify({"destination": key, "resumed": dests.resume(key)})
    if action == "retry-now":
        return jsonify({"destination": key, "due_now": dests.retry(key, utcnow())})
    if action == "replay-failed":
        return jsonify({"destination": key, "queued": dests.replay(key, utcnow())})
    if action == "verify":
        return jsonify({"destination": key, **dests.verify(config, dest)})
    return jsonify({"error": f"No action {action}: resume, retry-now, replay-failed or verify", "code": 404}), 404


@bp.get("/leads")
@admin_required
def leads_lookup():
    """Telegram leads per site with their conversions; `user` finds one by its Telegram id."""
    page = dialect_pages.page("leads")
    if page is None:
        return jsonify({"error": "No dialect offers leads", "code": 404}), 404
    return jsonify(page.listing(current_config(), request.args.get("user") or None))


@bp.post("/leads/<site>/<user>/conversions/<conversion>/value")
@admin_required
def submit_value(site: str, user: str, conversion: str):
    """Give an awaiting conversion its value (`value`, `currency`, optional pii fields): its sends are scheduled."""
    page = dialect_pages.page("leads")
    if page is None:
        return jsonify({"error": "No dialect offers leads", "code": 404}), 404
    body = read_object(request, current_config().max_body_bytes)
    return jsonify(page.submit(current_config(), site, user, conversion, body, utcnow()))


@bp.get("/accuracy")
@admin_required
def accuracy_lookup():
    """Per site, destination and day in the site's time zone: purchases received, delivered, skipped, failed."""
    return jsonify(accuracy.report(current_config(), utcnow()))
