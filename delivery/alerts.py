"""Alerts to the operator (docs/operations.md#alerts): a destination paused or resumed, sends given up, a platform
failing for minutes, purchase coverage below a site's threshold; each once per change of state.

State is derived from the database at each check, never from the dispatcher's memory, and the last state told is
kept in `alert_state`: whichever process checks, a state is told once. Messages name destinations, sites, counts
and platform errors, never an event's personal data or a credential.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

import requests
from peewee import CharField, TextField, fn

from config import Alerts, Config
from delivery import sends as delivery
from models import FAILED, PENDING, SENT, BaseModel, DestinationState, Event, Send, UTCDateTimeField, writing
from outbound import Http
from storage.stores import Store

log = logging.getLogger(__name__)

CHECK_EVERY = timedelta(seconds=10)
COVERAGE_WINDOW = timedelta(hours=24)
COVERAGE_SETTLE = timedelta(minutes=15)  # a purchase younger than this may still be on its way
ERROR_CHARS = 200
CHECKED, DESTINATIONS = "checked", "destinations"  # the two bookkeeping keys beside the states


class AlertState(BaseModel):
    """The last state told for one subject (`paused:shop/meta`, `coverage:shop`, …), and the checks' bookkeeping."""

    key = CharField(primary_key=True)
    value = TextField()
    changed_at = UTCDateTimeField()

    class Meta:
        table_name = "alert_state"


def tick(config: Config, now: datetime, http: Http) -> list[str]:
    """The dispatcher's upkeep: settle a config change, then, every CHECK_EVERY, tell what changed; the messages.

    A failure here is logged and never stops the dispatcher's pass.
    """
    try:
        return _tick(config, now, http)
    except Exception:  # noqa: BLE001 - delivery goes on without its alerts
        log.exception("alert check failed")
        return []


def _tick(config: Config, now: datetime, http: Http) -> list[str]:
    _settle_destinations(config, now)
    last = _value(CHECKED)
    since = datetime.fromisoformat(last) if last else None
    if since is not None and now - since < CHECK_EVERY:
        return []
    if not _swap(CHECKED, last, now.isoformat(), now):
        return []  # another process checked meanwhile
    messages = check(config, now, since)
    if config.alerts.enabled:
        for message in messages:
            notify(config, message, http)
    return messages


def check(config: Config, now: datetime, since: datetime | None) -> list[str]:
    """The messages for every state that changed since the last check (recorded as told), and sends given up."""
    messages = []
    for key, state, message in _states(config, now):
        if _swap(key, _value(key) or "ok", state, now):
            messages.append(message)
    if since is not None:
        messages.extend(_given_up(config, since, now))
    return messages


def notify(config: Config, text: str, http: Http) -> None:
    """One message to the webhook and/or the Telegram chat; a failure is logged, never raised."""
    alerts: Alerts = config.alerts
    calls = []
    if alerts.webhook:
        calls.append(("webhook", alerts.webhook, {"text": text}))
    site = config.site(alerts.telegram_site) if alerts.telegram_site else None
    if site is not None and site.telegram is not None and alerts.telegram_chat_id:
        # https://core.telegram.org/bots/api#sendmessage
        url = f"{site.telegram.api_base}/bot{site.telegram.bot_token}/sendMessage"
        calls.append(("telegram", url, {"chat_id": alerts.telegram_chat_id, "text": text}))
    for channel, url, body in calls:
        try:
            response = http.post(url, json=body)
            if response.status_code >= 300:
                log.warning("alert not delivered", extra={"channel": channel, "status": response.status_code})
        except requests.RequestException as exc:
            log.warning("alert not delivered", extra={"channel": channel, "error": type(exc).__name__})


def _states(config: Config, now: datetime) -> list[tuple[str, str, str]]:
    """(key, state, message on entering it) for every destination and site of the config."""
    states = []
    paused = {s.destination: s.paused_reason for s in DestinationState.select()}
    minutes = config.alerts.failing_minutes
    for dest in config.destinations():
        reason = paused.get(dest.key)
        states.append((f"paused:{dest.key}", "paused" if reason else "ok",
                       f"Postback: {dest.key} paused: {_short(reason)}" if reason else f"Postback: {dest.key} resumed"))
        error = _failing(dest.key, now - timedelta(minutes=minutes))
        states.append((f"failing:{dest.key}", "failing" if error else "ok",
                       f"Postback: {dest.key} has been failing for over {minutes:g} minutes: {_short(error)}"
                       if error else f"Postback: {dest.key} is delivering again"))
    for site in config.sites:
        below = _coverage_threshold(site)
        if below is None:
            continue
        share = _purchase_coverage(site.id, now)
        low = share is not None and share < below
        states.append((f"coverage:{site.id}", "low" if low else "ok",
                       f"Postback: site {site.id}: {share:.0%} of purchases delivered over the last 24 h, "
                       f"below {below:.0%}" if low else f"Postback: site {site.id}: purchase coverage back to "
                                                        f"{share if share is not None else 1:.0%}"))
    return states


def _failing(destination: str, since: datetime) -> str | None:
    """The last error of a destination whose retries go back before `since` with nothing sent since then."""
    retrying = (Send.select(Send.last_error).join(Event)
              .where((Send.destination == destination) & (Send.status == PENDING) & (Send.retries > 0)
                     & (Event.received_at <= since))
              .order_by(Send.id.desc()).first())
    if retrying is None:
        return None
    delivered = Send.select().where((Send.destination == destination) & (Send.status == SENT)
                                    & (Send.finished_at > since)).exists()
    return None if delivered else (retrying.last_error or "no answer")


def _coverage_threshold(site) -> float | None:
    """`sites[].coverage_alert_below` as a share (0.9, or 90 meaning 90 %); None when not set."""
    value = getattr(site, "coverage_alert_below", None)
    if value is None:
        value = site.settings.get("coverage_alert_below")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return None
    return value / 100 if value > 1 else float(value)


def _purchase_coverage(site_id: str, now: datetime) -> float | None:
    """The share of the site's purchases of the last 24 h (settled ones) that reached at least one platform."""
    window = ((Event.site == site_id) & (Event.standard_name == "Purchase")
              & (Event.received_at > now - COVERAGE_WINDOW) & (Event.received_at <= now - COVERAGE_SETTLE))
    total = Event.select().where(window).count()
    if not total:
        return None
    sent = (Event.select(fn.COUNT(fn.DISTINCT(Event.id))).join(Send)
            .where(window & (Send.status == SENT)).scalar())
    return sent / total


def _given_up(config: Config, since: datetime, now: datetime) -> list[str]:
    """One message per destination whose retries ran out between the last check and now."""
    # By destination first: the (destination, status, …) index then reads the failed sends alone, where status
    # alone read through every send stored, every CHECK_EVERY.
    rows = (Send.select(Send.destination, fn.COUNT(Send.id))
            .where(Send.destination.in_([d.key for d in config.destinations()]) & (Send.status == FAILED)
                   & Send.reason.startswith("gave up") & (Send.finished_at > since) & (Send.finished_at <= now))
            .group_by(Send.destination).order_by(Send.destination).tuples())
    return [f"Postback: {destination}: {count} send(s) given up after {config.max_attempts} attempts"
            for destination, count in rows]


def _settle_destinations(config: Config, now: datetime) -> None:
    """After a config change: the pending sends of a destination no longer enabled are skipped, once."""
    enabled = sorted(d.key for d in config.destinations())
    text = " ".join(enabled)
    last = _value(DESTINATIONS)
    if last != text and _swap(DESTINATIONS, last, text, now):
        skipped = delivery.skip_dropped(enabled, now, config.ip_policy)
        if skipped:
            log.info("pending sends skipped: destination disabled or removed", extra={"sends": skipped})


def _value(key: str) -> str | None:
    row = AlertState.get_or_none(AlertState.key == key)
    return row.value if row is not None else None


def _swap(key: str, old: str | None, new: str, now: datetime) -> bool:
    """Set `key` from `old` to `new`; False when it was not `old` (unchanged, or another process got there first)."""
    if old == new:
        return False
    with writing():
        if AlertState.get_or_none(AlertState.key == key) is None:
            return AlertState.insert(key=key, value=new, changed_at=now).on_conflict_ignore().as_rowcount().execute() == 1
        return AlertState.update(value=new, changed_at=now).where(
            (AlertState.key == key) & (AlertState.value == old)).execute() == 1


def _short(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS - 1] + "…"


STORE = Store("alert_state", (AlertState,),
              impersonal="destination and site names, states and times: no event's data")
