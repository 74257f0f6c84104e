"""The CNI plugin's view: a pod's allocation (or why it has none), and its report that a
sandbox was deleted (audited, never a release: the pod watcher applies the release policy)."""

from __future__ import annotations

from ipam.engine.pod import ENI_IP_RESOURCE, NETWORKS_ANNOTATION
from ipam.errors import NotFound, NotManaged
from ipam.services.allocation import Actor
from ipam.services.use_case import RuntimeUseCase
from ipam.storage.records import AddressRecord, AuditEntry


class CniReports(RuntimeUseCase):
    """What the CNI plugin asks and reports."""

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
