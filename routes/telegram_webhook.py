"""Telegram's webhook `POST /telegram/webhook/{site_id}` (docs/dialects/adtarget.md): a join through our invite link is a warm conversion.

Telegram redelivers any update that does not get a 2xx, for hours: every update is answered 200 —
attributed, duplicate or ignored (ignored ones go to the inspector) — except a call without the
site's secret, which is refused with 403, and an update we could not store (a storage fault), answered 503
so that Telegram delivers it again later.
"""
from __future__ import annotations

import hmac
import logging

from flask import Blueprint, jsonify, request

from dialects.adtarget import funnel
from ingest.canonical import utcnow
from config import Site
from dialects.adtarget import parse as adtarget
from dialects.adtarget.parse import Ignored
from dialects.errors import BodyTooLarge, InvalidJSON, StorageFault
from routes.common import current_config, read_json

log = logging.getLogger(__name__)
bp = Blueprint("telegram_webhook", __name__)
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


@bp.errorhandler(StorageFault)
def not_stored(exc: StorageFault):
    return jsonify({"error": "STORAGE_UNAVAILABLE", "message": exc.reason}), exc.status, {"Retry-After": str(exc.retry_after)}


def acknowledged():
    return jsonify({"ok": True})


def secret_matches(site: Site | None, given: str | None) -> bool:
    """Constant-time check of the header against the site's webhook_secret."""
    expected = site.telegram.webhook_secret if site is not None and site.telegram is not None else None
    return bool(expected) and given is not None and hmac.compare_digest(given.encode(), expected.encode())


@bp.post("/telegram/webhook/<site_id>")
def webhook(site_id: str):
    """Telegram's update: a join through our link becomes a warm conversion; anything else is acknowledged."""
    config = current_config()
    site = config.site(site_id)
    if not secret_matches(site, request.headers.get(SECRET_HEADER)):
        # Unknown site, no webhook_secret configured, or a wrong secret: one answer, so sites cannot be probed.
        funnel.note_ignored(site, f"refused: wrong or missing {SECRET_HEADER}", None)
        return jsonify({"error": "FORBIDDEN", "message": f"Wrong or missing {SECRET_HEADER}"}), 403
    try:
        update = read_json(request, config.max_body_bytes)
    except BodyTooLarge:
        funnel.note_ignored(site, f"update larger than {config.max_body_bytes} bytes", None)
        return acknowledged()
    except InvalidJSON:
        funnel.note_ignored(site, "update is not valid JSON", None)
        return acknowledged()
    now = utcnow()
    try:
        join = adtarget.parse_update(update, now)
        result = funnel.record_join(site, config, join, now)
    except Ignored as ignored:
        if not ignored.quiet:
            funnel.note_ignored(site, ignored.reason, update)
        return acknowledged()
    if not result.duplicate:
        log.info("telegram join attributed", extra={"site": site.id, "conversion": result.conversion_id,
                                                    "dispatched": result.dispatched})
    return acknowledged()
