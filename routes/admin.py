"""The admin JSON API: login sessions, the inspector and the console's lookups. Authenticated by `admin.password`,
or by the password generated beside the database when that is empty."""
from __future__ import annotations

import hmac
import os
import secrets
import sys
from functools import wraps

from flask import Blueprint, Flask, current_app, jsonify, request

from config import Config
from console import accuracy, destinations as dests, dialect_pages, kept
from console.events import Filters, listing
from console.overview import overview
from console.sessions import open_session, valid_session
from console.settings import shown_config
from console.story import replay, story
from dialects.errors import BodyTooLarge, Refused
from ingest import inspector
from ingest.canonical import utcnow
from routes.common import current_config, read_json, read_object

bp = Blueprint("admin", __name__, url_prefix="/admin/api")
SESSION_HOURS = 12
PASSWORD_FILE = "admin-password"


@bp.errorhandler(Refused)
def refused(exc: Refused):
    """A body that cannot be read: the admin API's `{"error", "code"}`."""
    status = 413 if isinstance(exc, BodyTooLarge) else getattr(exc, "status", 400)  # a dialect's own: 404, 409
    return jsonify({"error": exc.reason, "code": status}), status


def password_file(config: Config) -> str:
    """Where the generated admin password is kept: beside the database."""
    return os.path.join(kept.folder(config.database), PASSWORD_FILE)


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
        generated[path] = kept.keep(path, _new_password)[0]
    return generated[path]


def configure(app: Flask, config: Config) -> None:
    """At start-up, with `admin.password` empty: make the password (one for all workers) and print it once."""
    if config.admin_password:
        return
    path = password_file(config)
    password, made = kept.keep(path, _new_password)
    if made:  # printed, not logged: it is for the person starting Postback, and logs carry no secrets
        print(f"Postback: admin.password is empty, so one was generated: {password}\n"
              f"  It is kept in {path}. To choose your own, set admin.password (or POSTBACK_ADMIN_PASSWORD).",
              file=sys.stderr, flush=True)


def password_matches(given: str | None) -> bool:
    expected = admin_password()
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _authorized() -> bool:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        token = header[len("Bearer "):]
        return password_matches(token) or valid_session(token)
    if request.authorization and request.authorization.type == "basic":
        return password_matches(request.authorization.password)
    return False


def admin_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        if not _authorized():
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
    if not isinstance(password, str) or not password_matches(password):
        return jsonify({"error": "Wrong password", "code": 401}), 401
    session = open_session(SESSION_HOURS)
    return jsonify({"session_id": session.id, "expires_at": session.expires_at.isoformat()})


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


@bp.get("/events/<int:event_pk>")
@admin_required
def event_lookup(event_pk: int):
    """One event's whole story: how it arrived, the decisions, each send with its payload and answer."""
    found = story(current_config(), event_pk)
    if found is None:
        return jsonify({"error": f"No event #{event_pk}", "code": 404}), 404
    return jsonify(found)


@bp.post("/sends/<int:send_pk>/replay")
@admin_required
def replay_send(send_pk: int):
    """Queue a failed send again (as `cli.py replay --send`); `queued` is 0 when it was not failed."""
    return jsonify({"queued": replay(send_pk)})


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
