"""Values typed on the command line, checked here before any call: one bad word is one line
and exit 2 without a round trip to the service."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime, timedelta

from ipam.cli.exits import fail


def address_of(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        fail(f"{value!r} is not an IP address")


_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def time_of(value: str | None, flag: str) -> datetime | None:
    """``30m``/``2h``/``7d`` ago (this machine's clock), or an ISO time (UTC if no zone)."""
    if value is None:
        return None
    match = _DURATION.match(value.strip())
    if match:
        return datetime.now(UTC) - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        fail(f"{flag} {value!r}: give a duration (30s, 10m, 2h, 7d) or an ISO time "
             "(2024-05-01T10:00:00Z)")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
