"""The admin JSON API: login sessions and the inspector. Authenticated by `admin.password`."""
from __future__ import annotations

import hmac
import secrets
from datetime import timedelta
from functools import wraps

from flask import Blueprint, jsonify, request

from console.sessions import AdminSession, valid_session
from dialects.errors import BodyTooLarge, Refused
from ingest import inspector
from ingest.canonical import utcnow
from routes.common import current_config, read_json

bp = Blueprint("admin", __name__, url_prefix="/admin/api")
SESSION_HOURS = 12


@bp.errorhandler(Refused)
def refused(exc: Refused):
    """A body that cannot be read: the admin API's `{"error", "code"}`."""
    status = 413 if isinstance(exc, BodyTooLarge) else 400
    return jsonify({"error": exc.reason, "code": status}), status


def _password_matches(given: str | None) -> bool:
    expected = current_config().admin_password
    return bool(expected) and given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _authorized() -> bool:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        token = header[len("Bearer "):]
        return _password_matches(token) or valid_session(token)
    if request.authorization and request.authorization.type == "basic":
        return _password_matches(request.authorization.password)
    return False


def admin_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        if not current_config().admin_password:
            return jsonify({"error": "admin API disabled: set admin.password", "code": 403}), 403
        if not _authorized():
            response = jsonify({"error": "Authentication required", "code": 401})
            response.headers["WWW-Authenticate"] = 'Basic realm="Postback admin"'
            return response, 401
        return view(*args, **kwargs)
    return wrapper


@bp.post("/login")
def login():
    """Exchange the admin password for a session id (also usable as Octeth's SessionID)."""
    if not current_config().admin_password:
        return jsonify({"error": "admin API disabled: set admin.password", "code": 403}), 403
    body = read_json(request, current_config().max_body_bytes)  # bounded, as every dialect reads its body
    password = body.get("password") if isinstance(body, dict) else None
    if not isinstance(password, str) or not _password_matches(password):
        return jsonify({"error": "Wrong password", "code": 401}), 401
    session = AdminSession.create(id=secrets.token_urlsafe(24), expires_at=utcnow() + timedelta(hours=SESSION_HOURS))
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
