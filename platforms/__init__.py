"""The registry of ad platforms: the only place that lists them; nothing else branches on a name.

Every module has one shape: NAME, LABEL, BATCH_LIMIT, MAX_AGE, WEIGHTS, check_settings(dest),
url(dest), build(event, dest) -> item (raises Skip), identifiers(item), send(items, dest, http).
"""
from platforms import meta

REGISTRY = {module.NAME: module for module in (meta,)}
