"""The config in force as the console and the admin API show it: every credential masked."""
from __future__ import annotations

from config import Config, Site
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
        "sites": [masked(dict(site.settings)) for site in config.sites],
    }
