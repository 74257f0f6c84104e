"""galaxy's ``floatingips`` pool config, read as galaxy users write it, validated strictly.

Each entry becomes one ``PoolSpec``. Entries that share a node subnet are its fallback pools,
tried in config order (galaxy v1.0.2 left pods Pending instead). We refuse what galaxy
silently accepts: addresses outside ``subnet``, a gateway inside a range, network/broadcast
addresses, one address in two entries, a CIDR where an address belongs, vlan outside 0-4094.
What galaxy reads leniently and is unambiguous is read the same way, with a warning in
``PoolConfig.warnings``: host bits in a subnet (``10.0.1.2/24`` is ``10.0.1.0/24``), which
galaxy masks away, so its users' files load unchanged.

One key of ours besides ``name``: ``quarantineSeconds``, how long a released address of the
entry cools down before another owner may take it (0: at once; absent: the service's
``IPAM_QUARANTINE_SECONDS``).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from typing import Any

from ipam.engine.ip_ranges import (
    IPAddress,
    IPNetwork,
    IpRange,
    RangeSyntaxError,
    parse_address,
    parse_network,
    reserved_addresses,
)
from ipam.errors import ConfigError

#: The keys galaxy defines, plus ours: ``name`` (a stable pool name chosen by the operator)
#: and ``quarantineSeconds`` (the cool-down of a released address).
KNOWN_KEYS = frozenset(
    {"routableSubnet", "nodeSubnets", "ips", "subnet", "gateway", "vlan", "name",
     "quarantineSeconds"}
)
#: A week: longer is a typo (a pool whose released addresses never come back).
MAX_QUARANTINE_SECONDS = 7 * 24 * 3600
MAX_ENTRIES = 10_000
#: A galaxy config of 10,000 entries is ~2 MB; anything much larger is not a pool config.
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """One config entry: where its addresses route, which ones, and how pods reach them."""

    name: str
    position: int
    node_subnets: tuple[IPNetwork, ...]
    subnet: IPNetwork
    gateway: IPAddress | None
    vlan: int | None
    ranges: tuple[IpRange, ...]
    #: ``quarantineSeconds``; ``None``: the service's default.
    quarantine_seconds: int | None = None

    @property
    def size(self) -> int:
        return sum(r.size for r in self.ranges)

    @property
    def version(self) -> int:
        return self.subnet.version

    def routes_node(self, node_ip: IPAddress) -> bool:
        return any(node_ip in net for net in self.node_subnets if net.version == node_ip.version)

    def contains(self, address: IPAddress) -> bool:
        return any(address in r for r in self.ranges)

    def to_galaxy(self) -> dict[str, Any]:
        """The entry in galaxy's own JSON shape (``routableSubnet`` when there is one)."""
        out: dict[str, Any] = {}
        if len(self.node_subnets) == 1:
            out["routableSubnet"] = str(self.node_subnets[0])
        else:
            out["nodeSubnets"] = [str(n) for n in self.node_subnets]
        out["ips"] = [str(r) for r in self.ranges]
        out["subnet"] = str(self.subnet)
        if self.gateway is not None:
            out["gateway"] = str(self.gateway)
        if self.vlan is not None:
            out["vlan"] = self.vlan
        if self.quarantine_seconds is not None:
            out["quarantineSeconds"] = self.quarantine_seconds
        return out


@dataclass(frozen=True, slots=True)
class PoolConfig:
    pools: tuple[PoolSpec, ...] = field(default_factory=tuple)
    #: What was accepted but written loosely (one line each, naming entry and field); not
    #: part of equality: two files that read as the same pools are the same config.
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def by_name(self) -> dict[str, PoolSpec]:
        return {p.name: p for p in self.pools}

    def pools_for_node(self, node_ip: IPAddress) -> list[PoolSpec]:
        """Pools routable from a node, in config order (first = preferred, rest = fallback)."""
        return [p for p in self.pools if p.routes_node(node_ip)]

    def pool_of(self, address: IPAddress) -> PoolSpec | None:
        for pool in self.pools:
            if pool.contains(address):
                return pool
        return None


def load_document(text: str) -> Any:
    """Accept galaxy's JSON list, or the whole ConfigMap YAML holding it under ``floatingips``."""
    import yaml  # local: only the CLI and config import paths need it

    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_DOCUMENT_BYTES:
        raise ConfigError(f"the pool config is {size:,} bytes; the limit is "
                          f"{MAX_DOCUMENT_BYTES:,} (galaxy's 10,000-entry maximum is ~2 MB)")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not valid JSON: {exc}") from None
        except ValueError as exc:  # an integer past Python's digit limit
            raise ConfigError(f"a number is too long: {exc}") from None
    try:
        doc = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError) as exc:
        raise ConfigError(f"not valid YAML or JSON: {exc}") from None
    if isinstance(doc, dict) and "data" in doc:
        data = doc.get("data") or {}
        if not isinstance(data, dict) or "floatingips" not in data:
            raise ConfigError("ConfigMap has no data.floatingips key")
        raw = data["floatingips"]
        if not isinstance(raw, str):
            raise ConfigError("data.floatingips must be a JSON string")
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ConfigError(f"data.floatingips is not valid JSON: {exc}") from None
    return doc


def parse_pool_config(document: Any) -> PoolConfig:
    """Validate a decoded ``floatingips`` list; the first problem raises ``ConfigError``."""
    if isinstance(document, str | bytes):
        document = load_document(document.decode() if isinstance(document, bytes) else document)
    if not isinstance(document, list):
        raise ConfigError(f"expected a JSON list of pool entries, got {type(document).__name__}")
    if len(document) > MAX_ENTRIES:
        raise ConfigError(f"{len(document)} entries is more than the limit of {MAX_ENTRIES}")
    warnings: list[str] = []
    specs = [_parse_entry(i, entry, warnings) for i, entry in enumerate(document)]
    specs = _name_pools(specs, document)
    _check_disjoint(specs)
    return PoolConfig(tuple(specs), tuple(warnings))


def _parse_entry(index: int, entry: Any, warnings: list[str]) -> PoolSpec:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"expected an object, got {type(entry).__name__}", entry=index)
    unknown = set(entry) - KNOWN_KEYS
    if unknown:
        raise ConfigError(
            f"unknown key(s) {sorted(unknown)}; known keys are {sorted(KNOWN_KEYS)}", entry=index
        )

    node_subnets = _node_subnets(index, entry, warnings)
    subnet = _network(index, "subnet", entry.get("subnet"), warnings)
    gateway = _gateway(index, entry, subnet)
    vlan = _vlan(index, entry.get("vlan"))
    ranges = _ranges(index, entry.get("ips"), subnet, gateway)
    return PoolSpec("", index, node_subnets, subnet, gateway, vlan, ranges,
                    _quarantine(index, entry.get("quarantineSeconds")))


def _node_subnets(index: int, entry: Mapping[str, Any], warnings: list[str]
                  ) -> tuple[IPNetwork, ...]:
    has_routable = "routableSubnet" in entry
    has_nodes = "nodeSubnets" in entry
    if has_routable and has_nodes:
        raise ConfigError("give routableSubnet or nodeSubnets, not both", entry=index)
    if has_routable:
        return (_network(index, "routableSubnet", entry["routableSubnet"], warnings),)
    if has_nodes:
        raw = entry["nodeSubnets"]
        if not isinstance(raw, list) or not raw:
            raise ConfigError("must be a non-empty list of CIDRs", entry=index,
                              field="nodeSubnets")
        return tuple(_network(index, f"nodeSubnets[{i}]", v, warnings)
                     for i, v in enumerate(raw))
    raise ConfigError("missing routableSubnet (or nodeSubnets)", entry=index,
                      field="routableSubnet")


def _network(index: int, name: str, value: Any, warnings: list[str]) -> IPNetwork:
    if value is None:
        raise ConfigError("is required", entry=index, field=name)
    try:
        return parse_network(value)
    except RangeSyntaxError as exc:
        masked = _masked(value)
        if masked is None:
            raise ConfigError(str(exc), entry=index, field=name) from None
    warnings.append(f"entry {index}, field {name}: {value.strip()} has host bits set; read as "
                    f"{masked}, as galaxy does (write {masked} to silence this)")
    return masked


def _masked(value: Any) -> IPNetwork | None:
    """The network of a CIDR written with host bits (galaxy's ``IP.Mask``); ``None`` when the
    text is wrong in any other way, so that error is the one reported."""
    if not isinstance(value, str) or "/" not in value:
        return None
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        return None


def _gateway(index: int, entry: Mapping[str, Any], subnet: IPNetwork) -> IPAddress | None:
    raw = entry.get("gateway")
    if raw is None:
        return None
    try:
        gateway = parse_address(raw)
    except RangeSyntaxError as exc:
        raise ConfigError(str(exc), entry=index, field="gateway") from None
    if gateway not in subnet:
        raise ConfigError(f"gateway {gateway} is outside subnet {subnet}", entry=index,
                          field="gateway")
    if int(gateway) in reserved_addresses(subnet):
        raise ConfigError(f"gateway {gateway} is the network or broadcast address of {subnet}",
                          entry=index, field="gateway")
    return gateway


def _vlan(index: int, raw: Any) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int):
        hint = f" (write {raw}, not \"{raw}\")" if isinstance(raw, str) and raw.isdigit() else ""
        raise ConfigError(f"must be a number{hint}", entry=index, field="vlan")
    if not 0 <= raw <= 4094:
        raise ConfigError(f"{raw} is outside 0-4094", entry=index, field="vlan")
    return raw


def _quarantine(index: int, raw: Any) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int):
        hint = f" (write {raw}, not \"{raw}\")" if isinstance(raw, str) and raw.isdigit() else ""
        raise ConfigError(f"must be a whole number of seconds{hint}", entry=index,
                          field="quarantineSeconds")
    if not 0 <= raw <= MAX_QUARANTINE_SECONDS:
        raise ConfigError(f"{raw} is outside 0-{MAX_QUARANTINE_SECONDS} (0: no quarantine)",
                          entry=index, field="quarantineSeconds")
    return raw


def _ranges(index: int, raw: Any, subnet: IPNetwork, gateway: IPAddress | None
            ) -> tuple[IpRange, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("must be a non-empty list like [\"10.0.0.2~10.0.0.200\"]", entry=index,
                          field="ips")
    excluded = reserved_addresses(subnet)
    ranges: list[IpRange] = []
    for i, item in enumerate(raw):
        where = f"ips[{i}]"
        try:
            rng = IpRange.parse(item)
        except RangeSyntaxError as exc:
            raise ConfigError(str(exc), entry=index, field=where) from None
        if not rng.within(subnet):
            raise ConfigError(f"{rng} is not inside subnet {subnet}", entry=index, field=where)
        for special in excluded:
            if rng.first <= special <= rng.last:
                what = "network" if special == int(subnet.network_address) else "broadcast"
                raise ConfigError(
                    f"{rng} includes the {what} address {rng.address(special)} of {subnet}",
                    entry=index, field=where,
                )
        if gateway is not None and gateway in rng:
            raise ConfigError(f"{rng} includes the gateway {gateway}", entry=index, field=where)
        ranges.append(rng)
    ranges.sort()
    for a, b in pairwise(ranges):
        if a.overlaps(b):
            raise ConfigError(f"{a} and {b} overlap", entry=index, field="ips")
    return tuple(ranges)


def _name_pools(specs: Sequence[PoolSpec], document: Sequence[Any]) -> list[PoolSpec]:
    """Name = the entry's ``name`` if given, else its subnet (``-2``, ``-3`` for repeats)."""
    seen: dict[str, int] = {}
    out: list[PoolSpec] = []
    for spec, entry in zip(specs, document, strict=True):
        explicit = entry.get("name")
        if explicit is not None:
            if not isinstance(explicit, str) or not explicit.strip() or len(explicit) > 200:
                raise ConfigError("must be a non-empty string of at most 200 characters",
                                  entry=spec.position, field="name")
            name = explicit.strip()
            if name in seen:
                raise ConfigError(f"pool name {name!r} is used twice", entry=spec.position,
                                  field="name")
        else:
            base = str(spec.subnet)
            name, n = base, 1
            while name in seen:
                n += 1
                name = f"{base}-{n}"
        seen[name] = spec.position
        out.append(replace(spec, name=name))
    return out


def _check_disjoint(specs: Sequence[PoolSpec]) -> None:
    """No address may belong to two entries: sort every range once and compare neighbours."""
    tagged = sorted((r, spec.position) for spec in specs for r in spec.ranges)
    for (a, ia), (b, ib) in pairwise(tagged):
        if a.overlaps(b):
            raise ConfigError(
                f"{b} overlaps {a} of entry {ia}; an address may belong to one entry only",
                entry=ib, field="ips",
            )


