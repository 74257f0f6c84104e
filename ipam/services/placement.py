"""Filter, prioritize and bind for the scheduler extender, free of HTTP and of the API client.

The Kubernetes side is reached through two small ports (``Binder``, ``ClusterReader``) that
``ipam.k8s`` implements and tests can replace with the fake API server's client.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from ipam.engine.galaxy_args import ArgsError, IpInfo, annotation_with_ipinfos, requested_ranges
from ipam.engine.ip_ranges import IPAddress, IpRange
from ipam.engine.pod import CNI_ARGS_ANNOTATION, ENI_IP_RESOURCE, PodFacts
from ipam.engine.release_policy import Owner, OwnerKind, ReleasePolicy, owner_of
from ipam.errors import Conflict, InvalidInput, IpamError, NotFound, Unavailable
from ipam.services.allocation import Actor, Allocator, covers
from ipam.services.placement_state import NodeDirectory, PoolCatalog, Promises, RecentPods
from ipam.services.pod_lifecycle import PodLifecycle, WorkloadReader
from ipam.services.refusals import RECENT, RefusalLog
from ipam.storage.database import Database
from ipam.storage.records import AddressRecord, PoolRecord

log = logging.getLogger(__name__)
GATE_ACTOR = Actor("filter", request_id=None)

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


class PodNotices(Protocol):
    def notice(self, pod: PodFacts, *, reason: str, message: str, warning: bool) -> None:
        """Tell the pod's story (a Kubernetes Event); must not block or raise."""


#: Refusal kinds for ``ipam_filter_refusals_total``, by the words our reasons use.
_REFUSAL_KINDS = (
    ("waiting for terminating pod", "waiting_for_terminating_pod"),
    ("request_ip_range", "request_ip_range"),
    ("exhausted", "pool_exhausted"),
    ("is not routable from node", "kept_address_elsewhere"),
    ("in no routable subnet", "node_unroutable"),
    ("not known to ipam", "node_unknown"),
    ("no InternalIP", "node_unknown"),
)


def refusal_kind(reason: str) -> str:
    return next((kind for words, kind in _REFUSAL_KINDS if words in reason), "pod_invalid")


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


def _listed(records: Sequence[AddressRecord]) -> str:
    return ", ".join(f"{r.address} (pool {r.pool})" for r in records) or "no address"


def _routes(pool: PoolRecord, rec: AddressRecord) -> bool:
    return pool.id == rec.pool_id


class Placement:
    """The extender's three verbs."""

    def __init__(self, db: Database, allocator: Allocator, catalog: PoolCatalog,
                 nodes: NodeDirectory, promises: Promises, recent: RecentPods,
                 binder: Binder | None = None, cluster: ClusterReader | None = None,
                 workloads: WorkloadReader | None = None,
                 lifecycle: PodLifecycle | None = None,
                 refusals: RefusalLog = RECENT) -> None:
        self.db = db
        self.allocator = allocator
        self.catalog = catalog
        self.nodes = nodes
        self.promises = promises
        self.recent = recent
        self.binder = binder
        self.cluster = cluster
        #: With ``cluster``, what the owner gate needs (a Deployment's replicas, releasing a
        #: predecessor the pod watcher has not caught up with); without, no gate.
        self.workloads = workloads
        self.lifecycle = lifecycle
        #: Pods held back (the console's list), refusals by kind (a metric), pod Events.
        self.refusals = refusals
        self.refused: Counter[str] = Counter()
        self.notices: PodNotices | None = None

    def attach(self, *, binder: Binder, cluster: ClusterReader, workloads: WorkloadReader,
               lifecycle: PodLifecycle, notices: PodNotices | None = None) -> None:
        """The Kubernetes ports, built after the runtime when the service starts (one call,
        by ``ipam.k8s.controllers``); without them bind refuses and there is no owner gate."""
        self.binder, self.cluster = binder, cluster
        self.workloads, self.lifecycle = workloads, lifecycle
        self.notices = notices

    # -- filter ---------------------------------------------------------------------------
    async def _rows(self, pod: PodFacts) -> list[AddressRecord]:
        """What the pod holds and everything of its owner's key (a bare pod's is its name),
        quarantined rows included (one indexed read)."""
        async with self.db.single_statement() as store:
            return await store.addresses.held_for(pod.uid, owner_of(pod).key)

    @staticmethod
    def _kept(pod: PodFacts, rows: Sequence[AddressRecord]) -> list[AddressRecord]:
        """The owner's kept rows this pod takes (a default-policy bare pod takes none)."""
        if owner_of(pod).kind is OwnerKind.POD and not ReleasePolicy.of(pod).keeps:
            return []
        return [r for r in rows if r.state == "kept"]

    async def _held(self, pod: PodFacts) -> list[AddressRecord]:
        rows = await self._rows(pod)
        mine = [r for r in rows if r.pod_uid == pod.uid]
        return mine or self._kept(pod, rows) or [r for r in rows if r.state == "quarantined"]

    async def _hand_over(self, pod: PodFacts, owner: Owner, rows: list[AddressRecord]) -> bool:
        """A StatefulSet ordinal (or a bare pod kept by name) re-created under a new UID:
        the old pod's address is still allocated until the pod watcher processes its
        deletion. This pod has the same name, so the API server proves the old one gone:
        release it under its policy now (it is kept for the owner), so that the first bind
        succeeds instead of a Conflict that parks the pod in the scheduler's unschedulable
        queue for a minute. Whether anything was released."""
        if self.cluster is None or self.lifecycle is None:
            return False
        released = False
        for row in rows:
            if (row.owner_key != owner.key or row.state != "allocated" or row.pod_uid is None
                    or row.pod_uid == pod.uid):
                continue
            holder = await self.cluster.get_pod(row.pod_namespace or "", row.pod_name or "")
            if holder is None or holder.uid != row.pod_uid or holder.terminated:
                await self.lifecycle.pod_gone(row.pod_uid, actor=GATE_ACTOR)
                released = True
        return released

    async def _owner_gate(self, pod: PodFacts, owner: Owner, rows: list[AddressRecord]
                          ) -> tuple[str | None, bool]:
        """A Deployment (or other controller) that keeps its addresses: (a reason to hold
        the pod back, whether it is pinned to its owner's kept addresses).

        At ``replicas`` addresses the owner gets no fresh one while one of its pods is
        leaving: in a real cluster the replacement is scheduled while its predecessor is
        still Terminating, and a fresh address then would cost the workload the old one. A
        predecessor that is already gone (or Failed/Succeeded) is released here and now,
        ahead of the pod watcher, so the scheduler's next attempt finds the address kept.
        With every holder alive the pod is a RollingUpdate surge and takes a fresh address
        (the set shrinks back as old pods go): galaxy's documented deadlock cannot happen.
        """
        if self.workloads is None or self.cluster is None:
            return None, False
        for _ in range(2):
            # Quarantined rows are released: the owner holds them no more.
            others = [r for r in rows if r.owner_key == owner.key and r.pod_uid != pod.uid
                      and r.state != "quarantined"]
            if not others:
                return None, False
            workload = await self.workloads.workload(owner)
            if workload is None or len(others) < workload.replicas:
                return None, False
            if any(r.state == "kept" for r in others):
                return None, True
            leaving: list[AddressRecord] = []
            released = False
            for row in others:
                if row.state != "allocated" or row.pod_uid is None:
                    continue
                holder = await self.cluster.get_pod(row.pod_namespace or "", row.pod_name or "")
                if holder is None or holder.uid != row.pod_uid or holder.terminated:
                    if self.lifecycle is not None:
                        await self.lifecycle.pod_gone(row.pod_uid, actor=GATE_ACTOR)
                        released = True
                    else:
                        leaving.append(row)
                elif holder.deleting:
                    leaving.append(row)
            if released:
                rows = await self._rows(pod)
                continue
            if leaving:
                row = leaving[0]
                return (f"{owner.key} holds {len(others)} addresses for {workload.replicas} "
                        f"replicas; waiting for terminating pod {row.pod_namespace}/"
                        f"{row.pod_name} to hand over {row.address}"), False
            return None, False
        return None, any(r.state == "kept" for r in rows if r.owner_key == owner.key)

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
        outcome = await self._decide(pod, names, ips)
        if not outcome.passed and names:
            reasons = outcome.failed or outcome.unresolvable or {}
            entry = self.refusals.record(pod.key, pod.uid, reasons)
            first = entry.reasons[0][0] if entry.reasons else ""
            self.refused[refusal_kind(first)] += 1
            if self.notices is not None and pod.managed:
                # The ring's summary: the most common reason first, counted once.
                more = len(entry.reasons) - 1 + (1 if entry.other_nodes else 0)
                tail = f" (and {more} other reasons)" if more else ""
                self.notices.notice(pod, reason="IPAMHeldBack", warning=True,
                                    message=f"no node passes ipam's filter: {first}{tail}")
        return outcome

    async def _decide(self, pod: PodFacts, names: Sequence[str],
                      ips: Mapping[str, object]) -> FilterOutcome:
        self.recent.remember(pod)
        try:
            requested = requested_ranges(pod)
        except ArgsError as exc:
            reason = f"pod {pod.key}: {exc}"
            return FilterOutcome([], {}, dict.fromkeys(names, reason))
        rows = await self._rows(pod)
        mine = [r for r in rows if r.pod_uid == pod.uid]
        held = mine or self._kept(pod, rows)
        # The owner's own quarantined addresses: bind gives them back at once, so a node that
        # routes one passes whatever the pool's count says (quarantine counts as taken).
        reclaim = [] if mine else [r for r in rows if r.state == "quarantined"]
        owner = owner_of(pod)
        # A named pool's kept addresses pin its next pod to the nodes that route them, as
        # galaxy does (TestFilterForDeploymentIPPool): the pool reuses before it grows.
        strict = bool(held) and (owner.keeps_per_pod or bool(mine)
                                 or owner.kind is OwnerKind.POOL)
        # (A default-policy bare pod's name key finds a same-named predecessor too: it keeps
        # nothing, so there is nothing to hand over.)
        if (not mine and owner.keeps_per_pod and (owner.kind is not OwnerKind.POD
                                                  or ReleasePolicy.of(pod).keeps)
                and await self._hand_over(pod, owner, rows)):
            rows = await self._rows(pod)
            held = self._kept(pod, rows)
            reclaim = [r for r in rows if r.state == "quarantined"]
            strict = bool(held)
        if not mine and owner.kind in (OwnerKind.DEPLOYMENT, OwnerKind.CONTROLLER):
            wait, pinned = await self._owner_gate(pod, owner, rows)
            if wait is not None:
                return FilterOutcome([], dict.fromkeys(names, wait))
            if pinned:
                rows = await self._rows(pod)
                held = [r for r in rows if r.state == "kept"]
                strict = bool(held)
        key = owner.key if owner.kind is not OwnerKind.POD or ReleasePolicy.of(pod).keeps \
            else None
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
                verdict = await self._verdict(pod, only, held, strict, requested, key,
                                              reclaim)
                if verdict is None or type(verdict) is int:
                    if isinstance(verdict, int):
                        self.promises.promise(pod, (verdict,))
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
                verdict = await self._verdict(pod, pools, held, strict, requested, key,
                                              reclaim)
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
            self.promises.promise(pod, promised)
        return FilterOutcome(passed, failed)

    async def _verdict(self, pod: PodFacts, pools: Sequence[PoolRecord],
                       held: list[AddressRecord], strict: bool,
                       requested: Sequence[Sequence[IpRange]], owner_key: str | None,
                       reclaim: Sequence[AddressRecord] = ()) -> str | int | None:
        """A reason (str) to fail, or the pool id to promise (``None``: nothing to promise).
        ``reclaim``: the owner's quarantined rows, which bind gives back before any other."""
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
            return await self._requested_verdict(pod, pools, requested, owner_key)
        if any(_routes(p, r) for p in pools for r in reclaim):
            return None
        for pool in pools:
            if await self._has_room(pool, pod.uid):
                return pool.id
        names = ", ".join(p.name for p in pools)
        return f"pool {names} exhausted" if len(pools) == 1 else f"pools {names} exhausted"

    async def _requested_verdict(self, pod: PodFacts, pools: Sequence[PoolRecord],
                                 groups: Sequence[Sequence[IpRange]], owner_key: str | None
                                 ) -> str | None:
        """``request_ip_range`` decided as bind decides it: every group needs one address
        that this pod can take (free, its own, or kept by its owner) in a pool routable
        from the node - all groups or nothing."""
        for slot, group in enumerate(groups):
            if not await self._group_has_room(pod, pools, group, owner_key):
                ranges = ", ".join(map(str, group))
                return (f"request_ip_range[{slot}] ({ranges}) has no free address routable "
                        f"from node {_NODE}")
        return None

    async def _group_has_room(self, pod: PodFacts, pools: Sequence[PoolRecord],
                              group: Sequence[IpRange], owner_key: str | None) -> bool:
        for rng in group:
            pool = next((p for p in pools if any(covers(r, rng) for r in p.ranges)), None)
            if pool is None:
                continue
            async with self.db.single_statement() as store:
                blocked = await store.addresses.blocked_in_range(
                    pool.id, rng.first_address, rng.last_address, pod.uid, owner_key)
            if blocked < rng.last - rng.first + 1:
                return True
        return False

    async def _has_room(self, pool: PoolRecord, uid: str) -> bool:
        room = self.catalog.free(pool) - self.promises.held_by_others(pool.id, uid)
        if room > 0:
            return True
        # Near exhaustion the cached count may be stale (other replicas, releases): recount.
        taken = await self.catalog.recount(self.db, pool.id)
        if pool.size - taken - self.promises.held_by_others(pool.id, uid) > 0:
            return True
        # Quarantines that are over count as taken until freed; bind frees them first.
        async with self.db.single_statement() as store:
            over = await store.addresses.quarantine_over_count(pool.id)
        return pool.size - taken + over - self.promises.held_by_others(pool.id, uid) > 0

    # -- prioritize -----------------------------------------------------------------------
    async def prioritize(self, pod: PodFacts, candidates: Sequence[Candidate]
                         ) -> list[tuple[str, int]]:
        """10 where the pod's kept address routes; else by the number of free addresses
        (promises of other pods taken off), the node with the most free scoring 9: a subnet
        with 6 free beats one with 2, whatever the sizes of their pools."""
        held = await self._held(pod)
        free: dict[str, int] = {}
        kept_here: set[str] = set()
        for cand in candidates:
            if cand.address is None:
                continue
            pools = self.catalog.pools_for(cand.address)
            if held and any(_routes(p, r) for p in pools for r in held):
                kept_here.add(cand.name)
            elif pools:
                free[cand.name] = max(
                    self.catalog.free(p) - self.promises.held_by_others(p.id, pod.uid)
                    for p in pools)
        top = max(free.values(), default=0)
        out: list[tuple[str, int]] = []
        for cand in candidates:
            if cand.name in kept_here:
                score = MAX_PRIORITY
            elif top > 0 and free.get(cand.name, 0) > 0:
                score = 1 + round(free[cand.name] / top * (MAX_PRIORITY - 2))
            else:
                score = 0
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
            # The scheduler only calls us for pods that request the managed resource; a
            # direct caller must not use the extender to place any other pod.
            raise InvalidInput(f"pod {namespace}/{name} requests no {ENI_IP_RESOURCE}; "
                               "ipam does not bind it", pod=f"{namespace}/{name}")
        node_ip = self.nodes.get(node) if self.nodes.known(node) else \
            await self.cluster.node_ip(node)
        if node_ip is None:
            raise NotFound(f"node {node} is unknown or has no InternalIP")
        actor = Actor("scheduler", request_id=request_id)
        pools = self.catalog.pools_for(node_ip)
        try:
            try:
                traced = await self.allocator.allocate_traced(pod, pools, node=node,
                                                              actor=actor)
            except Conflict:
                # The ordinal's old pod may be gone with its release not yet processed.
                if not await self._hand_over(pod, owner_of(pod), await self._rows(pod)):
                    raise
                traced = await self.allocator.allocate_traced(pod, pools, node=node,
                                                              actor=actor)
        finally:
            self.promises.drop(uid)
        records = [rec for _, rec in traced]
        # Undo restores what was there: kept addresses go back to their owner, quarantined
        # ones to quarantine, fresh ones free.
        was_kept = {rec.address for before, rec in traced if before == "kept"}
        was_cooling = {rec.address for before, rec in traced if before == "quarantined"}
        infos = [IpInfo(r.address, r.prefix_length, r.gateway, r.vlan) for r in records]
        annotation = {CNI_ARGS_ANNOTATION: annotation_with_ipinfos(pod, infos)}
        try:
            await self.binder.bind(namespace, name, uid, node, annotation)
        except BindingRejected as exc:
            if await self._already_bound_here(pod, node, annotation):
                return records
            await self._undo(pod, was_kept, actor, f"binding refused: {exc.message}",
                             was_cooling)
            self._notice(pod, "IPAMBindFailed", f"released {_listed(records)}: {exc.message}",
                         warning=True)
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
                await self._undo(pod, was_kept, actor, f"binding failed: {exc.message}",
                                 was_cooling)
            raise
        self.recent.forget(uid)
        self.refusals.forget(uid)
        reused = " (kept for its owner)" if was_kept else ""
        self._notice(pod, "AddressAssigned", f"{_listed(records)} on node {node}{reused}",
                     warning=False)
        return records

    def _notice(self, pod: PodFacts, reason: str, message: str, *, warning: bool) -> None:
        if self.notices is not None:
            self.notices.notice(pod, reason=reason, message=message, warning=warning)

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
                    reason: str, was_cooling: set[IPAddress] | None = None) -> None:
        """No pod ran with a fresh address: it is free at once; a quarantined one cools on."""
        cooling = was_cooling or set()
        await self.allocator.release_pod(
            pod.uid, keep=lambda row: row.address in was_kept, actor=actor, reason=reason,
            cool=lambda row: row.address in cooling)
