"""Operator and CNI use cases on addresses and pools, one transaction each, audited.

* Listing with filters and keyset cursors (``list_addresses``), usage per pool, range and
  VLAN (``pool_usage_detail``), config import with dry run (``import_pools``).
* Manual reservation (``reserve``: state ``reserved``, owner ``reserved/<token>``) and
  release of one address or of an owner's addresses. Releasing an address a live pod holds
  is refused (``Conflict``) unless forced; a pod known to be gone does not count as live.
* The CNI plugin's view: a pod's allocation, and its report that a sandbox was deleted
  (audited, never a release: the pod watcher applies the release policy).
* galaxy's named pools (``/v1/pool``): a recorded size, optionally pre-allocated as ``kept``
  addresses of owner ``pool/<name>``.

Every change goes to its transaction's unit of work (``store.changed`` / ``store.log``):
audit rows in the same transaction, and the usage listeners told after commit, so the
extender's cached pool counts stay right.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

import orjson

from ipam.engine.ip_ranges import IPAddress, IPNetwork
from ipam.engine.pod import ENI_IP_RESOURCE, NETWORKS_ANNOTATION, PodFacts
from ipam.engine.pool_config import PoolConfig, load_document, parse_pool_config
from ipam.errors import Conflict, InvalidInput, IpamError, NotFound, NotManaged
from ipam.services.allocation import Actor, audit_entry, release_action
from ipam.services.pool_config import ConfigDiff, PoolUsage
from ipam.services.runtime import Runtime
from ipam.storage.address_query import AddressFilter, AddressQuery, FreeSlot, NamedPoolQuery
from ipam.storage.database import Store
from ipam.storage.records import AddressRecord, AuditEntry, Holder, PoolRecord

log = logging.getLogger(__name__)

MAX_LIMIT = 1000
#: How long the CNI's "why has this pod no address" may wait for the API server.
POD_LOOKUP_SECONDS = 2.0
RESERVED_PREFIX = "reserved/"
ADDRESS_STATES = ("free", "allocated", "kept", "reserved", "quarantined")


# -- pods the service did not see itself ----------------------------------------------------
@dataclass(frozen=True, slots=True)
class PodState:
    """``known``: the answer is definite; then ``pod`` is the pod, or ``None`` if absent."""

    known: bool
    pod: PodFacts | None = None


UNKNOWN = PodState(False)
#: Vetoes releasing a row, with the reason (galaxy's identity checks).
Refusal = Callable[[AddressRecord], str | None]


class PodLookup:
    """Finds a pod by name: the pod cache, pods seen at filter, then the API server."""

    def __init__(self, runtime: Runtime, timeout: float = POD_LOOKUP_SECONDS) -> None:
        self.runtime = runtime
        self.timeout = timeout

    def cached(self, namespace: str, name: str) -> PodState:
        """What the pod watcher knows, without a round trip; definite once it has synced."""
        watcher = self.runtime.pod_watcher
        if watcher is None:
            return UNKNOWN
        found = watcher.lookup(namespace, name)
        synced = self.runtime.readiness.conditions.get("watch:pods", (False, ""))[0]
        return PodState(True, found) if found is not None or synced else UNKNOWN

    def _recent(self, namespace: str, name: str) -> PodFacts | None:
        return self.runtime.placement.recent.find(namespace, name)

    async def find(self, namespace: str, name: str) -> PodState:
        """The pod if any source has it; its absence only as the API server (or, when that
        cannot answer, a synced cache) tells: a watch may lag behind a pod just created."""
        state = self.cached(namespace, name)
        if state.pod is not None:
            return state
        pod = self._recent(namespace, name)
        if pod is not None:
            return PodState(True, pod)
        cluster = self.runtime.placement.cluster
        if cluster is None:
            return state
        try:
            return PodState(True, await asyncio.wait_for(
                cluster.get_pod(namespace, name), self.timeout))
        except (IpamError, TimeoutError) as exc:
            log.info("cannot look pod %s/%s up: %s", namespace, name, exc)
            return state

    async def live(self, row: AddressRecord) -> bool:
        """Whether the pod holding ``row`` may still use it (unknown counts as live)."""
        if row.state != "allocated" or row.pod_namespace is None or row.pod_name is None:
            return False
        state = await self.find(row.pod_namespace, row.pod_name)
        if not state.known:
            return True
        pod = state.pod
        return pod is not None and pod.uid == row.pod_uid and not pod.terminated


# -- views --------------------------------------------------------------------------------
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


@dataclass(frozen=True, slots=True)
class Counts:
    total: int
    allocated: int = 0
    kept: int = 0
    reserved: int = 0
    quarantined: int = 0

    @property
    def used(self) -> int:
        return self.allocated + self.kept + self.reserved + self.quarantined

    @property
    def free(self) -> int:
        return self.total - self.used

    @classmethod
    def of(cls, total: int, states: dict[str, int]) -> Counts:
        return cls(total, states.get("allocated", 0), states.get("kept", 0),
                   states.get("reserved", 0), states.get("quarantined", 0))

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.total + other.total, self.allocated + other.allocated,
                      self.kept + other.kept, self.reserved + other.reserved,
                      self.quarantined + other.quarantined)


@dataclass(frozen=True, slots=True)
class PoolDetail:
    usage: PoolUsage
    ranges: list[tuple[str, Counts]]


@dataclass(frozen=True, slots=True)
class VlanUsage:
    vlan: int | None
    pools: list[str]
    counts: Counts


@dataclass(frozen=True, slots=True)
class UsageReport:
    pools: list[PoolDetail]
    vlans: list[VlanUsage]


@dataclass(frozen=True, slots=True)
class NamedPoolState:
    name: str
    size: int
    pre_allocate_ip: bool
    #: Addresses the pool holds now (kept or allocated to its pods).
    held: int = 0
    defined: bool = True


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


# -- helpers ------------------------------------------------------------------------------
def _pool_of(pools: Sequence[PoolRecord], address: IPAddress) -> PoolRecord | None:
    return next((p for p in pools if any(address in r for r in p.ranges)), None)


def _held_by(row: AddressRecord) -> str:
    if row.state == "allocated":
        return f"allocated to pod {row.pod_namespace}/{row.pod_name} (uid {row.pod_uid})"
    if row.state == "quarantined":
        return (f"quarantined until {row.quarantined_until} (released by {row.owner_key}; "
                "release it again to end that now)")
    return f"{row.state} for {row.owner_key}"


# -- the use cases ------------------------------------------------------------------------
class AddressAdmin:
    def __init__(self, runtime: Runtime, pods: PodLookup | None = None) -> None:
        self.runtime = runtime
        self.db = runtime.db
        self.pods = pods or PodLookup(runtime)

    # reads ---------------------------------------------------------------------------
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
            pool = _pool_of(await store.pools.all(), address)
        if pool is None:
            raise NotFound(f"{address} is in no configured pool", address=str(address))
        return AddressView.of(FreeSlot(pool, address))

    async def taken(self) -> list[AddressRecord]:
        async with self.db.transaction() as store:
            return await AddressQuery(store.sql).taken()

    async def pool_usage_detail(self) -> UsageReport:
        async with self.db.transaction() as store:
            pools = await store.pools.all()
            counts = await store.addresses.taken_counts()
            per_range = await AddressQuery(store.sql).range_counts()
        details = []
        vlans: dict[int | None, VlanUsage] = {}
        for pool in pools:
            states = counts.get(pool.id, {})
            usage = PoolUsage(pool, states.get("allocated", 0), states.get("kept", 0),
                              states.get("reserved", 0), states.get("quarantined", 0))
            ranges = [(str(r), Counts.of(r.size, per_range.get((pool.id, r.first), {})))
                      for r in pool.ranges]
            details.append(PoolDetail(usage, ranges))
            mine = Counts.of(pool.size, states)
            seen = vlans.get(pool.vlan)
            vlans[pool.vlan] = (VlanUsage(pool.vlan, [pool.name], mine) if seen is None else
                                VlanUsage(pool.vlan, [*seen.pools, pool.name], seen.counts + mine))
        order = sorted(vlans, key=lambda v: (v is None, v if v is not None else 0))
        return UsageReport(details, [vlans[v] for v in order])

    # the CNI plugin -----------------------------------------------------------------
    async def pod_allocation(self, namespace: str, name: str) -> list[AddressRecord]:
        """The addresses of the pod called ``namespace/name`` now, in slot order."""
        async with self.db.transaction() as store:
            rows = await store.addresses.by_pod(namespace, name)
        if rows:
            # Two pods of one name hold addresses only while the old one's deletion is
            # pending: the newest allocation is the running pod's.
            newest = max(rows, key=lambda r: (r.allocated_at is not None, r.allocated_at))
            return [r for r in rows if r.pod_uid == newest.pod_uid]
        state = await self.pods.find(namespace, name)
        pod = state.pod
        if pod is not None and not pod.managed:
            hint = (f"; its {NETWORKS_ANNOTATION} annotation alone does not make ipam "
                    "allocate one" if pod.wants_fixed_ip_network else "")
            raise NotManaged(
                f"pod {namespace}/{name} does not request the extended resource "
                f"{ENI_IP_RESOURCE} (add it to a container's resources.requests and "
                f"resources.limits), so ipam allocated it no address{hint}",
                pod=f"{namespace}/{name}", missing=ENI_IP_RESOURCE)
        if state.known and pod is None:
            raise NotFound(f"pod {namespace}/{name} does not exist and holds no address",
                           pod=f"{namespace}/{name}")
        raise NotFound(f"pod {namespace}/{name} holds no address (not scheduled through the "
                       "ipam extender yet, or its binding failed)", pod=f"{namespace}/{name}")

    async def container_deleted(self, namespace: str, name: str, container_id: str,
                                uid: str | None, actor: Actor) -> list[AddressRecord]:
        """Record a CNI DEL; the addresses stay with the pod (its watcher releases them)."""
        async with self.db.transaction() as store:
            rows = await store.addresses.by_pod(namespace, name)
            if not rows:
                raise NotFound(f"pod {namespace}/{name} holds no address",
                               pod=f"{namespace}/{name}")
            entries = []
            for row in rows:
                reason = f"CNI DEL of container {container_id}; the address stays with the pod"
                if uid is not None and uid != row.pod_uid:
                    reason += f" (the runtime's pod uid {uid} is not the holder {row.pod_uid})"
                entries.append(AuditEntry(
                    actor=actor.name, action="cni.del", address=row.address, pool=row.pool,
                    owner_key=row.owner_key, pod_namespace=namespace, pod_name=name,
                    pod_uid=uid or row.pod_uid, reason=reason, request_id=actor.request_id))
            store.log(*entries)
        return rows

    # mutations ----------------------------------------------------------------------
    async def reserve(self, address: IPAddress, *, holder_name: str, note: str | None,
                      actor: Actor) -> AddressRecord:
        """Keep a free address out of allocation (``Conflict`` if it is not free)."""
        async with self.db.transaction(config_shared=True) as store:
            pool = _pool_of(await store.pools.all(), address)
            row = await store.addresses.by_address(address)
            if row is None:
                if pool is None:
                    raise NotFound(f"{address} is in no configured pool", address=str(address))
                await store.addresses.materialize(pool.id, [address])
            row = await store.addresses.by_address(address, lock=True)
            assert row is not None
            if row.state != "free":
                raise Conflict(f"{address} is not free: {_held_by(row)}", address=str(address),
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
                if _pool_of(await store.pools.all(), address) is None:
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
                f"{', '.join(f'{r.address} is {_held_by(r)}' for r in live)}; a live pod uses "
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
                                   f"{_held_by(locked)}); look again and retry",
                                   address=str(row.address))
                after = await store.addresses.release(locked.id, cool)
                store.changed(locked, after, audit_entry(actor, release_action(after), locked,
                                                         after, reason))
                out.append(after)
        return out

    async def import_pools(self, document: str, *, dry_run: bool, actor: Actor) -> ConfigDiff:
        """galaxy's floatingips (JSON list or ConfigMap YAML) applied, or only diffed."""
        def parse() -> PoolConfig:
            try:
                return parse_pool_config(load_document(document))
            except RecursionError:
                raise InvalidInput("the pool config nests too deeply", field="body") from None

        # Off the event loop: a large YAML document must not stall the extender's filter.
        config = await asyncio.to_thread(parse)
        diff = await self.runtime.pools.apply(config, actor=actor, dry_run=dry_run)
        if not dry_run and not diff.empty:
            await self.runtime.catalog.refresh(self.db)
        return diff

    # galaxy's named pools -------------------------------------------------------------
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
