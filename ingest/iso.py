"""ISO code lookups (countries, currencies) through pycountry, cached."""
from __future__ import annotations

from functools import lru_cache

import pycountry


@lru_cache(maxsize=1024)
def country_code(text: str) -> str | None:
    """ISO 3166 alpha-2 (upper case) for a code or a name, or None."""
    try:
        return pycountry.countries.lookup(text.strip()).alpha_2
    except (LookupError, AttributeError):
        return None


@lru_cache(maxsize=512)
def currency_code(text: str) -> str | None:
    """ISO 4217 alpha-3 (upper case) for a 3-letter code in any case, or None."""
    if not isinstance(text, str) or len(text.strip()) != 3:
        return None
    found = pycountry.currencies.get(alpha_3=text.strip().upper())
    return found.alpha_3 if found else None
