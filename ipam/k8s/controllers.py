"""The process's background tasks: the catalog refresh and, with Kubernetes configured, the
watches (nodes, pods, the pool ConfigMap), leader election and the reconciler.

``Controllers`` is started after the runtime and stopped before it (``ipam.app``'s lifespan);
its gauges and counters are read at scrape time (``collect``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ipam.k8s.client import KubeClient
from ipam.k8s.cluster import KubeCluster
from ipam.k8s.events import EventRecorder
from ipam.k8s.informer import Informer
from ipam.k8s.nodes import NodeController
from ipam.k8s.pod_events import PodEvents
from ipam.k8s.pods import PodController
from ipam.k8s.pool_configmap import PoolConfigMapController
from ipam.k8s.workloads import KubeWorkloads
from ipam.metrics import Metric, counter, gauge
from ipam.services.leadership import Leadership
from ipam.services.pod_lifecycle import PodLifecycle
from ipam.services.reconciler import Reconciler
from ipam.services.runtime import Runtime
from ipam.services.supervisor import PassFailed, Supervisor
from ipam.settings import Settings

log = logging.getLogger(__name__)


def kube_configured(settings: Settings) -> bool:
    return bool(settings.kube_api_url or settings.kubeconfig
                or os.environ.get("KUBERNETES_SERVICE_HOST"))


@dataclass(frozen=True, slots=True)
class KubeSide:
    """The services' Kubernetes ports over one client: pods and bindings, workloads, and
    the pod lifecycle that releases through the allocator."""

    cluster: KubeCluster
    workloads: KubeWorkloads
    lifecycle: PodLifecycle

    @classmethod
    def of(cls, runtime: Runtime, kube: KubeClient) -> KubeSide:
        workloads = KubeWorkloads(kube)
        return cls(KubeCluster(kube), workloads, PodLifecycle(runtime.allocator, workloads))


def build_reconciler(runtime: Runtime, kube: KubeClient, side: KubeSide | None = None
                     ) -> Reconciler:
    """The reconciler, built one way for the service (``Controllers``) and ``ipam check``
    (the CLI passes its own client; ``side`` shares the service's ports)."""
    side = side if side is not None else KubeSide.of(runtime, kube)
    return Reconciler(runtime.db, runtime.allocator, side.lifecycle, side.workloads,
                      side.workloads, runtime.catalog, runtime.settings.reconciler)


class Controllers:
    """The process's long-running tasks, started after the runtime and stopped before it.
    Every loop runs under ``self.supervisor``: none ends before ``stop``."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.supervisor = Supervisor(runtime.settings.watch.backoff_seconds, runtime.readiness)
        self.informers: list[Informer[Any]] = []
        self.kube: KubeClient | None = None
        self.reconciler: Reconciler | None = None
        self.leadership: Leadership | None = None
        self.pool_configmap: PoolConfigMapController | None = None
        self.events: EventRecorder | None = None
        #: Set on election: the reconciler repairs what happened while nobody led.
        self._elected = asyncio.Event()

    async def start(self) -> None:
        rt, settings = self.runtime, self.runtime.settings
        rt.controllers = self
        self.supervisor.every("catalog-refresh", settings.catalog_refresh_seconds,
                              self._refresh_catalog)
        # Quarantines that are over go back to free promptly (allocations end them lazily
        # too, but only in a pool that has nothing else left), on the leader only.
        self.supervisor.every("quarantine-sweep", settings.catalog_refresh_seconds,
                              self._end_quarantines)
        if not kube_configured(settings):
            log.warning("no Kubernetes configuration: extender bind and watchers are off")
            return
        self.kube = KubeClient.from_settings(settings)
        side = KubeSide.of(rt, self.kube)
        notices: PodEvents | None = None
        if settings.controllers_enabled:
            self.events = EventRecorder(self.kube)
            notices = PodEvents(self.events)
        rt.placement.attach(binder=side.cluster, cluster=side.cluster, workloads=side.workloads,
                            lifecycle=side.lifecycle, notices=notices)
        if not settings.controllers_enabled:
            return
        reconciler = build_reconciler(rt, self.kube, side)
        leadership: Leadership | None = None
        if settings.leader.enabled:
            leadership = Leadership(rt.db, retry_seconds=settings.leader.renew_seconds,
                                    on_elected=self._on_elected)
        pods = PodController(rt.promises, rt.placement.recent, side.lifecycle, leadership,
                             notices)
        rt.reconciler, rt.leadership, rt.pod_watcher = reconciler, leadership, pods
        self.reconciler, self.leadership = reconciler, leadership
        nodes = NodeController(rt.nodes)
        backoff, timeout = settings.watch.backoff_seconds, settings.watch.timeout_seconds
        self._start(Informer("nodes", self.kube, "/api/v1/nodes", nodes.reduce, nodes.on_sync,
                             nodes.on_event, rt.readiness, backoff, timeout))
        self._start(Informer("pods", self.kube, "/api/v1/pods", pods.reduce, pods.on_sync,
                             pods.on_event, rt.readiness, backoff, timeout))
        cm = settings.pools_configmap
        if cm.enabled:
            pool_cm = PoolConfigMapController(rt, cm, leadership, self.events)
            self.pool_configmap = pool_cm
            # A field selector on the name: RBAC grants this one ConfigMap and no other.
            self._start(Informer(
                "pool-configmap", self.kube,
                f"/api/v1/namespaces/{quote(cm.namespace, safe='')}/configmaps", pool_cm.reduce,
                pool_cm.on_sync, pool_cm.on_event, rt.readiness, backoff, timeout,
                params={"fieldSelector": f"metadata.name={cm.name}"}))
            # Retried every catalog refresh period too (a pass with nothing new is free).
            self.supervisor.every("pool-configmap", settings.catalog_refresh_seconds,
                                  pool_cm.sync, first=0, wake=pool_cm.changed)
        if leadership is not None:
            self.supervisor.every("leadership", leadership.retry_seconds, leadership.step,
                                  first=0)
        self.supervisor.every("reconciler", settings.reconciler.interval_seconds,
                              self._reconcile, wake=self._elected)

    async def _on_elected(self) -> None:
        """A new leader repairs what happened while nobody led (pods deleted meanwhile) and
        applies the pool ConfigMap it saw while following; both in their own tasks, so that
        leadership keeps renewing while they run."""
        self._elected.set()
        if self.pool_configmap is not None:
            await self.pool_configmap.on_elected()

    async def _reconcile(self) -> None:
        """One supervised reconciler pass on the leader, once every informer has listed: at
        start-up it would otherwise compete with the lists that readiness waits for (it
        reads every allocated row, 100,000 in the restart benchmark)."""
        assert self.reconciler is not None
        await asyncio.gather(*(informer.synced.wait() for informer in self.informers))
        if self.leadership is not None and not await self.leadership.confirm():
            return
        report = await self.reconciler.run_pass(apply=True)
        if report.error is not None:
            raise PassFailed(f"reconciler pass: {report.error}")

    async def _refresh_catalog(self) -> None:
        await self.runtime.catalog.refresh(self.runtime.db)

    async def _end_quarantines(self) -> None:
        if self.leadership is not None and not self.leadership.is_leader:
            return
        await self.runtime.allocator.end_quarantines()

    def collect(self) -> list[Metric]:
        """Scrape-time gauges: pool usage, watches, tasks, reconciler, leadership, DB pool."""
        rt = self.runtime
        usage = rt.usage
        pools = gauge("ipam_pool_addresses", "Addresses per pool, VLAN and state.",
                      ["pool", "vlan", "state"], (
                          ([u.pool.name, str(u.pool.vlan or 0), state], float(value))
                          for u in usage for state, value in (
                              ("allocated", u.allocated), ("kept", u.kept),
                              ("reserved", u.reserved), ("quarantined", u.quarantined),
                              ("free", u.free))))
        watches = self.informers
        up = gauge("ipam_watch_up", "1 while the watch of a resource is established.",
                   ["resource"], (([i.name], float(rt.readiness.conditions.get(
                       f"watch:{i.name}", (False, ""))[0])) for i in watches))
        restarts = counter("ipam_watch_restarts", "Watch restarts (410 re-lists and errors).",
                           ["resource"], (([i.name], float(i.stats.restarts)) for i in watches))
        handler_errors = counter(
            "ipam_watch_handler_errors", "Watch events whose handler raised (logged, skipped).",
            ["resource"], (([i.name], float(i.stats.handler_errors)) for i in watches))
        out = [pools, up, restarts, handler_errors, *self.supervisor.collect(),
               gauge("ipam_filter_promises", "Pods promised an address at filter, not bound.",
                     [], [([], float(len(rt.promises)))]),
               gauge("ipam_db_connections_in_use", "Database connections checked out.", [],
                     [([], float(rt.db.connections_in_use()))])]
        out.append(counter(
            "ipam_filter_refusals", "Filter calls that passed no node, by the first reason's kind.",
            ["kind"], (([k], float(v)) for k, v in sorted(rt.placement.refused.items()))))
        if self.reconciler is not None:
            out.append(counter("ipam_reconciler_runs", "Reconciler passes.", [],
                               [([], float(self.reconciler.runs))]))
            out.append(counter("ipam_reconciler_repairs", "Repairs by finding kind.", ["kind"],
                               (([k], float(v)) for k, v in self.reconciler.repairs.items())))
        if self.leadership is not None:
            out.append(gauge("ipam_leader", "1 on the replica running the controllers.", [],
                             [([], float(self.leadership.is_leader))]))
        if self.pool_configmap is not None:
            out.append(counter(
                "ipam_pool_configmap_refusals",
                "Pool ConfigMap versions refused (the previous pools stayed), by error code.",
                ["code"], (([k], float(v)) for k, v in self.pool_configmap.refusals.items())))
        if self.events is not None:
            out.append(counter("ipam_kube_events_failed",
                               "Kubernetes Events that could not be recorded.", [],
                               [([], float(self.events.failed))]))
        return out

    def _start(self, informer: Informer[Any]) -> None:
        self.runtime.readiness.set(f"watch:{informer.name}", False, "not synced yet")
        self.informers.append(informer)
        self.supervisor.keep(f"informer-{informer.name}", informer.run)

    async def stop(self) -> None:
        for informer in self.informers:
            informer.stop()
        await self.supervisor.stop()
        if self.leadership is not None:
            await self.leadership.resign()
        if self.kube is not None:
            await self.kube.aclose()
