"""The config in force as the console and the admin API show it: every credential masked."""
from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import urlsplit

from flask import Flask

from config import Alerts, Config, Site
from console.masking import HIDDEN, masked, masked_url


def tracker_snippet(config: Config, site: Site) -> str | None:
    """The `<script>` tag of postback.js for a site with a browser key (docs/tracker.md); None without one."""
    if not site.browser_keys:
        return None
    base = str(config.server["public_url"]).rstrip("/")
    return (f'<script src="{base}/static/postback.js" data-site="{site.id}" '
            f'data-key="{site.browser_keys[0].key}" async></script>')


def shown_config(config: Config) -> dict:
    """The config as loaded (after ${ENV} substitution), each section in the file's order, secrets hidden."""
    return {
        "path": config.path,
        "server": masked(dict(config.server)),
        "admin": {"password": HIDDEN if config.admin_password else "(empty: a generated password is in use)"},
        "storage": {"database": masked_url(config.database), "retention_days": config.retention_days},
        "privacy": {"ip": config.ip_policy, "consent_default": config.consent_default},
        "dispatch": {"interval_seconds": config.interval_seconds, "max_attempts": config.max_attempts,
                     "timeout_seconds": config.timeout_seconds},
        "alerts": shown_alerts(config.alerts),
        "sites": [masked(dict(site.settings)) for site in config.sites],
    }


def shown_alerts(alerts: Alerts) -> dict:
    """Where alerts go: a webhook by its host only (its path is often the secret, as with chat-app webhooks)."""
    webhook = urlsplit(alerts.webhook) if alerts.webhook else None
    return {
        "webhook": f"{webhook.scheme}://{webhook.hostname}/{HIDDEN}" if webhook else None,
        "telegram": f"site {alerts.telegram_site}'s bot, chat {alerts.telegram_chat_id}" if alerts.telegram_site else None,
        "failing_minutes": alerts.failing_minutes,
    }


def last_reload(app: Flask) -> dict | None:
    """The last time this process re-read the config file: when, whether it took, every problem if not."""
    watcher = app.extensions.get("postback.config_watch")
    last = watcher.last if watcher is not None else None
    if last is None:
        return None
    return {"at": datetime.fromtimestamp(last.wall, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "ok": last.ok, "problems": list(last.problems)}
