"""The extender's view of the cluster: read a pod or node, create a pod's Binding."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

import orjson

from ipam.engine.ip_ranges import IPAddress
from ipam.engine.node import internal_ip
from ipam.engine.pod import PodFacts, PodShapeError, pod_facts
from ipam.errors import Unavailable
from ipam.k8s.client import ApiStatusError, KubeClient
from ipam.services.placement import BindingRejected


class KubeCluster:
    """Implements ``placement.Binder`` and ``placement.ClusterReader``."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube

    async def get_pod(self, namespace: str, name: str) -> PodFacts | None:
        try:
            obj = await self.kube.get(
                f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(name, safe='')}")
        except ApiStatusError as exc:
            if exc.status == 404:
                return None
            raise Unavailable(f"reading pod {namespace}/{name}: {exc}") from exc
        try:
            return pod_facts(obj)
        except PodShapeError as exc:
            raise Unavailable(f"pod {namespace}/{name} from the API server: {exc}") from exc

    async def node_ip(self, name: str) -> IPAddress | None:
        try:
            obj = await self.kube.get(f"/api/v1/nodes/{quote(name, safe='')}")
        except ApiStatusError as exc:
            if exc.status == 404:
                return None
            raise Unavailable(f"reading node {name}: {exc}") from exc
        return internal_ip(obj)

    async def bind(self, namespace: str, name: str, uid: str, node: str,
                   annotations: Mapping[str, str]) -> None:
        """POST pods/{name}/binding with the UID as precondition and our annotations.

        The answer is read raw (``KubeClient.post``): the official client cannot parse the
        Status this call answers with (kubernetes-client/python#547).
        """
        metadata: dict[str, object] = {"name": name, "namespace": namespace, "uid": uid}
        if annotations:
            metadata["annotations"] = dict(annotations)
        body = orjson.dumps({"apiVersion": "v1", "kind": "Binding", "metadata": metadata,
                             "target": {"apiVersion": "v1", "kind": "Node", "name": node}})
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(name, safe='')}/binding"
        try:
            await self.kube.post(path, body)
        except Unavailable as exc:
            status = exc.details.get("status")
            if status in (None, 0, 504) or "Timeout" in exc.message:
                raise  # no answer, or a timeout: the Binding may still land
            # The API server answered (429, 500, 503): the Binding was not made. Refused
            # now, so the reservation is undone now, not after the reconciler's grace.
            raise BindingRejected(
                f"binding {namespace}/{name} to {node} failed: {exc.message}",
                reason="unavailable", status=status) from exc
        except ApiStatusError as exc:
            reason = {404: "not_found", 409: "conflict"}.get(exc.status, exc.reason or "refused")
            raise BindingRejected(
                f"binding {namespace}/{name} to {node} refused: {exc.status} {exc.reason} "
                f"{exc.message}".strip(), reason=reason, status=exc.status) from exc
