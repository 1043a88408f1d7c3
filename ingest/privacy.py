"""What an event keeps of the client IP once nothing more can be sent (`privacy.ip`, docs/privacy.md)."""
from __future__ import annotations

import ipaddress


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
