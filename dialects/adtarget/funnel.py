"""The Telegram funnel (docs/dialects/adtarget.md): visits, per-visitor invite links, leads and their conversions.

Shared by the AdTarget API, the Telegram webhook and the tracker's `/track/init` and `/track/invite`:
each caller parses its own request and renders its own answer; the state and the rules live here.
A conversion's canonical event enters storage through ingest.accept like any other event.
"""
from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Callable

from peewee import (
    AutoField, BooleanField, DoubleField, ForeignKeyField, IntegerField, IntegrityError, TextField, fn,
)

from ingest import inspector
from ingest.canonical import CUSTOM, CanonicalEvent, standard_name
from config import Channel, Config, Site
from dialects.adtarget.parse import DIALECT, Attribution, ConversionInput, Ignored, Join, ValueInput, VisitInput
from dialects.common import is_bot
from dialects.errors import BadCredentials, BodyTooLarge, InvalidJSON, NotAnObject, Refused, StorageFault
from ingest.identity import Identity
from ingest.clickids import from_ad_click
from ingest.accept import accept
from models import (
    FAILED, PENDING, SENDING, SENT, BaseModel, Event, JSONField, Send, UTCDateTimeField, any_of, holding, writing,
)
from ingest.fanout import plan_sends, preview
from dialects.adtarget.telegram import BotApi, TelegramError, TelegramNotConfigured
from storage.stores import Person, Store

log = logging.getLogger(__name__)

# Cookie hints for proxies and the tracker (the vendor's names and lifetimes).
TEMP_COOKIE, TEMP_COOKIE_MAX_AGE = "adtarget_temp_id", 31536000
SESSION_COOKIE, SESSION_COOKIE_MAX_AGE = "adtarget_session_id", 1800
# Conversion statuses.
DISPATCHED, AWAITING_VALUE, SKIPPED = "dispatched", "awaiting_value", "skipped"
SOURCES = ("tracker", "webhook", "api")


class FunnelError(Refused):
    """A request the funnel refuses: a stable `code`, the HTTP status it deserves and a reason a person can act on."""

    def __init__(self, code: str, status: int, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.code, self.status, self.retry_after = code, status, retry_after

    @classmethod
    def of(cls, exc: Refused) -> FunnelError:
        """Any refusal in the code, status and wording the AdTarget API and the tracker answer it with."""
        if isinstance(exc, FunnelError):
            return exc
        if isinstance(exc, BodyTooLarge):
            return cls("PAYLOAD_TOO_LARGE", 413, f"Request body is larger than {exc.limit} bytes")
        if isinstance(exc, InvalidJSON):
            return cls("INVALID_JSON", 400, "Request body is not valid JSON")
        if isinstance(exc, NotAnObject):
            return cls("INVALID_JSON", 400, exc.reason)
        if isinstance(exc, BadCredentials):
            return cls("UNAUTHORIZED", 401, exc.reason)
        if isinstance(exc, StorageFault):
            return cls("STORAGE_UNAVAILABLE", exc.status, exc.reason, exc.retry_after)
        return cls("VALIDATION_ERROR", 400, exc.reason)


class TrackingSession(BaseModel):
    """One browsing session of a visitor (tempId + clientSessionId)."""

    id = TextField(primary_key=True)
    site = TextField()
    temp_id = TextField()
    client_session_id = TextField()
    external_user_id = TextField(null=True)
    created_at = UTCDateTimeField()
    last_seen_at = UTCDateTimeField()

    class Meta:
        table_name = "funnel_sessions"
        indexes = ((("site", "temp_id", "client_session_id"), True),)


class Visit(BaseModel):
    """A landing-page view with everything that later attributes a Telegram join to its ad click."""

    id = AutoField()
    public_id = TextField(unique=True)
    site = TextField()
    session = ForeignKeyField(TrackingSession, backref="visits", on_delete="CASCADE")
    temp_id = TextField()
    href = TextField()
    landing_page = TextField()
    referrer = TextField(null=True)
    click_ids = JSONField(default=dict)
    ip = TextField(null=True)
    user_agent = TextField(null=True)
    location = JSONField(default=dict)
    external_user_id = TextField(null=True)
    utm = JSONField(default=dict)
    properties = JSONField(default=dict)
    created_at = UTCDateTimeField()

    class Meta:
        table_name = "funnel_visits"
        indexes = ((("site", "temp_id", "id"), False),)

    def attribution(self) -> Attribution:
        return Attribution(click_ids=dict(self.click_ids), ip=self.ip, user_agent=self.user_agent, page_url=self.href,
                           referrer=self.referrer, anonymous_id=self.temp_id, location=dict(self.location),
                           external_id=self.external_user_id)


class InviteLink(BaseModel):
    """A named invite link made for one visitor and one channel, and the visit it attributes joins to."""

    id = AutoField()
    site = TextField()
    channel = TextField()  # the config id
    temp_id = TextField()
    visit = ForeignKeyField(Visit, backref="invite_links", on_delete="CASCADE")
    invite_link = TextField(unique=True)
    name = TextField()
    created_at = UTCDateTimeField()

    class Meta:
        table_name = "funnel_invite_links"
        indexes = ((("site", "temp_id", "channel"), True),)


class Lead(BaseModel):
    """A Telegram user who converted on a site."""

    id = AutoField()
    site = TextField()
    telegram_user_id = TextField()
    external_user_id = TextField(null=True)
    first_seen_at = UTCDateTimeField()
    last_seen_at = UTCDateTimeField()

    class Meta:
        table_name = "funnel_leads"
        indexes = ((("site", "telegram_user_id"), True),)


class Conversion(BaseModel):
    """One conversion of a lead on a channel; its canonical event's event_id is its public id."""

    id = AutoField()
    public_id = TextField(unique=True)
    site = TextField()
    telegram_user_id = TextField()
    channel = TextField()  # the config id
    event_type = TextField()
    event_name = TextField()
    source = TextField()  # tracker | webhook | api
    status = TextField()  # dispatched | awaiting_value | skipped
    cold_lead = BooleanField()
    visit = ForeignKeyField(Visit, null=True, backref="conversions", on_delete="SET NULL")
    session = ForeignKeyField(TrackingSession, null=True, backref="conversions", on_delete="SET NULL")
    override = JSONField(default=dict)  # the attribution the request itself supplied (the vendor's apiVisitOverride)
    value = DoubleField(null=True)
    currency = TextField(null=True)
    update_id = IntegerField(null=True)  # the Telegram update it came from: a redelivered update is recorded once
    pending_event = JSONField(null=True)  # awaiting a value: the event to accept once the value arrives
    attributed_at = UTCDateTimeField()
    created_at = UTCDateTimeField()

    class Meta:
        table_name = "funnel_conversions"
        indexes = ((("site", "telegram_user_id", "channel", "id"), False), (("site", "update_id"), True))

    def attribution(self) -> Attribution:
        """The visit's attribution, what it lacks filled from what the request supplied."""
        own = Attribution.from_json(self.override)
        return self.visit.attribution().filled_from(own) if self.visit_id else own


@dataclass
class VisitResult:
    visit_id: str
    session_id: str
    temp_id: str
    client_session_id: str

    def cookies(self) -> dict:
        """The vendor's cookie hints: proxies (and the tracker) set these so the visitor keeps its ids."""
        return {
            "tempId": {"name": TEMP_COOKIE, "value": self.temp_id, "maxAge": TEMP_COOKIE_MAX_AGE, "sameSite": "Lax"},
            "session": {"name": SESSION_COOKIE, "value": self.client_session_id, "maxAge": SESSION_COOKIE_MAX_AGE,
                        "sameSite": "Lax"},
        }


@dataclass
class ConversionResult:
    """What a conversion became: scheduled sends, or why none was."""

    conversion_id: str
    cold_lead: bool
    awaiting_value: bool
    telegram_user_id: str = ""
    sends: list[tuple[str, str]] = field(default_factory=list)  # (send id, platform) scheduled
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (destination name, reason)
    duplicate: bool = False
    event: CanonicalEvent | None = None

    @property
    def dispatched(self) -> bool:
        return bool(self.sends)

    @property
    def capi_status(self) -> str:
        return "pending" if self.dispatched or self.awaiting_value else "skipped"

    @property
    def warning(self) -> str | None:
        if self.awaiting_value:
            return (f"Purchase without value: stored and awaiting a value; nothing is sent until POST "
                    f"/api/v1/leads/{self.telegram_user_id}/conversions/{self.conversion_id}/value supplies one")
        if self.dispatched:
            return None
        if not self.skipped:
            return "No CAPI event was scheduled: no pixel is configured for this site"
        return "No CAPI event was scheduled: " + "; ".join(f"{name}: {reason}" for name, reason in self.skipped)


# --- visits -------------------------------------------------------------------------------------------------


def start_visit(site: Site, given: VisitInput, now: datetime, dry_run: bool = False) -> VisitResult:
    """Record a landing-page visit in the visitor's session (created when new); ids absent are generated."""
    temp_id = given.temp_id or str(uuid.uuid4())
    client_session_id = given.client_session_id or str(uuid.uuid4())
    if dry_run:
        return VisitResult(_new_id("vis"), _new_id("ses"), temp_id, client_session_id)
    attribution = replace(given.attribution, anonymous_id=temp_id)
    with writing():
        session, created = TrackingSession.get_or_create(
            site=site.id, temp_id=temp_id, client_session_id=client_session_id,
            defaults={"id": _new_id("ses"), "created_at": now, "last_seen_at": now,
                      "external_user_id": given.external_user_id})
        if not created:
            TrackingSession.update(last_seen_at=now, external_user_id=given.external_user_id or session.external_user_id
                                   ).where(TrackingSession.id == session.id).execute()
        visit = Visit.create(
            public_id=_new_id("vis"), site=site.id, session=session, temp_id=temp_id, href=given.href,
            landing_page=given.landing_page, referrer=attribution.referrer, click_ids=attribution.click_ids,
            ip=attribution.ip, user_agent=attribution.user_agent, location=attribution.location,
            external_user_id=given.external_user_id, utm=given.utm, properties=given.properties, created_at=now)
    return VisitResult(visit.public_id, session.id, temp_id, client_session_id)


def latest_visit(site: Site, temp_id: str, client_session_id: str | None = None) -> Visit | None:
    """The visitor's newest visit, in that session when one is named and known."""
    query = Visit.select().where((Visit.site == site.id) & (Visit.temp_id == temp_id)).order_by(Visit.id.desc())
    if client_session_id:
        in_session = (query.join(TrackingSession)
                      .where(TrackingSession.client_session_id == client_session_id).first())
        if in_session is not None:
            return in_session
    return query.first()


def update_fbp(site: Site, temp_id: str, fbp: str) -> bool:
    """Set `fbp` on the visitor's latest visit (fbevents.js set `_fbp` after the visit was recorded)."""
    visit = latest_visit(site, temp_id)
    if visit is None:
        return False
    with writing():
        Visit.update(click_ids={**visit.click_ids, "fbp": fbp}).where(Visit.id == visit.id).execute()
    return True


# --- invite links -------------------------------------------------------------------------------------------


def channel_for(site: Site, ref: object) -> Channel:
    """A site's channel by its config id or its Telegram id (`-100…`)."""
    channel = site.telegram.channel(ref) if site.telegram else None
    if channel is None:
        raise FunnelError("CHANNEL_NOT_FOUND", 404, f"No channel {ref!s} on this site (sites[].telegram.channels)")
    return channel


def invite_link(site: Site, channel_ref: object, temp_id: str, client_session_id: str | None,
                bot: Callable[[], BotApi], now: datetime, dry_run: bool = False) -> str | None:
    """The visitor's own invite link to the channel: made once by Telegram, then the same link every time.

    Link-preview bots fetch a link before the person does; handing out a fresh one each time would
    leave the person holding a link attributed to nobody.
    """
    channel = channel_for(site, channel_ref)
    visit = latest_visit(site, temp_id, client_session_id)
    if visit is None:
        raise FunnelError("VISIT_NOT_FOUND", 404,
                          f"No visit recorded for tempId {temp_id}: call POST /api/v1/events/visit first")
    existing = _stored_link(site, temp_id, channel)
    if dry_run:  # checked, but Telegram is not asked: a dry run creates nothing anywhere
        return existing.invite_link if existing is not None else None
    if existing is not None:
        _follow_newer_click(existing, visit)
        return existing.invite_link
    name = link_name(site, temp_id)
    try:
        created = bot().create_chat_invite_link(channel.telegram_id, name)
    except TelegramNotConfigured as exc:
        raise FunnelError("TELEGRAM_NOT_CONFIGURED", 503, str(exc)) from None
    except TelegramError as exc:
        log.warning("telegram invite link refused",
                    extra={"site": site.id, "channel": channel.id, "status": exc.status, "error": exc.description})
        raise _telegram_failure(exc, channel) from None
    url = created.get("invite_link") if isinstance(created, dict) else None
    if not isinstance(url, str) or not url:
        raise FunnelError("TELEGRAM_ERROR", 502, "Telegram createChatInviteLink answered without an invite_link")
    try:
        with writing():
            InviteLink.create(site=site.id, channel=channel.id, temp_id=temp_id, visit=visit, invite_link=url,
                              name=name, created_at=now)
    except IntegrityError:  # a concurrent request for the same visitor won: everyone gets its link
        stored = _stored_link(site, temp_id, channel)
        if stored is None:
            raise
        return stored.invite_link
    return url


def link_name(site: Site, temp_id: str) -> str:
    """A stable per-visitor name (Telegram shows it to admins; ≤ 32 characters) that holds no visitor data."""
    return "pb-" + hashlib.sha256(f"{site.id}\0{temp_id}".encode()).hexdigest()[:16]


def _stored_link(site: Site, temp_id: str, channel: Channel) -> InviteLink | None:
    return InviteLink.get_or_none((InviteLink.site == site.id) & (InviteLink.temp_id == temp_id)
                                  & (InviteLink.channel == channel.id))


def _follow_newer_click(link: InviteLink, visit: Visit) -> None:
    """The link stays the same, but a newer visit that came from an ad click takes over its attribution."""
    if visit.id > link.visit_id and _has_click(visit):
        with writing():
            InviteLink.update(visit=visit).where(InviteLink.id == link.id).execute()


def _has_click(visit: Visit) -> bool:
    return from_ad_click(visit.click_ids)


def _telegram_failure(exc: TelegramError, channel: Channel) -> FunnelError:
    message = (f"Telegram refused to create an invite link for channel {channel.id} ({channel.telegram_id}): "
               f"{exc.description}")
    if exc.throttled:
        return FunnelError("TELEGRAM_RATE_LIMITED", 429, message, retry_after=exc.retry_after)
    if exc.status == 403 or "rights" in exc.description or "not found" in exc.description:
        message += "; the bot must be an administrator of the channel with the can_invite_users right"
    elif exc.status == 401:
        message += "; check sites[].telegram.bot_token"
    return FunnelError("TELEGRAM_ERROR", 502, message)


# --- conversions --------------------------------------------------------------------------------------------


def convert(site: Site, config: Config, given: ConversionInput, now: datetime, source: str = "api",
            dry_run: bool = False) -> ConversionResult:
    """A conversion asked for by the operator: warm when the lead already converted on the channel, else cold."""
    channel = channel_for(site, given.channel_ref)
    origin = origin_conversion(site, given.telegram_user_id, channel)
    if origin is None:
        return _record(site, config, given, channel, given.overrides, None, source, now, dry_run, cold=True)
    attribution = origin.attribution().filled_from(given.overrides)
    return _record(site, config, given, channel, attribution, origin, source, now, dry_run, cold=False)


def convert_lead(site: Site, config: Config, given: ConversionInput, now: datetime,
                 dry_run: bool = False) -> ConversionResult:
    """An additional event on an existing lead; without channelId, the channel of its latest conversion."""
    latest = (Conversion.select()
              .where((Conversion.site == site.id) & (Conversion.telegram_user_id == given.telegram_user_id))
              .order_by(Conversion.id.desc()).first())
    if latest is None:
        raise lead_not_found(given.telegram_user_id)
    if given.channel_ref is None:
        given = replace(given, channel_ref=latest.channel)
    return convert(site, config, given, now, dry_run=dry_run)


def record_join(site: Site, config: Config, join: Join, now: datetime) -> ConversionResult:
    """A join through one of our invite links: a warm conversion carrying the link's visit's attribution."""
    channel = site.telegram.channel(join.chat_id) if site.telegram else None
    if channel is None:
        raise Ignored(f"chat {join.chat_id} is not one of this site's channels")
    if join.invite_link is None:
        raise Ignored(f"join to channel {channel.id} without an invite link (not through a Postback link)")
    link = InviteLink.get_or_none((InviteLink.site == site.id) & (InviteLink.invite_link == join.invite_link))
    if link is None:
        raise Ignored(f"join to channel {channel.id} through an invite link Postback did not create")
    if link.channel != channel.id:
        raise Ignored(f"invite link of channel {link.channel} used to join channel {channel.id}")
    conversion_id = "conv_" + hashlib.sha256(f"{site.id}\0telegram\0{join.update_id}".encode()).hexdigest()[:32]
    if Conversion.select().where((Conversion.site == site.id) & (Conversion.update_id == join.update_id)).exists():
        return ConversionResult(conversion_id, False, False, join.user_id, duplicate=True)
    joined_before = Conversion.select().where(
        (Conversion.site == site.id) & (Conversion.telegram_user_id == join.user_id)
        & (Conversion.channel == channel.id) & (Conversion.source == "webhook")).exists()
    if joined_before:
        raise Ignored(f"repeat join: Telegram user {join.user_id} already converted on channel {channel.id}")
    given = ConversionInput(
        telegram_user_id=join.user_id, channel_ref=channel.id, event_type=channel.event_type, custom_event_name=None,
        value=None, currency=None, identity=Identity(), external_user_id=None, occurred_at=join.occurred_at,
        overrides=Attribution(), properties={}, notes=[])
    try:
        return _record(site, config, given, channel, link.visit.attribution(), None, "webhook", now, False, cold=False,
                       visit=link.visit, conversion_id=conversion_id, update_id=join.update_id)
    except IntegrityError:  # the same update delivered twice at once: the other delivery recorded it
        return ConversionResult(conversion_id, False, False, join.user_id, duplicate=True)


def submit_value(site: Site, config: Config, telegram_user_id: str, conversion_id: str, given: ValueInput,
                 now: datetime, dry_run: bool = False) -> ConversionResult:
    """Give a waiting Purchase its value: its event is accepted and dispatched now, never before."""
    conversion = Conversion.get_or_none((Conversion.site == site.id) & (Conversion.public_id == conversion_id)
                                        & (Conversion.telegram_user_id == telegram_user_id))
    if conversion is None:
        raise FunnelError("CONVERSION_NOT_FOUND", 404,
                          f"No conversion {conversion_id} for Telegram user {telegram_user_id} on this site")
    if conversion.status != AWAITING_VALUE:
        raise _not_waiting(conversion)
    event = _restore(conversion.pending_event)
    event.value, event.currency, event.received_at = given.value, given.currency, now
    event.identity = {**event.identity, **given.identity.hashes}
    event.notes = [*event.notes, *given.identity.dropped]
    result = ConversionResult(conversion.public_id, conversion.cold_lead, False, telegram_user_id, event=event)
    if dry_run:
        return _planned(result, event, site)
    with writing():
        claimed = (Conversion.update(status=DISPATCHED)
                   .where((Conversion.id == conversion.id) & (Conversion.status == AWAITING_VALUE)).execute())
        if not claimed:  # another request gave it a value first
            raise _not_waiting(Conversion.get_by_id(conversion.id))
        row, _ = accept(event, site, config)
        _sent_or_skipped(result, row)
        (Conversion.update(status=DISPATCHED if result.dispatched else SKIPPED, value=given.value,
                           currency=given.currency, pending_event=None)
         .where(Conversion.id == conversion.id).execute())
    return result


def origin_conversion(site: Site, telegram_user_id: str, channel: Channel) -> Conversion | None:
    """The conversion a warm lead inherits from: its first with a visit, else its first."""
    query = (Conversion.select().where((Conversion.site == site.id) & (Conversion.telegram_user_id == telegram_user_id)
                                       & (Conversion.channel == channel.id)).order_by(Conversion.id))
    return query.where(Conversion.visit.is_null(False)).first() or query.first()


def lead_not_found(telegram_user_id: str) -> FunnelError:
    """The vendor's 404 for a user without a conversion on the site."""
    return FunnelError("LEAD_NOT_FOUND", 404, f"No conversion for Telegram user {telegram_user_id} on this site")


def _not_waiting(conversion: Conversion) -> FunnelError:
    return FunnelError("CONVERSION_NOT_AWAITING_VALUE", 409,
                       f"Conversion {conversion.public_id} is not awaiting a value (it is {conversion.status})")


def _record(site: Site, config: Config, given: ConversionInput, channel: Channel, attribution: Attribution,
            origin: Conversion | None, source: str, now: datetime, dry_run: bool, cold: bool,
            visit: Visit | None = None, conversion_id: str | None = None, update_id: int | None = None) -> ConversionResult:
    """Store the conversion and, unless it waits for a value, accept its event (one transaction)."""
    conversion_id = conversion_id or _new_id("conv")
    event = conversion_event(site, config, conversion_id, given, attribution, now)
    awaiting = event.standard_name == "Purchase" and event.value is None
    result = ConversionResult(conversion_id, cold, awaiting, given.telegram_user_id, event=event)
    if dry_run:
        return result if awaiting else _planned(result, event, site)
    visit = visit or (origin.visit if origin is not None and origin.visit_id else None)
    session_id = visit.session_id if visit is not None else (origin.session_id if origin is not None else None)
    with writing():
        if not awaiting:
            row, _ = accept(event, site, config)
            _sent_or_skipped(result, row)
        Conversion.create(
            public_id=conversion_id, site=site.id, telegram_user_id=given.telegram_user_id, channel=channel.id,
            event_type=given.event_type, event_name=given.event_name, source=source,
            status=AWAITING_VALUE if awaiting else DISPATCHED if result.dispatched else SKIPPED, cold_lead=cold,
            visit=visit, session=session_id, override=given.overrides.to_json(), value=event.value,
            currency=event.currency, update_id=update_id, pending_event=_snapshot(event) if awaiting else None,
            attributed_at=event.occurred_at, created_at=now)
        _seen(site, given.telegram_user_id, given.external_user_id or attribution.external_id, now)
    return result


def conversion_event(site: Site, config: Config, conversion_id: str, given: ConversionInput, attribution: Attribution,
                     now: datetime) -> CanonicalEvent:
    """The canonical `chat` event: Meta gets action_source "chat"; the lead's Telegram id is the external id
    unless the operator names its own user id (externalUserId, here or at the visit)."""
    standard = CUSTOM if given.event_type == "Custom" else standard_name(given.event_type, site.event_map)
    location = dict(attribution.location)
    if "country" not in location and site.default_country:
        location["country"] = site.default_country.lower()
    return CanonicalEvent(
        site_id=site.id,
        dialect=DIALECT,
        event_name=given.event_name,
        standard_name=standard,
        event_id=conversion_id,
        occurred_at=given.occurred_at,
        received_at=now,
        channel="chat",
        external_id=given.external_user_id or attribution.external_id or given.telegram_user_id,
        anonymous_id=attribution.anonymous_id,
        identity=dict(given.identity.hashes),
        location=location,
        click_ids=dict(attribution.click_ids),
        ip=attribution.ip,
        user_agent=attribution.user_agent,
        page_url=attribution.page_url,
        referrer=attribution.referrer,
        value=given.value,
        currency=given.currency,
        consent=config.consent_default == "granted",
        properties=dict(given.properties),
        notes=list(given.notes),
        is_bot=is_bot(attribution.user_agent),
    )


def _sent_or_skipped(result: ConversionResult, row: Event) -> None:
    for send in Send.select().where(Send.event == row.id).order_by(Send.id):
        if send.status == PENDING:
            result.sends.append((str(send.id), send.platform))
        else:
            result.skipped.append((send.destination.split("/", 1)[-1], send.reason or send.status))


def _planned(result: ConversionResult, event: CanonicalEvent, site: Site) -> ConversionResult:
    """A dry run's verdict from the plan the real run would store (no send ids: nothing is stored)."""
    names = {dest.key: dest.name for dest in site.active_destinations}
    for send in plan_sends(event, site):
        if send["status"] == PENDING:
            result.sends.append(("", send["platform"]))
        else:
            result.skipped.append((names[send["destination"]], send["reason"]))
    return result


def dry_run_destinations(result: ConversionResult, site: Site) -> list[dict]:
    """What each destination would receive (the dry-run listing of docs/delivery.md)."""
    return preview(result.event, site) if result.event is not None else []


def _seen(site: Site, telegram_user_id: str, external_user_id: str | None, now: datetime) -> None:
    lead, created = Lead.get_or_create(site=site.id, telegram_user_id=telegram_user_id, defaults={
        "first_seen_at": now, "last_seen_at": now, "external_user_id": external_user_id})
    if not created:
        Lead.update(last_seen_at=now, external_user_id=external_user_id or lead.external_user_id
                    ).where(Lead.id == lead.id).execute()


# --- reading ------------------------------------------------------------------------------------------------


def lead(site: Site, telegram_user_id: str) -> tuple[Lead, list[Conversion]]:
    """A lead and its conversions, oldest first; LEAD_NOT_FOUND when it never converted on this site."""
    conversions = list(Conversion.select().where((Conversion.site == site.id)
                                                 & (Conversion.telegram_user_id == telegram_user_id))
                       .order_by(Conversion.id))
    found = Lead.get_or_none((Lead.site == site.id) & (Lead.telegram_user_id == telegram_user_id))
    if not conversions or found is None:
        raise lead_not_found(telegram_user_id)
    return found, conversions


def delivery_status(conversion: Conversion) -> str:
    """Where the conversion's sends stand now: awaiting_value, pending, sent, failed or skipped."""
    if conversion.status == AWAITING_VALUE:
        return AWAITING_VALUE
    statuses = {s.status for s in Send.select(Send.status).join(Event)
                .where((Event.site == conversion.site) & (Event.event_id == conversion.public_id))}
    for status, answer in ((SENT, "sent"), (PENDING, "pending"), (SENDING, "pending"), (FAILED, "failed")):
        if status in statuses:
            return answer
    return "skipped"


def purge(older_than: timedelta, now: datetime) -> dict[str, int]:
    """Forget funnel data older than the retention period (a waiting conversion stays until it gets its value)."""
    cutoff = now - older_than
    with writing():
        removed = {Conversion: Conversion.delete().where(
            (Conversion.created_at < cutoff) & (Conversion.status != AWAITING_VALUE)).execute()}
        removed[InviteLink] = InviteLink.delete().where(InviteLink.created_at < cutoff).execute()
        linked = InviteLink.select(InviteLink.visit)
        converted = Conversion.select(Conversion.visit).where(Conversion.visit.is_null(False))
        removed[Visit] = Visit.delete().where(
            (Visit.created_at < cutoff) & Visit.id.not_in(linked) & Visit.id.not_in(converted)).execute()
        removed[TrackingSession] = TrackingSession.delete().where(
            (TrackingSession.last_seen_at < cutoff) & TrackingSession.id.not_in(Visit.select(Visit.session))).execute()
        removed[Lead] = Lead.delete().where(
            (Lead.last_seen_at < cutoff)
            & ~fn.EXISTS(Conversion.select().where((Conversion.site == Lead.site)
                                                   & (Conversion.telegram_user_id == Lead.telegram_user_id)))).execute()
    return {model._meta.table_name: rows for model, rows in removed.items()}


def erase(person: Person, now: datetime) -> dict[str, int]:
    """A person's erasure forgets their visits and sessions (by anonymous or user id), their leads (by Telegram or
    user id, or through a visit of theirs) with every conversion of those, and conversions waiting for a value
    with one of their hashes."""
    ids, anonymous = list(person.external_ids), list(person.anonymous_ids)
    visits = [v.id for v in Visit.select(Visit.id).where(
        (Visit.site == person.site) & (Visit.temp_id.in_(anonymous) | Visit.external_user_id.in_(ids)))]
    telegram_ids = person.external_ids | {
        row.telegram_user_id for row in Conversion.select(Conversion.telegram_user_id).where(Conversion.visit.in_(visits))
    } | {row.telegram_user_id for row in Lead.select(Lead.telegram_user_id).where(
        (Lead.site == person.site) & Lead.external_user_id.in_(ids))}
    with writing():
        removed = {Conversion: Conversion.delete().where((Conversion.site == person.site) & any_of([
            Conversion.telegram_user_id.in_(list(telegram_ids)), Conversion.visit.in_(visits),
            *holding(Conversion.pending_event, person.hashes)])).execute()}
        removed[Lead] = Lead.delete().where(
            (Lead.site == person.site) & Lead.telegram_user_id.in_(list(telegram_ids))).execute()
        removed[InviteLink] = InviteLink.delete().where(
            (InviteLink.site == person.site) & (InviteLink.temp_id.in_(anonymous) | InviteLink.visit.in_(visits))).execute()
        removed[Visit] = Visit.delete().where(Visit.id.in_(visits)).execute()
        removed[TrackingSession] = TrackingSession.delete().where(
            (TrackingSession.site == person.site)
            & (TrackingSession.temp_id.in_(anonymous) | TrackingSession.external_user_id.in_(ids))).execute()
    return {model._meta.table_name: rows for model, rows in removed.items()}


STORE = Store("funnel", (TrackingSession, Visit, InviteLink, Lead, Conversion), purge=purge, erase=erase)


# --- the webhook ----------------------------------------------------------------------------------------------


def note_ignored(site: Site | None, reason: str, body: object) -> None:
    """An update Telegram gets a 200 for but that attributes nothing: visible in the inspector."""
    inspector.record("telegram", site.id if site else None, f"webhook: {reason}", body)


# --- helpers --------------------------------------------------------------------------------------------------


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _snapshot(event: CanonicalEvent) -> dict:
    """The event as JSON; identity is already hashed, so nothing raw is kept."""
    data = {f.name: getattr(event, f.name) for f in fields(CanonicalEvent)}
    for key in ("occurred_at", "received_at"):
        data[key] = data[key].isoformat()
    data["consent_categories"] = list(event.consent_categories) if event.consent_categories is not None else None
    return data


def _restore(data: dict) -> CanonicalEvent:
    data = dict(data)
    for key in ("occurred_at", "received_at"):
        data[key] = datetime.fromisoformat(data[key])
    if data.get("consent_categories") is not None:
        data["consent_categories"] = tuple(data["consent_categories"])
    return CanonicalEvent(**data)
