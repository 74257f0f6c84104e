"""Operators' changes to addresses: manual reservation (state ``reserved``, owner
``reserved/<token>``) and release of one address, of many, or of an owner's addresses.
Releasing an address a live pod holds is refused (``Conflict``) unless forced; a pod known
to be gone does not count as live. Each change goes to its transaction's unit of work."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ipam.engine.ip_ranges import IPAddress
from ipam.errors import Conflict, IpamError, NotFound
from ipam.services.allocation import Actor, audit_entry, release_action
from ipam.services.use_case import RuntimeUseCase, pool_of
from ipam.storage.address_query import AddressQuery
from ipam.storage.records import AddressRecord, Holder

RESERVED_PREFIX = "reserved/"
#: Vetoes releasing a row, with the reason (galaxy's identity checks).
Refusal = Callable[[AddressRecord], str | None]


def held_by(row: AddressRecord) -> str:
    """Who holds ``row`` and how, for a ``Conflict`` an operator can act on."""
    if row.state == "allocated":
        return f"allocated to pod {row.pod_namespace}/{row.pod_name} (uid {row.pod_uid})"
    if row.state == "quarantined":
        return (f"quarantined until {row.quarantined_until} (released by {row.owner_key}; "
                "release it again to end that now)")
    return f"{row.state} for {row.owner_key}"


class AddressChanges(RuntimeUseCase):
    """Reserve and release, one transaction each."""

    async def reserve(self, address: IPAddress, *, holder_name: str, note: str | None,
                      actor: Actor) -> AddressRecord:
        """Keep a free address out of allocation (``Conflict`` if it is not free)."""
        async with self.db.transaction(config_shared=True) as store:
            pool = pool_of(await store.pools.all(), address)
            row = await store.addresses.by_address(address)
            if row is None:
                if pool is None:
                    raise NotFound(f"{address} is in no configured pool", address=str(address))
                await store.addresses.materialize(pool.id, [address])
            row = await store.addresses.by_address(address, lock=True)
            assert row is not None
            if row.state != "free":
                raise Conflict(f"{address} is not free: {held_by(row)}", address=str(address),
                               state=row.state, owner=row.owner_key)
            after = await store.addresses.change(row.id, Holder(
                state="reserved", owner_key=RESERVED_PREFIX + holder_name, note=note))
            store.changed(row, after, audit_entry(actor, "reserve", row, after, note))
        return after

    async def release(self, address: IPAddress, *, force: bool, actor: Actor,
                      reason: str | None = None, refuse: Refusal | None = None
                      ) -> list[AddressRecord]:
        """Free one address; ``[]`` if it already is. ``refuse`` may veto with a reason."""
        async with self.db.transaction() as store:
            row = await store.addresses.by_address(address)
            if row is None:
                if pool_of(await store.pools.all(), address) is None:
                    raise NotFound(f"{address} is in no configured pool", address=str(address))
                return []
        why = refuse(row) if refuse is not None else None
        if why:
            raise Conflict(why, address=str(address), state=row.state, owner=row.owner_key)
        if row.state == "free":
            return []
        await self._refuse_live([row], force)
        released = await self._free([row], actor, reason or "released by an operator"
                                    + (" (forced)" if force else ""))
        return released

    async def release_many(self, wanted: Sequence[tuple[IPAddress, Refusal | None]], *,
                           actor: Actor, reason: str) -> list[str | None]:
        """Release each address (one transaction each); per address ``None`` if released,
        else why not. Addresses nobody holds cost one shared lookup, not one each."""
        async with self.db.transaction() as store:
            rows = await AddressQuery(store.sql).by_addresses([a for a, _ in wanted])
        out: list[str | None] = []
        for address, refuse in wanted:
            row = rows.get(address)
            if row is None or row.state == "free":
                out.append(f"{address} is not allocated")
                continue
            try:
                done = await self.release(address, force=False, actor=actor, reason=reason,
                                          refuse=refuse)
            except IpamError as exc:
                if exc.status >= 500:
                    raise
                out.append(exc.message)
                continue
            out.append(None if done else f"{address} is not allocated")
        return out

    async def release_owner(self, owner: str, *, force: bool, actor: Actor,
                            reason: str | None = None) -> list[AddressRecord]:
        """Free every address of ``owner``, all or none."""
        async with self.db.transaction() as store:
            rows = await store.addresses.by_owner(owner)
        if not rows:
            raise NotFound(f"owner {owner} holds no address", owner=owner)
        await self._refuse_live(rows, force)
        return await self._free(rows, actor, reason or f"owner {owner} released by an "
                                "operator" + (" (forced)" if force else ""))

    async def _refuse_live(self, rows: Sequence[AddressRecord], force: bool) -> None:
        if force:
            return
        live = [r for r in rows if r.state == "allocated" and await self.pods.live(r)]
        if live:
            raise Conflict(
                f"{', '.join(f'{r.address} is {held_by(r)}' for r in live)}; a live pod uses "
                "it: pass force=true to release it anyway",
                addresses=[{"address": str(r.address), "pod": f"{r.pod_namespace}/{r.pod_name}",
                            "uid": r.pod_uid} for r in live])

    async def _free(self, rows: Sequence[AddressRecord], actor: Actor, reason: str
                    ) -> list[AddressRecord]:
        """Released rows a pod used lately are quarantined; releasing a quarantined row
        again ends its quarantine now (the operator's way out)."""
        out: list[AddressRecord] = []
        cool = self.runtime.allocator.quarantine_seconds
        async with self.db.transaction() as store:
            for row in sorted(rows, key=lambda r: (r.address.version, int(r.address))):
                locked = await store.addresses.by_address(row.address, lock=True)
                if locked is None or locked.state == "free":
                    continue
                if (locked.state, locked.owner_key, locked.pod_uid) != (
                        row.state, row.owner_key, row.pod_uid):
                    raise Conflict(f"{row.address} changed while it was being released (now "
                                   f"{held_by(locked)}); look again and retry",
                                   address=str(row.address))
                after = await store.addresses.release(locked.id, cool)
                store.changed(locked, after, audit_entry(actor, release_action(after), locked,
                                                         after, reason))
                out.append(after)
        return out
