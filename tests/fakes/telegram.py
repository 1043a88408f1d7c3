"""A fake Telegram Bot API on 127.0.0.1 (`/bot<token>/<method>`), plus builders for the updates Telegram posts.

It answers like the real one (https://core.telegram.org/bots/api#making-requests): `{"ok": true,
"result": …}` or `{"ok": false, "error_code": N, "description": …}`, and can be scripted to fail.
"""
from __future__ import annotations

import itertools
import json
import string
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.server import FakeServer, Handler, opaque_id

VIP, FREE = "-1001234567890", "-1009876543210"  # the channels the tests' funnels invite to
BOT = {"id": 7000000001, "is_bot": True, "first_name": "Postback Bot", "username": "postback_test_bot"}
NOT_ENOUGH_RIGHTS = "Bad Request: not enough rights to manage chat invite links"
NOT_A_MEMBER = "Forbidden: bot is not a member of the channel chat"
SECRET_ALPHABET = set(string.ascii_letters + string.digits + "_-")
ALLOWED_UPDATE_TYPES = {
    "message", "edited_message", "channel_post", "edited_channel_post", "business_connection", "business_message",
    "edited_business_message", "deleted_business_messages", "message_reaction", "message_reaction_count",
    "inline_query", "chosen_inline_result", "callback_query", "shipping_query", "pre_checkout_query",
    "purchased_paid_media", "poll", "poll_answer", "my_chat_member", "chat_member", "chat_join_request",
    "chat_boost", "removed_chat_boost",
}


def _failure(code: int, description: str, retry_after: int | None = None) -> tuple[int, dict]:
    answer = {"ok": False, "error_code": code, "description": description}
    if retry_after is not None:
        answer["parameters"] = {"retry_after": retry_after}
    return code, answer


class FakeTelegram(FakeServer):
    """A bot that administers some chats; `rights` says per chat whether it may create invite links."""

    SCRIPT_WORDS = ("not_admin", "forbidden", "500", "garbage")  # failures for the next calls, or ("429", retry_after)
    SCRIPT_SHAPES = (("429", 2),)

    def __init__(self, token: str = "7000000001:AAFakeTokenForTests_0123456789abcdef",
                 chats: tuple[str, ...] = ("-1001234567890",)):
        super().__init__()
        self.token = token
        self.rights = {chat: {"status": "administrator", "can_invite_users": True} for chat in chats}
        # self.requests: every call, as method, params, token_ok, status and answer (the token is not kept)
        self.links: list[dict] = []     # every ChatInviteLink handed out
        self.webhook: dict | None = None
        self._serial = itertools.count(1)

    def demote(self, chat_id: str) -> None:
        """The bot stays in the chat but loses the right to invite users."""
        self.rights[chat_id] = {"status": "administrator", "can_invite_users": False}

    def calls(self, method: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method]

    def _handle(self, h: Handler) -> None:
        path = urlsplit(h.path).path
        raw = h.read_body()
        params = _params(raw, h.headers.get("Content-Type", ""), urlsplit(h.path).query)
        token, _, method = path[len("/bot"):].partition("/") if path.startswith("/bot") else ("", "", "")
        record = {"method": method, "params": params, "token_ok": token == self.token, "status": None, "answer": None}
        with self._lock:
            self.requests.append(record)
            scripted = self._script.pop(0) if self._script and token == self.token else None
        status, answer = self._answer(token, method, params, scripted)
        self._reply(h, record, status, answer)

    def _answer(self, token: str, method: str, params: dict, scripted) -> tuple[int, object]:
        if token != self.token:
            return _failure(401, "Unauthorized")
        if scripted == "500":
            return 500, "<html><body><h1>500 Internal Server Error</h1></body></html>"
        if scripted == "garbage":
            return 200, "<html>not json</html>"
        if isinstance(scripted, tuple):
            return _failure(429, f"Too Many Requests: retry after {scripted[1]}", retry_after=scripted[1])
        if scripted == "not_admin":
            return _failure(400, NOT_ENOUGH_RIGHTS)
        if scripted == "forbidden":
            return _failure(403, NOT_A_MEMBER)
        handler = {"createChatInviteLink": self._create_link, "setWebhook": self._set_webhook,
                   "sendMessage": self._send_message}.get(method)
        if handler is None:
            return _failure(404, "Not Found")
        return handler(params)

    def _create_link(self, params: dict) -> tuple[int, dict]:
        chat_id = str(params.get("chat_id", ""))
        if not chat_id:
            return _failure(400, "Bad Request: chat_id is empty")
        rights = self.rights.get(chat_id)
        if rights is None:
            return _failure(400, "Bad Request: chat not found")
        if rights["status"] != "administrator":
            return _failure(403, NOT_A_MEMBER)
        if not rights["can_invite_users"]:
            return _failure(400, NOT_ENOUGH_RIGHTS)
        name = params.get("name")
        if name is not None and (not isinstance(name, str) or len(name) > 32):
            return _failure(400, "Bad Request: invite link name must be at most 32 characters long")
        if params.get("member_limit") is not None and params.get("creates_join_request"):
            return _failure(400, "Bad Request: can't use member limit for invite links that create join requests")
        link = {
            "invite_link": f"https://t.me/+{opaque_id(16)}{next(self._serial)}",
            "creator": BOT,
            "creates_join_request": bool(params.get("creates_join_request")),
            "is_primary": False,
            "is_revoked": False,
        }
        if name:
            link["name"] = name
        with self._lock:
            self.links.append({**link, "chat_id": chat_id})
        return 200, {"ok": True, "result": link}

    def _set_webhook(self, params: dict) -> tuple[int, dict]:
        url = params.get("url")
        if not isinstance(url, str) or not url.startswith("https://"):
            return _failure(400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.get("secret_token")
        if secret is not None and (not isinstance(secret, str) or not 1 <= len(secret) <= 256
                                   or not set(secret) <= SECRET_ALPHABET):
            return _failure(400, "Bad Request: secret token contains unallowed characters")
        allowed = params.get("allowed_updates")
        if allowed is not None and (not isinstance(allowed, list) or not set(allowed) <= ALLOWED_UPDATE_TYPES):
            return _failure(400, "Bad Request: can't parse allowed_updates")
        self.webhook = {"url": url, "secret_token": secret, "allowed_updates": allowed}
        return 200, {"ok": True, "result": True, "description": "Webhook was set"}

    def _send_message(self, params: dict) -> tuple[int, dict]:
        """https://core.telegram.org/bots/api#sendmessage: a chat the bot is in, and 1-4096 characters of text."""
        chat_id, text = str(params.get("chat_id", "")), params.get("text")
        if chat_id not in self.rights:
            return _failure(400, "Bad Request: chat not found")
        if not isinstance(text, str) or not 1 <= len(text) <= 4096:
            return _failure(400, "Bad Request: message text is empty")
        message = {"message_id": next(self._serial), "chat": {"id": int(chat_id), "type": "channel"}, "text": text}
        return 200, {"ok": True, "result": message}


def _params(raw: bytes, content_type: str, query: str) -> dict:
    """Bot API parameters: JSON body, form body or query string, as Telegram accepts all three."""
    if "application/json" in content_type:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}
    params = dict(parse_qsl(query))
    params.update(parse_qsl(raw.decode("utf-8", "replace")))
    for key in ("allowed_updates",):
        if key in params:
            try:
                params[key] = json.loads(params[key])
            except ValueError:
                pass
    return params


# --- updates Telegram posts to the webhook -----------------------------------------------------------------


def user(user_id: int, **extra) -> dict:
    return {"id": user_id, "is_bot": False, "first_name": "Tatiana", "last_name": "Joinova", "username": "tatiana_joins",
            **extra}


def chat(chat_id: str) -> dict:
    return {"id": int(chat_id), "title": "VIP", "type": "channel"}


def invite(link: str, creator: dict = BOT) -> dict:
    return {"invite_link": link, "creator": creator, "creates_join_request": False, "is_primary": False,
            "is_revoked": False}


def chat_member(update_id: int, chat_id: str, user_id: int, link: str | None, date: int,
                old: str = "left", new: str = "member", **new_extra) -> dict:
    """A ChatMemberUpdated update: `old` → `new` status, joined through `link` when given."""
    change = {
        "chat": chat(chat_id),
        "from": user(user_id),
        "date": date,
        "old_chat_member": {"status": old, "user": user(user_id)},
        "new_chat_member": {"status": new, "user": user(user_id), **new_extra},
    }
    if link is not None:
        change["invite_link"] = invite(link)
    return {"update_id": update_id, "chat_member": change}


def join_request(update_id: int, chat_id: str, user_id: int, link: str | None, date: int) -> dict:
    request = {"chat": chat(chat_id), "from": user(user_id), "user_chat_id": user_id, "date": date}
    if link is not None:
        request["invite_link"] = {**invite(link), "creates_join_request": True}
    return {"update_id": update_id, "chat_join_request": request}


def telegram_section(api_base: str, token: str | None, secret: str | None = "whsec_Test-Secret_1") -> dict:
    """A site's `telegram:` config with the example channel, pointed at a fake."""
    return {
        "bot_token": token,
        "api_base": api_base,
        "webhook_secret": secret,
        "channels": [
            {"id": "vip", "telegram_id": "-1001234567890", "title": "VIP", "username": "vipchan",
             "funnel_order": 1, "event_type": "Lead"},
            {"id": "free", "telegram_id": "-1009876543210", "title": "Free", "funnel_order": 0,
             "event_type": "Subscribe"},
        ],
    }

