"""Postback's command line: `python cli.py <command>` (check-config, drain, resume, replay, purge, stats, ...)."""
from __future__ import annotations

import sys

import click

import logs
from config import Config, ConfigError, load_config
from models import open_database
from platforms import REGISTRY


@click.group()
def cli():
    """Postback's command line."""
    logs.configure()


@cli.command("check-config")
@click.argument("path", required=False)
def check_config(path: str | None):
    """Validate a config file without starting anything."""
    try:
        config = _load(path)
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

    _open(_load())
    click.echo(f"{destination}: " + ("resumed" if resume_destination(destination) else "was not paused"))


@cli.command()
@click.option("--send", "send_id", type=int, help="Replay one failed send by its id.")
@click.option("--destination", help="Replay every failed send of a destination, e.g. shop/meta.")
def replay(send_id: int | None, destination: str | None):
    """Queue failed sends again; the payload is rebuilt from the stored event with the current config."""
    from delivery.sends import replay_failed

    if (send_id is None) == (destination is None):
        raise click.UsageError("give exactly one of --send or --destination")
    _open(_load())
    count = replay_failed(send_id=send_id, destination=destination)
    click.echo(f"{count} send(s) queued again")


@cli.command("drain")
def drain():
    """Run one dispatch pass now and print what each destination did."""
    from delivery.dispatcher import Dispatcher

    config = _load()
    _open(config)
    for key, count in sorted(Dispatcher(lambda: config).drain_once().items()):
        click.echo(f"{key}: {count} send(s) processed")


@cli.command()
def purge():
    """Delete events older than storage.retention_days whose sends are final, and old inspector entries."""
    import retention
    from ingest.canonical import utcnow

    config = _load()
    _open(config)
    removed = retention.purge(config.retention_days, utcnow())
    click.echo(f"removed {removed['events']} event(s), {removed['sends']} send(s), {removed['refusals']} inspector entr(ies), "
               f"{removed['funnel']} funnel row(s), {removed['profiles']} visitor profile(s)")


@cli.command()
def stats():
    """Events per site and sends per destination and status."""
    import retention

    _open(_load())
    counts = retention.stats()
    for site, n in sorted(counts["events"].items()):
        click.echo(f"site {site}: {n} event(s)")
    for destination, by_status in sorted(counts["sends"].items()):
        click.echo(f"{destination}: " + ", ".join(f"{status} {n}" for status, n in sorted(by_status.items())))


@cli.command("set-webhook")
@click.argument("site_id")
def set_webhook(site_id: str):
    """Register the site's Telegram webhook at server.public_url, with its secret and chat_member updates."""
    from dialects.adtarget import telegram as telegram_api

    config = _load()
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


def _load(path: str | None = None) -> Config:
    """The config at `path` (else POSTBACK_CONFIG's), each destination checked by its platform."""
    return load_config(path, platforms=REGISTRY)


def _open(config: Config) -> None:
    open_database(config.database)


if __name__ == "__main__":
    cli()
