"""Secrets hidden before the console or the admin API shows a config section or a payload: by key name."""
from __future__ import annotations

import re
from typing import Any, Mapping
from urllib.parse import urlsplit, urlunsplit

SECRET_WORDS = ("token", "secret", "password", "key", "keys")
HIDDEN = "••••••"


def is_secret(name: str) -> bool:
    """A key named like a credential: `access_token`, `api_secret`, `keys`, `apiKey`, …"""
    lowered = name.lower()
    return any(word in SECRET_WORDS for word in re.split(r"[^a-z0-9]+", lowered)) or lowered.endswith(SECRET_WORDS)


def masked(value: Any, name: str = "") -> Any:
    """The value with every credential-named entry hidden, at any depth; an unset one stays visibly unset."""
    if name and is_secret(name) and value not in (None, "", [], ()):
        return [HIDDEN for _ in value] if isinstance(value, (list, tuple)) else HIDDEN
    if isinstance(value, Mapping):
        return {key: masked(item, str(key)) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [masked(item) for item in value]
    return value


def masked_url(url: str) -> str:
    """A database URL without the password of its user part."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{HIDDEN}@{host}"))
