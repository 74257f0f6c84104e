"""Reserve and release addresses for pods, honouring owners and release policies.

Every call is one transaction: the address rows and their audit rows commit together or not
at all. Each change goes to the unit of work (``store.changed``), which writes its audit row
before COMMIT and tells the listeners (``Database.listeners``) after it. Idempotent by pod
UID: a second call for a pod that already holds addresses returns them and writes nothing,
so a retried scheduler bind allocates nothing new.

A pod's release quarantines its address (docs/design.md, "Cool-down before reuse"): until the
pool's period is over only the same owner may take it back; then it is free again, freed by
the allocator of a pool that has nothing else left, or by the periodic sweep.
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
#: Quarantines ended per statement by the sweep (an allocation ends ``GROW_LOW_WATER``).
SWEEP_BATCH = 500


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


#: Who ends a quarantine that is over, in the audit trail (unless the reconciler does).
QUARANTINE_ACTOR = Actor("quarantine")
QUARANTINE_OVER = "quarantine over"


def release_action(after: AddressRecord) -> str:
    """The audit action of a pod letting go of a row: keep, quarantine or release."""
    if after.state == "kept":
        return "keep"
    return "quarantine" if after.state == "quarantined" else "release"


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

    def __init__(self, db: Database, *, chunk: int = MATERIALIZE_CHUNK,
                 quarantine_seconds: int = 0) -> None:
        self.db = db
        self.chunk = chunk
        #: A released address's cool-down where its pool sets none (``Settings`` carries the
        #: service's default; 0 frees at once, as before quarantine existed).
        self.quarantine_seconds = quarantine_seconds

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
        policy = ReleasePolicy.of(pod)
        # A bare pod's key is its name: rows kept for that name (a keeping policy) or
        # quarantined after its predecessor's release are its own to take back.
        owner_key = owner.key
        # Another pod of the same name still holding an address changes nothing for a
        # default-policy pod: only its quarantined rows (and its own) do.
        plain_owner = not owner.keeps_per_pod or (owner.kind is OwnerKind.POD
                                                  and not policy.keeps)
        holder = Holder(
            state="allocated", owner_key=owner.key, policy=policy.value,
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
                    owner_key, pools[0].id, holder, plain_owner=plain_owner,
                    actor=actor.name, request_id=actor.request_id)
                existing = [rec for rec in held if rec.pod_uid == pod.uid]
                if taken is not None:
                    store.changed_and_logged(None, taken)
                elif existing:
                    # A bind is in flight for these rows: the reconciler must keep off them.
                    await store.addresses.touch_pod(pod.uid)
            if taken is not None:
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
            for before, after in changes:
                store.changed(before, after, audit_entry(
                    actor, "reuse" if before is not None else "allocate", before, after))
        return [(before.state if before is not None else "free", after)
                for before, after in changes]

    async def _take_one(self, store: Store, pod: PodFacts, owner: Owner,
                        pools: Sequence[PoolRecord], holder: Holder,
                        held: Sequence[AddressRecord], grow_inline: bool = True
                        ) -> tuple[AddressRecord | None, AddressRecord]:
        """``held``: the owner's rows, read in this transaction (rows of other owners and
        of the pod itself may be among them). The owner's kept rows come first, then its
        quarantined ones (its own, at once), then a fresh address."""
        pool_ids = [p.id for p in pools]
        held = [r for r in held if r.owner_key == owner.key]
        keeps = owner.kind is not OwnerKind.POD or ReleasePolicy.of(pod).keeps
        if keeps and owner.keeps_per_pod:
            busy = [r for r in held if r.state == "allocated" and r.pod_uid != pod.uid]
            if busy:
                raise Conflict(
                    f"{busy[0].address} of {owner.key} is still held by pod "
                    f"{busy[0].pod_namespace}/{busy[0].pod_name} (uid {busy[0].pod_uid}); "
                    "it is handed over once that pod's deletion is processed",
                    owner=owner.key, address=str(busy[0].address))
        states = ("kept", "quarantined") if keeps else ("quarantined",)
        # The row is locked (SKIP LOCKED) only when there is one to take.
        own = (await store.addresses.kept_for_owner(owner.key, pool_ids, states=states)
               if any(r.state in states and r.pool_id in pool_ids for r in held) else None)
        if own is not None:
            return own, await store.addresses.change(own.id, holder)
        if owner.kind is OwnerKind.POOL:
            await self._check_named_pool_room(store, owner)
        if keeps and owner.keeps_per_pod and any(r.state == "kept" for r in held):
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
        """The pool's lowest free address for ``holder``, growing the pool when it can; a
        pool with nothing left to grow first ends the quarantines that are over (changes of
        this transaction, like the caller's). The caller records the taken row's change."""
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
            # Fully materialised: quarantines that are over are free rows in waiting.
            if await end_quarantines(store, pool.id, GROW_LOW_WATER, QUARANTINE_ACTOR):
                continue
            # Free rows may exist but be locked by other allocators.
            if locked_retries >= LOCKED_RETRIES or not await store.addresses.has_free(pool.id):
                return None
            locked_retries += 1
            await asyncio.sleep(0.002 * locked_retries)

    async def _take_requested(self, store: Store, pod: PodFacts, owner: Owner,
                              group: Sequence[IpRange], pools: Sequence[PoolRecord],
                              holder: Holder, slot: int
                              ) -> tuple[AddressRecord | None, AddressRecord]:
        """One address from any range of ``group``; the owner's kept (then quarantined)
        ones first."""
        placed: list[tuple[IpRange, PoolRecord]] = []
        for rng in group:
            pool = next((p for p in pools if any(covers(r, rng) for r in p.ranges)), None)
            if pool is not None:
                placed.append((rng, pool))
        if not placed:
            raise PoolExhausted(
                f"request_ip_range[{slot}] ({', '.join(map(str, group))}) is in no pool "
                f"routable from node {holder.node}", pod=pod.key, slot=slot)
        keeps = owner.kind is not OwnerKind.POD or ReleasePolicy.of(pod).keeps
        states = ("kept", "quarantined") if keeps else ("quarantined",)
        mine = [r for r in await store.addresses.by_owner(owner.key, quarantined=True)
                if r.state in states and any(r.address in rng for rng, _ in placed)]
        for rec in sorted(mine, key=lambda r: r.state != "kept"):
            locked = await store.addresses.by_address(rec.address, lock=True)
            if (locked is not None and locked.state in states
                    and locked.owner_key == owner.key):
                return locked, await store.addresses.change(locked.id, holder)
        for rng, pool in placed:
            cursor: int | None = None
            over = True
            while True:
                record = await store.addresses.take_free_in_range(
                    pool.id, rng.first_address, rng.last_address, holder)
                if record is not None:
                    return None, record
                chunk = walk([rng], cursor, self.chunk)
                if not chunk:
                    # Quarantines that are over (once): then the range is really taken.
                    if over and await end_quarantines(store, pool.id, SWEEP_BATCH,
                                                      QUARANTINE_ACTOR):
                        over = False
                        continue
                    break
                cursor = chunk[-1]
                await store.addresses.materialize(
                    pool.id, [IpRange(a, a, rng.version).first_address for a in chunk])
        raise PoolExhausted(
            f"no free address in request_ip_range[{slot}] ({', '.join(map(str, group))})",
            pod=pod.key, slot=slot)

    # -- release ------------------------------------------------------------------------
    async def release_pod(self, uid: str, *, keep: bool | Callable[[AddressRecord], bool],
                          actor: Actor, reason: str,
                          cool: bool | Callable[[AddressRecord], bool] = True
                          ) -> list[AddressRecord]:
        """Free (or keep for the owner) every address of the pod with this UID; what is
        freed is quarantined when ``cool`` says so (a pod may have used it)."""
        out: list[AddressRecord] = []
        async with self.db.transaction() as store:
            for row in await store.addresses.by_pod_uid(uid, lock=True):
                keeps = keep if isinstance(keep, bool) else keep(row)
                cools = cool if isinstance(cool, bool) else cool(row)
                after = await _keep_or_free(store, row, keep=keeps, quarantine=(
                    self.quarantine_seconds if cools else None))
                store.changed(row, after, audit_entry(actor, release_action(after), row, after,
                                                      reason))
                out.append(after)
        return out

    async def release_gone_pod(self, uid: str, decide: Callable[[Owner, str | None, int],
                                                                 Decision],
                               *, actor: Actor, stale_before: datetime | None = None
                               ) -> tuple[Decision | None, list[AddressRecord]]:
        """Free or keep a vanished pod's addresses, deciding under the owner's lock.

        ``decide(owner, policy, owned)`` sees how many pods' worth the owner holds right now,
        so two pods of one Deployment deleted together cannot both count the same surplus.
        With ``stale_before`` rows touched since then are left alone (a bind is in flight).
        """
        out: list[AddressRecord] = []
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
                after = await _keep_or_free(store, row, keep=decision.keep,
                                            quarantine=self.quarantine_seconds)
                store.changed(row, after, audit_entry(actor, release_action(after), row, after,
                                                      decision.reason))
                out.append(after)
        return decision, out

    async def release_stale_unbound(self, uid: str, stale_before: datetime, *, actor: Actor
                                    ) -> bool:
        """Free a never-bound pod's reservation unless a bind touched it since ``stale_before``.

        Addresses the pod reused from its owner go back to the owner (kept), not to the pool;
        the others are free at once (no pod ran with them: nothing to cool down).
        """
        async with self.db.transaction() as store:
            rows = await store.addresses.by_pod_uid(uid, lock=True)
            if not rows or any(r.updated_at > stale_before for r in rows):
                return False
            for row in rows:
                keeps = row.owner_key is not None and not row.owner_key.startswith("pod/")
                after = await _keep_or_free(store, row, keep=keeps, quarantine=None)
                store.changed(row, after, audit_entry(
                    actor, release_action(after), row, after,
                    "reserved at bind but the pod never got a node"))
        return True

    async def release_kept(self, address: IPAddress, owner_key: str, *, actor: Actor,
                           reason: str) -> bool:
        """Free one kept address if it is still kept by that owner (checked under lock);
        quarantined until its pool's period after it was last used, if that is still ahead."""
        async with self.db.transaction() as store:
            row = await store.addresses.by_address(address, lock=True)
            if row is None or row.state != "kept" or row.owner_key != owner_key:
                return False
            after = await store.addresses.release(row.id, self.quarantine_seconds)
            store.changed(row, after, audit_entry(actor, release_action(after), row, after,
                                                  reason))
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
            # A quarantined address a running pod uses is that pod's: record what is true.
            if row.state not in ("free", "kept", "quarantined") or (
                    row.state == "kept" and row.owner_key != owner.key):
                raise Conflict(f"{address} is used by pod {pod.key} but held as {row.state} "
                               f"by {row.owner_key}", address=str(address))
            after = await store.addresses.change(row.id, holder)
            store.changed(row, after, audit_entry(actor, "adopt", row, after, reason))
        return after

    async def release_owner(self, owner_key: str, *, actor: Actor, reason: str,
                            only_kept: bool = True) -> list[AddressRecord]:
        """Free an owner's addresses (kept ones only, unless told otherwise)."""
        out: list[AddressRecord] = []
        async with self.db.transaction() as store:
            for row in await store.addresses.by_owner(owner_key):
                if only_kept and row.state != "kept":
                    continue
                locked = await store.addresses.by_address(row.address, lock=True)
                if locked is None or locked.owner_key != owner_key:
                    continue
                if only_kept and locked.state != "kept":
                    continue
                after = await store.addresses.release(locked.id, self.quarantine_seconds)
                store.changed(locked, after, audit_entry(actor, release_action(after), locked,
                                                         after, reason))
                out.append(after)
        return out

    # -- quarantine ---------------------------------------------------------------------
    async def end_quarantines(self, *, actor: Actor = QUARANTINE_ACTOR,
                              limit: int = SWEEP_BATCH) -> list[AddressRecord]:
        """Free up to ``limit`` quarantined addresses whose time is up (the sweep)."""
        async with self.db.transaction() as store:
            ended = await end_quarantines(store, None, limit, actor)
        return ended

    async def quarantines_over(self, limit: int = SWEEP_BATCH) -> list[AddressRecord]:
        """Quarantined addresses past their end, not freed yet (read only)."""
        async with self.db.transaction() as store:
            return await store.addresses.quarantine_over(None, limit, lock=False)

    async def pod_addresses(self, uid: str) -> list[AddressRecord]:
        async with self.db.transaction() as store:
            return await store.addresses.by_pod_uid(uid)


async def end_quarantines(store: Store, pool_id: int | None, limit: int, actor: Actor
                          ) -> list[AddressRecord]:
    """Free quarantined rows whose time is up (one pool, or all), each a change of
    ``store``'s transaction; rows another transaction holds are skipped. Returns the rows as
    they were (quarantined)."""
    rows = await store.addresses.quarantine_over(pool_id, limit)
    for row in rows:
        after = await store.addresses.free(row.id)
        store.changed(row, after, audit_entry(
            actor, "release", row, after, f"{QUARANTINE_OVER} (until {row.quarantined_until})"))
    return rows


async def _keep_or_free(store: Store, row: AddressRecord, *, keep: bool,
                        quarantine: int | None) -> AddressRecord:
    """The pod is done with ``row``: keep it for the row's owner, or give it back -
    quarantined by the pool's period (``quarantine``: the default one), or at once
    (``None``: no pod used it)."""
    if not keep:
        if quarantine is None:
            return await store.addresses.free(row.id)
        return await store.addresses.release(row.id, quarantine)
    return await store.addresses.change(row.id, Holder(
        state="kept", owner_key=row.owner_key or f"pod/{row.pod_namespace}/{row.pod_name}",
        policy=row.policy, pod_namespace=row.pod_namespace, pod_name=row.pod_name,
        slot=row.slot, kept_ttl_seconds=row.kept_ttl_seconds))


def covers(outer: IpRange, inner: IpRange) -> bool:
    return (outer.version == inner.version
            and outer.first <= inner.first and inner.last <= outer.last)
