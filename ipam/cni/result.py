"""Turn the ipam service's allocation into the CNI result shape the runtime asked for.

Kept apart from the HTTP code so every shape (0.1.0/0.2.0 ``ip4``/``ip6``, 0.3.x/0.4.0
``ips`` with ``version``, 1.0.0 ``ips`` without it) is testable without a server. IPAM
plugins never set ``interface``: the main plugin (bridge, macvlan, ...) fills it in.
"""

from __future__ import annotations

import ipaddress

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

LEGACY_VERSIONS = ("0.1.0", "0.2.0")
"""Versions whose result is ``{"ip4": ..., "ip6": ...}``: one address per family."""

CHECK_VERSIONS = ("0.4.0", "1.0.0")
"""Versions that define CHECK and carry ``prevResult``."""


class Address:
    """One address the service allocated, validated and normalised."""

    __slots__ = ("cidr", "family", "gateway", "routes")

    def __init__(
        self, cidr: str, family: int, gateway: str | None, routes: list[dict[str, str]]
    ) -> None:
        self.cidr = cidr
        self.family = family
        self.gateway = gateway
        self.routes = routes


def parse_ips(entries: object) -> list[Address]:
    """Validate the service's ``ips`` list.

    Raises ValueError naming the bad field: a malformed answer must fail here with a clear
    message rather than deep inside the main plugin's netlink calls.
    """
    if not isinstance(entries, list):
        raise ValueError("'ips' is not a list")
    return [_parse_ip(i, entry) for i, entry in enumerate(entries)]


def _parse_ip(i: int, entry: object) -> Address:
    where = f"ips[{i}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is not an object")
    cidr = entry.get("cidr")
    if cidr is None:
        address, prefix = entry.get("address"), entry.get("prefix_length")
        if not isinstance(address, str) or not isinstance(prefix, int):
            raise ValueError(f"{where} has neither 'cidr' nor 'address' and 'prefix_length'")
        cidr = f"{address}/{prefix}"
    if not isinstance(cidr, str) or "/" not in cidr:
        raise ValueError(f"{where}.cidr {cidr!r} is not an address/prefix")
    try:
        iface = ipaddress.ip_interface(cidr)
    except ValueError as exc:
        raise ValueError(f"{where}.cidr: {exc}") from None
    family = entry.get("family", iface.version)
    if family != iface.version:
        raise ValueError(f"{where}.family {family!r} does not match {cidr}")
    gateway = _optional_ip(entry.get("gateway"), iface.version, f"{where}.gateway")
    raw_routes = entry.get("routes") or []
    if not isinstance(raw_routes, list):
        raise ValueError(f"{where}.routes is not a list")
    routes = [
        _parse_route(r, iface.version, f"{where}.routes[{j}]") for j, r in enumerate(raw_routes)
    ]
    return Address(str(iface), iface.version, gateway, routes)


def _optional_ip(value: object, version: int, where: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{where} is not a string")
    try:
        ip = ipaddress.ip_address(value)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if ip.version != version:
        raise ValueError(f"{where} {value} is not IPv{version}")
    return str(ip)


def _parse_route(route: object, version: int, where: str) -> dict[str, str]:
    if not isinstance(route, dict) or not isinstance(route.get("dst"), str):
        raise ValueError(f"{where} needs a 'dst' string")
    try:
        dst = ipaddress.ip_network(route["dst"], strict=False)
    except ValueError as exc:
        raise ValueError(f"{where}.dst: {exc}") from None
    if dst.version != version:
        raise ValueError(f"{where}.dst {dst} is not IPv{version}")
    out = {"dst": str(dst)}
    gw = _optional_ip(route.get("gw"), version, f"{where}.gw")
    if gw is not None:
        out["gw"] = gw
    return out


def build_result(version: str, addresses: list[Address]) -> dict[str, Any]:
    """Render ``addresses`` as a CNI result of ``version`` (one already checked as supported)."""
    if version in LEGACY_VERSIONS:
        return _legacy_result(version, addresses)
    ips: list[dict[str, str]] = []
    routes: list[dict[str, str]] = []
    for addr in addresses:
        ip: dict[str, str] = {}
        if version != "1.0.0":
            ip["version"] = str(addr.family)
        ip["address"] = addr.cidr
        if addr.gateway is not None:
            ip["gateway"] = addr.gateway
        ips.append(ip)
        # Two addresses of one family normally share their routes: list each route once.
        routes.extend(r for r in addr.routes if r not in routes)
    return {"cniVersion": version, "ips": ips, "routes": routes, "dns": {}}


def _legacy_result(version: str, addresses: list[Address]) -> dict[str, Any]:
    """0.1.0/0.2.0 carry at most one address per family; extra ones are dropped."""
    result: dict[str, Any] = {"cniVersion": version}
    for family, key in ((4, "ip4"), (6, "ip6")):
        addr = next((a for a in addresses if a.family == family), None)
        if addr is None:
            continue
        entry: dict[str, Any] = {"ip": addr.cidr}
        if addr.gateway is not None:
            entry["gateway"] = addr.gateway
        if addr.routes:
            entry["routes"] = addr.routes
        result[key] = entry
    result["dns"] = {}
    return result


def prev_addresses(prev_result: object) -> set[str]:
    """Addresses (normalised CIDRs) in a 0.4.0/1.0.0 ``prevResult``; ValueError if malformed."""
    if not isinstance(prev_result, dict):
        raise ValueError("prevResult is not an object")
    ips = prev_result.get("ips") or []
    if not isinstance(ips, list):
        raise ValueError("prevResult.ips is not a list")
    found: set[str] = set()
    for i, ip in enumerate(ips):
        if not isinstance(ip, dict) or not isinstance(ip.get("address"), str):
            raise ValueError(f"prevResult.ips[{i}] has no 'address' string")
        try:
            found.add(str(ipaddress.ip_interface(ip["address"])))
        except ValueError as exc:
            raise ValueError(f"prevResult.ips[{i}].address: {exc}") from None
    return found
