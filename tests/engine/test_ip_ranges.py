"""Range parsing, containment, walking and first-free, checked against brute force."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ipam.engine.ip_ranges import (
    IpRange,
    RangeSyntaxError,
    first_free,
    parse_address,
    reserved_addresses,
    walk,
)

V4_BASE = int(ipaddress.IPv4Address("10.0.0.0"))
V6_BASE = int(ipaddress.IPv6Address("2001:db8::"))


@st.composite
def disjoint_ranges(draw: st.DrawFn, version: int = 4) -> list[IpRange]:
    base = V4_BASE if version == 4 else V6_BASE
    cuts = sorted(draw(st.sets(st.integers(0, 400), min_size=2, max_size=12)))
    pairs = [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts) - 1, 2)]
    return [IpRange(base + a, base + b, version) for a, b in pairs]


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_parse_round_trips_any_ipv4_range(a: int, b: int) -> None:
    lo, hi = min(a, b), max(a, b)
    text = f"{ipaddress.IPv4Address(lo)}~{ipaddress.IPv4Address(hi)}"
    rng = IpRange.parse(text)
    assert (rng.first, rng.last, rng.version) == (lo, hi, 4)
    assert rng.size == hi - lo + 1
    assert IpRange.parse(str(rng)) == rng


@given(st.integers(0, 2**128 - 1), st.integers(0, 2**64))
def test_ipv6_range_size_is_exact_without_enumerating(start: int, span: int) -> None:
    end = min(start + span, 2**128 - 1)
    rng = IpRange.parse(f"{ipaddress.IPv6Address(start)}~{ipaddress.IPv6Address(end)}")
    assert rng.size == end - start + 1
    assert ipaddress.IPv6Address(start) in rng
    assert ipaddress.IPv6Address(end) in rng
    if end < 2**128 - 1:
        assert ipaddress.IPv6Address(end + 1) not in rng


@given(disjoint_ranges(), st.integers(0, 500))
def test_containment_matches_brute_force(ranges: list[IpRange], offset: int) -> None:
    address = ipaddress.IPv4Address(V4_BASE + offset)
    expected = any(r.first <= int(address) <= r.last for r in ranges)
    assert any(address in r for r in ranges) is expected


@given(disjoint_ranges(), st.one_of(st.none(), st.integers(0, 450)), st.integers(1, 50))
def test_walk_yields_the_next_addresses_in_order(
    ranges: list[IpRange], after: int | None, count: int
) -> None:
    everything = [a for r in ranges for a in range(r.first, r.last + 1)]
    start = None if after is None else V4_BASE + after
    expected = [a for a in everything if start is None or a > start][:count]
    assert walk(ranges, start, count) == expected


@given(disjoint_ranges(), st.sets(st.integers(0, 450)))
def test_first_free_is_the_lowest_unused(ranges: list[IpRange], used_offsets: set[int]) -> None:
    used = {V4_BASE + o for o in used_offsets}
    everything = [a for r in ranges for a in range(r.first, r.last + 1)]
    expected = next((a for a in everything if a not in used), None)
    assert first_free(ranges, used) == expected


def test_first_free_on_a_slash_64_costs_only_the_used_addresses() -> None:
    net = ipaddress.IPv6Network("2001:db8:1::/64")
    rng = IpRange(int(net.network_address) + 1, int(net.broadcast_address), 6)
    used = range(rng.first, rng.first + 10_000)
    assert first_free([rng], used) == rng.first + 10_000
    assert rng.size == 2**64 - 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.0.0.0/24", "is a CIDR"),
        ("10.0.0.9~10.0.0.1", "after the last"),
        ("10.0.0.1~2001:db8::1", "mixes IPv4 and IPv6"),
        ("not-an-ip", "not an IP address"),
        ("10.0.0.256", "not an IP address"),
    ],
)
def test_bad_range_syntax_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(RangeSyntaxError, match=message):
        IpRange.parse(text)


def test_parse_address_refuses_non_strings() -> None:
    with pytest.raises(RangeSyntaxError, match="expected an IP address string"):
        parse_address(12)  # type: ignore[arg-type]


def test_reserved_addresses_by_family_and_size() -> None:
    v4 = ipaddress.IPv4Network("10.11.128.0/21")
    assert reserved_addresses(v4) == (int(v4.network_address), int(v4.broadcast_address))
    assert reserved_addresses(ipaddress.IPv4Network("10.0.0.0/31")) == ()
    v6 = ipaddress.IPv6Network("2001:db8::/64")
    assert reserved_addresses(v6) == (int(v6.network_address),)
