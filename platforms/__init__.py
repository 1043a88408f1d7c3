"""The registry of ad platforms: the only place that lists them; nothing else branches on a name.

Every module has one shape, platforms.base.Platform: NAME, LABEL, BATCH_LIMIT, MAX_AGE, WEIGHTS, what it needs
from ingest — CLICK_IDS (the click ids and cookies it reads, and which of them tie a conversion to its ad) and
FLAVOURS (its own forms of identity fields, hashed at ingest) — and check_settings(dest), url(dest) (secrets
masked), build(event, dest) -> item (raises Skip), identifiers(item), request_key(item) (items with different
keys never share a request), send(items, dest, http), verify(dest, http) (one harmless call with the
credentials: a Verdict). Adding a platform is its module plus one line in NAMES.
A platform that keeps something per destination between sends (Google Ads: its access token) also has
cache(clock) -> that keeper; the dispatcher makes one per destination and passes it as send(..., cache=).
One whose requests rarely share a batch (GA4) may set IN_FLIGHT: its requests waiting for answers at once.
"""
from importlib import import_module

from platforms.base import Platform

# In this order ingest reads their click ids, and notes the ones it drops.
NAMES = (
    "meta",
    "google_ads",
    "tiktok",
    "snapchat",
    "ga4",
)
REGISTRY: dict[str, Platform] = {name: import_module(f"platforms.{name}") for name in NAMES}
