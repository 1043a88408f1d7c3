"""The registry of ad platforms: the only place that lists them; nothing else branches on a name.

Every module has one shape: NAME, LABEL, BATCH_LIMIT, MAX_AGE, WEIGHTS, ATTRIBUTION_KEYS, check_settings(dest),
url(dest) (secrets masked), build(event, dest) -> item (raises Skip), identifiers(item),
request_key(item) (items with different keys never share a request), send(items, dest, http).
A platform that keeps something per destination between sends (Google Ads: its access token) also has
cache(clock) -> that keeper; the dispatcher makes one per destination and passes it as send(..., cache=).
"""
from importlib import import_module

NAMES = (
    "ga4",
    "google_ads",
    "meta",
    "snapchat",
    "tiktok",
)
REGISTRY = {name: import_module(f"platforms.{name}") for name in NAMES}
