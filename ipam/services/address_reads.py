"""Operators' reads of addresses: one address, pages by filters with keyset cursors, and
every taken row. Free addresses without a row are listed too (``FreeSlot``)."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import asdict, dataclass
from datetime import datetime

import orjson

from ipam.engine.ip_ranges import IPAddress, IPNetwork
from ipam.errors import InvalidInput, NotFound
from ipam.services.use_case import RuntimeUseCase, pool_of
from ipam.storage.address_query import AddressFilter, AddressQuery, FreeSlot
from ipam.storage.records import AddressRecord

MAX_LIMIT = 1000
ADDRESS_STATES = ("free", "allocated", "kept", "reserved", "quarantined")


@dataclass(frozen=True, slots=True)
class AddressView:
    """One address as operators see it; free addresses without a row included."""

    address: IPAddress
    pool: str
    prefix_length: int
    gateway: IPAddress | None
    vlan: int | None
    state: str
    owner: str | None = None
    policy: str | None = None
    pod_namespace: str | None = None
    pod_name: str | None = None
    pod_uid: str | None = None
    node: str | None = None
    note: str | None = None
    allocated_at: datetime | None = None
    kept_since: datetime | None = None
    updated_at: datetime | None = None
    quarantined_until: datetime | None = None

    @classmethod
    def of(cls, item: AddressRecord | FreeSlot) -> AddressView:
        if isinstance(item, FreeSlot):
            p = item.pool
            return cls(item.address, p.name, p.subnet.prefixlen, p.gateway, p.vlan, "free")
        r = item
        return cls(r.address, r.pool, r.prefix_length, r.gateway, r.vlan, r.state, r.owner_key,
                   r.policy, r.pod_namespace, r.pod_name, r.pod_uid, r.node, r.note,
                   r.allocated_at, r.kept_since, r.updated_at, r.quarantined_until)


@dataclass(frozen=True, slots=True)
class AddressPage:
    items: list[AddressView]
    next_cursor: str | None


# -- cursors ------------------------------------------------------------------------------
def _fingerprint(flt: AddressFilter) -> str:
    doc = {k: (str(v) if v is not None else None) for k, v in asdict(flt).items()}
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]


def _encode_cursor(fingerprint: str, address: IPAddress) -> str:
    raw = orjson.dumps({"f": fingerprint, "a": str(address)})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, fingerprint: str) -> IPAddress:
    try:
        doc = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if doc.get("f") != fingerprint:
            raise ValueError
        return ipaddress.ip_address(doc["a"])
    except (ValueError, TypeError, KeyError, AttributeError):
        raise InvalidInput("cursor is not one this query returned (it is opaque and tied to "
                           "the filters)", field="cursor") from None


class AddressReads(RuntimeUseCase):
    """Reads only: nothing here changes a row."""

    async def list_addresses(self, *, pool: str | None = None, subnet: IPNetwork | None = None,
                             node: str | None = None, namespace: str | None = None,
                             owner: str | None = None, state: str | None = None,
                             limit: int = 100, cursor: str | None = None) -> AddressPage:
        """One page of addresses matching every given filter, in address order."""
        flt = AddressFilter(pool=pool, subnet=subnet, node=node, namespace=namespace,
                            owner=owner, state=state)
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}", field="limit")
        if flt.state is not None and flt.state not in ADDRESS_STATES:
            raise InvalidInput(f"state must be one of {', '.join(ADDRESS_STATES)}",
                               field="state")
        fingerprint = _fingerprint(flt)
        after = _decode_cursor(cursor, fingerprint) if cursor is not None else None
        async with self.db.transaction() as store:
            found = await AddressQuery(store.sql).page(flt, after, limit + 1)
        items = [AddressView.of(i) for i in found[:limit]]
        more = len(found) > limit
        return AddressPage(items, _encode_cursor(fingerprint, items[-1].address)
                           if more and items else None)

    async def get(self, address: IPAddress) -> AddressView:
        async with self.db.transaction() as store:
            row = await store.addresses.by_address(address)
            if row is not None:
                return AddressView.of(row)
            pool = pool_of(await store.pools.all(), address)
        if pool is None:
            raise NotFound(f"{address} is in no configured pool", address=str(address))
        return AddressView.of(FreeSlot(pool, address))

    async def taken(self) -> list[AddressRecord]:
        async with self.db.transaction() as store:
            return await AddressQuery(store.sql).taken()
