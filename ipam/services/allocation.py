"""Reserve and release addresses for pods, honouring owners and release policies.

Every call is one transaction: the address rows and their audit rows commit together or not
at all. Idempotent by pod UID: a second call for a pod that already holds addresses returns
them and writes nothing, so a retried scheduler bind allocates nothing new.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from ipam.engine.galaxy_args import ArgsError, requested_ranges
from ipam.engine.ip_ranges import IPAddress, IpRange, walk
from ipam.engine.pod import PodFacts
from ipam.engine.release_decision import Decision
from ipam.engine.release_policy import (
    Owner,
    OwnerKind,
    ReleasePolicy,
    kept_ttl_seconds,
    owner_from_key,
    owner_of,
)
from ipam.errors import Conflict, InvalidInput, PoolExhausted
from ipam.storage.database import Database, Store
from ipam.storage.records import AddressRecord, AuditEntry, Holder, PoolRecord

#: Rows created per materialisation step; small enough to stay cheap, large enough to be rare.
MATERIALIZE_CHUNK = 256
#: How often a pool whose free rows are all locked by others is looked at again.
LOCKED_RETRIES = 5
#: Allocation attempts that grow the pool outside the transaction before growing inline.
GROW_ATTEMPTS = 8
#: Grow when fewer unlocked free rows than this remain (about the bind concurrency).
GROW_LOW_WATER = 64


class _NeedsRows(Exception):
    """The pool has no free row this transaction can take, but can be materialised further."""

    def __init__(self, pool: PoolRecord) -> None:
        super().__init__(pool.name)
        self.pool = pool


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks, for the audit trail (``scheduler``, ``reconciler``, ``operator:<token>``)."""

    name: str
    request_id: str | None = None


UsageListener = Callable[[AddressRecord | None, AddressRecord | None], None]


def audit_entry(actor: Actor, action: str, before: AddressRecord | None,
           after: AddressRecord | None, reason: str | None = None) -> AuditEntry:
    row = after or before
    assert row is not None
    subject = after if after is not None and after.pod_uid else before
    return AuditEntry(
        actor=actor.name, action=action, address=row.address, pool=row.pool,
        owner_key=(after.owner_key if after is not None and after.owner_key else
                   before.owner_key if before is not None else None),
        pod_namespace=subject.pod_namespace if subject else None,
        pod_name=subject.pod_name if subject else None,
        pod_uid=subject.pod_uid if subject else None,
        before=before.snapshot() if before is not None else None,
        after=after.snapshot() if after is not None else None,
        reason=reason, request_id=actor.request_id,
    )


class Allocator:
    """The one place addresses change hands."""

    def __init__(self, db: Database, *, chunk: int = MATERIALIZE_CHUNK) -> None:
        self.db = db
        self.chunk = chunk
        self.listeners: list[UsageListener] = []

    def _notify(self, before: AddressRecord | None, after: AddressRecord | None) -> None:
        for listener in self.listeners:
            listener(before, after)

    # -- allocation ---------------------------------------------------------------------
    async def allocate(self, pod: PodFacts, pools: Sequence[PoolRecord], *, node: str | None,
                       actor: Actor) -> list[AddressRecord]:
        """Addresses for ``pod`` from ``pools`` (routable from its node, preferred first)."""
        return [rec for _, rec in await self.allocate_traced(pod, pools, node=node, actor=actor)]

    async def allocate_traced(self, pod: PodFacts, pools: Sequence[PoolRecord], *,
                              node: str | None, actor: Actor
                              ) -> list[tuple[str | None, AddressRecord]]:
        """Like ``allocate``, with each address's state before (``None``: already the pod's).

        Undo needs it: a kept address goes back to kept, a fresh one back to free.
        """
        try:
            groups = requested_ranges(pod)
        except ArgsError as exc:
            raise InvalidInput(str(exc), pod=pod.key) from None
        for _ in range(GROW_ATTEMPTS):
            try:
                return await self._allocate_once(pod, pools, node, actor, groups,
                                                 grow_inline=False)
            except _NeedsRows as need:
                # Outside any allocating transaction: the pool row is locked for one INSERT
                # and a commit, not until some allocation's commit (the convoy behind
                # ``SELECT ... FOR UPDATE`` on pools that capped binds at concurrency 32).
                await self._grow(need.pool)
        return await self._allocate_once(pod, pools, node, actor, groups, grow_inline=True)

    async def _allocate_once(self, pod: PodFacts, pools: Sequence[PoolRecord],
                             node: str | None, actor: Actor, groups: Sequence[object],
                             *, grow_inline: bool) -> list[tuple[str | None, AddressRecord]]:
        changes: list[tuple[AddressRecord | None, AddressRecord]] = []
        owner = owner_of(pod)
        owner_key = owner.key if owner.kind is not OwnerKind.POD else None
        holder = Holder(
            state="allocated", owner_key=owner.key, policy=ReleasePolicy.of(pod).value,
            pod_namespace=pod.namespace, pod_name=pod.name, pod_uid=pod.uid, node=node,
            kept_ttl_seconds=kept_ttl_seconds(pod),
        )
        # A Deployment's or other controller's pods share the owner's addresses: their
        # decision waits for the owner's lock, which the release of a gone pod holds too,
        # so "keep the old pod's address" and "take a fresh one for the new pod" are never
        # both decided on the same snapshot (the race that left 4 addresses for 3 replicas).
        shared_owner = owner.kind in (OwnerKind.DEPLOYMENT, OwnerKind.CONTROLLER)
        if pools and not groups and owner.kind is not OwnerKind.POOL and not shared_owner:
            # The common bind: read what the pod and its owner hold and, when that cannot
            # change the decision, take and log the first pool's lowest free address, as one
            # statement that is its own transaction (docs/design.md). Otherwise the
            # transaction below decides.
            async with self.db.single_statement() as store:
                held, taken = await store.addresses.held_or_take(
                    owner_key, pools[0].id, holder, plain_owner=not owner.keeps_per_pod,
                    actor=actor.name, request_id=actor.request_id)
                existing = [rec for rec in held if rec.pod_uid == pod.uid]
                if taken is None and existing:
                    # A bind is in flight for these rows: the reconciler must keep off them.
                    await store.addresses.touch_pod(pod.uid)
            if taken is not None:
                self._notify(None, taken)
                return [("free", taken)]
            if existing:
                return [(None, rec) for rec in existing]
        async with self.db.transaction(config_shared=True) as store:
            if shared_owner:
                await store.locks.owner(owner.key)
            held = await store.addresses.held_for(pod.uid, owner_key)
            existing = [rec for rec in held if rec.pod_uid == pod.uid]
            if existing:
                # A bind is in flight for these rows: tell the reconciler to keep off them.
                await store.addresses.touch_pod(pod.uid)
                return [(None, rec) for rec in existing]
            if not pools:
                raise PoolExhausted(f"no pool routes node {node}", pod=pod.key, node=node)
            if groups:
                for slot, group in enumerate(groups):
                    changes.append(await self._take_requested(
                        store, pod, owner, group, pools,  # type: ignore[arg-type]
                        replace(holder, slot=slot), slot))
            else:
                changes.append(await self._take_one(store, pod, owner, pools, holder, held,
                                                    grow_inline))
            await store.audit.record(*(
                audit_entry(actor, "reuse" if before is not None else "allocate", before, after)
                for before, after in changes))
        for before, after in changes:
            self._notify(before, after)
        return [(before.state if before is not None else "free", after)
                for before, after in changes]

    async def _take_one(self, store: Store, pod: PodFacts, owner: Owner,
                        pools: Sequence[PoolRecord], holder: Holder,
                        held: Sequence[AddressRecord], grow_inline: bool = True
                        ) -> tuple[AddressRecord | None, AddressRecord]:
        """``held``: the owner's rows, read in this transaction (rows of other owners and
        of the pod itself may be among them)."""
        pool_ids = [p.id for p in pools]
        if owner.kind is not OwnerKind.POD:
            held = [r for r in held if r.owner_key == owner.key]
            if owner.keeps_per_pod:
                busy = [r for r in held if r.state == "allocated" and r.pod_uid != pod.uid]
                if busy:
                    raise Conflict(
                        f"{busy[0].address} of {owner.key} is still held by pod "
                        f"{busy[0].pod_namespace}/{busy[0].pod_name} (uid {busy[0].pod_uid}); "
                        "it is handed over once that pod's deletion is processed",
                        owner=owner.key, address=str(busy[0].address))
            # The kept row is locked (SKIP LOCKED) only when there is one to take.
            kept = (await store.addresses.kept_for_owner(owner.key, pool_ids)
                    if any(r.state == "kept" and r.pool_id in pool_ids for r in held) else None)
            if kept is not None:
                return kept, await store.addresses.change(kept.id, holder)
            if owner.kind is OwnerKind.POOL:
                await self._check_named_pool_room(store, owner)
            if owner.keeps_per_pod and any(r.state == "kept" for r in held):
                where = ", ".join(str(r.address) for r in held if r.state == "kept")
                raise Conflict(
                    f"{owner.key} keeps {where}, which no pool routable from node "
                    f"{holder.node} contains", owner=owner.key)
        for pool in pools:
            record = await self.take_fresh(store, pool, holder, grow_inline)
            if record is not None:
                return None, record
        names = ", ".join(p.name for p in pools)
        raise PoolExhausted(f"pool {names} exhausted" if len(pools) == 1 else
                            f"pools {names} exhausted", pod=pod.key, pools=[p.name for p in pools])

    @staticmethod
    async def _check_named_pool_room(store: Store, owner: Owner) -> None:
        """galaxy's named pool with a size: its pods share at most ``size`` addresses.

        The pool row is locked, so concurrent pods of one pool cannot overshoot together.
        """
        named = await store.named_pools.get(owner.name, lock=True)
        if named is None or named.size <= 0:
            return
        owned = await store.addresses.owned_pods(owner.key)
        if owned >= named.size:
            raise PoolExhausted(
                f"named pool {owner.name} is full: {owned} of its {named.size} addresses are "
                "in use; raise its size (POST /v1/pool) or wait for a pod of it to go",
                pool=owner.name, size=named.size)

    async def _grow(self, pool: PoolRecord) -> None:
        """Materialise the pool's next chunk in a short transaction of its own, unless enough
        unlocked free rows are already there (another allocator grew it first)."""
        async with self.db.transaction() as store:
            if not await store.locks.try_config_shared():
                return  # a config import is running; the retry will wait for it
            exists, high_water = await store.pools.lock_high_water(pool.id, skip_locked=True)
            if not exists:
                # Another allocator is growing it right now: do not queue behind it.
                await asyncio.sleep(0.001)
                return
            if await store.addresses.unlocked_free(pool.id, GROW_LOW_WATER) >= GROW_LOW_WATER:
                return
            after = int(high_water) if high_water is not None else None
            chunk = walk(pool.ranges, after, self.chunk)
            if chunk:
                addrs = [IpRange(a, a, pool.family).first_address for a in chunk]
                await store.addresses.materialize(pool.id, addrs)
                await store.pools.set_high_water(pool.id, addrs[-1])

    async def take_fresh(self, store: Store, pool: PoolRecord, holder: Holder,
                         grow_inline: bool = True) -> AddressRecord | None:
        locked_retries = 0
        while True:
            record = await store.addresses.take_free(pool.id, holder)
            if record is not None:
                return record
            if not grow_inline:
                high_water = await store.pools.high_water(pool.id)
                if walk(pool.ranges, int(high_water) if high_water is not None else None, 1):
                    raise _NeedsRows(pool)
            exists, high_water = await store.pools.lock_high_water(pool.id)
            if not exists:
                return None
            record = await store.addresses.take_free(pool.id, holder)
            if record is not None:
                return record
            after = int(high_water) if high_water is not None else None
            chunk = walk(pool.ranges, after, self.chunk)
            if chunk:
                version = pool.family
                addrs = [IpRange(a, a, version).first_address for a in chunk]
                await store.addresses.materialize(pool.id, addrs)
                await store.pools.set_high_water(pool.id, addrs[-1])
                continue
            # Fully materialised: free rows may exist but be locked by other allocators.
            if locked_retries >= LOCKED_RETRIES or not await store.addresses.has_free(pool.id):
                return None
            locked_retries += 1
            await asyncio.sleep(0.002 * locked_retries)

    async def _take_requested(self, store: Store, pod: PodFacts, owner: Owner,
                              group: Sequence[IpRange], pools: Sequence[PoolRecord],
                              holder: Holder, slot: int
                              ) -> tuple[AddressRecord | None, AddressRecord]:
        """One address from any range of ``group``; kept ones of the owner first."""
        placed: list[tuple[IpRange, PoolRecord]] = []
        for rng in group:
            pool = next((p for p in pools if any(covers(r, rng) for r in p.ranges)), None)
            if pool is not None:
                placed.append((rng, pool))
        if not placed:
            raise PoolExhausted(
                f"request_ip_range[{slot}] ({', '.join(map(str, group))}) is in no pool "
                f"routable from node {holder.node}", pod=pod.key, slot=slot)
        if owner.kind is not OwnerKind.POD:
            for rec in await store.addresses.by_owner(owner.key):
                if rec.state == "kept" and any(rec.address in rng for rng, _ in placed):
                    locked = await store.addresses.by_address(rec.address, lock=True)
                    if locked is not None and locked.state == "kept":
                        return locked, await store.addresses.change(locked.id, holder)
        for rng, pool in placed:
            cursor: int | None = None
            while True:
                record = await store.addresses.take_free_in_range(
                    pool.id, rng.first_address, rng.last_address, holder)
                if record is not None:
                    return None, record
                chunk = walk([rng], cursor, self.chunk)
                if not chunk:
                    break
                cursor = chunk[-1]
                await store.addresses.materialize(
                    pool.id, [IpRange(a, a, rng.version).first_address for a in chunk])
        raise PoolExhausted(
            f"no free address in request_ip_range[{slot}] ({', '.join(map(str, group))})",
            pod=pod.key, slot=slot)

    # -- release ------------------------------------------------------------------------
    async def release_pod(self, uid: str, *, keep: bool | Callable[[AddressRecord], bool],
                          actor: Actor, reason: str) -> list[AddressRecord]:
        """Free (or keep for the owner) every address of the pod with this UID."""
        changes: list[tuple[AddressRecord, AddressRecord]] = []
        async with self.db.transaction() as store:
            for row in await store.addresses.by_pod_uid(uid, lock=True):
                keeps = keep if isinstance(keep, bool) else keep(row)
                after = await _keep_or_free(store, row, keep=keeps)
                changes.append((row, after))
            await store.audit.record(*(
                audit_entry(actor, "keep" if after.state == "kept" else "release", before, after,
                       reason)
                for before, after in changes))
        for before, after in changes:
            self._notify(before, after)
        return [after for _, after in changes]

    async def release_gone_pod(self, uid: str, decide: Callable[[Owner, str | None, int],
                                                                 Decision],
                               *, actor: Actor, stale_before: datetime | None = None
                               ) -> tuple[Decision | None, list[AddressRecord]]:
        """Free or keep a vanished pod's addresses, deciding under the owner's lock.

        ``decide(owner, policy, owned)`` sees how many pods' worth the owner holds right now,
        so two pods of one Deployment deleted together cannot both count the same surplus.
        With ``stale_before`` rows touched since then are left alone (a bind is in flight).
        """
        changes: list[tuple[AddressRecord, AddressRecord]] = []
        decision: Decision | None = None
        async with self.db.transaction() as store:
            rows = await store.addresses.by_pod_uid(uid)
            if not rows:
                return None, []
            owner_key = rows[0].owner_key or ""
            await store.locks.owner(owner_key)
            rows = await store.addresses.by_pod_uid(uid, lock=True)
            if not rows or (stale_before is not None
                            and any(r.updated_at > stale_before for r in rows)):
                return None, []
            owned = await store.addresses.owned_pods(owner_key)
            decision = decide(owner_from_key(owner_key), rows[0].policy, owned)
            for row in rows:
                after = await _keep_or_free(store, row, keep=decision.keep)
                changes.append((row, after))
            await store.audit.record(*(
                audit_entry(actor, "keep" if after.state == "kept" else "release", before, after,
                       decision.reason)
                for before, after in changes))
        for before, after in changes:
            self._notify(before, after)
        return decision, [after for _, after in changes]

    async def release_stale_unbound(self, uid: str, stale_before: datetime, *, actor: Actor
                                    ) -> bool:
        """Free a never-bound pod's reservation unless a bind touched it since ``stale_before``.

        Addresses the pod reused from its owner go back to the owner (kept), not to the pool.
        """
        changes: list[tuple[AddressRecord, AddressRecord]] = []
        async with self.db.transaction() as store:
            rows = await store.addresses.by_pod_uid(uid, lock=True)
            if not rows or any(r.updated_at > stale_before for r in rows):
                return False
            for row in rows:
                keeps = row.owner_key is not None and not row.owner_key.startswith("pod/")
                after = await _keep_or_free(store, row, keep=keeps)
                changes.append((row, after))
            await store.audit.record(*(
                audit_entry(actor, "keep" if after.state == "kept" else "release", before, after,
                       "reserved at bind but the pod never got a node")
                for before, after in changes))
        for before, after in changes:
            self._notify(before, after)
        return True

    async def release_kept(self, address: IPAddress, owner_key: str, *, actor: Actor,
                           reason: str) -> bool:
        """Free one kept address if it is still kept by that owner (checked under lock)."""
        async with self.db.transaction() as store:
            row = await store.addresses.by_address(address, lock=True)
            if row is None or row.state != "kept" or row.owner_key != owner_key:
                return False
            after = await store.addresses.free(row.id)
            await store.audit.record(audit_entry(actor, "release", row, after, reason))
        self._notify(row, after)
        return True

    async def adopt(self, pod: PodFacts, address: IPAddress, pool: PoolRecord, *, actor: Actor,
                    reason: str) -> AddressRecord:
        """Record an address a running pod already uses but PostgreSQL does not know."""
        owner = owner_of(pod)
        holder = Holder(state="allocated", owner_key=owner.key,
                        policy=ReleasePolicy.of(pod).value, pod_namespace=pod.namespace,
                        pod_name=pod.name, pod_uid=pod.uid, node=pod.node_name,
                        kept_ttl_seconds=kept_ttl_seconds(pod))
        async with self.db.transaction(config_shared=True) as store:
            await store.addresses.materialize(pool.id, [address])
            row = await store.addresses.by_address(address, lock=True)
            assert row is not None
            if row.state == "allocated" and row.pod_uid == pod.uid:
                return row
            if row.state not in ("free", "kept") or (
                    row.state == "kept" and row.owner_key != owner.key):
                raise Conflict(f"{address} is used by pod {pod.key} but held as {row.state} "
                               f"by {row.owner_key}", address=str(address))
            after = await store.addresses.change(row.id, holder)
            await store.audit.record(audit_entry(actor, "adopt", row, after, reason))
        self._notify(row, after)
        return after

    async def release_owner(self, owner_key: str, *, actor: Actor, reason: str,
                            only_kept: bool = True) -> list[AddressRecord]:
        """Free an owner's addresses (kept ones only, unless told otherwise)."""
        changes: list[tuple[AddressRecord, AddressRecord]] = []
        async with self.db.transaction() as store:
            for row in await store.addresses.by_owner(owner_key):
                if only_kept and row.state != "kept":
                    continue
                locked = await store.addresses.by_address(row.address, lock=True)
                if locked is None or locked.owner_key != owner_key:
                    continue
                if only_kept and locked.state != "kept":
                    continue
                changes.append((locked, await store.addresses.free(locked.id)))
            await store.audit.record(*(
                audit_entry(actor, "release", before, after, reason) for before, after in changes))
        for before, after in changes:
            self._notify(before, after)
        return [after for _, after in changes]

    async def pod_addresses(self, uid: str) -> list[AddressRecord]:
        async with self.db.transaction() as store:
            return await store.addresses.by_pod_uid(uid)


async def _keep_or_free(store: Store, row: AddressRecord, *, keep: bool) -> AddressRecord:
    """The pod is done with ``row``: keep it for the row's owner, or give it back."""
    if not keep:
        return await store.addresses.free(row.id)
    return await store.addresses.change(row.id, Holder(
        state="kept", owner_key=row.owner_key or f"pod/{row.pod_namespace}/{row.pod_name}",
        policy=row.policy, pod_namespace=row.pod_namespace, pod_name=row.pod_name,
        slot=row.slot, kept_ttl_seconds=row.kept_ttl_seconds))


def covers(outer: IpRange, inner: IpRange) -> bool:
    return (outer.version == inner.version
            and outer.first <= inner.first and inner.last <= outer.last)
