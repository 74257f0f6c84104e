"""Plain values the repositories return, so no SQLAlchemy type leaks above storage."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ipam.engine.ip_ranges import IPAddress, IPNetwork, IpRange


def inet_address(value: Any) -> IPAddress:
    """asyncpg returns ``inet`` as an address or an interface (when a prefix is stored)."""
    if isinstance(value, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        return value.ip
    if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return value
    return ipaddress.ip_address(str(value).split("/")[0])


@dataclass(frozen=True, slots=True)
class PoolRecord:
    id: int
    name: str
    position: int
    family: int
    subnet: IPNetwork
    gateway: IPAddress | None
    vlan: int | None
    node_subnets: tuple[IPNetwork, ...]
    size: int
    ranges: tuple[IpRange, ...]
    materialized_upto: IPAddress | None
    #: The entry's ``quarantineSeconds``; ``None``: the service's default.
    quarantine_seconds: int | None = None

    def routes_node(self, node_ip: IPAddress) -> bool:
        return any(node_ip in net for net in self.node_subnets if net.version == node_ip.version)


#: The fields of an address row that an audit row's before/after records.
SNAPSHOT_FIELDS = ("state", "owner_key", "policy", "pod_namespace", "pod_name", "pod_uid",
                   "node", "note")


@dataclass(frozen=True, slots=True)
class AddressRecord:
    id: int
    pool_id: int
    pool: str
    address: IPAddress
    prefix_length: int
    gateway: IPAddress | None
    vlan: int | None
    state: str
    owner_key: str | None
    policy: str | None
    pod_namespace: str | None
    pod_name: str | None
    pod_uid: str | None
    node: str | None
    slot: int
    kept_ttl_seconds: int | None
    note: str | None
    allocated_at: datetime | None
    kept_since: datetime | None
    updated_at: datetime
    #: Set exactly in state ``quarantined``: until when only ``owner_key`` may take it.
    quarantined_until: datetime | None = None

    def snapshot(self) -> dict[str, Any]:
        """What an audit row stores as before/after (the quarantine's end only in that
        state, so the other rows' audit JSON stays what it was)."""
        out = {field: getattr(self, field) for field in SNAPSHOT_FIELDS}
        if self.quarantined_until is not None:
            out["quarantined_until"] = self.quarantined_until.isoformat()
        return out


@dataclass(frozen=True, slots=True)
class AuditEntry:
    actor: str
    action: str
    address: IPAddress | None = None
    pool: str | None = None
    owner_key: str | None = None
    pod_namespace: str | None = None
    pod_name: str | None = None
    pod_uid: str | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    reason: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: datetime
    entry: AuditEntry


@dataclass(frozen=True, slots=True)
class Holder:
    """Who takes an address: the fields written when a row leaves ``free``."""

    state: str
    owner_key: str
    policy: str | None = None
    pod_namespace: str | None = None
    pod_name: str | None = None
    pod_uid: str | None = None
    node: str | None = None
    slot: int = 0
    kept_ttl_seconds: int | None = None
    note: str | None = None

    def snapshot(self) -> dict[str, Any]:
        """The snapshot of a row once this holder has taken it (audit ``after``)."""
        return {field: getattr(self, field) for field in SNAPSHOT_FIELDS}
