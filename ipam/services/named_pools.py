"""galaxy's named pools (``/v1/pool``): a recorded size, optionally pre-allocated as
``kept`` addresses of owner ``pool/<name>``; deleting one frees its unused addresses."""

from __future__ import annotations

from dataclasses import dataclass

from ipam.errors import NotFound
from ipam.services.allocation import Actor, audit_entry, release_action
from ipam.services.use_case import RuntimeUseCase
from ipam.storage.address_query import NamedPoolQuery
from ipam.storage.database import Store
from ipam.storage.records import AddressRecord, AuditEntry, Holder


@dataclass(frozen=True, slots=True)
class NamedPoolState:
    name: str
    size: int
    pre_allocate_ip: bool
    #: Addresses the pool holds now (kept or allocated to its pods).
    held: int = 0
    defined: bool = True


class NamedPools(RuntimeUseCase):
    """galaxy's ``/v1/pool`` use cases."""

    async def named_pool(self, name: str) -> NamedPoolState:
        async with self.db.transaction() as store:
            defined = await NamedPoolQuery(store.sql).get(name)
            held = await store.addresses.by_owner(f"pool/{name}")
        if defined is not None:
            return NamedPoolState(name, defined.size, defined.pre_allocate_ip, len(held))
        if held:
            return NamedPoolState(name, len(held), False, len(held), defined=False)
        raise NotFound(f"pool {name}", pool=name)

    async def set_named_pool(self, name: str, size: int, pre_allocate_ip: bool, actor: Actor
                             ) -> NamedPoolState:
        """Record the pool; with ``pre_allocate_ip``, keep addresses for it up to ``size``."""
        owner = f"pool/{name}"
        created: list[AddressRecord] = []
        async with self.db.transaction(config_shared=True) as store:
            query = NamedPoolQuery(store.sql)
            before = await query.get(name, lock=True)
            after = await query.upsert(name, size, pre_allocate_ip)  # row-locked until commit
            held = await store.addresses.by_owner(owner)
            if pre_allocate_ip and len(held) < size:
                created = await self._pre_allocate(store, owner, size - len(held))
            if before is None or (before.size, before.pre_allocate_ip) != (size, pre_allocate_ip):
                store.log(AuditEntry(
                    actor=actor.name, action="pool.set", owner_key=owner,
                    before={"size": before.size, "preAllocateIP": before.pre_allocate_ip}
                    if before is not None else None,
                    after={"size": after.size, "preAllocateIP": after.pre_allocate_ip},
                    reason=f"named pool {name}", request_id=actor.request_id))
            for rec in created:
                store.changed(None, rec, audit_entry(actor, "preallocate", None, rec,
                                                     f"named pool {name}"))
        return NamedPoolState(name, size, pre_allocate_ip, len(held) + len(created))

    async def _pre_allocate(self, store: Store, owner: str, count: int) -> list[AddressRecord]:
        holder = Holder(state="kept", owner_key=owner, policy="never")
        pools = await store.pools.all()
        take = self.runtime.allocator.take_fresh
        out: list[AddressRecord] = []
        for pool in pools:
            while len(out) < count:
                record = await take(store, pool, holder)
                if record is None:
                    break
                out.append(record)
        return out

    async def delete_named_pool(self, name: str, actor: Actor) -> list[AddressRecord]:
        """Forget the pool and free its unused (kept) addresses; pods keep theirs."""
        owner = f"pool/{name}"
        freed: list[tuple[AddressRecord, AddressRecord]] = []
        async with self.db.transaction() as store:
            before = await NamedPoolQuery(store.sql).get(name, lock=True)
            existed = await NamedPoolQuery(store.sql).delete(name)
            rows = await store.addresses.by_owner(owner)
            if not existed and not rows:
                raise NotFound(f"pool {name}", pool=name)
            for row in rows:
                locked = await store.addresses.by_address(row.address, lock=True)
                if locked is not None and locked.state == "kept" and locked.owner_key == owner:
                    freed.append((locked, await store.addresses.release(
                        locked.id, self.runtime.allocator.quarantine_seconds)))
            store.log(AuditEntry(
                actor=actor.name, action="pool.delete", owner_key=owner,
                before={"size": before.size, "preAllocateIP": before.pre_allocate_ip}
                if before is not None else None,
                reason=f"named pool {name}; {len(freed)} unused address(es) freed",
                request_id=actor.request_id))
            for b, a in freed:
                store.changed(b, a, audit_entry(actor, release_action(a), b, a,
                                                f"pool {name} deleted"))
        return [a for _, a in freed]
