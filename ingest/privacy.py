"""What an event keeps of the client IP once nothing more can be sent (SPEC §4, `privacy.ip`)."""
from __future__ import annotations

import ipaddress
from typing import Callable

# Modules that keep personal data of their own (visitor profiles, …) register here, so a user's
# erasure reaches them too: eraser(site_id, anonymous_ids, hashes) -> rows removed.
Eraser = Callable[[str, set, set], int]
ERASERS: list[Eraser] = []


def reduce_ip(ip: str | None, policy: str) -> str | None:
    """IPv4 to its /24, IPv6 to its /48 (`truncate`), or nothing (`drop`)."""
    if not ip or policy == "drop":
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    dropped = address.max_prefixlen - (24 if address.version == 4 else 48)  # the host part's bits
    return str(type(address)(int(address) >> dropped << dropped))


def eraser(function: Eraser) -> Eraser:
    """Register a module's eraser (a decorator)."""
    ERASERS.append(function)
    return function


def erase_elsewhere(site_id: str, anonymous_ids: set[str], hashes: set[str]) -> int:
    """Let every registered module forget what it holds of this user."""
    return sum(erase(site_id, anonymous_ids, hashes) for erase in ERASERS)
