"""The Telegram webhook and the whole funnel: visit → invite → join → Meta, then warm and waiting conversions.

Telegram's side is tests/fakes/telegram.py (a real HTTP Bot API on 127.0.0.1) and scripted updates;
Meta's is tests/fakes/meta.py, drained by the dispatcher as in tests/test_delivery.py.
"""
from __future__ import annotations

import json
import logging
import socket
from datetime import timedelta

import pytest
import yaml
from click.testing import CliRunner

from dialects.adtarget import funnel
from cli import cli
from ingest import inspector
from dialects.adtarget import telegram as telegram_api
from ingest.canonical import utcnow
from dialects.adtarget.funnel import Conversion, InviteLink, Lead, Visit
from models import Event, Send
from dialects.adtarget.telegram import TelegramError, TelegramNotConfigured
from tests.conftest import RAW_PII, meta_destination, with_destinations
from tests.fakes.telegram import FREE, VIP, chat_member, join_request, telegram_section
from tests.helpers import sha

KEY = {"Authorization": "Bearer atk_live_demo"}
SECRET = "whsec_Test-Secret_1"
SIGNED = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
LEAD_ID = 555000111
HREF = "https://shop.example/vip?utm_source=facebook&fbclid=IwAR2F4-dbP0_QxYz9"
FBP = "fb.1.1767225600000.1116446470"
IP = "203.0.113.42"
UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
      "Version/17.5 Mobile/15E148 Safari/604.1")
PROXY = {"X-Adtarget-Client-IP": IP, "X-Adtarget-Client-User-Agent": UA}
OK = {"ok": True}
FORBIDDEN = {"error": "FORBIDDEN", "message": "Wrong or missing X-Telegram-Bot-Api-Secret-Token"}
RAW_PII.extend(["Tatiana", "Joinova", "tatiana_joins"])  # the names Telegram sends with every update


@pytest.fixture
def webhook_secret() -> str | None:
    return SECRET


@pytest.fixture
def with_telegram() -> bool:
    return True


@pytest.fixture
def raw_config(raw_config, fake_telegram, fake_meta, webhook_secret, with_telegram):
    """The example site with the two test channels and a live Meta pointing at the fake."""
    raw = with_destinations(raw_config, meta_destination(fake_meta.url))
    if with_telegram:
        raw["sites"][0]["telegram"] = telegram_section(fake_telegram.url, fake_telegram.token, webhook_secret)
    else:
        raw["sites"][0].pop("telegram", None)
    raw["dispatch"]["timeout_seconds"] = 2
    return raw


def api(client, path: str, body: dict, headers: dict | None = None) -> dict:
    response = client.post(f"/api/v1{path}", json=body, headers={**KEY, **(headers or {})})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def invited(client, href: str = HREF, channel: str = "vip", **fields) -> tuple[dict, str]:
    """A visitor landing through a proxy, then asking for the channel's link: (visit answer, invite link)."""
    seen = api(client, "/events/visit", {"href": href, "fbp": FBP, **fields}, PROXY)
    return seen, api(client, "/events/invite", {"tempId": seen["tempId"], "channelId": channel})["inviteLink"]


def deliver(client, update, headers: dict | None = None):
    return client.post("/telegram/webhook/shop", data=update if isinstance(update, (str, bytes)) else json.dumps(update),
                       content_type="application/json", headers=SIGNED if headers is None else headers)


def now_seconds() -> int:
    return int(utcnow().timestamp())


def minted_fbc() -> str:
    visit = Visit.get()
    millis = int(visit.created_at.timestamp()) * 1000 + visit.created_at.microsecond // 1000
    return f"fb.1.{millis}.IwAR2F4-dbP0_QxYz9"


def chat_item(event_name: str, event_id: str, custom_data: dict | None = None) -> dict:
    """What Meta must receive for a funnel event: action_source chat and the landing visit's attribution."""
    event = Event.get(Event.event_id == event_id)
    item = {
        "event_name": event_name,
        "event_time": int(event.occurred_at.timestamp()),
        "event_id": event_id,
        "action_source": "chat",
        "event_source_url": HREF,
        "user_data": {"country": [sha("us")], "external_id": [sha(str(LEAD_ID))], "client_ip_address": IP,
                      "client_user_agent": UA, "fbc": minted_fbc(), "fbp": FBP},
    }
    if custom_data:
        item["custom_data"] = custom_data
    return item


def stored() -> tuple[int, int, int, int]:
    """(conversions, events, sends, leads)"""
    return Conversion.select().count(), Event.select().count(), Send.select().count(), Lead.select().count()


def refusals() -> list[tuple]:
    return [(e["site"], e["dialect"], e["reason"]) for e in inspector.listing()]


def test_the_whole_funnel_reaches_meta_with_the_visits_attribution(client, fake_meta, fake_telegram, dispatcher):
    seen, link = invited(client)
    date = now_seconds()

    joined = deliver(client, chat_member(9001, VIP, LEAD_ID, link, date))

    assert (joined.status_code, joined.get_json()) == (200, OK)
    join = Conversion.get()
    assert (join.source, join.channel, join.event_type, join.cold_lead, join.status, join.visit.public_id,
            join.session_id) == ("webhook", "vip", "Lead", False, "dispatched", seen["visitId"], seen["sessionId"])
    assert join.attributed_at.timestamp() == date
    assert dispatcher.drain_once(now=utcnow()) == {"shop/meta": 1}
    lead_item = chat_item("Lead", join.public_id)
    assert fake_meta.events == [lead_item]
    assert lead_item["event_time"] == date

    # Later the operator's bot reports a purchase by the same user: warm, with the join's attribution.
    purchase = api(client, "/events/conversion", {"telegramUserId": LEAD_ID, "channelId": VIP, "eventType": "Purchase",
                                                  "value": 49, "currency": "USD"})
    [purchase_send] = Send.select().join(Event).where(Event.event_id == purchase["conversionId"])
    assert purchase == {"conversionId": purchase["conversionId"], "capiStatus": "pending", "coldLead": False,
                        "dispatched": True, "sends": [{"sendId": str(purchase_send.id), "platform": "meta"}]}

    # A second purchase comes without a value: it waits, and nothing goes out for it.
    waiting = api(client, "/leads/555000111/events", {"eventType": "Purchase"})
    assert (waiting["dispatched"], waiting["capiStatus"], waiting["coldLead"], waiting["sends"]) == \
        (False, "pending", False, [])
    assert dispatcher.drain_once(now=utcnow()) == {"shop/meta": 1}
    purchase_item = chat_item("Purchase", purchase["conversionId"], {"value": 49.0, "currency": "USD"})
    assert fake_meta.events == [lead_item, purchase_item]

    # The value arrives: the waiting purchase is accepted and delivered like the others.
    released = api(client, f"/leads/555000111/conversions/{waiting['conversionId']}/value",
                   {"value": 19.9, "currency": "EUR"})
    assert released == {"success": True}
    assert dispatcher.drain_once(now=utcnow()) == {"shop/meta": 1}
    assert fake_meta.events == [lead_item, purchase_item,
                                chat_item("Purchase", waiting["conversionId"], {"value": 19.9, "currency": "EUR"})]
    assert [s.status for s in Send.select().order_by(Send.id)] == ["sent", "sent", "sent"]
    lead = client.get("/api/v1/leads/555000111", headers=KEY).get_json()
    assert [(c["source"], c["eventType"], c["capiStatus"]) for c in lead["conversions"]] == \
        [("webhook", "Lead", "sent"), ("api", "Purchase", "sent"), ("api", "Purchase", "sent")]


def test_a_join_request_through_our_link_is_a_warm_conversion_too(client, fake_meta, dispatcher):
    _, link = invited(client, channel="free")

    assert deliver(client, join_request(9002, FREE, LEAD_ID, link, now_seconds())).get_json() == OK

    join = Conversion.get()
    assert (join.source, join.channel, join.event_type, join.event_name) == ("webhook", "free", "Subscribe", "Subscribe")
    dispatcher.drain_once(now=utcnow())
    assert fake_meta.events == [chat_item("Subscribe", join.public_id)]


def test_a_restricted_member_with_membership_counts_as_a_join(client):
    _, link = invited(client)

    deliver(client, chat_member(9003, VIP, LEAD_ID, link, now_seconds(), new="restricted", is_member=True))

    assert Conversion.select().count() == 1


def test_a_join_without_attribution_signals_is_stored_but_not_sent(client):
    seen = api(client, "/events/visit", {"href": "https://shop.example/organic"}, PROXY)
    link = api(client, "/events/invite", {"tempId": seen["tempId"], "channelId": "vip"})["inviteLink"]

    deliver(client, chat_member(9004, VIP, LEAD_ID, link, now_seconds()))

    assert Conversion.get().status == "skipped"
    assert [(s.status, s.reason) for s in Send.select()] == \
        [("skipped", "no Meta attribution signal (fbc or fbp) on this Telegram conversion")]


def test_a_redelivered_update_is_processed_once(client, fake_meta, dispatcher):
    _, link = invited(client)
    update = chat_member(9005, VIP, LEAD_ID, link, now_seconds())

    answers = [deliver(client, update).get_json() for _ in range(3)]

    assert answers == [OK, OK, OK]
    assert stored() == (1, 1, 1, 1)
    dispatcher.drain_once(now=utcnow())
    assert len(fake_meta.events) == 1
    assert refusals() == []


def test_leaving_and_joining_again_is_not_a_second_lead(client):
    _, link = invited(client)
    deliver(client, chat_member(9006, VIP, LEAD_ID, link, now_seconds()))
    left = deliver(client, chat_member(9007, VIP, LEAD_ID, None, now_seconds(), old="member", new="left"))

    rejoined = deliver(client, chat_member(9008, VIP, LEAD_ID, link, now_seconds()))

    assert (left.get_json(), rejoined.get_json()) == (OK, OK)
    assert Conversion.select().count() == 1
    assert refusals() == \
        [("shop", "telegram", "webhook: repeat join: Telegram user 555000111 already converted on channel vip")]


@pytest.mark.parametrize("headers", [{}, {"X-Telegram-Bot-Api-Secret-Token": "wrong"},
                                     {"X-Telegram-Bot-Api-Secret-Token": SECRET.lower()},
                                     {"X-Telegram-Bot-Api-Secret-Token": "ünïcødé"}],
                         ids=["missing", "wrong", "wrong case", "non-ascii"])
def test_a_bad_webhook_secret_is_refused_with_403(client, headers):
    _, link = invited(client)

    response = deliver(client, chat_member(9009, VIP, LEAD_ID, link, now_seconds()), headers)

    assert (response.status_code, response.get_json()) == (403, FORBIDDEN)
    assert (Conversion.select().count(), Event.select().count()) == (0, 0)
    assert refusals() == [("shop", "telegram", "webhook: refused: wrong or missing X-Telegram-Bot-Api-Secret-Token")]


def test_an_unknown_site_is_refused_like_a_wrong_secret(client):
    response = client.post("/telegram/webhook/nope", json={"update_id": 1}, headers=SIGNED)

    assert (response.status_code, response.get_json()) == (403, FORBIDDEN)
    assert refusals() == [(None, "telegram", "webhook: refused: wrong or missing X-Telegram-Bot-Api-Secret-Token")]


@pytest.mark.parametrize("webhook_secret", [None])
def test_a_site_without_a_webhook_secret_accepts_no_webhook_at_all(client):
    response = client.post("/telegram/webhook/shop", json={"update_id": 1}, headers={"X-Telegram-Bot-Api-Secret-Token": ""})

    assert (response.status_code, response.get_json()) == (403, FORBIDDEN)


def without_chat(link: str) -> dict:
    update = chat_member(1, VIP, LEAD_ID, link, 1)
    update["chat_member"]["chat"] = None
    return update


def bot_join_request(link: str) -> dict:
    update = join_request(1, VIP, 8, link, 1)
    update["chat_join_request"]["from"]["is_bot"] = True
    return update


def bot_demoted(link: str) -> dict:
    return {"update_id": 1, "my_chat_member": {"chat": {"id": int(VIP)}, "new_chat_member": {"status": "left"}}}


NOT_HANDLED = "is not handled (only chat_member and chat_join_request)"
IGNORED = [
    ("not json", lambda link: "{nope", "update is not valid JSON"),
    ("too large", lambda link: json.dumps({"update_id": 1, "pad": "x" * 40000}), "update larger than 32768 bytes"),
    ("a list", lambda link: [1, 2], "not a Telegram update: expected a JSON object"),
    ("no update_id", lambda link: {"chat_member": {}}, "not a Telegram update: update_id missing or not an integer"),
    ("a message", lambda link: {"update_id": 1, "message": {"text": "hi"}}, f"update type 'message' {NOT_HANDLED}"),
    ("empty", lambda link: {"update_id": 1}, f"update type 'none' {NOT_HANDLED}"),
    ("chat_member not an object", lambda link: {"update_id": 1, "chat_member": "x"}, "chat_member update: not an object"),
    ("no members", lambda link: {"update_id": 1, "chat_member": {"chat": {"id": int(VIP)}}},
     "chat_member update without old_chat_member and new_chat_member"),
    ("no chat", without_chat, "update without chat.id"),
    ("bad user id", lambda link: {"update_id": 1, "chat_join_request": {"chat": {"id": int(VIP)}, "from": {"id": "x"}}},
     "update without a valid user id"),
    ("join request not an object", lambda link: {"update_id": 1, "chat_join_request": []},
     "chat_join_request update: not an object"),
    ("a bot joins", bot_join_request, "a bot joined: bots are not leads"),
    ("another chat", lambda link: chat_member(1, "-1005555555555", LEAD_ID, link, 1),
     "chat -1005555555555 is not one of this site's channels"),
    ("no invite link", lambda link: chat_member(1, VIP, LEAD_ID, None, 1),
     "join to channel vip without an invite link (not through a Postback link)"),
    ("unknown link", lambda link: chat_member(1, VIP, LEAD_ID, "https://t.me/+SomeoneElsesLink", 1),
     "join to channel vip through an invite link Postback did not create"),
    ("link of another channel", lambda link: chat_member(1, FREE, LEAD_ID, link, 1),
     "invite link of channel vip used to join channel free"),
    ("the bot demoted", bot_demoted,
     f"the bot's own membership in chat {VIP} changed to 'left' (it needs to be an administrator with can_invite_users)"),
]


@pytest.mark.parametrize("build, reason", [case[1:] for case in IGNORED], ids=[case[0] for case in IGNORED])
def test_updates_that_attribute_nothing_are_acknowledged_and_shown_in_the_inspector(client, build, reason):
    _, link = invited(client)
    update = build(link)

    response = deliver(client, update)

    assert (response.status_code, response.get_json()) == (200, OK)
    assert stored() == (0, 0, 0, 0)
    assert refusals() == [("shop", "telegram", f"webhook: {reason}")]
    assert not {"Tatiana", "Joinova", "tatiana_joins"} & set(json.dumps(inspector.listing()).split('"'))


@pytest.mark.parametrize("old, new", [
    ("member", "left"), ("member", "kicked"), ("left", "left"), ("member", "administrator"), ("left", "restricted"),
])
def test_changes_that_are_not_joins_are_acknowledged_quietly(client, old, new):
    _, link = invited(client)

    response = deliver(client, chat_member(1, VIP, LEAD_ID, link, 1, old=old, new=new))

    assert (response.get_json(), Conversion.select().count(), refusals()) == (OK, 0, [])


# --- telegram_api against the fake Bot API -----------------------------------------------------------------------


def test_set_webhook_registers_the_sites_url_secret_and_chat_member_updates(config, fake_telegram):
    url = telegram_api.set_webhook(config.site("shop"), "https://track.shop.example/")

    assert url == "https://track.shop.example/telegram/webhook/shop"
    assert fake_telegram.webhook == {"url": url, "secret_token": SECRET,
                                     "allowed_updates": ["chat_member", "chat_join_request", "my_chat_member"]}
    [call] = fake_telegram.calls("setWebhook")
    assert call["token_ok"] and call["status"] == 200


def test_set_webhook_passes_on_telegrams_refusal_without_the_token(config, fake_telegram):
    with pytest.raises(TelegramError) as refused:
        telegram_api.set_webhook(config.site("shop"), "http://127.0.0.1:8000")

    assert str(refused.value) == "Telegram setWebhook: Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
    assert (refused.value.status, fake_telegram.webhook) == (400, None)


@pytest.mark.parametrize("webhook_secret, message", [  # one Telegram would refuse never loads (tests/test_config.py)
    (None, "Site 'shop' has no Telegram webhook_secret (sites[].telegram.webhook_secret)"),
])
def test_set_webhook_needs_a_usable_secret(config, fake_telegram, message):
    with pytest.raises(TelegramNotConfigured) as missing:
        telegram_api.set_webhook(config.site("shop"), "https://track.shop.example")

    assert str(missing.value) == message and fake_telegram.requests == []


def test_a_wrong_bot_token_is_telegrams_401(fake_telegram):
    bot = telegram_api.BotApi("123:wrong", fake_telegram.url, timeout=2)

    with pytest.raises(TelegramError) as refused:
        bot.create_chat_invite_link(VIP, "pb-x")

    assert (str(refused.value), refused.value.status) == ("Telegram createChatInviteLink: Unauthorized", 401)


def test_a_throttled_call_carries_telegrams_retry_after(fake_telegram):
    fake_telegram.script(("429", 12))

    with pytest.raises(TelegramError) as throttled:
        telegram_api.BotApi(fake_telegram.token, fake_telegram.url, timeout=2).create_chat_invite_link(VIP, "pb-x")

    assert (throttled.value.status, throttled.value.retry_after, throttled.value.throttled) == (429, 12, True)


def test_an_unreachable_api_is_an_error_that_names_no_url(fake_telegram):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    bot = telegram_api.BotApi(fake_telegram.token, f"http://127.0.0.1:{port}", timeout=2)

    with pytest.raises(TelegramError) as failed:
        bot.create_chat_invite_link(VIP, "pb-x")

    assert str(failed.value) == "Telegram createChatInviteLink: connection failed (ConnectionError)"
    assert failed.value.__context__ is None and failed.value.__cause__ is None  # requests' message holds the URL


def test_the_bot_token_never_reaches_the_logs_even_at_debug(fake_telegram, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")  # logs.configure() quiets it; someone debugging may not

    telegram_api.BotApi(fake_telegram.token, fake_telegram.url, timeout=2).create_chat_invite_link(VIP, "pb-x")

    assert "/bot<token>/createChatInviteLink" in caplog.text  # urllib3 did log the request…
    assert fake_telegram.token not in caplog.text  # …without the token


def test_invite_link_names_stay_within_telegrams_32_characters(fake_telegram):
    link = telegram_api.BotApi(fake_telegram.token, fake_telegram.url, timeout=2).create_chat_invite_link(VIP, "n" * 40)

    assert link["name"] == "n" * 32
    assert fake_telegram.calls("createChatInviteLink")[0]["params"] == {"chat_id": VIP, "name": "n" * 32}


def test_the_fake_refuses_a_name_over_32_characters(fake_telegram):
    bot = telegram_api.BotApi(fake_telegram.token, fake_telegram.url, timeout=2)

    with pytest.raises(TelegramError) as refused:
        bot.call("createChatInviteLink", {"chat_id": VIP, "name": "n" * 33})

    assert str(refused.value) == \
        "Telegram createChatInviteLink: Bad Request: invite link name must be at most 32 characters long"


def test_stored_invite_links_point_at_their_visit(client):
    seen, link = invited(client)

    stored = InviteLink.get()
    assert (stored.invite_link, stored.visit.public_id, stored.visit.click_ids) == \
        (link, seen["visitId"], {"fbc": minted_fbc(), "fbp": FBP})


@pytest.mark.parametrize("with_telegram", [False])
def test_a_site_without_telegram_has_no_channels_and_accepts_no_webhook(client):
    assert client.get("/api/v1/channels", headers=KEY).get_json() == {"channels": []}
    assert client.post("/telegram/webhook/shop", json={}, headers=SIGNED).status_code == 403


def test_purge_forgets_funnel_data_past_retention_but_keeps_a_waiting_purchase(client):
    _, link = invited(client)
    deliver(client, chat_member(9010, VIP, LEAD_ID, link, now_seconds()))
    api(client, "/events/conversion", {"telegramUserId": 42, "channelId": "vip", "eventType": "Purchase"})
    invited(client, "https://shop.example/other")  # a visitor who never joined
    tables = {"funnel_conversions": Conversion, "funnel_invite_links": InviteLink, "funnel_visits": Visit,
              "funnel_sessions": funnel.TrackingSession, "funnel_leads": Lead}

    assert funnel.purge(timedelta(days=90), utcnow()) == dict.fromkeys(tables, 0)
    assert funnel.purge(timedelta(days=90), utcnow() + timedelta(days=91)) == \
        {"funnel_conversions": 1, "funnel_invite_links": 2, "funnel_visits": 2, "funnel_sessions": 2, "funnel_leads": 1}
    assert {name: model.select().count() for name, model in tables.items()} == \
        {"funnel_conversions": 1, "funnel_invite_links": 0, "funnel_visits": 0, "funnel_sessions": 0, "funnel_leads": 1}
    assert Conversion.get().status == "awaiting_value"


def test_the_set_webhook_command_registers_the_webhook_at_the_public_url(raw_config, fake_telegram, tmp_path):
    raw_config["server"]["public_url"] = "https://track.shop.example"
    path = tmp_path / "postback.yaml"
    path.write_text(yaml.safe_dump(raw_config))

    result = CliRunner().invoke(cli, ["set-webhook", "shop"], env={"POSTBACK_CONFIG": str(path)})

    assert (result.exit_code, result.stdout) == (0, "webhook set: https://track.shop.example/telegram/webhook/shop\n")
    assert fake_telegram.webhook["url"] == "https://track.shop.example/telegram/webhook/shop"
    failed = CliRunner().invoke(cli, ["set-webhook", "nope"], env={"POSTBACK_CONFIG": str(path)})
    assert failed.exit_code == 2 and "no site 'nope'" in failed.output
