"""The Telegram Bot API client: invite links and webhook set-up (https://core.telegram.org/bots/api).

The bot token lives only in the `/bot<token>/` path. No URL is ever logged or put in an error:
every failure is re-raised as a TelegramError that names the method, never the address.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import requests

from config import Site
from outbound import Http

DEFAULT_TIMEOUT = 10.0
MAX_LINK_NAME = 32  # createChatInviteLink's `name`: 0–32 characters
# Without chat_member in allowed_updates Telegram sends no joins at all (https://core.telegram.org/bots/api#setwebhook).
ALLOWED_UPDATES = ("chat_member", "chat_join_request", "my_chat_member")
SECRET_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")  # setWebhook's secret_token alphabet
WEBHOOK_PATH = "/telegram/webhook/{site_id}"


class TelegramNotConfigured(Exception):
    """The site lacks what the call needs (bot_token, webhook_secret); the message names the config key."""


class TelegramError(Exception):
    """Telegram refused or did not answer; carries no URL (the token is in it)."""

    def __init__(self, method: str, description: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(f"Telegram {method}: {description}")
        self.method, self.description, self.status, self.retry_after = method, description, status, retry_after

    @property
    def throttled(self) -> bool:
        return self.status == 429


@dataclass
class BotApi:
    """One bot's Bot API: `POST {api_base}/bot<token>/<method>` with a JSON body, through `http`."""

    token: str
    api_base: str = "https://api.telegram.org"
    timeout: float = DEFAULT_TIMEOUT
    http: Http | None = None  # without one the bot has its own

    def __post_init__(self):
        if self.http is None:
            self.http = Http(self.timeout)

    def call(self, method: str, params: dict[str, Any]) -> Any:
        """The method's `result`; raises TelegramError on any refusal, timeout or garbled answer."""
        failure = None
        try:
            response = self.http.post(f"{self.api_base.rstrip('/')}/bot{self.token}/{method}", json=params,
                                      timeout=self.timeout)
        except requests.Timeout:
            failure = f"no answer within {self.timeout:g} s"
        except requests.RequestException as exc:
            failure = f"connection failed ({type(exc).__name__})"
        if failure is not None:
            # Raised outside the except block: requests' own message (and so the traceback) holds the URL.
            raise TelegramError(method, failure)
        return _result(method, response)

    def create_chat_invite_link(self, chat_id: str, name: str) -> dict:
        """A new named invite link to the chat (the bot must be an admin with can_invite_users)."""
        return self.call("createChatInviteLink", {"chat_id": chat_id, "name": name[:MAX_LINK_NAME]})

    def set_webhook(self, url: str, secret_token: str, allowed_updates: tuple[str, ...] = ALLOWED_UPDATES) -> bool:
        """Point the bot's updates at `url`, signed with `secret_token`."""
        return bool(self.call("setWebhook", {"url": url, "secret_token": secret_token,
                                             "allowed_updates": list(allowed_updates)}))


def bot_for(site: Site, timeout: float = DEFAULT_TIMEOUT, http: Http | None = None) -> BotApi:
    """The site's bot, calling through `http` when given, or TelegramNotConfigured naming what is missing."""
    telegram = site.telegram
    if telegram is None or not telegram.bot_token:
        raise TelegramNotConfigured(f"Site {site.id!r} has no Telegram bot_token (sites[].telegram.bot_token)")
    return BotApi(telegram.bot_token, telegram.api_base, timeout, http)


def webhook_url(site: Site, public_url: str) -> str:
    """Where Telegram posts the site's updates."""
    return public_url.rstrip("/") + WEBHOOK_PATH.format(site_id=site.id)


def set_webhook(site: Site, public_url: str, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Register `{public_url}/telegram/webhook/{site_id}` with the site's secret; returns the URL registered."""
    bot = bot_for(site, timeout)
    secret = site.telegram.webhook_secret if site.telegram else None
    if not secret:
        raise TelegramNotConfigured(f"Site {site.id!r} has no Telegram webhook_secret (sites[].telegram.webhook_secret)")
    if not SECRET_TOKEN_RE.fullmatch(secret):
        raise TelegramNotConfigured(
            f"Site {site.id!r}: webhook_secret must be 1–256 characters of A–Z, a–z, 0–9, _ and - (Telegram's rule)")
    url = webhook_url(site, public_url)
    bot.set_webhook(url, secret)
    return url


def _result(method: str, response: requests.Response) -> Any:
    """Telegram's `{"ok": true, "result": …}`, else its `description` and `retry_after` in a TelegramError."""
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise TelegramError(method, f"HTTP {response.status_code} with a body that is not Telegram's JSON",
                            response.status_code)
    if answer.get("ok") is True:
        return answer.get("result")
    parameters = answer.get("parameters") if isinstance(answer.get("parameters"), dict) else {}
    retry_after = parameters.get("retry_after")
    status = answer.get("error_code") if isinstance(answer.get("error_code"), int) else response.status_code
    description = answer.get("description") if isinstance(answer.get("description"), str) else "no description"
    raise TelegramError(method, description, status, retry_after if isinstance(retry_after, (int, float)) else None)

