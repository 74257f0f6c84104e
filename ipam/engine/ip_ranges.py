"""Address ranges as galaxy writes them (``"a~b"`` or one address) and the arithmetic on them.

Ranges are kept as integer bounds so a /64 costs the same as a /24: nothing here ever
enumerates a range, it only walks forward from a point.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class RangeSyntaxError(ValueError):
    """A range string is not ``IP`` or ``IP~IP``."""


def parse_address(text: str) -> IPAddress:
    """One address; a CIDR is refused because it is the classic galaxy config slip."""
    if not isinstance(text, str):
        raise RangeSyntaxError(f"expected an IP address string, got {type(text).__name__}")
    value = text.strip()
    if "/" in value:
        raise RangeSyntaxError(f"{text!r} is a CIDR; an IP address (or 'first~last') belongs here")
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise RangeSyntaxError(f"{text!r} is not an IP address") from None


def parse_network(text: str) -> IPNetwork:
    """A CIDR with no host bits set (``10.0.0.0/24``, not ``10.0.0.1/24``)."""
    if not isinstance(text, str):
        raise RangeSyntaxError(f"expected a CIDR string, got {type(text).__name__}")
    value = text.strip()
    if "/" not in value:
        raise RangeSyntaxError(f"{text!r} is not a CIDR (expected e.g. 10.0.0.0/24)")
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise RangeSyntaxError(f"{text!r} is not a valid CIDR: {exc}") from None


@dataclass(frozen=True, order=True, slots=True)
class IpRange:
    """Inclusive range ``first..last`` of one address family, stored as integers."""

    first: int
    last: int
    version: int

    @classmethod
    def parse(cls, text: str) -> IpRange:
        """``"10.0.0.1~10.0.0.9"`` or ``"10.0.0.5"``, galaxy's ``ips`` item syntax."""
        if not isinstance(text, str):
            raise RangeSyntaxError(f"expected a string like 'a~b', got {type(text).__name__}")
        if "~" in text:
            left, _, right = text.partition("~")
            a, b = parse_address(left), parse_address(right)
            if a.version != b.version:
                raise RangeSyntaxError(f"{text!r} mixes IPv4 and IPv6")
            if int(a) > int(b):
                raise RangeSyntaxError(f"{text!r}: first address is after the last")
            return cls(int(a), int(b), a.version)
        a = parse_address(text)
        return cls(int(a), int(a), a.version)

    @classmethod
    def of(cls, first: IPAddress, last: IPAddress) -> IpRange:
        return cls(int(first), int(last), first.version)

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def address(self, value: int) -> IPAddress:
        return to_address(value, self.version)

    @property
    def first_address(self) -> IPAddress:
        return self.address(self.first)

    @property
    def last_address(self) -> IPAddress:
        return self.address(self.last)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return item.version == self.version and self.first <= int(item) <= self.last
        return False

    def overlaps(self, other: IpRange) -> bool:
        return (self.version == other.version
                and self.first <= other.last and other.first <= self.last)

    def within(self, network: IPNetwork) -> bool:
        return (
            network.version == self.version
            and int(network.network_address) <= self.first
            and self.last <= int(network.broadcast_address)
        )

    def __str__(self) -> str:
        if self.first == self.last:
            return str(self.first_address)
        return f"{self.first_address}~{self.last_address}"


def to_address(value: int, version: int) -> IPAddress:
    return ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)


def reserved_addresses(network: IPNetwork) -> tuple[int, ...]:
    """Addresses of a subnet that are never handed out: network, and IPv4 broadcast.

    Point-to-point IPv4 subnets (/31, /32) and IPv6 /127, /128 have none (RFC 3021, 6164).
    """
    if network.max_prefixlen - network.prefixlen <= 1:
        return ()
    if network.version == 4:
        return (int(network.network_address), int(network.broadcast_address))
    return (int(network.network_address),)


def walk(ranges: Sequence[IpRange], after: int | None, count: int) -> list[int]:
    """Up to ``count`` addresses of ``ranges`` (sorted, disjoint) strictly after ``after``.

    Cost is O(len(ranges) + count), independent of how large the ranges are.
    """
    out: list[int] = []
    for rng in ranges:
        if len(out) >= count:
            break
        start = rng.first if after is None or after < rng.first else after + 1
        if start > rng.last:
            continue
        stop = min(rng.last, start + (count - len(out)) - 1)
        out.extend(range(start, stop + 1))
    return out


def first_free(ranges: Sequence[IpRange], used: Iterable[int]) -> int | None:
    """Lowest address of ``ranges`` (sorted, disjoint) not in ``used``; ``None`` if full.

    Walks ``used`` once in sorted order, so the cost depends on the number of used
    addresses, never on the size of the ranges.
    """
    taken = sorted(set(used))
    i = 0
    for rng in ranges:
        candidate = rng.first
        while i < len(taken) and taken[i] < candidate:
            i += 1
        while i < len(taken) and taken[i] == candidate and candidate <= rng.last:
            candidate += 1
            i += 1
        if candidate <= rng.last:
            return candidate
    return None
