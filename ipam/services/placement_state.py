"""In-memory state that lets filter answer without touching the database on its hot path.

* ``NodeDirectory``: node name -> InternalIP, fed by the node watcher (nodeCacheCapable mode).
* ``PoolCatalog``: pools and how many addresses each has taken; recounted from PostgreSQL,
  adjusted by every allocation this process makes and, through ``storage.change_feed``, by
  every other replica's and writer's as they commit.
* ``Promises``: pods that passed filter but are not bound yet. The scheduler filters the next
  pod before the previous bind lands; counting promises keeps a nearly full pool from being
  promised twice. Only pods the pod watcher has seen get one, at most so many per namespace.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ipam.engine.ip_ranges import IPAddress
from ipam.engine.pod import PodFacts
from ipam.storage.change_feed import Delta, address_delta, taken_counts
from ipam.storage.database import Database
from ipam.storage.records import AddressRecord, PoolRecord

log = logging.getLogger(__name__)


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
    """Pools (config order) and taken counts; ``free()`` is size minus taken.

    Counts may run high, never low, except for changes committed but not yet delivered: a
    change that may already be in a recount (its transaction started before the recount's
    time) is added again if it took an address and dropped if it freed one. Too high costs
    filter a recount near exhaustion (``Placement._has_room``); too low would over-commit.
    """

    pools: list[PoolRecord] = field(default_factory=list)
    taken: dict[int, int] = field(default_factory=dict)
    refreshed_at: float = 0.0
    #: When the counts were read (microseconds, the database's clock): all pools at the last
    #: refresh, single pools at their last recount.
    _read_at: int = 0
    _pool_read_at: dict[int, int] = field(default_factory=dict)
    #: Changes that arrived while a recount was reading, to apply again to its result.
    _windows: list[list[Delta]] = field(default_factory=list)
    _by_node: dict[IPAddress, list[PoolRecord]] = field(default_factory=dict)
    #: One list object per distinct pool set, so callers can group nodes by ``id(list)``.
    _sets: dict[tuple[int, ...], list[PoolRecord]] = field(default_factory=dict)
    #: Node name -> (the InternalIP object it was computed for, its pools).
    by_name: dict[str, tuple[IPAddress, list[PoolRecord]]] = field(default_factory=dict)
    _names: tuple[dict[str, int], int] = field(default_factory=lambda: ({}, -1))

    async def refresh(self, db: Database) -> None:
        window = self._reading()
        try:
            async with db.transaction() as store:
                pools = await store.pools.all()
                counts, read_at = await taken_counts(store.sql)
        except BaseException:
            self._windows.remove(window)
            raise
        routing = [(p.id, p.node_subnets) for p in pools]
        if routing != [(p.id, p.node_subnets) for p in self.pools]:
            # Routing changed: every cached node -> pools answer may be wrong.
            self._by_node = {}
            self._sets = {}
            self.by_name = {}
            self._names = ({}, -1)
        self.pools = pools
        self._read_done(window, counts, read_at)
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
        """Taken count of one pool, straight from the database (plus what committed while
        it was read)."""
        window = self._reading()
        try:
            async with db.single_statement() as store:
                counts, read_at = await taken_counts(store.sql, pool_id)
        except BaseException:
            self._windows.remove(window)
            raise
        self._read_done(window, counts, read_at, pool_id)
        return self.taken[pool_id]

    def _reading(self) -> list[Delta]:
        """Start collecting the changes that arrive while counts are read."""
        window: list[Delta] = []
        self._windows.append(window)
        return window

    def _read_done(self, window: list[Delta], counts: dict[int, int], read_at: int,
                   pool_id: int | None = None) -> None:
        """Install counts read at ``read_at`` (all pools, or one), then replay what arrived
        meanwhile by the rules of ``_add``."""
        self._windows.remove(window)
        if pool_id is None:
            self.taken, self._read_at, self._pool_read_at = counts, read_at, {}
        else:
            self.taken[pool_id] = counts.get(pool_id, 0)
            self._pool_read_at[pool_id] = read_at
        for delta in window:
            if pool_id is None or delta.pool_id == pool_id:
                self._add(delta)

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

    def free(self, pool: PoolRecord) -> int:
        return pool.size - self.taken.get(pool.id, 0)

    def on_change(self, before: AddressRecord | None, after: AddressRecord | None) -> None:
        """Allocator listener: this process's own changes, as they commit."""
        delta = address_delta(before, after)
        if delta is not None:
            self.apply((delta,))

    def apply(self, deltas: Sequence[Delta]) -> None:
        """Committed changes (ours, or another writer's from the change feed)."""
        for delta in deltas:
            for window in self._windows:
                window.append(delta)
            self._add(delta)

    def _add(self, delta: Delta) -> None:
        if delta.change < 0 and delta.since_us < self._pool_read_at.get(delta.pool_id,
                                                                         self._read_at):
            return  # may be in the last count already: dropping it errs towards "taken"
        self.taken[delta.pool_id] = self.taken.get(delta.pool_id, 0) + delta.change


class PodDirectory(Protocol):
    """The pod watcher's cache (``ipam.k8s.pods.PodController``): pods as the API server has
    them, by namespace and name."""

    def lookup(self, namespace: str, name: str) -> PodFacts | None: ...


#: The pod watcher's cache, ``None`` while there is none (Kubernetes or controllers off).
DirectoryGetter = Callable[[], PodDirectory | None]

#: Whether the pod watcher knows this pod, pending, by this UID: ``None`` when there is no
#: watcher to ask.
PodVisibility = Callable[[PodFacts], bool | None]


class Promises:
    """Pod UID -> pools it was promised at filter time, until bound, gone or expired.

    A promise holds an address back from every other pod, and filter is reachable by anyone
    who can reach the extender: so only a pod the pod watcher has seen (by namespace, name
    and UID, not yet bound) gets one, and a namespace holds at most ``namespace_cap``. A pod
    refused a promise still gets its filter answer; only the hold is missing, which at worst
    lets a nearly full pool be offered twice and one bind fail (and be retried) - instead of
    letting strangers starve real pods. The watcher sees a new pod within milliseconds of the
    scheduler, so a real pod rarely goes without.
    """

    def __init__(self, ttl_seconds: float, *, namespace_cap: int = 256,
                 total_cap: int = 8192, visible: PodVisibility | None = None) -> None:
        self.ttl = ttl_seconds
        self.namespace_cap = namespace_cap
        #: Bounds memory and the harm where pods cannot be checked (no pod watcher: strangers
        #: could spread over namespaces). Pods between filter and bind are normally a few
        #: dozen: the scheduler binds a handful at a time.
        self.total_cap = total_cap
        self.visible = visible
        self._by_uid: dict[str, tuple[frozenset[int], float, str]] = {}
        self._count: dict[int, int] = {}
        self._per_namespace: dict[str, int] = {}
        #: No promise expires before this: ``_expire`` is O(1) until then, not O(promises).
        self._next_expiry = float("inf")
        #: Promises not granted, by reason.
        self.refused: dict[str, int] = {"unknown_pod": 0, "namespace_cap": 0, "total_cap": 0}
        self._logged: dict[str, float] = {}

    def _expire(self, now: float) -> None:
        if now < self._next_expiry:
            return
        self._next_expiry = min((until for _, until, _ in self._by_uid.values() if until > now),
                                default=float("inf"))
        stale = [uid for uid, (_, until, _) in self._by_uid.items() if until <= now]
        for uid in stale:
            self.drop(uid)

    def promise(self, pod: PodFacts, pool_ids: Iterable[int]) -> bool:
        """Hold one address of each pool for ``pod``, replacing what it held; ``False`` (and
        nothing changed) when the pod is unknown or its namespace is at its cap."""
        ids = frozenset(pool_ids)
        if not ids:
            self.drop(pod.uid)
            return True
        if self.visible is not None and self.visible(pod) is False:
            return self._refuse("unknown_pod", pod, "the pod watcher has not seen it (pending, "
                                "with this UID)")
        now = time.monotonic()
        self._expire(now)
        mine = self._by_uid.get(pod.uid)
        held = self._per_namespace.get(pod.namespace, 0) - (
            1 if mine is not None and mine[2] == pod.namespace else 0)
        if held >= self.namespace_cap:
            return self._refuse("namespace_cap", pod, f"namespace {pod.namespace} holds "
                                f"{held} promises, the cap (IPAM_PROMISE_NAMESPACE_CAP)")
        if len(self._by_uid) - (mine is not None) >= self.total_cap:
            return self._refuse("total_cap", pod, f"{len(self._by_uid)} pods hold promises, "
                                "the most this process keeps")
        self.drop(pod.uid)
        until = now + self.ttl
        self._by_uid[pod.uid] = (ids, until, pod.namespace)
        self._next_expiry = min(self._next_expiry, until)
        self._per_namespace[pod.namespace] = self._per_namespace.get(pod.namespace, 0) + 1
        for pid in ids:
            self._count[pid] = self._count.get(pid, 0) + 1
        return True

    def _refuse(self, reason: str, pod: PodFacts, why: str) -> bool:
        self.refused[reason] += 1
        now = time.monotonic()
        if now - self._logged.get(reason, -60.0) >= 60:
            self._logged[reason] = now
            log.warning("filter promise refused for pod %s (uid %s): %s; %d refused so far for "
                        "this reason (logged at most once a minute)", pod.key, pod.uid, why,
                        self.refused[reason])
        return False

    def drop(self, uid: str) -> None:
        entry = self._by_uid.pop(uid, None)
        if entry is None:
            return
        for pid in entry[0]:
            self._count[pid] -= 1
            if not self._count[pid]:
                del self._count[pid]
        left = self._per_namespace[entry[2]] - 1
        if left:
            self._per_namespace[entry[2]] = left
        else:
            del self._per_namespace[entry[2]]

    def held_by_others(self, pool_id: int, uid: str) -> int:
        self._expire(time.monotonic())
        mine = self._by_uid.get(uid)
        own = 1 if mine is not None and pool_id in mine[0] else 0
        return self._count.get(pool_id, 0) - own

    def in_namespace(self, namespace: str) -> int:
        self._expire(time.monotonic())
        return self._per_namespace.get(namespace, 0)

    def __len__(self) -> int:
        return len(self._by_uid)


class RecentPods:
    """Pods seen at filter, by UID, so bind needs no API round trip (bounded LRU).

    A filter body is the caller's word: with a pod watcher, only pods it knows (same UID) are
    kept, and ``get`` answers with the watcher's copy, so a stranger can neither crowd real
    pods out nor have bind act on forged annotations of a real pod.
    """

    def __init__(self, capacity: int = 20_000, *, directory: DirectoryGetter | None = None
                 ) -> None:
        self.capacity = capacity
        self.directory = directory
        self._pods: OrderedDict[str, PodFacts] = OrderedDict()
        self._by_name: dict[str, str] = {}

    def _watched(self, pod: PodFacts) -> PodFacts | bool | None:
        """The watcher's copy of ``pod``; ``False``: not there by this UID; ``None``: no
        watcher."""
        pods = self.directory() if self.directory is not None else None
        if pods is None:
            return None
        seen = pods.lookup(pod.namespace, pod.name)
        return seen if seen is not None and seen.uid == pod.uid else False

    def remember(self, pod: PodFacts) -> None:
        if self._watched(pod) is False:
            return  # bind reads it from the API server instead
        self._pods[pod.uid] = pod
        self._pods.move_to_end(pod.uid)
        self._by_name[pod.key] = pod.uid
        while len(self._pods) > self.capacity:
            _, old = self._pods.popitem(last=False)
            if self._by_name.get(old.key) == old.uid:
                del self._by_name[old.key]

    def get(self, uid: str) -> PodFacts | None:
        pod = self._pods.get(uid)
        if pod is None:
            return None
        watched = self._watched(pod)
        return watched if isinstance(watched, PodFacts) else pod

    def find(self, namespace: str, name: str) -> PodFacts | None:
        """The newest pod seen with this name."""
        uid = self._by_name.get(f"{namespace}/{name}")
        return self._pods.get(uid) if uid is not None else None

    def forget(self, uid: str) -> None:
        pod = self._pods.pop(uid, None)
        if pod is not None and self._by_name.get(pod.key) == uid:
            del self._by_name[pod.key]
