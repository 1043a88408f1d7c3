"""The Telegram funnel's command on Postback's command line: `set-webhook SITE_ID`."""
from __future__ import annotations

import sys

import click

from config import load_config
from dialects.adtarget import telegram
from platforms import REGISTRY


@click.command("set-webhook")
@click.argument("site_id")
def set_webhook(site_id: str):
    """Register the site's Telegram webhook at server.public_url, with its secret and chat_member updates."""
    config = load_config(platforms=REGISTRY)
    site = config.site(site_id)
    if site is None:
        raise click.UsageError(f"no site {site_id!r} in {config.path}")
    try:
        url = telegram.set_webhook(site, config.server["public_url"], timeout=config.timeout_seconds)
    except (telegram.TelegramError, telegram.TelegramNotConfigured) as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(f"webhook set: {url}")


COMMANDS = (set_webhook,)
