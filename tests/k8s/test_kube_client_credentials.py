"""Every request the service makes carries the client configuration's credentials (built by
the official client's ``param_serialize``, sent on the event loop's aiohttp session): the
Binding POST, the reads, and watches."""

from __future__ import annotations

import contextlib

from kubernetes.client import Configuration

from ipam.k8s.client import KubeClient
from ipam.k8s.cluster import KubeCluster
from ipam.k8s.informer import list_pages
from tests.fakeapi.objects import make_node, make_pod
from tests.fakeapi.server import FakeApiServer


async def test_bearer_token_on_binding_and_reads(fake_apiserver: FakeApiServer,
                                                 kube_config: Configuration) -> None:
    pod = fake_apiserver.create("pods", make_pod("p1"))
    fake_apiserver.create("nodes", make_node("node-0"))
    kube_config.api_key = {"BearerToken": "s3cret"}
    kube_config.api_key_prefix = {"BearerToken": "Bearer"}
    kube = KubeClient(kube_config)
    cluster = KubeCluster(kube)
    try:
        assert (await cluster.get_pod("default", "p1")) is not None
        await cluster.bind("default", "p1", pod["metadata"]["uid"], "node-0", {"a": "b"})
        _, rv = await list_pages(kube, "/api/v1/nodes", lambda node: node)
        async with contextlib.aclosing(kube.watch("/api/v1/nodes", {"resourceVersion": rv},
                                                  timeout_seconds=1)) as events:
            assert [e async for e in events] == []  # nothing changed; ended by the server
    finally:
        await kube.aclose()
    seen = {(r.method, r.subresource or r.resource): r.authorization
            for r in fake_apiserver.requests}
    assert seen[("GET", "pods")] == "Bearer s3cret"
    assert seen[("POST", "binding")] == "Bearer s3cret"
    assert {r.authorization for r in fake_apiserver.requests if r.resource == "nodes"} == {
        "Bearer s3cret"}
    assert {r.verb for r in fake_apiserver.requests if r.resource == "nodes"} == {"list", "watch"}
    bound = fake_apiserver.get("pods", "p1", namespace="default")
    assert bound is not None and bound["spec"]["nodeName"] == "node-0"
