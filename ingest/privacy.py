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


def payload_with_reduced_ip(payload, ip: str | None, policy: str):
    """A payload as a send keeps it: each value equal to the full `ip` reduced by `policy`, or its key dropped.

    The platform got the full IP; what stays in storage for the console holds it no longer than the event does.
    """
    if not ip:
        return payload
    reduced = reduce_ip(ip, policy)

    def walk(value):
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items() if not (item == ip and reduced is None)}
        if isinstance(value, list):
            return [walk(item) for item in value if not (item == ip and reduced is None)]
        return reduced if value == ip else value

    return walk(payload)
