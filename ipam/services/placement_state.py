"""In-memory state that lets filter answer without touching the database on its hot path.

* ``NodeDirectory``: node name -> InternalIP, fed by the node watcher (nodeCacheCapable mode).
* ``PoolCatalog``: pools and how many addresses each has taken; refreshed from PostgreSQL and
  adjusted by every allocation this process makes.
* ``Promises``: pods that passed filter but are not bound yet. The scheduler filters the next
  pod before the previous bind lands; counting promises keeps a nearly full pool from being
  promised twice.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ipam.engine.ip_ranges import IPAddress
from ipam.engine.pod import PodFacts
from ipam.storage.database import Database
from ipam.storage.records import AddressRecord, PoolRecord

TAKEN_STATES = ("allocated", "kept", "reserved")


class NodeDirectory:
    """Node name -> InternalIP. ``synced`` once the watcher's first list arrived."""

    def __init__(self) -> None:
        self._ips: dict[str, IPAddress | None] = {}
        self.synced = False
        #: Bumped when a node appears, goes or changes address (not on status-only updates),
        #: so caches derived from the directory know when to rebuild.
        self.version = 0

    def set(self, name: str, address: IPAddress | None) -> None:
        if name not in self._ips or self._ips[name] != address:
            self.version += 1
        self._ips[name] = address

    def remove(self, name: str) -> None:
        if name in self._ips:
            del self._ips[name]
            self.version += 1

    def replace(self, entries: Iterable[tuple[str, IPAddress | None]]) -> None:
        self._ips = dict(entries)
        self.synced = True
        self.version += 1

    def known(self, name: str) -> bool:
        return name in self._ips

    def get(self, name: str) -> IPAddress | None:
        return self._ips.get(name)

    def addresses(self) -> Mapping[str, IPAddress | None]:
        """The live name -> InternalIP map, for lookups in bulk (read it, never write it)."""
        return self._ips

    def __len__(self) -> int:
        return len(self._ips)


@dataclass(slots=True)
class PoolCatalog:
    """Pools (config order) and taken counts; ``free()`` is size minus taken."""

    pools: list[PoolRecord] = field(default_factory=list)
    taken: dict[int, int] = field(default_factory=dict)
    refreshed_at: float = 0.0
    _by_node: dict[IPAddress, list[PoolRecord]] = field(default_factory=dict)
    #: One list object per distinct pool set, so callers can group nodes by ``id(list)``.
    _sets: dict[tuple[int, ...], list[PoolRecord]] = field(default_factory=dict)
    #: Node name -> (the InternalIP object it was computed for, its pools).
    by_name: dict[str, tuple[IPAddress, list[PoolRecord]]] = field(default_factory=dict)
    _names: tuple[dict[str, int], int] = field(default_factory=lambda: ({}, -1))

    async def refresh(self, db: Database) -> None:
        async with db.transaction() as store:
            pools = await store.pools.all()
            counts = await store.addresses.taken_counts()
        routing = [(p.id, p.node_subnets) for p in pools]
        if routing != [(p.id, p.node_subnets) for p in self.pools]:
            # Routing changed: every cached node -> pools answer may be wrong.
            self._by_node = {}
            self._sets = {}
            self.by_name = {}
            self._names = ({}, -1)
        self.pools = pools
        self.taken = {pid: sum(c.values()) for pid, c in counts.items()}
        self.refreshed_at = time.monotonic()

    def pool_set_by_name(self, nodes: NodeDirectory) -> dict[str, int]:
        """Node name -> the ``id`` of its interned pool list (``pool_set``), for every node
        with an InternalIP; rebuilt only when the directory or the pools' routing changed.
        Ints, not the lists: a filter puts 5,000 of them in a set, and ints hash in C."""
        cached, version = self._names
        if version != nodes.version:
            cached = {name: id(self.pools_for(ip)) for name, ip in nodes.addresses().items()
                      if ip is not None}
            self._names = (cached, nodes.version)
        return cached

    def pool_set(self, key: int | None) -> list[PoolRecord] | None:
        """The interned pool list a ``pool_set_by_name`` value stands for (``None``: a node
        without an InternalIP or not known)."""
        return next((pools for pools in self._sets.values() if id(pools) == key), None)

    async def recount(self, db: Database, pool_id: int) -> int:
        """Exact taken count of one pool, straight from the database."""
        async with db.transaction() as store:
            counts = await store.addresses.taken_counts(pool_id)
        self.taken[pool_id] = sum(counts.get(pool_id, {}).values())
        return self.taken[pool_id]

    def pools_for(self, node_ip: IPAddress) -> list[PoolRecord]:
        cached = self._by_node.get(node_ip)
        if cached is None:
            found = [p for p in self.pools if p.routes_node(node_ip)]
            cached = self._sets.setdefault(tuple(p.id for p in found), found)
            if len(self._by_node) > 100_000:
                self._by_node.clear()
            self._by_node[node_ip] = cached
        return cached

    def pools_for_node(self, name: str, node_ip: IPAddress) -> list[PoolRecord]:
        """``pools_for`` cached by node name: a str hash is cached in the string, while an
        ``ipaddress`` object hashes and compares in Python (~1 us a lookup, 5 ms a filter)."""
        entry = self.by_name.get(name)
        if entry is not None and entry[0] is node_ip:
            return entry[1]
        pools = self.pools_for(node_ip)
        if len(self.by_name) > 100_000:
            self.by_name.clear()
        self.by_name[name] = (node_ip, pools)
        return pools

    def by_id(self, pool_id: int) -> PoolRecord | None:
        return next((p for p in self.pools if p.id == pool_id), None)

    def free(self, pool: PoolRecord) -> int:
        return pool.size - self.taken.get(pool.id, 0)

    def on_change(self, before: AddressRecord | None, after: AddressRecord | None) -> None:
        """Allocator listener: keep counts right between refreshes."""
        was = before is not None and before.state in TAKEN_STATES
        now = after is not None and after.state in TAKEN_STATES
        row = after or before
        if row is None or was == now:
            return
        self.taken[row.pool_id] = self.taken.get(row.pool_id, 0) + (1 if now else -1)


class Promises:
    """Pod UID -> pools it was promised at filter time, until bound, gone or expired."""

    def __init__(self, ttl_seconds: float) -> None:
        self.ttl = ttl_seconds
        self._by_uid: dict[str, tuple[frozenset[int], float]] = {}
        self._count: dict[int, int] = {}
        #: No promise expires before this: ``_expire`` is O(1) until then, not O(promises).
        self._next_expiry = float("inf")

    def _expire(self, now: float) -> None:
        if now < self._next_expiry:
            return
        self._next_expiry = min((until for _, until in self._by_uid.values() if until > now),
                                default=float("inf"))
        stale = [uid for uid, (_, until) in self._by_uid.items() if until <= now]
        for uid in stale:
            self.drop(uid)

    def promise(self, uid: str, pool_ids: Iterable[int]) -> None:
        self.drop(uid)
        ids = frozenset(pool_ids)
        if not ids:
            return
        until = time.monotonic() + self.ttl
        self._by_uid[uid] = (ids, until)
        self._next_expiry = min(self._next_expiry, until)
        for pid in ids:
            self._count[pid] = self._count.get(pid, 0) + 1

    def drop(self, uid: str) -> None:
        entry = self._by_uid.pop(uid, None)
        if entry is None:
            return
        for pid in entry[0]:
            self._count[pid] -= 1
            if not self._count[pid]:
                del self._count[pid]

    def held_by_others(self, pool_id: int, uid: str) -> int:
        self._expire(time.monotonic())
        mine = self._by_uid.get(uid)
        own = 1 if mine is not None and pool_id in mine[0] else 0
        return self._count.get(pool_id, 0) - own

    def __len__(self) -> int:
        return len(self._by_uid)


class RecentPods:
    """Pods seen at filter, by UID, so bind needs no API round trip (bounded LRU)."""

    def __init__(self, capacity: int = 20_000) -> None:
        self.capacity = capacity
        self._pods: OrderedDict[str, PodFacts] = OrderedDict()
        self._by_name: dict[str, str] = {}

    def remember(self, pod: PodFacts) -> None:
        self._pods[pod.uid] = pod
        self._pods.move_to_end(pod.uid)
        self._by_name[pod.key] = pod.uid
        while len(self._pods) > self.capacity:
            _, old = self._pods.popitem(last=False)
            if self._by_name.get(old.key) == old.uid:
                del self._by_name[old.key]

    def get(self, uid: str) -> PodFacts | None:
        return self._pods.get(uid)

    def find(self, namespace: str, name: str) -> PodFacts | None:
        """The newest pod seen with this name."""
        uid = self._by_name.get(f"{namespace}/{name}")
        return self._pods.get(uid) if uid is not None else None

    def forget(self, uid: str) -> None:
        pod = self._pods.pop(uid, None)
        if pod is not None and self._by_name.get(pod.key) == uid:
            del self._by_name[pod.key]
