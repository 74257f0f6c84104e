"""Filter, prioritize and bind for the scheduler extender, free of HTTP and of the API client.

The Kubernetes side is reached through two small ports (``Binder``, ``ClusterReader``) that
``ipam.k8s`` implements and tests can replace with the fake API server's client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from ipam.engine.galaxy_args import ArgsError, IpInfo, annotation_with_ipinfos, requested_ranges
from ipam.engine.ip_ranges import IPAddress
from ipam.engine.pod import CNI_ARGS_ANNOTATION, PodFacts
from ipam.engine.release_policy import OwnerKind, ReleasePolicy, owner_of
from ipam.errors import IpamError, NotFound, Unavailable
from ipam.services.allocation import Actor, Allocator
from ipam.services.placement_state import NodeDirectory, PoolCatalog, Promises, RecentPods
from ipam.storage.database import Database
from ipam.storage.records import AddressRecord, PoolRecord

log = logging.getLogger(__name__)

MAX_PRIORITY = 10
#: Stands for the node's address in a reason decided once for a whole pool set.
_NODE = "\x00node\x00"
#: A node the directory has not seen (distinct from ``None``: seen, but without InternalIP).
_UNKNOWN = object()


class BindingRejected(IpamError):
    """The API server refused the Binding for good (pod gone, UID changed, already bound)."""

    status = 409
    code = "binding_rejected"

    def __init__(self, message: str, *, reason: str, **details: object) -> None:
        super().__init__(message, reason=reason, **details)
        self.reason = reason


class Binder(Protocol):
    async def bind(self, namespace: str, name: str, uid: str, node: str,
                   annotations: Mapping[str, str]) -> None:
        """Create the pod's Binding; ``BindingRejected`` or ``Unavailable`` on failure."""


class ClusterReader(Protocol):
    async def get_pod(self, namespace: str, name: str) -> PodFacts | None: ...

    async def node_ip(self, name: str) -> IPAddress | None: ...


class Candidate(NamedTuple):
    """A tuple, not a frozen dataclass: filter builds 5,000 of them per call and a frozen
    dataclass pays three ``object.__setattr__`` calls for each."""

    name: str
    #: ``None`` when the node has no InternalIP or (cache mode) is unknown.
    address: IPAddress | None
    known: bool = True


@dataclass(slots=True)
class FilterOutcome:
    passed: list[str]
    failed: dict[str, str]
    #: Nodes no preemption can help (the pod itself is wrong, e.g. a bad args annotation).
    unresolvable: dict[str, str] | None = None


def _routes(pool: PoolRecord, rec: AddressRecord) -> bool:
    return pool.id == rec.pool_id


class Placement:
    """The extender's three verbs."""

    def __init__(self, db: Database, allocator: Allocator, catalog: PoolCatalog,
                 nodes: NodeDirectory, promises: Promises, recent: RecentPods,
                 binder: Binder | None = None, cluster: ClusterReader | None = None) -> None:
        self.db = db
        self.allocator = allocator
        self.catalog = catalog
        self.nodes = nodes
        self.promises = promises
        self.recent = recent
        self.binder = binder
        self.cluster = cluster

    # -- filter ---------------------------------------------------------------------------
    async def _held(self, pod: PodFacts) -> list[AddressRecord]:
        owner = owner_of(pod)
        key = owner.key if owner.kind is not OwnerKind.POD or ReleasePolicy.of(pod).keeps \
            else None
        async with self.db.single_statement() as store:
            rows = await store.addresses.held_for(pod.uid, key)
        mine = [r for r in rows if r.pod_uid == pod.uid]
        return mine or [r for r in rows if r.state == "kept"]

    async def filter(self, pod: PodFacts, candidates: Sequence[Candidate]) -> FilterOutcome:
        """Nodes from which the pod can get (or keep) its address, with reasons for the rest."""
        ips = {c.name: c.address if c.known else _UNKNOWN for c in candidates}
        return await self._filter(pod, [c.name for c in candidates], ips)

    async def filter_names(self, pod: PodFacts, names: Sequence[str]) -> FilterOutcome:
        """``filter`` for nodeCacheCapable requests: names are resolved against the node
        directory inside the loop, with no per-node object (5,000 per call)."""
        return await self._filter(pod, names, self.nodes.addresses())

    async def _filter(self, pod: PodFacts, names: Sequence[str],
                      ips: Mapping[str, object]) -> FilterOutcome:
        self.recent.remember(pod)
        try:
            requested = requested_ranges(pod)
        except ArgsError as exc:
            reason = f"pod {pod.key}: {exc}"
            return FilterOutcome([], {}, dict.fromkeys(names, reason))
        held = await self._held(pod)
        owner = owner_of(pod)
        strict = bool(held) and (owner.keeps_per_pod or any(r.pod_uid == pod.uid for r in held))
        passed: list[str] = []
        failed: dict[str, str] = {}
        promised: set[int] = set()
        # The verdict depends on the node only through the pools routable from it, and the
        # catalog hands out one shared list per distinct pool set: decide once per set, not
        # once per node (5,000 nodes are usually 1-10 sets).
        verdicts: dict[int, object] = {}
        if ips is self.nodes.addresses():
            # Common case, decided with C-level passes only: every node known, all routed
            # to the same pools.
            distinct = set(map(self.catalog.pool_set_by_name(self.nodes).get, names))
            only = self.catalog.pool_set(distinct.pop()) if len(distinct) == 1 else None
            if only is not None:
                verdict = await self._verdict(pod, only, held, strict, requested)
                if verdict is None or type(verdict) is int:
                    if isinstance(verdict, int):
                        self.promises.promise(pod.uid, (verdict,))
                    return FilterOutcome(list(names), {})
        by_name = self.catalog.by_name
        for name in names:
            ip = ips.get(name, _UNKNOWN)
            if ip is _UNKNOWN:
                failed[name] = (f"node {name} is not known to ipam yet (its node "
                                "watcher has not seen it)")
                continue
            if ip is None:
                failed[name] = f"node {name} has no InternalIP address"
                continue
            entry = by_name.get(name)
            pools = entry[1] if entry is not None and entry[0] is ip else \
                self.catalog.pools_for_node(name, ip)  # type: ignore[arg-type]
            cached = verdicts.get(id(pools), _UNKNOWN)
            if cached is _UNKNOWN:
                verdict = await self._verdict(pod, pools, held, strict, requested)
                verdicts[id(pools)] = verdict
            else:
                verdict = cached  # type: ignore[assignment]
            if isinstance(verdict, str):
                failed[name] = verdict.replace(_NODE, str(ip))
            else:
                passed.append(name)
                if verdict is not None:
                    promised.add(verdict)
        if promised:
            self.promises.promise(pod.uid, promised)
        return FilterOutcome(passed, failed)

    async def _verdict(self, pod: PodFacts, pools: Sequence[PoolRecord],
                       held: list[AddressRecord], strict: bool, requested: Sequence[object]
                       ) -> str | int | None:
        """A reason (str) to fail, or the pool id to promise (``None``: nothing to promise)."""
        if not pools:
            return f"node {_NODE} is in no routable subnet of any pool"
        if held:
            routable = [r for r in held if any(_routes(p, r) for p in pools)]
            if routable:
                return None
            if strict:
                where = ", ".join(f"{r.address} (pool {r.pool})" for r in held)
                return f"the pod's address {where} is not routable from node {_NODE}"
        if requested:
            return None  # specific addresses: checked exactly at bind
        for pool in pools:
            if await self._has_room(pool, pod.uid):
                return pool.id
        names = ", ".join(p.name for p in pools)
        return f"pool {names} exhausted" if len(pools) == 1 else f"pools {names} exhausted"

    async def _has_room(self, pool: PoolRecord, uid: str) -> bool:
        room = self.catalog.free(pool) - self.promises.held_by_others(pool.id, uid)
        if room > 0:
            return True
        # Near exhaustion the cached count may be stale (other replicas, releases): recount.
        taken = await self.catalog.recount(self.db, pool.id)
        return pool.size - taken - self.promises.held_by_others(pool.id, uid) > 0

    # -- prioritize -----------------------------------------------------------------------
    async def prioritize(self, pod: PodFacts, candidates: Sequence[Candidate]
                         ) -> list[tuple[str, int]]:
        """10 where the pod's kept address routes; else more free addresses, higher score."""
        held = await self._held(pod)
        out: list[tuple[str, int]] = []
        for cand in candidates:
            score = 0
            if cand.address is not None:
                pools = self.catalog.pools_for(cand.address)
                if held and any(_routes(p, r) for p in pools for r in held):
                    score = MAX_PRIORITY
                elif pools:
                    best = max(self.catalog.free(p) / p.size if p.size else 0 for p in pools)
                    score = 1 + round(max(0.0, min(best, 1.0)) * (MAX_PRIORITY - 2))
            out.append((cand.name, score))
        return out

    # -- bind -----------------------------------------------------------------------------
    async def bind(self, namespace: str, name: str, uid: str, node: str, *,
                   request_id: str | None = None) -> list[AddressRecord]:
        """Reserve the pod's addresses, then create its Binding carrying them; undo on refusal."""
        if self.binder is None or self.cluster is None:
            raise Unavailable("no Kubernetes connection configured; cannot bind")
        pod = self.recent.get(uid)
        if pod is None or (pod.namespace, pod.name) != (namespace, name):
            pod = await self.cluster.get_pod(namespace, name)
        if pod is None:
            raise NotFound(f"pod {namespace}/{name} not found")
        if pod.uid != uid:
            raise NotFound(f"pod {namespace}/{name} has uid {pod.uid}, not {uid} "
                           "(it was re-created)")
        if not pod.managed:
            await self.binder.bind(namespace, name, uid, node, {})
            return []
        node_ip = self.nodes.get(node) if self.nodes.known(node) else \
            await self.cluster.node_ip(node)
        if node_ip is None:
            raise NotFound(f"node {node} is unknown or has no InternalIP")
        actor = Actor("scheduler", request_id=request_id)
        try:
            traced = await self.allocator.allocate_traced(
                pod, self.catalog.pools_for(node_ip), node=node, actor=actor)
        finally:
            self.promises.drop(uid)
        records = [rec for _, rec in traced]
        # Undo restores what was there: kept addresses go back to their owner, fresh ones free.
        was_kept = {rec.address for before, rec in traced if before == "kept"}
        infos = [IpInfo(r.address, r.prefix_length, r.gateway, r.vlan) for r in records]
        annotation = {CNI_ARGS_ANNOTATION: annotation_with_ipinfos(pod, infos)}
        try:
            await self.binder.bind(namespace, name, uid, node, annotation)
        except BindingRejected as exc:
            if await self._already_bound_here(pod, node, annotation):
                return records
            await self._undo(pod, was_kept, actor, f"binding refused: {exc.message}")
            raise
        except Unavailable as exc:
            # Ambiguous: the API server may still apply a Binding whose reply we lost (a
            # timed-out request can land later). Undo only when the pod is provably not
            # bindable any more (gone, or re-created with another UID); otherwise keep the
            # reservation for the scheduler's retry, and the reconciler frees it if the pod
            # stays unbound past its grace period.
            current, known = await self._read_back(pod)
            if current is not None and current.uid == uid and current.node_name == node:
                return records
            if known and (current is None or current.uid != uid):
                await self._undo(pod, was_kept, actor, f"binding failed: {exc.message}")
            raise
        self.recent.forget(uid)
        return records

    async def _read_back(self, pod: PodFacts) -> tuple[PodFacts | None, bool]:
        """(the pod now or None if absent, whether the API server actually answered)."""
        assert self.cluster is not None
        try:
            return await self.cluster.get_pod(pod.namespace, pod.name), True
        except IpamError:
            return None, False

    async def _already_bound_here(self, pod: PodFacts, node: str,
                                  annotation: Mapping[str, str]) -> bool:
        """A retried bind whose first attempt landed: the pod is on this node with our IPs."""
        current, _ = await self._read_back(pod)
        return (current is not None and current.uid == pod.uid and current.node_name == node
                and current.annotations.get(CNI_ARGS_ANNOTATION)
                == annotation[CNI_ARGS_ANNOTATION])

    async def _undo(self, pod: PodFacts, was_kept: set[IPAddress], actor: Actor,
                    reason: str) -> None:
        await self.allocator.release_pod(
            pod.uid, keep=lambda row: row.address in was_kept, actor=actor, reason=reason)
