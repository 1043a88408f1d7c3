"""What the console shows and does for the Telegram funnel: leads with their conversions, and the Submit value form
that gives an awaiting Purchase its value through the same funnel call as the value endpoint."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from config import Config
from dialects.adtarget import parse
from dialects.adtarget.funnel import AWAITING_VALUE, Conversion, Lead, delivery_status, submit_value
from dialects.errors import FieldError

PAGE, TITLE = "leads", "Leads"
LEADS_PER_SITE = 100
PII_INPUTS = tuple(parse.PII_FIELDS)  # the value endpoint's optional pii keys, in its own names


def listing(config: Config, user: str | None = None) -> dict:
    """Per site with a Telegram funnel, its leads (or the one with Telegram id `user`) and their conversions."""
    sites = []
    for site in config.sites:
        if site.telegram is None:
            continue
        query = Lead.select().where(Lead.site == site.id)
        if user:
            query = query.where(Lead.telegram_user_id == user)
        leads = list(query.order_by(Lead.site, Lead.telegram_user_id).limit(LEADS_PER_SITE))
        conversions: dict[str, list[dict]] = {}
        if leads:
            rows = (Conversion.select().where((Conversion.site == site.id)
                                              & Conversion.telegram_user_id.in_([l.telegram_user_id for l in leads])))
            for c in sorted(rows, key=lambda c: c.id):
                conversions.setdefault(c.telegram_user_id, []).append(_conversion(c))
        sites.append({"id": site.id, "name": site.name, "currency": site.default_currency,
                      "leads": [{"telegram_user_id": l.telegram_user_id, "external_user_id": l.external_user_id,
                                 "first_seen_at": l.first_seen_at.isoformat(), "last_seen_at": l.last_seen_at.isoformat(),
                                 "conversions": conversions.get(l.telegram_user_id, [])} for l in leads]})
    return {"sites": sites, "pii_fields": list(PII_INPUTS)}


def _conversion(c: Conversion) -> dict:
    return {"id": c.public_id, "channel": c.channel, "event_type": c.event_type, "event_name": c.event_name,
            "source": c.source, "cold_lead": c.cold_lead, "awaiting_value": c.status == AWAITING_VALUE,
            "delivery": delivery_status(c), "value": c.value, "currency": c.currency,
            "attributed_at": c.attributed_at.isoformat()}


def submit(config: Config, site_id: str, telegram_user_id: str, conversion_id: str, form: Mapping,
           now: datetime) -> dict:
    """Give an awaiting conversion its value: value > 0, an ISO 4217 currency, optional pii (the form's fields, or
    the value endpoint's `pii` object).
    Raises the dialect's refusals (a bad field, no such conversion, one not awaiting a value)."""
    site = config.site(site_id)
    if site is None or site.telegram is None:
        raise FieldError("site", "has no Telegram funnel")
    pii = form.get("pii") if "pii" in form else {key: form[key] for key in PII_INPUTS if str(form.get(key) or "").strip()}
    body = {"value": form.get("value"), "currency": form.get("currency"), "pii": pii or None}
    given = parse.parse_value(body, site)
    user = parse.read_telegram_user_id(telegram_user_id, "telegramUserId")
    result = submit_value(site, config, user, conversion_id, given, now)
    return {"conversion": conversion_id, "value": given.value, "currency": given.currency,
            "dispatched": result.dispatched, "sends": [{"id": int(send_id), "platform": platform}
                                                        for send_id, platform in result.sends],
            "dropped": given.identity.dropped}
