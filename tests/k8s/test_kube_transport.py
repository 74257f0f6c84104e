"""``KubeClient``'s one transport (aiohttp on the event loop) against the fake API server:
failures of reads and watches mapped to ``Unavailable`` / ``ApiStatusError`` / ``Gone``, watch
events of any size, and a watch that is closed at once, without a thread, when its task is
cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ipam.errors import Unavailable
from ipam.k8s.client import ApiStatusError, KubeClient
from ipam.k8s.informer import Gone, Informer
from ipam.k8s.nodes import NodeController
from ipam.services.placement_state import NodeDirectory
from ipam.services.runtime import Readiness
from tests.fakeapi.fixtures import kube_configuration
from tests.fakeapi.objects import make_configmap, make_node
from tests.fakeapi.server import FakeApiServer
from tests.service_harness import wait_until


@pytest.fixture
async def kube(fake_apiserver: FakeApiServer) -> AsyncIterator[KubeClient]:
    fake_apiserver.create("nodes", make_node("n-1", internal_ip="10.1.0.1"))
    client = KubeClient(kube_configuration(fake_apiserver), timeout=(1.0, 0.5))
    yield client
    await client.aclose()


def node_informer(kube: KubeClient, directory: NodeDirectory, **kw: Any) -> Informer[Any]:
    nodes = NodeController(directory)
    return Informer("nodes", kube, "/api/v1/nodes", nodes.reduce, nodes.on_sync,
                    nodes.on_event, Readiness(), backoff=(0.05,), **kw)


async def test_cancelling_the_informer_closes_its_watch_at_once_without_a_thread(
    fake_apiserver: FakeApiServer, kube: KubeClient
) -> None:
    threads = set(threading.enumerate())
    directory = NodeDirectory()
    informer = node_informer(kube, directory)
    task = asyncio.create_task(informer.run())
    await wait_until(lambda: fake_apiserver.watch_count("nodes") == 1)
    fake_apiserver.create("nodes", make_node("n-2", internal_ip="10.1.0.2"))
    await wait_until(lambda: directory.known("n-2"))
    assert set(threading.enumerate()) <= threads  # the stream is read on the event loop
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The API server sees the stream closed: no event, bookmark or timeout needed for it.
    await wait_until(lambda: fake_apiserver.watch_count("nodes") == 0, timeout=2)


async def test_a_watch_the_server_ends_returns_its_last_version_and_is_taken_again(
    fake_apiserver: FakeApiServer, kube: KubeClient
) -> None:
    directory = NodeDirectory()
    informer = node_informer(kube, directory, timeout_seconds=1)
    rv = await informer.list()
    fake_apiserver.create("nodes", make_node("n-2", internal_ip="10.1.0.2"))
    last = await informer.watch(rv)  # the server ends it after timeoutSeconds=1
    assert int(last) >= int(rv) + 1 and directory.known("n-2")
    (query,) = [r.query for r in fake_apiserver.requests if r.verb == "watch"]
    assert query["timeoutSeconds"] == "1" and query["resourceVersion"] == rv
    assert query["allowWatchBookmarks"] == "true"


async def test_an_expired_version_is_gone_whether_refused_or_in_the_stream(
    fake_apiserver: FakeApiServer, kube: KubeClient
) -> None:
    informer = node_informer(kube, NodeDirectory())
    rv = await informer.list()
    fake_apiserver.faults.expire(r"^/api/v1/nodes\?.*watch=true")
    with pytest.raises(Gone, match="410"):
        await informer.watch(rv)  # HTTP 410 before the stream starts
    fake_apiserver.create("nodes", make_node("n-2"))
    fake_apiserver.compact("nodes")
    with pytest.raises(Gone, match="too old"):
        await informer.watch(rv)  # an ERROR event with code 410 in the stream


async def test_watch_refused_or_broken_is_unavailable(
    fake_apiserver: FakeApiServer, kube: KubeClient
) -> None:
    informer = node_informer(kube, NodeDirectory())
    rv = await informer.list()
    fake_apiserver.faults.fail_next("GET", r"watch=true", 503)
    with pytest.raises(Unavailable, match="503"):
        await informer.watch(rv)
    fake_apiserver.faults.fail_next("GET", r"watch=true", 403)
    with pytest.raises(Unavailable, match="watch nodes broke: 403"):
        await informer.watch(rv)
    watching = asyncio.create_task(informer.watch(rv))
    await wait_until(lambda: fake_apiserver.watch_count("nodes") == 1)
    fake_apiserver.drop_watches(abrupt=True)
    with pytest.raises(Unavailable, match="stream broke"):
        await watching


async def test_an_event_larger_than_a_read_buffer_arrives_whole(
    fake_apiserver: FakeApiServer, kube: KubeClient
) -> None:
    """A ConfigMap may hold up to 1 MiB; aiohttp's ``readline`` stops at 128 KiB."""
    path = "/api/v1/namespaces/kube-system/configmaps"
    big = "x" * 600_000
    events: list[dict[str, Any]] = []
    rv = str(fake_apiserver.resource_version)

    async def read() -> None:
        async with contextlib.aclosing(kube.watch(path, {"resourceVersion": rv},
                                                  timeout_seconds=30)) as stream:
            async for event in stream:
                events.append(event)
                if len(events) == 3:
                    return

    reading = asyncio.create_task(read())
    await wait_until(lambda: fake_apiserver.watch_count("configmaps") == 1)
    for i, value in enumerate(("small", big, "after")):
        fake_apiserver.create("configmaps", make_configmap(f"cm-{i}", "kube-system",
                                                           {"k": value}))
    await asyncio.wait_for(reading, 10)
    assert [e["object"]["data"]["k"] for e in events] == ["small", big, "after"]
    # Returning early closed the stream (``aclosing``), and the connection with it.
    await wait_until(lambda: fake_apiserver.watch_count("configmaps") == 0, timeout=2)


async def test_reads_map_failures(fake_apiserver: FakeApiServer, kube: KubeClient) -> None:
    assert (await kube.get("/api/v1/nodes/n-1"))["metadata"]["name"] == "n-1"
    with pytest.raises(ApiStatusError) as missing:
        await kube.get("/api/v1/nodes/n-404")
    assert missing.value.status == 404 and missing.value.reason == "NotFound"
    fake_apiserver.faults.fail_next("GET", r"/nodes/n-1$", 429)
    with pytest.raises(Unavailable) as throttled:
        await kube.get("/api/v1/nodes/n-1")
    assert throttled.value.details == {"status": 429}
    fake_apiserver.faults.hang(r"/nodes/n-1$", 1.5)
    with pytest.raises(Unavailable, match="Timeout"):  # read timeout 0.5 s
        await kube.get("/api/v1/nodes/n-1")
    fake_apiserver.stop()
    with pytest.raises(Unavailable, match="unreachable"):
        await kube.get("/api/v1/nodes/n-1")


async def test_query_values_reach_the_server_as_given(
    fake_apiserver: FakeApiServer, kube: KubeClient
) -> None:
    """Values are encoded once (by the official client), never re-encoded on the way."""
    fake_apiserver.create("nodes", make_node("n-2", internal_ip="10.1.0.2"))
    fields, labels = "metadata.name!=n-1,metadata.name!=n+1", "kubernetes.io/os in (linux)"
    doc = await kube.get("/api/v1/nodes", {"fieldSelector": fields, "labelSelector": labels})
    assert [i["metadata"]["name"] for i in doc["items"]] == ["n-2"]
    (query,) = [r.query for r in fake_apiserver.requests if r.verb == "list"]
    assert (query["fieldSelector"], query["labelSelector"]) == (fields, labels)
