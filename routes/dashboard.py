"""The operator's console: sign-in and server-rendered pages over the lookups the admin API also offers."""
from __future__ import annotations

import json
import secrets

from flask import Blueprint, Flask, abort, current_app, flash, redirect, render_template, request, session, url_for
from werkzeug.exceptions import HTTPException

from console import accuracy as accuracy_of, chart, destinations as dests, dialect_pages, kept
from console.events import Filters, listing
from console.overview import overview as overview_of
from console.settings import last_reload, shown_config, tracker_snippet
from console.story import replay, story
from config import Config
from dialects.errors import Refused
from ingest import inspector
from ingest.canonical import utcnow
from models import MAX_ROW_ID  # a larger id in a path is no route (404), not a 500
from console.sessions import end_session, open_session, valid_session
from routes.admin import SESSION_HOURS, Throttled, guarded, password_file, password_matches
from routes.common import current_config

bp = Blueprint("dashboard", __name__)
SIGNED_IN = "admin_session"  # the Flask session's key holding the AdminSession id
KEY_FILE = "console-secret-key"
OPEN_PAGES = {"dashboard.login", "dashboard.root"}
INSPECTOR_ROWS = 200


def configure(app: Flask, config: Config) -> None:
    """The console's cookie: signed with a key kept beside the database (the same in every worker, and on
    PostgreSQL in every node), never sent to scripts or from other sites' forms, and only over HTTPS when Postback
    is served over HTTPS."""
    app.secret_key = kept.keep(config.database, KEY_FILE, lambda: secrets.token_hex(32))[0]
    app.config.update(
        SESSION_COOKIE_NAME="postback_console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=str(config.server["public_url"]).startswith("https://"),
        WTF_CSRF_TIME_LIMIT=None,  # a token lives as long as the sign-in: a page left open still posts
    )


@bp.before_request
def _guard():
    if request.method == "POST":
        current_app.extensions["csrf"].protect()
    if request.endpoint not in OPEN_PAGES and not valid_session(session.get(SIGNED_IN)):
        return redirect(url_for("dashboard.login"))
    return None


@bp.context_processor
def _page_context() -> dict:
    return {"signed_in": valid_session(session.get(SIGNED_IN)), "public_url": current_config().server["public_url"]}


@bp.app_template_filter("age")
def _age(seconds: int) -> str:
    """A duration as a person says it: 45 s, 12 min, 3 h, 2 d."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


@bp.app_template_filter("when")
def _when(iso: str | None) -> str:
    """An ISO time as `2026-03-01 12:05:09 UTC`."""
    return f"{iso[:10]} {iso[11:19]} UTC" if iso else "—"


@bp.app_template_filter("pretty")
def _pretty(value) -> str:
    """JSON for a person: indented, in the stored key order, non-ASCII as it is."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


bp.add_app_template_filter(chart.bars, "bars")


@bp.errorhandler(HTTPException)
def _error_page(exc: HTTPException):
    return render_template("error.html", code=exc.code, description=exc.description), exc.code


@bp.get("/")
def root():
    return redirect(url_for("dashboard.overview"))


@bp.route("/dashboard/login", methods=["GET", "POST"])
def login():
    """The sign-in form; the password is admin.password, or the generated one."""
    wait = 0
    try:  # the admin API's throttle: a guess here counts as one there
        wrong = request.method == "POST" and not guarded(lambda: password_matches(request.form.get("password")))
    except Throttled as exc:
        wrong, wait = True, exc.seconds
    if request.method == "POST" and not wrong:
        session.clear()
        session[SIGNED_IN] = open_session(SESSION_HOURS).id
        return redirect(url_for("dashboard.overview"))
    config = current_config()
    page = render_template("login.html", wrong=wrong and not wait, wait=wait, generated=not config.admin_password,
                           password_file=password_file(config))
    return (page, 429, {"Retry-After": str(wait)}) if wait else (page, 401 if wrong else 200)


@bp.post("/dashboard/logout")
def logout():
    end_session(session.pop(SIGNED_IN, None))
    session.clear()
    return redirect(url_for("dashboard.login"))


@bp.get("/dashboard/")
def overview():
    return render_template("overview.html", data=overview_of(current_config(), utcnow()))


@bp.get("/dashboard/events")
def events():
    filters = Filters.from_args(request.args)
    return render_template("events.html", data=listing(current_config(), filters, _page()))


@bp.get(f"/dashboard/events/<int(max={MAX_ROW_ID}):event_pk>")
def event(event_pk: int):
    found = story(current_config(), event_pk)
    if found is None:
        abort(404, f"No event #{event_pk}: it may have been purged (storage.retention_days) or erased.")
    return render_template("event.html", story=found)


@bp.post(f"/dashboard/sends/<int(max={MAX_ROW_ID}):send_pk>/replay")
def replay_send(send_pk: int):
    event_pk = request.form.get("event", type=int)
    queued = replay(send_pk)
    flash(f"Send #{send_pk} queued again: the dispatcher sends it on its next pass." if queued
          else f"Send #{send_pk} was not failed: nothing to replay.")
    return redirect(url_for("dashboard.event", event_pk=event_pk) if event_pk else url_for("dashboard.events"))


@bp.get("/dashboard/inspector")
def inspector_page():
    site, dialect = request.args.get("site", ""), request.args.get("dialect", "")
    entries = inspector.listing(site=site or None, dialect=dialect or None, limit=INSPECTOR_ROWS)
    return render_template("inspector.html", entries=entries, site=site, dialect=dialect,
                           sites=[s.id for s in current_config().sites])


@bp.get("/dashboard/config")
def config_page():
    config = current_config()
    return render_template("config.html", config=shown_config(config), reload=last_reload(current_app),
                           snippets={site.id: tracker_snippet(config, site) for site in config.sites})


@bp.get("/dashboard/destinations")
def destinations():
    return render_template("destinations.html", data=dests.destinations(current_config(), utcnow()))


DESTINATION_ACTIONS = ("resume", "retry-now", "replay-failed", "verify")


@bp.post("/dashboard/destinations/<site>/<name>/<action>")
def destination_action(site: str, name: str, action: str):
    """One of DESTINATION_ACTIONS on an enabled destination, its result told on the page it came from."""
    config, key = current_config(), f"{site}/{name}"
    dest = dests.find(config, key)
    if dest is None or action not in DESTINATION_ACTIONS:
        abort(404, f"No enabled destination {key} with an action {action!r}.")
    if action == "resume":
        flash(f"{key} resumed: its waiting sends go on the dispatcher's next pass." if dests.resume(key)
              else f"{key} was not paused.")
    elif action == "retry-now":
        flash(f"{key}: {dests.retry(key, utcnow())} backing-off send(s) are due now.")
    elif action == "replay-failed":
        flash(f"{key}: {dests.replay(key, utcnow())} failed send(s) queued again.")
    else:
        verdict = dests.verify(config, dest)
        flash(f"{key} credentials: {verdict['message']}", "ok" if verdict["ok"] else "error")
    back = request.form.get("back")
    return redirect(url_for("dashboard.overview") if back == "overview" else url_for("dashboard.destinations"))


def _leads_page():
    found = dialect_pages.page("leads")
    if found is None:
        abort(404, "No dialect offers a leads page.")
    return found


@bp.get("/dashboard/leads")
def leads():
    user = request.args.get("user", "").strip()
    return render_template("leads.html", data=_leads_page().listing(current_config(), user or None), user=user)


@bp.post("/dashboard/leads/<site>/<user>/conversions/<conversion>/value")
def submit_value(site: str, user: str, conversion: str):
    """The Submit value form: the conversion's sends are scheduled as the value endpoint schedules them."""
    try:
        done = _leads_page().submit(current_config(), site, user, conversion, request.form, utcnow())
    except Refused as refused:
        flash(f"Conversion {conversion}: {refused.reason}", "error")
    else:
        flash(f"Conversion {conversion}: {done['value']:g} {done['currency']} submitted; "
              f"{len(done['sends'])} send(s) scheduled.", "ok")
    return redirect(url_for("dashboard.leads", user=user))


@bp.get("/dashboard/accuracy")
def accuracy():
    return render_template("accuracy.html", data=accuracy_of.report(current_config(), utcnow()))


def _page() -> int:
    return max(1, request.args.get("page", 1, type=int) or 1)
