"""Postback: the application factory and the gunicorn entry point (the command line is cli.py)."""
from __future__ import annotations

import logging
import sys
from importlib import import_module

from flask import Flask, jsonify
from flask_wtf.csrf import CSRFProtect
from werkzeug.exceptions import HTTPException

import logs
from config import Config, ConfigError, ConfigWatch, load_config
from dialects.errors import StorageFault
from models import open_database, release_connection, storage_fault
from storage.migrations import SchemaError
from platforms import REGISTRY

log = logging.getLogger(__name__)

# One blueprint per line: a dialect is added by adding its module here.
BLUEPRINTS = (
    "routes.health",
    "routes.admin",
    "routes.channelstack",
    "routes.pixel",
    "routes.octeth",
    "routes.commanders",
    "routes.adtarget",
    "routes.telegram_webhook",
    "routes.tracker",
    "routes.dashboard",
    "routes.openapi",
    "routes.metrics",
)


def create_app(config: Config) -> Flask:
    """Assemble the app around a loaded, validated config: bind the database, register routes. Starts nothing."""
    app = Flask(__name__)
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False  # the console checks its own forms; the dialects' POSTs are APIs
    CSRFProtect(app)
    app.teardown_appcontext(release_connection)
    for name in BLUEPRINTS:
        app.register_blueprint(import_module(name).bp)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        # JSON instead of Werkzeug's HTML page; start from its response to keep headers such as Allow.
        response = exc.get_response()
        response.data = jsonify({"error": exc.description, "code": exc.code}).get_data()
        response.content_type = "application/json"
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        if isinstance(exc, StorageFault):  # a route without a shape of its own for it (the console's pages)
            return jsonify({"error": str(exc), "code": 503}), 503, {"Retry-After": str(exc.retry_after)}
        fault = storage_fault(exc)
        if fault is not None:  # met in a read (PostgreSQL down): answered as a write's fault, in the route's shape
            log.warning("storage fault: %s", fault)
            return app.handle_user_exception(StorageFault(fault))
        log.exception("unhandled error")
        return jsonify({"error": "Internal error", "code": 500}), 500

    return bind(app, config)


def bind(app: Flask, config: Config) -> Flask:
    """All the app takes from its config: the config, its database, and what each blueprint's `configure` sets."""
    open_database(config.database)
    return apply(app, config)


def apply(app: Flask, config: Config) -> Flask:
    """Put a config in force (at start, and when the file is re-read): what each blueprint's `configure` sets."""
    app.config["POSTBACK"] = config
    for name in BLUEPRINTS:
        configure = getattr(import_module(name), "configure", None)
        if configure is not None:
            configure(app, config)
    return app


def watch(app: Flask, every: float = 3.0) -> ConfigWatch:
    """Re-read the app's config file when it changes, looking every `every` seconds; the watcher goes in
    app.extensions."""
    from console import metrics

    watcher = ConfigWatch(app.config["POSTBACK"], lambda config: apply(app, config), platforms=REGISTRY, every=every,
                          counted=metrics.config_reloaded)
    app.extensions["postback.config_watch"] = watcher
    return watcher


def reload_counts(app: Flask) -> dict[str, int]:
    """Config reloads in this process by result ("ok", "error"), for /metrics' postback_config_reloads_total."""
    watcher = app.extensions.get("postback.config_watch")
    return dict(watcher.counts) if watcher is not None else {"ok": 0, "error": 0}


def serve() -> Flask:
    """gunicorn's entry (`app:serve()`): load the config named by POSTBACK_CONFIG and build the app."""
    logs.configure()
    try:
        config = load_config(platforms=REGISTRY)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("config: %s", problem)
        sys.exit(3)  # gunicorn stops instead of restarting a worker that can never boot
    try:
        app = create_app(config)
    except SchemaError as exc:
        log.error("database: %s", exc)
        sys.exit(3)
    except StorageFault as exc:  # a lock file made unusable after gunicorn's start-up check, say
        log.error("database: cannot write: %s", exc.fault)
        sys.exit(3)
    watch(app).start()  # in each worker: gunicorn loads the app after forking
    return app


if __name__ == "__main__":  # `python app.py <command>`, as before the command line had its own module
    from cli import cli

    cli()
