"""Postback: the application factory, the gunicorn entry point and the command line."""
from __future__ import annotations

import logging
import sys
from importlib import import_module

import click
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

import logs
from config import Config, ConfigError, load_config
from models import open_database

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
)


def create_app(config: Config) -> Flask:
    """Assemble the app around a loaded, validated config: bind the database, register routes. Starts nothing."""
    app = Flask(__name__)
    app.config["POSTBACK"] = config
    open_database(config.database)
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
        log.exception("unhandled error")
        return jsonify({"error": "Internal error", "code": 500}), 500

    return app


def serve() -> Flask:
    """gunicorn's entry (`app:serve()`): load the config named by POSTBACK_CONFIG and build the app."""
    logs.configure()
    try:
        config = load_config()
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("config: %s", problem)
        sys.exit(3)  # gunicorn stops instead of restarting a worker that can never boot
    return create_app(config)


@click.group()
def cli():
    """Postback's command line."""
    logs.configure()


@cli.command("check-config")
@click.argument("path", required=False)
def check_config(path: str | None):
    """Validate a config file without starting anything."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        sys.exit(1)
    destinations = config.destinations()
    click.echo(f"{config.path}: OK — {len(config.sites)} site(s), {len(destinations)} enabled destination(s)")


@cli.command()
@click.argument("destination")
def resume(destination: str):
    """Resume a paused destination, e.g. `resume shop/meta`."""
    from delivery.sends import resume_destination

    _open(load_config())
    click.echo(f"{destination}: " + ("resumed" if resume_destination(destination) else "was not paused"))


@cli.command()
@click.option("--send", "send_id", type=int, help="Replay one failed send by its id.")
@click.option("--destination", help="Replay every failed send of a destination, e.g. shop/meta.")
def replay(send_id: int | None, destination: str | None):
    """Queue failed sends again; the payload is rebuilt from the stored event with the current config."""
    from delivery.sends import replay_failed

    if (send_id is None) == (destination is None):
        raise click.UsageError("give exactly one of --send or --destination")
    _open(load_config())
    count = replay_failed(send_id=send_id, destination=destination)
    click.echo(f"{count} send(s) queued again")


@cli.command("drain")
def drain():
    """Run one dispatch pass now and print what each destination did."""
    from delivery.dispatcher import Dispatcher

    config = load_config()
    _open(config)
    for key, count in sorted(Dispatcher(lambda: config).drain_once().items()):
        click.echo(f"{key}: {count} send(s) processed")


@cli.command()
def purge():
    """Delete what every store keeps past storage.retention_days (events once their sends are final)."""
    import retention
    from ingest.canonical import utcnow

    config = load_config()
    _open(config)
    removed = retention.purge(config.retention_days, utcnow())
    click.echo("removed " + ", ".join(f"{table} {n}" for table, n in removed.items()))


@cli.command()
def stats():
    """Events per site, sends per destination and status, and the rows of every table."""
    import retention

    _open(load_config())
    counts = retention.stats()
    for site, n in sorted(counts["events"].items()):
        click.echo(f"site {site}: {n} event(s)")
    for destination, by_status in sorted(counts["sends"].items()):
        click.echo(f"{destination}: " + ", ".join(f"{status} {n}" for status, n in sorted(by_status.items())))
    click.echo("rows: " + ", ".join(f"{table} {n}" for table, n in counts["rows"].items()))


@cli.command("set-webhook")
@click.argument("site_id")
def set_webhook(site_id: str):
    """Register the site's Telegram webhook at server.public_url, with its secret and chat_member updates."""
    from dialects.adtarget import telegram as telegram_api

    config = load_config()
    site = config.site(site_id)
    if site is None:
        raise click.UsageError(f"no site {site_id!r} in {config.path}")
    try:
        url = telegram_api.set_webhook(site, config.server["public_url"], timeout=config.timeout_seconds)
    except (telegram_api.TelegramError, telegram_api.TelegramNotConfigured) as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(f"webhook set: {url}")


@cli.command("generate-key")
def generate_key():
    """Print a new random API key to put in a site's `keys`."""
    import secrets

    click.echo(f"key_{secrets.token_urlsafe(24)}")


def _open(config: Config) -> None:
    open_database(config.database)


if __name__ == "__main__":
    cli()
